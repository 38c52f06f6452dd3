# A runtime image that does not install the package built by the build stage.
FROM debian:bookworm-slim AS build
COPY scripts/bootstrap.sh scripts/bootstrap.sh
RUN ./scripts/bootstrap.sh
FROM debian:bookworm-slim AS fedge-edge
COPY --from=build /build/edge/fedge-edge /usr/bin/
