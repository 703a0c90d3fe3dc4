#!/usr/bin/env bash
# BENCHMARKS.md section 8: the Kafka broker class, KafkaChannel and KafkaSource against Tansu,
# beside the embedded class, in one run. Needs a release build of the loadtest example:
#   cargo build --release --example loadtest
#   source .ci/services/kafka.sh   # Tansu on 127.0.0.1:9092 (EVMESH_TEST_KAFKA)
#   bench/kafka.sh                  # SECS=8 C=64 by default
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release/examples/loadtest
secs="${SECS:-8}"
c="${C:-64}"
export EVMESH_KAFKA_BOOTSTRAP="${EVMESH_TEST_KAFKA:-${EVMESH_KAFKA_BOOTSTRAP:-127.0.0.1:9092}}"
step() {
  echo "## $* (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
  "$bin" "$@"
}
date -u
step e2e --seconds "$secs" --concurrency "$c"
step e2e --class Kafka --instances 1 --partitions 4 --seconds "$secs" --concurrency "$c"
step e2e --class Kafka --instances 2 --partitions 4 --seconds "$secs" --concurrency "$c"
step sequence --steps 3 --seconds "$secs" --concurrency "$c"
step sequence --steps 3 --channel KafkaChannel --seconds "$secs" --concurrency "$c"
step kafkasource --records "${RECORDS:-20000}"
date -u
