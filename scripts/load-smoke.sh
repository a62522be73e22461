#!/usr/bin/env bash
# Load smoke test: builds the release binaries, then on loopback
#   1. one node  (8 shards, 1 replica):  put with concurrency 1 and 64
#   2. three nodes (8 shards, 3 replicas): the same two runs
#   3. restart time: a fresh one-node cluster, preloaded with RESTART_KEYS keys
#      (256 B values, default snapshot settings), stopped with SIGTERM, restarted;
#      the time from process start until a linearizable `ringkv get` of a
#      preloaded key succeeds. Then the same on another fresh cluster with SIGKILL.
# and prints a results table. Every node and temp dir is removed on exit.
#
#   scripts/load-smoke.sh [--no-build]
#
# Environment: LOAD_DURATION_S (10), LOAD_WARMUP_S (1), RESTART_KEYS (100000),
# BASE_PORT (17001; uses BASE_PORT..BASE_PORT+32), CARGO_TARGET_DIR (target).
set -euo pipefail
cd "$(dirname "$0")/.."

build=1
for arg in "$@"; do
  case "$arg" in
    --no-build) build=0 ;;
    -h | --help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done

duration_s="${LOAD_DURATION_S:-10}"
warmup_s="${LOAD_WARMUP_S:-1}"
restart_keys="${RESTART_KEYS:-100000}"
base_port="${BASE_PORT:-17001}"
target_dir="${CARGO_TARGET_DIR:-target}"
bin="$target_dir/release"

if [ "$build" = 1 ]; then
  echo "building release binaries (ringkv-node, ringkv, ringkv-load)..."
  cargo build --release -q -p ringkv-node -p ringkv-cli --bins
fi
for b in ringkv-node ringkv ringkv-load; do
  [ -x "$bin/$b" ] || { echo "missing $bin/$b (build first or drop --no-build)" >&2; exit 1; }
done

tmp="$(mktemp -d /tmp/ringkv-load-smoke.XXXXXX)"
declare -A node_pid=() # port -> pid of a running node
results=()             # table rows
restart_rows=()

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  for port in "${!node_pid[@]}"; do kill -TERM "${node_pid[$port]}" 2>/dev/null || true; done
  for _ in $(seq 50); do
    local alive=0
    for port in "${!node_pid[@]}"; do kill -0 "${node_pid[$port]}" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for port in "${!node_pid[@]}"; do kill -KILL "${node_pid[$port]}" 2>/dev/null || true; done
  { wait || true; } 2>/dev/null
  rm -rf "$tmp"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Run private copies: a shared target dir may get rebuilt from elsewhere meanwhile.
mkdir "$tmp/bin"
cp "$bin/ringkv-node" "$bin/ringkv" "$bin/ringkv-load" "$tmp/bin/"
bin="$tmp/bin"

now_ms() { echo $(($(date +%s%N) / 1000000)); }
clk_tck="$(getconf CLK_TCK)"

