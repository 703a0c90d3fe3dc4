#!/usr/bin/env bash
# Where evmesh's CPU goes under load, by thread (issue 7 item 9): evmesh pinned to CPUS, wrk and
# a counting sink on cores of their own, as in bench/scaling.sh. Prints the sink's count each
# second (deliveries/s) and, for the middle of the run, each evmesh thread's CPU time in ms per
# second (threads of one name summed: tokio-rt-worker holds the runtime's workers and its
# blocking pool; evmesh-store-* is the group-commit thread; fjall:worker the storage engine's
# flushes and compactions). MODE: ingress (one broker, no trigger), trigger (one trigger to the
# sink, wrk loading ingress), replay (first fill the log with wrk and no trigger, then start
# again with a trigger that replays from the earliest event: delivery alone, no ingress).
#
#   CPUS=0-7 MODE=trigger bench/threads.sh          # 16 cores: sink on 8-11, wrk on 12-15
set -u
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
CPUS=${CPUS:-0-7}
MODE=${MODE:-trigger}
DUR=${DUR:-8}
OUT=$(mktemp -d)
DIR=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$OUT" "$DIR"' EXIT

# cpu PID: "name ticks" per thread (utime + stime, in clock ticks)
cpu() {
  for t in /proc/"$1"/task/*; do
    printf '%s %s\n' "$(tr ' ' _ <"$t/comm")" "$(awk '{print $14 + $15}' "$t/stat")"
  done | awk '{s[$1] += $2} END {for (n in s) print n, s[n]}' | sort
}
serve() { # serve YAML: starts evmesh on CPUS, sets P
  taskset -c "$CPUS" "$EVMESH" serve -f "$1" --listen 127.0.0.1:18080 --data-dir "$DIR" $SERVE_FLAGS >"$OUT/ev.log" 2>&1 &
  P=$!
  wait_ready 127.0.0.1:18080 || { tail -5 "$OUT/ev.log"; exit 1; }
}
trigger_yaml "$OUT/trigger.yaml"

taskset -c "$SINK_CPUS" "$LOADTEST" sink --listen "$SINK" >/dev/null 2>&1 &
wait_port "$SINK" || exit 1
case $MODE in
  ingress) serve bench/ingress.yaml ;;
  trigger) serve "$OUT/trigger.yaml" ;;
  replay)
    serve bench/ingress.yaml
    taskset -c "$LOAD_CPUS" "$WRK" -t"$THREADS" -c"$CONN" -d"${DUR}s" -s "$LUA" http://127.0.0.1:18080/default/default | grep "requests in"
    kill $P; wait $P 2>/dev/null
    serve "$OUT/trigger.yaml"
    ;;
esac
hz=$(getconf CLK_TCK)
if [ "$MODE" != replay ]; then
  taskset -c "$LOAD_CPUS" "$WRK" -t"$THREADS" -c"$CONN" -d"${DUR}s" -s "$LUA" http://127.0.0.1:18080/default/default >"$OUT/wrk" 2>&1 &
fi
last=$(count)
for s in $(seq 1 $((DUR + 4))); do
  [ "$s" = 3 ] && cpu $P >"$OUT/c1" && t1=$(date +%s.%N)
  [ "$s" = $((DUR - 1)) ] && cpu $P >"$OUT/c2" && t2=$(date +%s.%N)
  sleep 1
  now=$(count)
  echo "t=$s deliveries/s $((now - last))"
  last=$now
done
[ -s "$OUT/wrk" ] && grep -E "Requests/sec|requests in|Non-2xx" "$OUT/wrk"
echo "CPU ms per second, t=3..$((DUR - 1)):"
join "$OUT/c1" "$OUT/c2" | awk -v hz="$hz" -v t1="$t1" -v t2="$t2" '{printf "  %-20s %6.0f\n", $1, ($3 - $2) * 1000 / hz / (t2 - t1)}'
