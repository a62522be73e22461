#!/usr/bin/env bash
# Benchmarks ringkv side by side with etcd and Redis on this machine, all on
# loopback, with one tool (ringkv-bench) and one run:
#   - ringkv, 3 nodes + router (`ringkv dev`): through the router, and through
#     the client library straight to the nodes;
#   - etcd, 3 members, requests sent to the leader;
#   - Redis with appendfsync always, and Redis without persistence.
# Installs etcd and Redis from Debian packages when missing (apt-get; root or
# sudo). Writes the results to docs/benchmarks.md (dated, with the machine and
# the command) unless --out says otherwise.
#
# Then, on a fresh 3-node cluster, the operational numbers (ringkv-ops-bench):
# RSS and bytes per key with --ops-keys keys of 256 B (beside Redis's
# used_memory per key for the same keys), restart-to-serving of a loaded node,
# the failover window after killing a leader, and write throughput during a
# rebalance onto a fourth node. --ops-keys 0 skips them.
#
# Last, watches and pub/sub (ringkv-stream-bench): memory per idle watch and
# per idle subscription at --streams of each, and the fan-out of one channel
# to 1000 subscribers through the router. --streams 0 skips them.
#
#   scripts/bench.sh [--duration S] [--warmup S] [--workloads LIST]
#                    [--concurrency LIST] [--keys N] [--ops-keys N]
#                    [--streams N] [--out FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

duration=10 warmup=2 keys=10000 ops_keys=1000000 streams=100000
workloads=write,read,stale-read,ycsb-a,ycsb-b,sessions,hot-key
concurrency=1,16,64,256
out=docs/benchmarks.md
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --workloads) workloads=$2; shift 2 ;;
    --concurrency) concurrency=$2; shift 2 ;;
    --keys) keys=$2; shift 2 ;;
    --ops-keys) ops_keys=$2; shift 2 ;;
    --streams) streams=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) sed -n '2,25p' "$0" >&2; exit 2 ;;
  esac
done

# --- etcd and Redis, from Debian's packages ---------------------------------
missing=()
command -v etcd >/dev/null || missing+=(etcd-server)
command -v etcdctl >/dev/null || missing+=(etcd-client)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-cli >/dev/null || missing+=(redis-tools)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}" >&2
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  # The packages start system services; the benchmark runs its own.
  $sudo systemctl stop etcd redis-server 2>/dev/null || true
  $sudo pkill -x etcd 2>/dev/null || true
  $sudo pkill -x redis-server 2>/dev/null || true
fi

cargo build --release -q --bin ringkv
cargo build --release -q -p ringkv-client --features bench --bin ringkv-bench
cargo build --release -q -p ringkv-tests --bin ringkv-ops-bench --bin ringkv-stream-bench \
  --bin ringkv-test-node --bin ringkv-test-router
bin="${CARGO_TARGET_DIR:-target}/release"

