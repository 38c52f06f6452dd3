#!/usr/bin/env bash
# Checks one .deb built by build_debs.sh: its control fields, its files, its conffiles and
# maintainer scripts, and that its binary, unpacked into a scratch root, prints --help and
# exits 0 (the shared libraries come from the system, as the package's Depends say).
#   check_deb.sh DEB_DIR PACKAGE VERSION BINARY [--unit NAME] [--conffile PATH] [--flag NAME]...
#                [--ships PATH]...   (more files the package must hold)
set -euo pipefail
deb_dir=$1 package=$2 version=$3 binary=$4
shift 4
unit="" conffile="" flags=() ships=()
while [ $# -gt 0 ]; do
  case "$1" in
    --unit) unit=$2; shift 2 ;;
    --conffile) conffile=$2; shift 2 ;;
    --flag) flags+=("$2"); shift 2 ;;
    --ships) ships+=("${2#/}"); shift 2 ;;
    *) echo "check_deb: unknown argument $1" >&2; exit 2 ;;
  esac
done

failures=0
fail() { echo "FAIL: $package: $*" >&2; failures=$((failures + 1)); }

shopt -s nullglob
debs=("$deb_dir/${package}_${version}_"*.deb)
if [ ${#debs[@]} -ne 1 ]; then
  echo "FAIL: expected one ${package}_${version}_*.deb in $deb_dir, found ${#debs[@]}" >&2
  exit 1
fi
deb=${debs[0]}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

echo "== dpkg-deb --info $(basename "$deb")"
dpkg-deb --info "$deb"
field() { dpkg-deb --field "$deb" "$1"; }
[ "$(field Package)" = "$package" ] || fail "Package is '$(field Package)'"
[ "$(field Version)" = "$version" ] ||
  fail "Version is '$(field Version)', not the project's $version"
for f in Maintainer Section Homepage Description Architecture; do
  [ -n "$(field "$f")" ] || fail "no $f field"
done
# Depends computed by dpkg-shlibdeps name the C and C++ runtimes with versions.
depends=$(field Depends)
for lib in libc6 libstdc++6; do
  [[ "$depends" == *"$lib ("* ]] || fail "Depends lacks $lib (was dpkg-shlibdeps run?): $depends"
done

echo "== dpkg-deb --contents $(basename "$deb")"
dpkg-deb --contents "$deb" | tee "$scratch/contents"
has_file() { grep -qE "^-[rwx-]{9} .* \./${1#/}\$" "$scratch/contents"; }
expected=("usr/bin/$binary")
[ -z "$unit" ] || expected+=("lib/systemd/system/$unit")
[ -z "$conffile" ] || expected+=("$conffile")
expected+=(${ships[@]+"${ships[@]}"})
for f in "${expected[@]}"; do
  has_file "$f" || fail "does not ship /${f#/}"
done
grep -qE "^-rwxr-xr-x root/root .* \./usr/bin/$binary\$" "$scratch/contents" ||
  fail "/usr/bin/$binary is not root-owned mode 0755"

dpkg-deb --control "$deb" "$scratch/control"
if [ -n "$conffile" ]; then
  echo "== conffiles"
  cat "$scratch/control/conffiles" 2>/dev/null || true
  grep -qxF "$conffile" "$scratch/control/conffiles" 2>/dev/null ||
    fail "$conffile is not listed in conffiles"
  for script in postinst prerm postrm; do
    s=$scratch/control/$script
    if [ ! -f "$s" ]; then fail "no $script"; continue; fi
    [ "$(stat -c %a "$s")" = 755 ] || fail "$script is mode $(stat -c %a "$s"), not 755"
    sh -n "$s" || fail "$script is not valid sh"
    # The node's flags must be set before the service runs: installing never enables or starts it.
    if grep -nE 'systemctl[^#]* (enable|start|restart|reenable)( |$)' "$s"; then
      fail "$script enables or starts the service"
    fi
  done
  grep -q 'getent passwd fedge' "$scratch/control/postinst" ||
    fail "postinst does not create the fedge user"
  grep -q '/run/systemd/system' "$scratch/control/postinst" ||
    fail "postinst does not check that systemd runs before daemon-reload"
fi

echo "== $binary --help, unpacked"
dpkg-deb -x "$deb" "$scratch/root"
status=0
"$scratch/root/usr/bin/$binary" --help >"$scratch/help" 2>&1 || status=$?
head -n 5 "$scratch/help"
echo "... ($(wc -l <"$scratch/help") lines, exit $status)"
[ "$status" -eq 0 ] || fail "--help exited $status"
grep -q "^$binary: " "$scratch/help" || fail "--help does not print the usage text"
for flag in "${flags[@]}"; do
  grep -q -- "--$flag " "$scratch/help" || fail "--help does not list --$flag"
done

if [ -n "$conffile" ]; then
  echo "== $binary --flagfile=$conffile --only_check_args"
  status=0
  "$scratch/root/usr/bin/$binary" --flagfile="$scratch/root$conffile" --only_check_args ||
    status=$?
  [ "$status" -eq 0 ] || fail "the shipped $conffile does not parse (exit $status)"
fi

if [ "$failures" -ne 0 ]; then
  echo "$package: $failures check(s) failed" >&2
  exit 1
fi
echo "$package: all checks passed"
