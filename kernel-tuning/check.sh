#!/usr/bin/env bash
# Compares this machine with what N connections need (open-file limits, nr_open, file-max,
# tcp_mem vs N x per-socket cost, accept queues, io_uring, ephemeral ports for a load
# generator) and prints what to change. Exits 1 when the machine cannot hold N.
# Usage: ./check.sh N                  (as a gateway node)
#        ./check.sh N --loadgen 1 --sources 64
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:?usage: check.sh CONNECTIONS [--loadgen DESTINATIONS --sources S]}
shift
bin=target/release/ringgate
[[ -x $bin ]] || cargo build --release -q -p ringgate
exec "$bin" doctor --connections "$n" "$@"
