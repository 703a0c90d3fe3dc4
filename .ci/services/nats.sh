# NATS with JetStream for tests/nats_*.rs (NatsJetStreamChannel). Sourced by .ci/run; idempotent:
# installs Debian's nats-server when missing, starts it on 127.0.0.1:4222 with JetStream when
# nothing listens there, waits until it accepts connections, exports EVMESH_NATS_URL.
# (Sourced under `set -euo pipefail`: no `exit`, every failing step says why.)

nats_listening() {
  (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null
}

if ! nats_listening; then
  if ! command -v nats-server >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
      apt-get update -qq && apt-get install -y -qq nats-server >/dev/null
    else
      echo "nats.sh: nats-server is missing and cannot be installed (no apt-get as root)" >&2
      false
    fi
  fi
  # Debian installs it in /usr/sbin, which a non-root PATH may lack.
  NATS_SERVER_BIN="$(command -v nats-server || echo /usr/sbin/nats-server)"
  NATS_STORE_DIR="$(mktemp -d -t evmesh-nats.XXXXXX)"
  nohup "$NATS_SERVER_BIN" -a 127.0.0.1 -p 4222 -js -sd "$NATS_STORE_DIR" \
    >"$NATS_STORE_DIR/nats-server.log" 2>&1 &
  for _ in $(seq 1 100); do
    nats_listening && break
    sleep 0.1
  done
  if ! nats_listening; then
    echo "nats.sh: nats-server did not start listening on 127.0.0.1:4222:" >&2
    cat "$NATS_STORE_DIR/nats-server.log" >&2
    false
  fi
  echo "nats-server with JetStream on 127.0.0.1:4222 (store $NATS_STORE_DIR)"
else
  echo "a NATS server already listens on 127.0.0.1:4222"
fi
export EVMESH_NATS_URL="${EVMESH_NATS_URL:-nats://127.0.0.1:4222}"