port_open() { (: <"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start_node ID PORT DIR: starts a node in the background, logging to DIR.log.
start_node() {
  local id=$1 port=$2 dir=$3
  mkdir -p "$dir"
  "$bin/ringkv-node" --id "$id" --listen "127.0.0.1:$port" --data-dir "$dir" </dev/null 2>>"$dir.log" >/dev/null &
  node_pid[$port]=$!
}

# stop_node PORT SIGNAL: signals the node and waits (30 s at most, then SIGKILL);
# sets $stop_ms to how long it took to exit. (Not for a subshell: it reaps the pid.)
stop_node() {
  local port=$1 sig=$2 pid=${node_pid[$1]} t0
  t0=$(now_ms)
  # (stderr off: bash reports a job killed by a signal as "Killed" otherwise)
  {
    kill "-$sig" "$pid" || true
    for _ in $(seq 3000); do kill -0 "$pid" || break; sleep 0.01; done
  } 2>/dev/null
  if kill -0 "$pid" 2>/dev/null; then
    echo "node on port $port ignored SIG$sig for 30 s; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  { wait "$pid" || true; } 2>/dev/null
  unset "node_pid[$port]"
  stop_ms=$(($(now_ms) - t0))
}

# node_cpu_ticks PORT...: user+system clock ticks used so far by those nodes.
node_cpu_ticks() {
  local total=0 port ticks
  for port in "$@"; do
    ticks=$(awk '{print $14 + $15}' "/proc/${node_pid[$port]}/stat" 2>/dev/null || echo 0)
    total=$((total + ticks))
  done
  echo "$total"
}

# machine_busy_ticks: clock ticks all CPUs spent busy (not idle, not iowait) so far.
machine_busy_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }

# wait_leaders ADDRS DEADLINE_S: until `cluster status` shows a leader for every
# shard (the meta shard included).
wait_leaders() {
  local addrs=$1 deadline=$(($(date +%s) + $2)) status=""
  while [ "$(date +%s)" -lt "$deadline" ]; do
    if status=$("$bin/ringkv" --addr "$addrs" --timeout-ms 2000 cluster status 2>/dev/null) &&
      [ "$(awk '/^SHARD/ {t=1; next} t && NF >= 3 && $2 != "-" {n++} END {print n+0}' <<<"$status")" -ge 9 ] &&
      [ "$(awk '/^SHARD/ {t=1; next} t && NF >= 2 && $2 == "-" {n++} END {print n+0}' <<<"$status")" -eq 0 ]; then
      return 0
    fi
    sleep 0.1
  done
  echo "no leader for every shard after $2 s:" >&2
  echo "$status" >&2
  return 1
}

# start_cluster NAME N REPLICAS FIRST_PORT: starts N nodes, forms the cluster
# (8 shards), waits for every shard's leader; sets $addrs and $ports.
start_cluster() {
  local name=$1 n=$2 replicas=$3 first=$4 i port nodes=""
  addrs="" ports=()
  for i in $(seq "$n"); do
    port=$((first + i - 1))
    if port_open "$port"; then echo "port $port is in use (set BASE_PORT)" >&2; exit 1; fi
    start_node "$i" "$port" "$tmp/$name/n$i"
    nodes+="${nodes:+,}$i=127.0.0.1:$port"
    addrs+="${addrs:+,}127.0.0.1:$port"
    ports+=("$port")
  done
  for port in "${ports[@]}"; do
    for _ in $(seq 300); do port_open "$port" && break; sleep 0.05; done
  done
  "$bin/ringkv" cluster init --nodes "$nodes" --shards 8 --replicas "$replicas" >/dev/null
  wait_leaders "$addrs" 60
}

stop_cluster() {
  local port
  for port in "${ports[@]}"; do stop_node "$port" TERM; done
}

# jget JSON FIELD: a scalar field of ringkv-load's JSON line.
jget() { sed -n "s/.*\"$2\":\(\"[^\"]*\"\|[^,}]*\).*/\1/p" <<<"$1"; }

# run_put LABEL CONCURRENCY: one measured put run against $addrs; adds a row.
run_put() {
  local label=$1 conc=$2 out="$tmp/load.out" err="$tmp/load.err" timef="$tmp/load.time"
  local t0 t1 c0 c1 m0 m1 json load_cpu node_cpu other_cpu wall_ms
  c0=$(node_cpu_ticks "${ports[@]}")
  m0=$(machine_busy_ticks)
  t0=$(now_ms)
  local TIMEFORMAT='%U %S'
  { time "$bin/ringkv-load" --addr "$addrs" --op put --concurrency "$conc" --duration-s "$duration_s" \
    --warmup-s "$warmup_s" --keyspace 10000 --value-size 256 >"$out" 2>"$err" || true; } 2>"$timef"
  t1=$(now_ms)
  c1=$(node_cpu_ticks "${ports[@]}")
  m1=$(machine_busy_ticks)
  wall_ms=$((t1 - t0))
  sed -n 1p "$out" | sed "s/^/  $label: /"
  [ -s "$err" ] && sed 's/^/    stderr: /' "$err" | head -5
  json=$(grep '^{' "$out" || echo '{}')
  node_cpu=$(awk -v d="$((c1 - c0))" -v hz="$clk_tck" -v ms="$wall_ms" 'BEGIN {printf "%.0f", d / hz / (ms / 1000) * 100}')
  load_cpu=$(awk -v ms="$wall_ms" '{printf "%.0f", ($1 + $2) / (ms / 1000) * 100}' "$timef")
  # Everything else the machine did meanwhile (other processes, kernel threads):
  # a check that the numbers were not taken on a busy machine.
  other_cpu=$(awk -v m="$((m1 - m0 - c1 + c0))" -v hz="$clk_tck" -v ms="$wall_ms" -v load="$load_cpu" \
    'BEGIN {o = m / hz / (ms / 1000) * 100 - load; printf "%.0f", o < 0 ? 0 : o}')
  results+=("$(printf '%-7s %4s %9s %8s %8s %8s %9s %7s %9s %9s %10s' "$label" "$conc" \
    "$(jget "$json" ops_per_s)" "$(jget "$json" p50_ms)" "$(jget "$json" p90_ms)" "$(jget "$json" p99_ms)" \
    "$(jget "$json" max_ms)" "$(jget "$json" errors)" "$node_cpu%" "$load_cpu%" "$other_cpu%")")
}

echo "data in $tmp ($(df -T "$tmp" | awk 'NR == 2 {print $2}'), removed on exit); $(nproc) CPUs," \
  "load average $(cut -d' ' -f1-3 /proc/loadavg); runs: ${warmup_s} s warm-up + ${duration_s} s measured"

echo "== 1 node, 8 shards, 1 replica"
start_cluster one 1 1 "$base_port"
run_put 1-node 1
run_put 1-node 64
stop_cluster

echo "== 3 nodes, 8 shards, 3 replicas"
start_cluster three 3 3 $((base_port + 10))
run_put 3-node 1
run_put 3-node 64
stop_cluster

# restart_case SIGNAL FIRST_PORT: preload, stop with SIGNAL, restart, time the
# first successful linearizable get; adds a row.
restart_case() {
  local sig=$1 first=$2 name="restart-$1" port=$2 dir t_start t_ok ready_ms snaps size
  local probe=key0000000000000 ok=0 pre_json check_json
  echo "== restart after SIG$sig: 1 node, 8 shards, $restart_keys keys"
  start_cluster "$name" 1 1 "$first"
  dir="$tmp/$name/n1"
  pre_json=$("$bin/ringkv-load" --addr "$addrs" --preload-only --keyspace "$restart_keys" --value-size 256 \
    --concurrency 64 2>"$tmp/preload.err" | grep '^{' || echo '{}')
  echo "  preload: $(jget "$pre_json" preload_keys) keys in $(jget "$pre_json" preload_s) s, errors $(jget "$pre_json" preload_errors)"
  snaps=$(find "$dir/snapshots" -type f 2>/dev/null | wc -l)
  size=$(du -sh "$dir" | cut -f1)
  stop_node "$port" "$sig"
  t_start=$(now_ms)
  start_node 1 "$port" "$dir"
  local deadline=$((t_start + 120000))
  while [ "$(now_ms)" -lt "$deadline" ]; do
    if "$bin/ringkv" --addr "$addrs" --timeout-ms 250 get "$probe" >/dev/null 2>&1; then ok=1; break; fi
    kill -0 "${node_pid[$port]}" 2>/dev/null || { echo "  node exited on restart; log:" >&2; tail -20 "$dir.log" >&2; break; }
    sleep 0.01
  done
  t_ok=$(now_ms)
  ready_ms=$([ "$ok" = 1 ] && echo $((t_ok - t_start)) || echo "FAILED")
  # After restart: are the preloaded keys all there? (random linearizable gets)
  check_json=$("$bin/ringkv-load" --addr "$addrs" --op get --keyspace "$restart_keys" --concurrency 16 \
    --duration-s 2 --warmup-s 0 2>/dev/null | grep '^{' || echo '{}')
  echo "  stop took ${stop_ms} ms; first get after ${ready_ms} ms; afterwards $(jget "$check_json" ops) gets:" \
    "$(jget "$check_json" not_found) not found, $(jget "$check_json" errors) errors"
  restart_rows+=("$(printf '%-8s %7s %9s %6s %7s %9s %13s %10s' "SIG$sig" "$(jget "$pre_json" preload_keys)" \
    "$(jget "$pre_json" preload_s)" "$snaps" "$size" "$stop_ms" "$ready_ms" \
    "$(jget "$check_json" not_found)/$(jget "$check_json" ops)")")
  stop_cluster
}

restart_case TERM $((base_port + 20))
restart_case KILL $((base_port + 30))

echo
echo "put, 256 B values, keyspace 10000, ${duration_s} s measured (latencies in ms;"
echo "CPU in % of one core, $(nproc) cores = $(($(nproc) * 100))%; other-cpu = the rest of the machine meanwhile)"
printf '%-7s %4s %9s %8s %8s %8s %9s %7s %9s %9s %10s\n' cluster conc ops/s p50 p90 p99 max errors node-cpu \
  load-cpu other-cpu
printf '%s\n' "${results[@]}"
echo
echo "restart of a 1-node cluster (8 shards) with default snapshot settings; ready = process start -> first linearizable get"
printf '%-8s %7s %9s %6s %7s %9s %13s %10s\n' signal keys preload_s snaps size stop_ms ready_ms missing
printf '%s\n' "${restart_rows[@]}"
echo
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
