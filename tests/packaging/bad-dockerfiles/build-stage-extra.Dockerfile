# Runs bootstrap.sh, then installs a package bootstrap.sh does not list.
FROM debian:bookworm-slim AS build
COPY scripts/bootstrap.sh scripts/bootstrap.sh
RUN ./scripts/bootstrap.sh \
 && apt-get install -y --no-install-recommends git
FROM debian:bookworm-slim AS fedge-cloud
COPY --from=build /build/packages/fedge-cloud_*.deb /tmp/
RUN apt-get install -y /tmp/fedge-cloud_*.deb
