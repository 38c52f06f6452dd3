#!/usr/bin/env bash
# The fedge demo: a cloud and 4 edges as separate processes on loopback run the whole loop on
# the built-in synthetic machine-health task. Register a model, federate it for 10 rounds,
# register the result, gate, promote and canary it, ask an edge for a prediction, canary a bad
# candidate that rolls back on its own, inject drift at two plants and watch the fleet retrain,
# validate, canary and promote on its own, and compare with central and single-site training.
# Leaves nothing running.
set -euo pipefail

BUILD=${1:-build}
ROUNDS=${ROUNDS:-10}
SITES=4
BIN=$(cd "$BUILD" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fedge-demo.XXXXXX")
PIDS=()
export OMP_NUM_THREADS=1

cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

wait_for_file() {
  for _ in $(seq 1 200); do [ -s "$1" ] && return 0; sleep 0.05; done
  echo "demo: $1 did not appear; see the logs in $WORK" >&2
  return 1
}
port_of() { grep "^$2=" "$1" | cut -d= -f2; }

START=$(date +%s.%N)
echo "== starting fedge-cloud and $SITES edges on loopback (logs in $WORK)"
"$BIN/cloud/fedge-cloud" --data_dir="$WORK/cloud" --fleet_address=127.0.0.1:0 \
  --admin_address=127.0.0.1:0 --metrics_address=127.0.0.1:0 --rest_address=127.0.0.1:0 \
  --ports_file="$WORK/cloud.ports" \
  --heartbeat_interval_ms=1000 2>"$WORK/cloud.log" &
PIDS+=($!)
wait_for_file "$WORK/cloud.ports"
FLEET=127.0.0.1:$(port_of "$WORK/cloud.ports" fleet)
ADMIN=127.0.0.1:$(port_of "$WORK/cloud.ports" admin)
CA="$WORK/cloud/ca/ca.crt"  # the coordinator made its own CA; everyone trusts it
CTL=("$BIN/tools/fedgectl/fedgectl" --admin="$ADMIN" --ca_file="$CA")

echo "== TLS on every port; an enrollment token for $SITES edges (labels bound: region=demo)"
TOKEN=$("${CTL[@]}" --output=json nodes token create --uses=$SITES --ttl_h=1 \
  --node_labels=region=demo --description="demo edges" | sed -n 's/.*"secret": "\(.*\)".*/\1/p')
[ -n "$TOKEN" ] || { echo "demo: no enrollment token" >&2; exit 1; }

for i in $(seq 0 $((SITES - 1))); do
  FEDGE_ENROLL_TOKEN="$TOKEN" "$BIN/edge/fedge-edge" --node_id="plant-$i" --cloud="$FLEET" \
    --ca_file="$CA" --state_dir="$WORK/edge$i" \
    --inference_address=127.0.0.1:0 --metrics_address=127.0.0.1:0 \
    --ports_file="$WORK/edge$i.ports" --synthetic_site="$i" --synthetic_sites=$SITES \
    --labels="site=plant-$i" 2>"$WORK/edge$i.log" &
  PIDS+=($!)
done
for i in $(seq 0 $((SITES - 1))); do wait_for_file "$WORK/edge$i.ports"; done

echo
echo "== registering the built-in MLP for the synthetic machine-health task"
"${CTL[@]}" models register --name=machine-health --builtin=mlp --synthetic \
  --description="pump health from 12 sensor features" --reason="demo baseline"
for _ in $(seq 1 100); do
  [ "$("${CTL[@]}" nodes list | grep -c ' yes ')" -ge $SITES ] && break
  sleep 0.1
done
"${CTL[@]}" nodes list
"${CTL[@]}" nodes access

echo
echo "== federated training: $ROUNDS rounds over $SITES plants (round 0 is the untrained model)"
"${CTL[@]}" jobs start --model=machine-health --rounds="$ROUNDS" --min_clients=$SITES \
  --holdout_synthetic --reason="demo federated training" --watch | tee "$WORK/job.txt"
VERSION=$(sed -n 's/.*succeeded: machine-health v\([0-9]*\).*/\1/p' "$WORK/job.txt")
[ -n "$VERSION" ] || { echo "demo: the job did not succeed" >&2; exit 1; }
FINAL=$(awk '$1 ~ /^[0-9]+$/ && NF == 8 {acc=$5} END {print acc}' "$WORK/job.txt")

echo
echo "== the registry"
"${CTL[@]}" models versions machine-health

echo
echo "== the validation gate: accuracy >= 0.85 on the fleet-wide holdout, then promotion"
"${CTL[@]}" models policy machine-health --min_accuracy=0.85 --holdout_synthetic \
  --reason="demo gate" >/dev/null
"${CTL[@]}" models validate machine-health --version="$VERSION"
"${CTL[@]}" models promote machine-health --version="$VERSION" --reason="passed the demo gate"

echo
echo "== canary rollout of v$VERSION: 25% -> 50% -> 100%, each wave soaking 1 s"
"${CTL[@]}" deploy create --model=machine-health --version="$VERSION" --waves=0.25,0.5,1 \
  --soak_ms=1000 --min_feedback_accuracy=0.7 --min_feedback=20 --reason="demo rollout" --watch
"${CTL[@]}" nodes list

echo
echo "== an edge answers a Predict (plant-0's local Inference API)"
EDGE0=127.0.0.1:$(port_of "$WORK/edge0.ports" inference)
"$BIN/tools/fedgectl/fedgectl" predict --edge="$EDGE0" --synthetic_sample=3

echo
echo "== a bad candidate: an untrained network, canaried under live Predict + Feedback traffic"
"${CTL[@]}" models register --name=machine-health --builtin=mlp --synthetic --seed=99 \
  --reason="demo: a bad export"
BAD=$("${CTL[@]}" models versions machine-health | tail -n 1 | awk '{print $1}')
"${CTL[@]}" models validate machine-health --version="$BAD" || true
LOADS=()
for i in $(seq 0 $((SITES - 1))); do
  "$BIN/tools/loadgen/fedge-loadgen" --edge=127.0.0.1:$(port_of "$WORK/edge$i.ports" inference) \
    --synthetic_site="$i" --duration_ms=8000 --interval_ms=10 >"$WORK/load$i.json" 2>/dev/null &
  LOADS+=($!)
done
ROLLBACK=0
"${CTL[@]}" deploy create --model=machine-health --version="$BAD" --waves=0.25,1 --soak_ms=5000 \
  --min_feedback_accuracy=0.7 --min_feedback=20 --reason="demo canary" --watch || ROLLBACK=1
for pid in "${LOADS[@]}"; do wait "$pid" || true; done
"${CTL[@]}" models audit machine-health --limit=3
"${CTL[@]}" events list --types=deployment. | tail -n 3
ERRORS=$(cat "$WORK"/load*.json | sed -n 's/.*"errors": \([0-9]*\).*/\1/p' | awk '{s+=$1} END {print s+0}')
echo "Predict errors during the canary and its rollback: $ERRORS"

echo
echo "== drift: plants 1 and 2 get recalibrated sensors; the fleet notices and heals itself"
# Retrain when 2 plants report drift; a result that passes the gate goes out in canary waves
# judged on live Feedback labels, and becomes production when the rollout succeeds.
"${CTL[@]}" models retrain-policy machine-health --drift_quorum_nodes=2 \
  --drift_window_ms=600000 --cooldown_ms=3600000 --rounds=5 --min_clients=$SITES \
  --auto_deploy --waves=0.5,1 --soak_ms=1000 --min_feedback_accuracy=0.6 --min_feedback=20 \
  --reason="demo: heal drift on its own"
MARK=$("${CTL[@]}" events list --limit=100000 | tail -n 1 | awk '{print $1}')
DRIFT_START=$(date +%s.%N)
LOADS=()
for i in $(seq 0 $((SITES - 1))); do
  DRIFT_FLAGS=()
  # The drifted plants' devices also deliver labelled readings (Ingest) for retraining.
  if [ "$i" = 1 ] || [ "$i" = 2 ]; then DRIFT_FLAGS=(--synthetic_drift=1.5 --ingest --rows=2500); fi
  "$BIN/tools/loadgen/fedge-loadgen" --edge=127.0.0.1:$(port_of "$WORK/edge$i.ports" inference) \
    --synthetic_site="$i" --synthetic_stream=$((20 + i)) "${DRIFT_FLAGS[@]}" \
    --duration_ms=180000 --interval_ms=5 >"$WORK/drift-load$i.json" 2>/dev/null &
  LOADS+=($!)
done
HEALED=""
for _ in $(seq 1 1200); do
  HEALED=$("${CTL[@]}" events list --after_id="$MARK" --types=version.promoted |
    grep automatic | head -n 1 || true)
  [ -n "$HEALED" ] && break
  sleep 0.1
done
HEAL_SECONDS=$(awk -v s="$DRIFT_START" -v e="$(date +%s.%N)" 'BEGIN {printf "%.1f", e - s}')
# The retrained version's drift reference is each plant's recent data: the drifted plants'
# traffic no longer counts as drift. Watch two more windows of it.
[ -n "$HEALED" ] && sleep 8
for pid in "${LOADS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
for pid in "${LOADS[@]}"; do wait "$pid" || true; done
"${CTL[@]}" events list --after_id="$MARK" \
  --types=drift.detected,retrain.,job.completed,validation.,deployment.completed,version.promoted
[ -n "$HEALED" ] || { echo "demo: the fleet did not heal its drift; see $WORK" >&2; exit 1; }
"${CTL[@]}" nodes list
DRIFTED=$("${CTL[@]}" --output=json events list --after_id="$MARK" --types=drift.detected |
  grep -o '"node_id": *"[^"]*"' | sort -u | wc -l)
RETRAINED=$("${CTL[@]}" events list --after_id="$MARK" --types=version.promoted | grep -c automatic || true)
DRIFT_ERRORS=$(cat "$WORK"/drift-load*.json | sed -n 's/.*"errors": \([0-9]*\).*/\1/p' | awk '{s+=$1} END {print s+0}')
ERRORS=$((ERRORS + DRIFT_ERRORS))
HEALED_VERSION=$(echo "$HEALED" | sed -n 's/.*production -> v\([0-9]*\).*/\1/p')
AFTER=$("${CTL[@]}" events list --after_id="$MARK" --types=drift.detected |
  grep -c "machine-health:v$HEALED_VERSION " || true)
echo "drift reports about v$HEALED_VERSION while the drifted traffic went on: $AFTER"
echo "drift on 2 plants detected, retrained, validated, canaried and promoted in $HEAL_SECONDS s; Predict errors: $DRIFT_ERRORS"

echo
echo "== baselines on the same fleet-wide holdout: central (pooled data) and each plant alone"
"${CTL[@]}" models export machine-health --version=1 --out="$WORK/v1.pt" >/dev/null
"$BIN/tools/baseline/fedge-baseline" --archive="$WORK/v1.pt" --synthetic_sites=$SITES \
  2>"$WORK/baseline.log" | tee "$WORK/baseline.txt"
CENTRAL=$(sed -n 's/^central_accuracy=//p' "$WORK/baseline.txt")
BEST_SITE=$(sed -n 's/^best_site_accuracy=//p' "$WORK/baseline.txt")
VERSIONS=$("${CTL[@]}" models versions machine-health | tail -n +2 | wc -l)
SECONDS_TAKEN=$(awk -v s="$START" -v e="$(date +%s.%N)" 'BEGIN {printf "%.1f", e - s}')
GAP=$(awk -v f="$FINAL" -v c="$CENTRAL" 'BEGIN {printf "%.4f", c - f}')
echo
echo "demo: rounds=$ROUNDS final_accuracy=$FINAL versions=$VERSIONS central_accuracy=$CENTRAL best_site_accuracy=$BEST_SITE federated_gap=$GAP canary_rolled_back=$ROLLBACK drift_detected=$DRIFTED retrained_versions=$RETRAINED predict_errors=$ERRORS seconds=$SECONDS_TAKEN"