work=$(mktemp -d -t ringkv-bench.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

wait_for() { # what, command...
  local what=$1; shift
  for _ in $(seq 1 150); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "error: $what did not come up (logs in $work)" >&2; exit 3
}

# --- etcd: 3 members ---------------------------------------------------------
cluster=e1=http://127.0.0.1:23801,e2=http://127.0.0.1:23802,e3=http://127.0.0.1:23803
for i in 1 2 3; do
  etcd --name "e$i" --data-dir "$work/etcd$i" \
    --listen-client-urls "http://127.0.0.1:2379$i" --advertise-client-urls "http://127.0.0.1:2379$i" \
    --listen-peer-urls "http://127.0.0.1:2380$i" --initial-advertise-peer-urls "http://127.0.0.1:2380$i" \
    --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token ringkv-bench \
    >"$work/etcd$i.log" 2>&1 &
  pids+=($!)
done
endpoints=127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793
wait_for etcd env ETCDCTL_API=3 etcdctl --endpoints "$endpoints" endpoint health
# The leader first: ringkv-bench sends to the first address.
leader=$(ETCDCTL_API=3 etcdctl --endpoints "$endpoints" endpoint status -w table \
  | awk -F'|' '$6 ~ /true/ { gsub(/ /, "", $2); print $2 }' | head -1)
leader=${leader:-127.0.0.1:23791}
# The leader, then the other members (ringkv-bench defragments every member
# between runs and sends requests to the first).
etcd_members=$leader$(tr ',' '\n' <<<"$endpoints" | grep -vx "$leader" | sed 's/^/,/' | tr -d '\n')

# --- Redis: appendfsync always, and no persistence ---------------------------
mkdir -p "$work/redis-aof" "$work/redis-mem"
redis-server --port 26379 --dir "$work/redis-aof" --appendonly yes --appendfsync always --save "" \
  >"$work/redis-aof.log" 2>&1 &
pids+=($!)
redis-server --port 26380 --dir "$work/redis-mem" --appendonly no --save "" >"$work/redis-mem.log" 2>&1 &
pids+=($!)
wait_for redis-aof redis-cli -p 26379 ping
wait_for redis-mem redis-cli -p 26380 ping

# --- ringkv: 3 nodes + router ------------------------------------------------
"$bin/ringkv" dev --data-dir "$work/ringkv" --base-port 27000 --shards 32 >"$work/ringkv-dev.log" 2>&1 &
pids+=($!)
wait_for ringkv "$bin/ringkv" --addr 127.0.0.1:27000 put bench-ready 1

# --- the machine -------------------------------------------------------------
fsync_us=$(python3 - "$work" <<'EOF' 2>/dev/null || echo "?"
import os, sys, time
path = os.path.join(sys.argv[1], "fsync-probe")
fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
block = b"x" * 4096
samples = []
for _ in range(500):
    os.write(fd, block)
    t = time.perf_counter()
    os.fdatasync(fd)
    samples.append((time.perf_counter() - t) * 1e6)
samples.sort()
print(f"p50 {samples[len(samples)//2]:.0f} µs, p99 {samples[int(len(samples)*0.99)]:.0f} µs")
EOF
)
cpus=$(nproc)
cpu_model=$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)
mem=$(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)

# --- run -----------------------------------------------------------------------
"$bin/ringkv-bench" \
  --target ringkv-router=127.0.0.1:27000 \
  --target ringkv-direct=127.0.0.1:27001,127.0.0.1:27002,127.0.0.1:27003 \
  --target "etcd=$etcd_members" \
  --target redis:redis-aof=127.0.0.1:26379 \
  --target redis:redis-mem=127.0.0.1:26380 \
  --workload "$workloads" --concurrency "$concurrency" \
  --duration "$duration" --warmup "$warmup" --keys "$keys" --preload \
  --json "$work/results.json" --markdown "$work/results.md"

# --- operational numbers -------------------------------------------------------
ops=""
if [ "$ops_keys" -gt 0 ]; then
  # The workload clusters are no longer needed; stop them so the loaded one has the machine.
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
  # Redis: used_memory per key for the same number of 16 B keys with 256 B values.
  redis-server --port 26381 --save "" --appendonly no >"$work/redis-mem2.log" 2>&1 &
  pids+=($!)
  wait_for redis-mem2 redis-cli -p 26381 ping
  used_memory() { redis-cli -p 26381 info memory | awk -F: '/^used_memory:/ { print $2 }' | tr -d '\r'; }
  base=$(used_memory)
  python3 - "$ops_keys" <<'EOF' | redis-cli -p 26381 --pipe >/dev/null
import sys
n = int(sys.argv[1])
value = "v" * 256
for i in range(n):
    sys.stdout.write("*3\r\n$3\r\nSET\r\n$16\r\nk%015d\r\n$256\r\n%s\r\n" % (i, value))
