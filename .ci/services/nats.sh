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
# One file-stored stream that outlives every test: nats-server 2.9 removes the account's store
# directory when its last stream is deleted, and a stream created by another test at that moment
# fails ("could not create storage directory - mkdir .../jetstream/$G/streams: no such file or
# directory"; seen in a CI rehearsal, where a Sequence's channel then opened only on retry). The
# tests create and delete their own streams concurrently, so keep the directory from emptying.
python3 - <<'NATS_KEEP' || echo "nats.sh: could not create the keep-alive stream; tests may race nats-server's store cleanup" >&2
import json, socket, sys
cfg = json.dumps({"name": "EVMESH_CI_KEEP", "subjects": ["evmesh.ci.keep"], "storage": "file", "max_msgs": 1})
s = socket.create_connection(("127.0.0.1", 4222), timeout=10)
f = s.makefile("rb")
f.readline()  # INFO
s.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\nSUB _INBOX.evmesh.keep 1\r\n')
s.sendall(("PUB $JS.API.STREAM.CREATE.EVMESH_CI_KEEP _INBOX.evmesh.keep %d\r\n%s\r\n" % (len(cfg), cfg)).encode())
while True:
    line = f.readline()
    if not line:
        sys.exit("nats.sh: no answer from JetStream")
    if line.startswith(b"PING"):
        s.sendall(b"PONG\r\n")
    elif line.startswith(b"MSG"):
        answer = f.read(int(line.split()[-1]) + 2).decode()
        if '"error"' in answer and "already in use" not in answer:
            sys.exit("nats.sh: JetStream refused the keep-alive stream: " + answer)
        print("nats.sh: stream EVMESH_CI_KEEP kept (" + ("created" if '"error"' not in answer else "exists") + ")")
        break
NATS_KEEP
export EVMESH_NATS_URL="${EVMESH_NATS_URL:-nats://127.0.0.1:4222}"
