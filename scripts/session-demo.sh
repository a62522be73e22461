#!/usr/bin/env bash
# The stateless-app demo: three copies of client/examples/session_app.rs behind
# a plain round-robin proxy (client/examples/rr_proxy.rs), their sessions in a
# local 3-node ringkv cluster with a router. Logs a user in, kills one app
# copy and one ringkv node, and checks the user is still logged in on every
# request. Exits 0 on success; runs in CI (.ci/run).
#
#   bash scripts/session-demo.sh
#
# Needs only the Rust toolchain and curl. Everything it starts runs under a
# temporary directory and is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v curl >/dev/null || { echo "session-demo: needs curl" >&2; exit 2; }

echo "building ringkv and the examples..."
cargo build -q -p ringkv-cli --bin ringkv
cargo build -q -p ringkv-client --example session_app --example rr_proxy
demo_name=session-demo
# shellcheck source=scripts/lib/demo-cluster.sh
source scripts/lib/demo-cluster.sh
proxy=127.0.0.1:$((base + 5))
demo_start_cluster

apps=()
for i in 1 2 3; do
  addr=127.0.0.1:$((base + 5 + i))
  demo_spawn "app-$i" "$bin/examples/session_app" --listen "$addr" --ringkv "$router" --name "app-$i"
  if [ "$i" = 1 ]; then app1_pid=$last_pid; fi
  apps+=("$addr")
done
demo_spawn proxy "$bin/examples/rr_proxy" "$proxy" "${apps[@]}"
for addr in "${apps[@]}" "$proxy"; do
  demo_retry curl -s -o /dev/null --max-time 2 "http://$addr/me"
done

jar=$work/cookies
echo "--- log in through the proxy"
curl -sf --max-time 10 -c "$jar" -X POST "http://$proxy/login?user=alice"
echo "--- who am I? (round robin over the three copies)"
for _ in 1 2 3; do curl -sf --max-time 10 -b "$jar" "http://$proxy/me"; done

echo "--- kill app-1 and ringkv node 2"
kill -9 "$app1_pid" "$node2_pid"
wait "$app1_pid" "$node2_pid" 2>/dev/null || true

echo "--- who am I now?"
for _ in 1 2 3 4 5 6; do
  answer=$(curl -s --max-time 15 -b "$jar" "http://$proxy/me")
  echo "$answer"
  case "$answer" in
    alice*) ;;
    *) echo "FAIL: the session was lost" >&2; exit 1 ;;
  esac
done
echo "PASS: still logged in after losing an app copy and a ringkv node"
