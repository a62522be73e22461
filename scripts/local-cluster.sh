#!/usr/bin/env bash
# Starts a local 3-node ringkv cluster (and router) with data under ./ringkv-data
# (kept across runs), forms it on first start, and stops everything on Ctrl-C.
# A thin wrapper over `ringkv dev`, kept for old habits; extra arguments go to it.
#   scripts/local-cluster.sh [--debug] [ringkv dev flags...]
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
if [ "${1:-}" = "--debug" ]; then profile=debug; shift; fi
if [ "$profile" = release ]; then cargo build --release -q -p ringkv-cli; else cargo build -q -p ringkv-cli; fi
exec "target/$profile/ringkv" dev --data-dir "${RINGKV_DATA:-ringkv-data}" "$@"
