# Lists the build packages itself, and not the same ones as bootstrap.sh.
FROM debian:bookworm-slim AS build
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config libgrpc++-dev libabsl-dev libtorch-dev bogus-extra-package
FROM debian:bookworm-slim AS fedge-cloud
COPY --from=build /build/packages/fedge-cloud_*.deb /tmp/
RUN apt-get install -y /tmp/fedge-cloud_*.deb
