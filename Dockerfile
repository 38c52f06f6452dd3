# Images fedge-cloud and fedge-edge, built from the project's own .deb packages:
#   docker build --target fedge-cloud -t fedge-cloud .
#   docker build --target fedge-edge -t fedge-edge .
# The build stage installs its packages with scripts/bootstrap.sh, so the image is built from
# exactly the package list a developer machine has (tests/packaging checks this file).
# Both images run as uid 10001 and work with a read-only root filesystem: state goes to the
# volume, glog logs to stderr, and /tmp is expected to be a writable (emptyDir) mount.

FROM debian:bookworm-slim AS build
WORKDIR /src
COPY scripts/bootstrap.sh scripts/bootstrap.sh
RUN ./scripts/bootstrap.sh && rm -rf /var/lib/apt/lists/*
COPY . .
# Builds the three binaries only (not the tests) and packs them into /build/packages.
RUN make package BUILD=/build

FROM debian:bookworm-slim AS fedge-cloud
COPY --from=build /build/packages/fedge-cloud_*.deb /tmp/
# apt resolves the package's Depends (computed by dpkg-shlibdeps) from Debian 12.
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends /tmp/fedge-cloud_*.deb \
 && rm -rf /var/lib/apt/lists/* /tmp/*.deb \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/fedge-cloud
USER 10001:10001
VOLUME ["/var/lib/fedge-cloud"]
# Fleet gRPC, Admin gRPC, REST gateway, /metrics and /healthz.
EXPOSE 7070 7071 7072 9090
ENTRYPOINT ["/usr/bin/fedge-cloud"]
CMD ["--data_dir=/var/lib/fedge-cloud"]

FROM debian:bookworm-slim AS fedge-edge
COPY --from=build /build/packages/fedge-edge_*.deb /tmp/
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends /tmp/fedge-edge_*.deb \
 && rm -rf /var/lib/apt/lists/* /tmp/*.deb \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/fedge-edge
USER 10001:10001
VOLUME ["/var/lib/fedge-edge"]
# Inference gRPC, /metrics and /healthz.
EXPOSE 7080 9091
ENTRYPOINT ["/usr/bin/fedge-edge"]
# --node_id is each node's own, so a real start passes its flags, the state directory among them:
#   docker run fedge-edge --node_id=gw-1 --cloud=cloud:7070 --state_dir=/var/lib/fedge-edge
CMD ["--state_dir=/var/lib/fedge-edge"]
