# Shared by the load-run scripts (sourced, from the repository root): the settings they have in
# common (each overridable from the environment), HTTP through bash's /dev/tcp (so a machine
# needs no curl), and the one-trigger mesh they load. `count` asks the counting sink at $SINK
# (`loadtest sink`).

R=${TARGET:-target}/release
LOADTEST=${LOADTEST:-$R/examples/loadtest}
EVMESH=${EVMESH:-$R/evmesh}
WRK=${WRK:-wrk}
LUA=${LUA:-bench/ce-post.lua}
CONN=${CONN:-128}
THREADS=${THREADS:-4}
SINK_CPUS=${SINK_CPUS:-8-11}
LOAD_CPUS=${LOAD_CPUS:-12-15}
SERVE_FLAGS=${SERVE_FLAGS:-}
SINK=127.0.0.1:18082

# trigger_yaml FILE: one broker, one trigger to the sink. It replays from the earliest event,
# which on a fresh data dir changes nothing and after a fill (threads.sh MODE=replay) delivers
# the whole log.
trigger_yaml() {
  cat >"$1" <<YAML
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: t0
  annotations: {evmesh.dev/replay-from: earliest}
spec:
  broker: default
  subscriber: {uri: "http://$SINK/t0"}
YAML
}

# http_get HOST:PORT PATH: the whole answer to a GET
http_get() {
  exec 3<>"/dev/tcp/${1%:*}/${1##*:}" || return 1
  printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$2" "$1" >&3
  cat <&3
  exec 3<&-
}

count() { # what the sink has counted
  local v
  v=$(http_get "$SINK" /count 2>/dev/null | tail -1)
  [[ $v =~ ^[0-9]+$ ]] && echo "$v" || echo 0
}

wait_port() { # wait until something answers on $1 (host:port)
  for _ in $(seq 100); do
    http_get "$1" / >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "nothing answers on $1" >&2
  return 1
}

wait_ready() { # evmesh: until /readyz answers 200
  for _ in $(seq 100); do
    http_get "$1" /readyz 2>/dev/null | head -1 | grep -q " 200" && return 0
    sleep 0.1
  done
  echo "evmesh on $1 not ready" >&2
  return 1
}
