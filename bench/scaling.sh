#!/usr/bin/env bash
# Scaling run (issue 7 item 9): delivery through one trigger, and durable ingress, with the
# process under test pinned to 1, 2, 4, 8 cores (taskset) and the load (wrk) and the sink on
# cores of their own; each step beside its floor, measured the same way in the same run:
#   ingress   evmesh, one broker, no trigger: accepted ev/s (wrk)
#   bare-log  the minimal durable ingress (loadtest bare-log: append + group-commit fdatasync)
#   floor     the accept-and-forward floor (loadtest forward): accepted/s and deliveries/s
#   evmesh    evmesh, one broker, one trigger to the sink: accepted/s and deliveries/s
# Deliveries/s is what the sink counted during the wrk run, over its length. Each process gets
# a fresh data dir. Needs: cargo build --release --bin evmesh --example loadtest; wrk; taskset;
# bash (its /dev/tcp asks the sink for its count).
#
#   bench/scaling.sh                     # 16 cores: evmesh on 0..N-1, sink on 8-11, wrk on 12-15
#   CORES="1" SINK_CPUS=1 LOAD_CPUS=1 bench/scaling.sh   # a 2-core machine: 1 core each side
#   EVMESH="target/release/evmesh /tmp/evmesh-old" bench/scaling.sh   # compare builds
set -u
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
CORES=${CORES:-1 2 4 8}
DUR=${DUR:-6}
DRAIN=${DRAIN:-5}
DATA=${DATA:-${TMPDIR:-/tmp}}
OUT=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$OUT"' EXIT

# load URL: runs wrk; sets ACCEPTED (req/s), TOTAL (answered), DELIVERED (sink count during run)
load() {
  local c0 c1
  c0=$(count)
  taskset -c "$LOAD_CPUS" "$WRK" -t"$THREADS" -c"$CONN" -d"${DUR}s" -s "$LUA" "$1" >"$OUT/wrk" 2>&1
  c1=$(count)
  if grep -q "Non-2xx" "$OUT/wrk"; then
    echo "  (non-2xx answers: $(grep Non-2xx "$OUT/wrk"))"
  fi
  ACCEPTED=$(awk '/Requests\/sec/ {printf "%d", $2}' "$OUT/wrk")
  TOTAL=$(awk '/requests in/ {print $1}' "$OUT/wrk")
  DELIVERED=$(( (c1 - c0) / DUR ))
}

# drain N0: waits up to DRAIN s for the sink to reach count N0; prints what is left
drain() {
  local left
  for _ in $(seq $((DRAIN * 10))); do
    left=$(( $1 - $(count) ))
    [ "$left" -le 0 ] && { echo 0; return; }
    sleep 0.1
  done
  echo "$left"
}

trigger_yaml "$OUT/trigger.yaml"

taskset -c "$SINK_CPUS" "$LOADTEST" sink --listen "$SINK" >/dev/null 2>&1 &
wait_port "$SINK" || exit 1

echo "cores step accepted/s deliveries/s backlog_left"
for n in $CORES; do
  cpus="0-$((n - 1))"
  # ingress only, each evmesh build
  for ev in $EVMESH; do
    d=$(mktemp -d -p "$DATA")
    taskset -c "$cpus" "$ev" serve -f bench/ingress.yaml --listen 127.0.0.1:18080 --data-dir "$d" $SERVE_FLAGS >"$OUT/ev.log" 2>&1 &
    p=$!
    wait_ready 127.0.0.1:18080 || { tail -5 "$OUT/ev.log"; exit 1; }
    load http://127.0.0.1:18080/default/default
    echo "$n ingress[$(basename "$ev")] $ACCEPTED - -"
    kill $p; wait $p 2>/dev/null; rm -rf "$d"
  done
  # the bare durable log
  d=$(mktemp -d -p "$DATA")
  taskset -c "$cpus" "$LOADTEST" bare-log --listen 127.0.0.1:18083 --dir "$d" >/dev/null 2>&1 &
  p=$!
  wait_port 127.0.0.1:18083 || exit 1
  load http://127.0.0.1:18083/
  echo "$n bare-log $ACCEPTED - -"
  kill $p; wait $p 2>/dev/null; rm -rf "$d"
  # the accept-and-forward floor
  taskset -c "$cpus" "$LOADTEST" forward --listen 127.0.0.1:18081 --to "http://$SINK/floor" >/dev/null 2>&1 &
  p=$!
  wait_port 127.0.0.1:18081 || exit 1
  base=$(count)
  load http://127.0.0.1:18081/
  echo "$n floor $ACCEPTED $DELIVERED $(drain $((base + TOTAL)))"
  kill $p; wait $p 2>/dev/null
  # evmesh, one trigger
  for ev in $EVMESH; do
    d=$(mktemp -d -p "$DATA")
    taskset -c "$cpus" "$ev" serve -f "$OUT/trigger.yaml" --listen 127.0.0.1:18080 --data-dir "$d" $SERVE_FLAGS >"$OUT/ev.log" 2>&1 &
    p=$!
    wait_ready 127.0.0.1:18080 || { tail -5 "$OUT/ev.log"; exit 1; }
    base=$(count)
    load http://127.0.0.1:18080/default/default
    echo "$n evmesh[$(basename "$ev")] $ACCEPTED $DELIVERED $(drain $((base + TOTAL)))"
    kill $p; wait $p 2>/dev/null; rm -rf "$d"
  done
done
