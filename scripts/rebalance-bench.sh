#!/usr/bin/env bash
# What a rebalance costs: moves one data shard of --keys keys (default 100k) to
# a new node while a write workload runs, and prints the time, the bytes copied
# and the client latencies before and during the move. Release build.
#   scripts/rebalance-bench.sh [--keys N] [--value-bytes N] [--clients N] [--baseline-secs N]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p ringkv-tests --bins
exec "${CARGO_TARGET_DIR:-target}/release/ringkv-rebalance-bench" "$@"
