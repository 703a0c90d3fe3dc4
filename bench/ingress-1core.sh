#!/usr/bin/env bash
# Per-event ingress cost on one core (issue 7 item 9): the process under test pinned to core 0,
# wrk pinned to core 1; the bare group-commit log (`loadtest bare-log`) first, then each evmesh
# binary given (default target/release/evmesh), one broker and no trigger. Prints req/s, how busy
# the process was, and its CPU per request (from /proc/<pid>/stat over wrk's run). ROUNDS=N
# repeats the whole sequence N times and ends with each binary's share of the bare log's req/s
# per round and their median.
# Needs: cargo build --release --bin evmesh --example loadtest; wrk; taskset.
set -u
cd "$(dirname "$0")/.."
R=${TARGET:-target}/release
LUA=${LUA:-bench/ce-post.lua}
DUR=${DUR:-8}
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
measure() { # label pid port
  sleep 1.5
  local c0 t0 out c1 t1 rps
  c0=$(cpu "$2"); t0=$(date +%s.%N)
  out=$(taskset -c 1 wrk -t1 -c64 -d"${DUR}s" -s "$LUA" "http://127.0.0.1:$3/default/default")
  c1=$(cpu "$2"); t1=$(date +%s.%N)
  if echo "$out" | grep -q Non-2xx; then echo "$1: FAILED, non-2xx answers"; return 1; fi
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  echo "$1 $rps" >>"$RESULTS"
  python3 -c "
c = ($c1 - $c0) / $(getconf CLK_TCK); t = $t1 - $t0
print(f'$1: {$rps:.0f} req/s, {c / t:.2f} cores busy, {c * 1e6 / ($rps * $DUR):.1f} µs CPU per request')"
}
RESULTS=$(mktemp)
for round in $(seq 1 "${ROUNDS:-1}"); do
  [ "${ROUNDS:-1}" -gt 1 ] && echo "round $round"
  dir=$(mktemp -d)
  taskset -c 0 "$R/examples/loadtest" bare-log --listen 127.0.0.1:18083 --dir "$dir" >/dev/null 2>&1 &
  P=$!
  measure bare-log $P 18083
  kill $P; wait $P 2>/dev/null; rm -rf "$dir"
  for bin in ${EVMESH:-$R/evmesh}; do
    dir=$(mktemp -d)
    taskset -c 0 "$bin" serve -f bench/ingress.yaml --listen 127.0.0.1:18080 --data-dir "$dir" >/dev/null 2>&1 &
    P=$!
    measure "$bin" $P 18080
    kill $P; wait $P 2>/dev/null; rm -rf "$dir"
  done
done
if [ "${ROUNDS:-1}" -gt 1 ]; then
  # Each line after a bare-log line is a share of that round's bare log.
  python3 - "$RESULTS" <<'PY'
import statistics, sys
shares, bare = {}, None
for line in open(sys.argv[1]):
    name, rps = line.rsplit(None, 1)
    if name == "bare-log":
        bare = float(rps)
    elif bare:
        shares.setdefault(name, []).append(float(rps) / bare)
for name, s in shares.items():
    print(f"{name}: share of the bare log by round {' '.join(f'{x:.2f}' for x in s)}; "
          f"median {statistics.median(s):.2f}, mean {statistics.mean(s):.2f}")
PY
fi
rm -f "$RESULTS"
