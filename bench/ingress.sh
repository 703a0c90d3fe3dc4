#!/usr/bin/env bash
# Ingress load run: a bare axum 202 handler vs evmesh's durable ingress (each storage engine),
# alternating, same machine, same run. Needs: cargo build --release --bin evmesh --example loadtest; wrk.
set -u
cd "$(dirname "$0")/.."
R=${TARGET:-target}/release
LUA=${LUA:-../shared/tools/ce-post.lua}
DUR=${DUR:-8s}
$R/examples/loadtest bare --listen 127.0.0.1:18081 >/dev/null 2>&1 &
BARE=$!
sleep 1
for round in 1 2; do
  echo "== round $round bare-axum-202"
  wrk -t2 -c64 -d$DUR -s $LUA http://127.0.0.1:18081/default/default | tee /tmp/evmesh-wrk.$$ | grep -E "Requests/sec|Latency|Non-2xx"
  if grep -q "Non-2xx" /tmp/evmesh-wrk.$$; then echo "FAILED: non-2xx answers"; kill $BARE; exit 1; fi
  for e in fjall redb sled; do
    dir=$(mktemp -d)
    $R/evmesh serve -f bench/ingress.yaml --listen 127.0.0.1:18080 --data-dir "$dir" --storage-engine $e >/dev/null 2>&1 &
    P=$!
    sleep 1.5
    echo "== round $round evmesh-$e"
    wrk -t2 -c64 -d$DUR -s $LUA http://127.0.0.1:18080/default/default | tee /tmp/evmesh-wrk.$$ | grep -E "Requests/sec|Latency|Non-2xx"
    if grep -q "Non-2xx" /tmp/evmesh-wrk.$$; then echo "FAILED: evmesh-$e gave non-2xx answers"; kill $P $BARE; exit 1; fi
    kill $P || { echo "evmesh-$e was not running: the numbers above are not its"; exit 1; }; wait $P 2>/dev/null
    rm -rf "$dir"
  done
done
kill $BARE
rm -f /tmp/evmesh-wrk.$$
