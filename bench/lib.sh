# Shell helpers for the load-run scripts (sourced): HTTP through bash's /dev/tcp, so a machine
# needs no curl. `count` asks the counting sink at $SINK (`loadtest sink`).

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
