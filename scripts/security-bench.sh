#!/usr/bin/env bash
# What security costs: the same ringkv-bench workloads on a plain local
# cluster and on one with everything docs/operations.md describes turned on —
# TLS on every port, peer mutual TLS, KV and admin tokens — each a 3-node
# cluster with a router (scripts/lib/demo-cluster.sh), one after the other on
# this machine. Prints the secure/plain throughput ratios and writes them to
# docs/benchmarks-security.md unless --out says otherwise.
#
#   scripts/security-bench.sh [--duration S] [--warmup S] [--workloads LIST]
#                             [--concurrency LIST] [--out FILE]
#
# Needs openssl (for a throwaway CA; installed from Debian's packages when
# missing). Everything it starts runs under temporary directories and is
# stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=10 warmup=2 workloads=write,read,stale-read concurrency=16,64,256
out=docs/benchmarks-security.md
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --workloads) workloads=$2; shift 2 ;;
    --concurrency) concurrency=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) sed -n '2,14p' "$0" >&2; exit 2 ;;
  esac
done

command -v python3 >/dev/null || { echo "security-bench: needs python3 (for the report)" >&2; exit 2; }
if ! command -v openssl >/dev/null; then
  echo "security-bench: installing openssl from Debian's packages (for a throwaway CA)..." >&2
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null
fi

echo "building (release)..."
cargo build --release -q -p ringkv-cli --bin ringkv
cargo build --release -q -p ringkv-client --features bench --bin ringkv-bench
results=$(mktemp -d -t ringkv-security-bench.XXXXXX)
trap 'rm -rf "$results"' EXIT

# One mode in a subshell of its own: the cluster library's exit trap stops
# that mode's processes and removes its directory before the next starts.
run_mode() (
  local mode=$1
  demo_name=security-bench-$mode
  demo_bin=${CARGO_TARGET_DIR:-target}/release
  # shellcheck source=scripts/lib/demo-cluster.sh
  source scripts/lib/demo-cluster.sh
  local bench_flags=()
  if [ "$mode" = secure ]; then
    local pki=$work/pki
    mkdir -p "$pki"
    # The commands of docs/operations.md (Security), for 127.0.0.1.
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
      -subj /CN=ringkv-bench-ca -keyout "$pki/ca.key" -out "$pki/ca.pem" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=ringkv-bench-node \
      -keyout "$pki/node.key" -out "$pki/node.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' >"$pki/ext"
    openssl x509 -req -in "$pki/node.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" -CAcreateserial \
      -days 2 -out "$pki/node.pem" -extfile "$pki/ext" 2>/dev/null
    openssl rand -hex 32 >"$pki/kv.token"
    openssl rand -hex 32 >"$pki/admin.token"
    demo_server_flags=(--tls-cert "$pki/node.pem" --tls-key "$pki/node.key" --tls-ca "$pki/ca.pem"
      --peer-mtls --kv-token-file "$pki/kv.token" --admin-token-file "$pki/admin.token")
    demo_cli_flags=(--tls-ca "$pki/ca.pem" --token-file "$pki/admin.token")
    bench_flags=(--tls-ca "$pki/ca.pem" --token-file "$pki/kv.token")
  fi
  echo "$mode: starting a 3-node cluster and a router..."
  demo_start_cluster
  "$bin/ringkv-bench" ${bench_flags[@]+"${bench_flags[@]}"} \
    --target "ringkv-router:router-$mode=$router" \
    --target "ringkv-direct:direct-$mode=127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2)),127.0.0.1:$((base + 3))" \
    --workload "$workloads" --concurrency "$concurrency" --duration "$duration" --warmup "$warmup" \
    --preload --json "$results/$mode.json" --markdown "$results/$mode.md" >/dev/null
)

run_mode plain
run_mode secure

# Throughput of each secure run over the plain run of the same target,
# workload and concurrency.
report=$(python3 - "$results/plain.json" "$results/secure.json" <<'PY'
import json, sys
plain = {(r["target"].split("-")[0], r["workload"], r["concurrency"]): r for r in json.load(open(sys.argv[1]))}
print("| target | workload | concurrency | plain ops/s | secure ops/s | secure/plain | plain p99 ms | secure p99 ms |")
print("|---|---|---|---|---|---|---|---|")
for s in json.load(open(sys.argv[2])):
    key = (s["target"].split("-")[0], s["workload"], s["concurrency"])
    p = plain[key]
    print(f"| {key[0]} | {key[1]} | {key[2]} | {p['ops_per_sec']:.0f} | {s['ops_per_sec']:.0f} "
          f"| {s['ops_per_sec'] / p['ops_per_sec'] if p['ops_per_sec'] else float('nan'):.2f} | {p['p99_ms']:.2f} | {s['p99_ms']:.2f} |")
PY
)
echo "$report"
cpu_model=$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)
cat >"$out" <<MD
# What security costs

$(date -u +%Y-%m-%d), $(nproc) cores, $cpu_model:
\`scripts/security-bench.sh --duration $duration --warmup $warmup --workloads $workloads --concurrency $concurrency\`.
Two local clusters of 3 nodes and a router (release build), one after the other:
plain, and secure (TLS on every port, \`--peer-mtls\`, KV and admin tokens;
ringkv-bench presents the KV token and verifies the CA). \`router\` = through the
router, \`direct\` = the client library to the nodes. Client, router and nodes share
the machine's cores, so encryption competes with everything else.

$report
MD
echo "written to $out"
