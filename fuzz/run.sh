#!/usr/bin/env bash
# The libFuzzer targets outside a developer's hands: ctest (tests/fuzz) and `make check` call
#   fuzz/run.sh build BUILD_DIR                  configure with clang and FEDGE_FUZZ=ON, build them
#   fuzz/run.sh run BUILD_DIR TARGET SECONDS     run one on a copy of its seed corpus
# A run also replays fuzz/regressions/TARGET. Crashing inputs land in
# BUILD_DIR/fuzz/runs/TARGET/artifacts/; copy them to fuzz/regressions/TARGET/ once fixed.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
cmd=${1:?build or run}
build=${2:?build dir}

case "$cmd" in
  build)
    CC=clang CXX=clang++ cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DFEDGE_FUZZ=ON
    cmake --build "$build" -j "${JOBS:-2}" --target fuzzers
    ;;
  run)
    target=${3:?target}
    seconds=${4:-10}
    work="$build/fuzz/runs/$target"
    rm -rf "$work"
    mkdir -p "$work/corpus" "$work/artifacts"
    cp "$src/fuzz/corpus/$target/"* "$work/corpus/"
    dirs=("$work/corpus")
    if [ -d "$src/fuzz/regressions/$target" ]; then dirs+=("$src/fuzz/regressions/$target"); fi
    exec "$build/fuzz/$target" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 \
      -artifact_prefix="$work/artifacts/" -print_final_stats=1 "${dirs[@]}"
    ;;
  *)
    echo "usage: $0 build BUILD_DIR | run BUILD_DIR TARGET SECONDS" >&2
    exit 2
    ;;
esac
