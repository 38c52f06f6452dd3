#!/usr/bin/env bash
# Fixture of the packaging tests: builds the three binaries (a no-op after `make test`'s build)
# and packs them with cpack into OUT_DIR, emptied first.
#   build_debs.sh BUILD_DIR OUT_DIR
set -euo pipefail
build_dir=$1
out_dir=$2

for tool in cpack dpkg-deb dpkg-shlibdeps; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "build_debs: $tool not found: run scripts/bootstrap.sh (dpkg-dev), then cmake again" >&2
    exit 1
  fi
done

start=$(date +%s)
cmake --build "$build_dir" --target fedge-cloud fedge-edge fedgectl
rm -rf "$out_dir"
mkdir -p "$out_dir"
(cd "$build_dir" && cpack -G DEB -B "$out_dir")
ls -l "$out_dir"/*.deb
echo "build_debs: binaries and packages in $(( $(date +%s) - start )) s"