EOF
  loaded=$(used_memory)
  count=$(redis-cli -p 26381 dbsize)
  redis_per_key=$(( (loaded - base) / count ))
  echo "redis: $count keys, used_memory $(( base >> 20 )) -> $(( loaded >> 20 )) MiB, $redis_per_key B per key" >&2
  "$bin/ringkv-ops-bench" --keys "$ops_keys" --value-bytes 256 --json "$work/ops.json" | tee "$work/ops.txt" >&2
  ops=$(python3 - "$work/ops.json" "$redis_per_key" "$ops_keys" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1])); redis = float(sys.argv[2]); keys = int(sys.argv[3])
per_key = r["bytes_per_key_median"]
print("| measurement | ringkv | reference | target |")
print("|---|---|---|---|")
print(f"| bytes per key, {keys:,} keys of 256 B (RSS growth per node) | {per_key:,.0f} B | Redis used_memory: {redis:,.0f} B ({per_key / redis:.2f}×) | ≤ 2× Redis |")
print(f"| RSS per node after the load | {', '.join(f'{m:,.0f} MiB' for m in r['rss_mib_after_load'])} | | |")
print(f"| restart of a node with {keys:,} keys, until it serves | {r['restart_to_serving_secs']:.2f} s | | < 5 s |")
print(f"| failover: leader killed → first acknowledged write per shard it led | median {r['failover_median_secs']:.2f} s, worst {r['failover_worst_secs']:.2f} s | | |")
print(f"| writes/s (64 clients) before / during a rebalance onto a 4th node | {r['rebalance_before_writes_per_sec']:,.0f} / {r['rebalance_during_writes_per_sec']:,.0f} ({r['rebalance_moves']} moves in {r['rebalance_secs']:.1f} s, {r['rebalance_errors']} errors) | | |")
print(f"| load rate (64 clients, client library) | {r['load_writes_per_sec']:,.0f} writes/s | | |")
EOF
)
fi

streams_text=""
if [ "$streams" -gt 0 ]; then
  "$bin/ringkv-stream-bench" --watches "$streams" --subscriptions "$streams" | tee "$work/streams.txt" >&2
  streams_text=$(sed 's/^/- /' "$work/streams.txt")
fi

mkdir -p "$(dirname "$out")"
{
  echo "# Benchmarks: ringkv, etcd and Redis on one machine"
  echo
  echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') with \`scripts/bench.sh --duration $duration --warmup $warmup --workloads $workloads --concurrency $concurrency --keys $keys\` at commit $(git -C "$repo" rev-parse --short HEAD)."
  echo
  echo "| | |"
  echo "|---|---|"
  echo "| machine | $cpus CPUs ($cpu_model), $mem, $(uname -sr) |"
  echo "| disk | fdatasync of a 4 KiB append: $fsync_us |"
  echo "| ringkv | 3 nodes + router (\`ringkv dev\`, 32 shards), release build; \`ringkv-direct\` = client library to the nodes |"
  echo "| etcd | $(etcd --version 2>/dev/null | head -1), 3 members, requests to the leader ($leader), compacted to the current revision and defragmented before every run |"
  echo "| Redis | $(redis-server --version | awk '{print $3}'), \`redis-aof\` = appendfsync always, \`redis-mem\` = no persistence |"
  echo "| load | closed loop, one request per round trip per client, ${keys} keys of 16 B, 256 B values, ${warmup} s warm-up, ${duration} s measured per cell |"
  cat "$work/results.md"
  if [ -n "$ops" ]; then
    echo
    echo "## Operations: memory, restart, failover, rebalance"
    echo
    echo "A fresh 3-node cluster (32 shards, 3 replicas) loaded with $ops_keys keys by \`ringkv-ops-bench\`; Redis loaded with the same keys (\`redis-cli --pipe\`)."
    echo
    echo "$ops"
  fi
  if [ -n "$streams_text" ]; then
    echo
    echo "## Watches and pub/sub"
    echo
    echo "A fresh 3-node cluster (32 shards) with a router, by \`ringkv-stream-bench --watches $streams --subscriptions $streams\` (1000 channels; fan-out: 1000 subscribers of one channel through the router, 8 publishers, 64 B messages, 10 s)."
    echo
    echo "$streams_text"
  fi
} >"$out"
echo "results written to $out" >&2
