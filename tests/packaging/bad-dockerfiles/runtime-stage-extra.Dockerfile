# A runtime image installs a package that bootstrap.sh does not list.
FROM debian:bookworm-slim AS build
COPY scripts/bootstrap.sh scripts/bootstrap.sh
RUN ./scripts/bootstrap.sh
FROM debian:bookworm-slim AS fedge-edge
COPY --from=build /build/packages/fedge-edge_*.deb /tmp/
RUN apt-get update && apt-get install -y --no-install-recommends /tmp/fedge-edge_*.deb curl
