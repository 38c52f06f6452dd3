#!/usr/bin/env bash
# Checks a package's systemd unit as installed: unpacks the .deb into a scratch root that also
# holds the system's own units (the targets the unit refers to), then runs
#   systemd-analyze --root=ROOT verify UNIT      (syntax, dependencies, ExecStart= executable)
#   systemd-analyze --root=ROOT security --offline=true --threshold=N UNIT   (hardening)
# systemd-analyze only warns about unknown keys or bad values, so any output is a failure.
#   verify_unit.sh DEB_DIR PACKAGE VERSION UNIT [MAX_EXPOSURE (default 2.0)]
set -euo pipefail
deb_dir=$1 package=$2 version=$3 unit=$4 max_exposure=${5:-2.0}

if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "FAIL: systemd-analyze not found: run scripts/bootstrap.sh (it installs systemd)" >&2
  exit 1
fi
system_units=/lib/systemd/system
if [ ! -f "$system_units/multi-user.target" ]; then
  echo "FAIL: no $system_units/multi-user.target:" \
    "run scripts/bootstrap.sh (it installs systemd)" >&2
  exit 1
fi

shopt -s nullglob
debs=("$deb_dir/${package}_${version}_"*.deb)
if [ ${#debs[@]} -ne 1 ]; then
  echo "FAIL: expected one ${package}_${version}_*.deb in $deb_dir, found ${#debs[@]}" >&2
  exit 1
fi
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/lib/systemd"
cp -a "$system_units" "$root/lib/systemd/"
dpkg-deb -x "${debs[0]}" "$root"
[ -f "$root/lib/systemd/system/$unit" ] || { echo "FAIL: the package has no $unit" >&2; exit 1; }

echo "== systemd-analyze --root=ROOT verify $unit"
status=0
out=$(systemd-analyze --root="$root" verify "$unit" 2>&1) || status=$?
[ -z "$out" ] || echo "$out"
if [ "$status" -ne 0 ] || [ -n "$out" ]; then
  echo "FAIL: systemd-analyze verify $unit: exit $status${out:+, with the messages above}" >&2
  exit 1
fi
echo "verify: no warnings, exit 0"

# --threshold takes tenths: exposure 2.0 is 20.
threshold=$(awk -v e="$max_exposure" 'BEGIN { printf "%d", e * 10 + 0.5 }')
echo "== systemd-analyze --root=ROOT security --offline=true --threshold=$threshold $unit"
status=0
out=$(systemd-analyze --root="$root" security --offline=true --threshold="$threshold" \
  "$unit" 2>&1) || status=$?
echo "$out" | grep -v '^✓' || true
if [ "$status" -ne 0 ]; then
  echo "FAIL: $unit's exposure is above $max_exposure (exit $status)" >&2
  exit 1
fi
echo "$package: $unit verified"
