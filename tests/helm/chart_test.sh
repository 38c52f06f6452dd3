#!/usr/bin/env bash
# Tests of the Helm chart helm/fedge, one mode per ctest test:
#   chart_test.sh lint              helm lint, and helm lint --strict with every feature on
#   chart_test.sh template-default  render the defaults, validate every object and run
#                                   chart_checks.js; no optional monitoring or edge objects
#   chart_test.sh template-all      the same with ci/all-features-values.yaml; every optional
#                                   kind is there
#   chart_test.sh bad-values        each tests/helm/bad-values/*.yaml is refused, with the
#                                   message its "# expect:" line gives
# Needs the tools of setup.sh (the ctest fixture helm_tools runs it first).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
CHART="$ROOT/helm/fedge"
ALL="$CHART/ci/all-features-values.yaml"
CACHE="${FEDGE_TOOLS_CACHE:-$HOME/.cache/fedge-tools}"
HELM="$CACHE/bin/helm"
VALIDATE=(node "$HERE/validate.js")

if [ ! -x "$HELM" ]; then
  echo "chart_test.sh: no helm at $HELM; run tests/helm/setup.sh" >&2
  exit 1
fi

CHECKS=(node "$HERE/chart_checks.js" "$ROOT")

# Renders the chart with the given helm options into $RENDERED; fails when helm does.
RENDERED=""
render() {
  RENDERED="$(mktemp)"
  trap 'rm -f "$RENDERED"' EXIT
  "$HELM" template fedge "$CHART" "$@" >"$RENDERED"
}

# The kinds that exist only when their feature is turned on.
OPTIONAL_KINDS=ServiceMonitor,PodMonitor,PrometheusRule,DaemonSet

case "${1:-}" in
  lint)
    "$HELM" lint "$CHART"
    "$HELM" lint --strict "$CHART" -f "$ALL"
    ;;
  template-default)
    render --namespace fedge
    "${VALIDATE[@]}" --present=StatefulSet,Service,ConfigMap,NetworkPolicy,PodDisruptionBudget \
      --absent="$OPTIONAL_KINDS,Secret" "$RENDERED"
    "${CHECKS[@]}" "$RENDERED"
    ;;
  template-all)
    render --namespace fedge -f "$ALL"
    "${VALIDATE[@]}" \
      --present="$OPTIONAL_KINDS,StatefulSet,Service,ConfigMap,Secret,NetworkPolicy,PodDisruptionBudget" \
      "$RENDERED"
    "${CHECKS[@]}" "$RENDERED"
    ;;
  bad-values)
    failed=0
    for values in "$HERE"/bad-values/*.yaml; do
      expect="$(sed -n 's/^# expect: //p' "$values")"
      if [ -z "$expect" ]; then
        echo "FAIL $values has no '# expect:' line" >&2
        failed=1
        continue
      fi
      set +e
      out="$("$HELM" template fedge "$CHART" -f "$values" 2>&1)"
      rc=$?
      set -e
      if [ $rc -eq 0 ]; then
        echo "FAIL $(basename "$values"): accepted, expected a refusal" >&2
        failed=1
      elif ! grep -qF -- "$expect" <<<"$out"; then
        echo "FAIL $(basename "$values"): refused, but without \"$expect\":" >&2
        echo "$out" >&2
        failed=1
      else
        echo "ok   $(basename "$values"): $(grep -F -- "$expect" <<<"$out" | head -1 | sed 's/^[- ]*//')"
      fi
    done
    exit $failed
    ;;
  *)
    echo "usage: chart_test.sh lint|template-default|template-all|bad-values" >&2
    exit 2
    ;;
esac
