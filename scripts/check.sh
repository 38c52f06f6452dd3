#!/usr/bin/env bash
# `make check`: the slow checks, in three stages, cheapest first.
#   fuzz      a 10 s run of each libFuzzer target (ctest label fuzz), built by fuzz/run.sh in
#             $BUILD/fuzz-build: the directory `make test` builds and runs them in, so after
#             `make test` the stage only runs them.
#   tsan      ThreadSanitizer over the tests labelled tsan, free of torch and of gRPC calls
#             (build-tsan, target tsan_tests only).
#   sanitize  clang with -Werror=thread-safety, AddressSanitizer and UndefinedBehaviorSanitizer,
#             over every source including the LibTorch ones; the unit and integration tests
#             (build-check).
# The sanitizer builds use -O1 -gline-tables-only: enough for sanitizer reports with file:line,
# and smaller objects and faster links than RelWithDebInfo's -O2 -g.
#
# FEDGE_CHECK_DEADLINE (epoch seconds; .ci/run sets it) makes the checks fit a time budget: a
# stage whose cold cost (below) would end past the deadline is skipped, saying so, and the
# script still succeeds. Without it every stage runs. Any failure of a stage that runs fails.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export JOBS=${JOBS:-$(nproc)}
BUILD=${BUILD:-build}
fuzz_build=$root/$BUILD/fuzz-build
deadline=${FEDGE_CHECK_DEADLINE:-}
sanitizer_flags='-O1 -gline-tables-only -DNDEBUG'

# Cold cost of each stage in seconds (no ccache, clean clone, 2 cores; measured on a shared
# machine, see the commit that set them). fuzz is cheap once $BUILD/fuzz-build is built.
estimate() {
  case "$1" in
    fuzz) if [ -x "$fuzz_build/fuzz/fuzz_codec" ]; then echo 120; else echo 420; fi ;;
    tsan) echo 600 ;;
    sanitize) echo 1500 ;;
  esac
}

# Runs stage $1 (function stage_$1) unless the deadline forbids it.
run_stage() {
  local name=$1 needed left start
  needed=$(estimate "$name")
  if [ -n "$deadline" ]; then
    left=$((deadline - $(date +%s)))
    if [ "$needed" -gt "$left" ]; then
      echo "SKIPPED make check stage $name: $needed s estimated, $left s left"
      return 0
    fi
  fi
  echo "=== make check stage $name (estimated $needed s cold)"
  start=$(date +%s)
  "stage_$name"
  echo "=== make check stage $name passed in $(($(date +%s) - start)) s"
}

configure_check() {
  CC=clang CXX=clang++ cmake -S . -B build-check -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="$sanitizer_flags" \
    -DFEDGE_THREAD_SAFETY=ON -DFEDGE_SANITIZE=ON -DFEDGE_FUZZ_BUILD_DIR="$fuzz_build"
}

stage_fuzz() {
  configure_check
  (cd build-check && ctest -L fuzz --output-on-failure)
}

stage_tsan() {
  CC=clang CXX=clang++ cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="$sanitizer_flags" -DFEDGE_TSAN=ON
  cmake --build build-tsan -j "$JOBS" --target tsan_tests
  (cd build-tsan && TSAN_OPTIONS=halt_on_error=1 ctest -j "$JOBS" -L tsan --output-on-failure)
}

stage_sanitize() {
  configure_check
  cmake --build build-check -j "$JOBS"
  (cd build-check &&
    ASAN_OPTIONS=detect_leaks=0 ctest -j "$JOBS" -L 'unit|integration' --output-on-failure)
}

stages=${FEDGE_CHECK_STAGES:-fuzz tsan sanitize}
for stage in $stages; do
  if ! declare -F "stage_$stage" >/dev/null; then
    echo "check.sh: no stage $stage (fuzz, tsan, sanitize)" >&2
    exit 2
  fi
  run_stage "$stage"
done
