#!/usr/bin/env bash
# One chaos run: a contended workload through two routers while nodes are
# killed, paused, partitioned and crashed together; then linearizability,
# lost-write, counter and TTL checks and a replica convergence check.
# --rebalance also adds a node and drains nodes while the faults hit (the
# plans keep running through them) and checks that every plan finishes.
#   scripts/chaos.sh [--duration SECS] [--seed N] [--nodes 3|5] [--rebalance] [--debug]
# Exit status 0 = every check passed. Nodes run from a temp dir and are killed
# when the run ends (or if this script is interrupted).
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --debug) profile=debug; shift ;;
    --rebalance) args+=("$1"); shift ;;
    --duration|--seed|--nodes) args+=("$1" "$2"); shift 2 ;;
    *) echo "usage: scripts/chaos.sh [--duration SECS] [--seed N] [--nodes 3|5] [--rebalance] [--debug]" >&2; exit 2 ;;
  esac
done
flag=()
[ "$profile" = release ] && flag=(--release)
cargo build "${flag[@]}" -q -p ringkv-tests --bins
exec "${CARGO_TARGET_DIR:-target}/$profile/ringkv-chaos" "${args[@]}"
