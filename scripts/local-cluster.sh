#!/usr/bin/env bash
# Starts a local 3-node ringkv cluster with data under ./ringkv-data (kept across
# runs), forms it on first start, and stops every node on Ctrl-C.
#   scripts/local-cluster.sh [--debug]
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
[ "${1:-}" = "--debug" ] && profile=debug
if [ "$profile" = release ]; then cargo build --release -q -p ringkv-node -p ringkv-cli; else cargo build -q -p ringkv-node -p ringkv-cli; fi
bin="target/$profile"
data="${RINGKV_DATA:-ringkv-data}"
ports=(7001 7002 7003)
pids=()

stop() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop EXIT INT TERM

nodes=""
for i in 1 2 3; do
  addr="127.0.0.1:${ports[$((i-1))]}"
  mkdir -p "$data/n$i"
  "$bin/ringkv-node" --id "$i" --listen "$addr" --data-dir "$data/n$i" 2>>"$data/n$i.log" &
  pids+=($!)
  nodes+="${nodes:+,}$i=$addr"
done

# Wait until every node answers, then form the cluster if it is new.
addrs="127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003"
for _ in $(seq 100); do
  if "$bin/ringkv" --addr "$addrs" cluster status >/dev/null 2>&1; then break; fi
  if [ ! -e "$data/.initialized" ] && "$bin/ringkv" cluster init --nodes "$nodes" 2>/dev/null; then
    touch "$data/.initialized"; break
  fi
  sleep 0.1
done
echo "ringkv is up: RINGKV_ADDR=$addrs (logs in $data/n*.log); Ctrl-C stops it"
wait
