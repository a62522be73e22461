#!/usr/bin/env bash
# The chat demo: two copies of the stateless WebSocket gateway
# (client/examples/chat_app.rs) relay a room's messages through ringkv
# pub/sub on a local 3-node cluster with a router. A browser stand-in
# (client/examples/chat_check.rs) joins the room on both gateways and checks
# each line reaches both sockets with one sequence number; then ringkv node 2
# is killed and the check runs again, this time also dropping a socket and
# rejoining from its last sequence number. Exits 0 on success; runs in CI.
#
#   bash scripts/chat-demo.sh
#
# Needs only the Rust toolchain. Everything it starts runs under a temporary
# directory and is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "building ringkv and the examples..."
cargo build -q -p ringkv-cli --bin ringkv
cargo build -q -p ringkv-client --example chat_app --example chat_check
demo_name=chat-demo
# shellcheck source=scripts/lib/demo-cluster.sh
source scripts/lib/demo-cluster.sh
demo_start_cluster

gateways=()
for i in 1 2; do
  addr=127.0.0.1:$((base + 5 + i))
  demo_spawn "gateway-$i" "$bin/examples/chat_app" --listen "$addr" --ringkv "$router"
  gateways+=("$addr")
done
for addr in "${gateways[@]}"; do
  demo_retry bash -c "exec 3<>/dev/tcp/${addr%:*}/${addr#*:}"
done

echo "--- two sockets, one per gateway"
"$bin/examples/chat_check" "${gateways[@]}"

echo "--- kill ringkv node 2, then again, with a socket dropped and rejoined"
kill -9 "$node2_pid"
wait "$node2_pid" 2>/dev/null || true
"$bin/examples/chat_check" "${gateways[@]}" --resume
echo "PASS: the gateways relayed every message through ringkv, across a node kill and a rejoin"
