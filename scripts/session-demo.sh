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
bin=${CARGO_TARGET_DIR:-target}/debug

work=$(mktemp -d -t ringkv-session-demo.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Ports: ten from a random base below the kernel's ephemeral range (32768+),
# so they cannot collide with this machine's outgoing connections.
base=$((20000 + RANDOM % 1200 * 10))
router=127.0.0.1:$base
proxy=127.0.0.1:$((base + 5))

# Fails at once, with its log, if a process we started has exited.
check_alive() {
  local pid name
  for entry in "${started[@]}"; do
    pid=${entry%%:*} name=${entry#*:}
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "session-demo: $name exited:" >&2
      cat "$work/$name.log" >&2
      exit 1
    fi
  done
}
# Runs "$@" until it succeeds, for at most 60 s, failing early if a process died.
retry() {
  for _ in $(seq 120); do
    "$@" >/dev/null 2>&1 && return 0
    check_alive
    sleep 0.5
  done
  echo "session-demo: gave up waiting for: $*" >&2
  cat "$work"/*.log >&2
  exit 1
}
started=()

# The cluster by hand (not `ringkv dev`, which stops everything when a node
# dies): three nodes, `cluster init`, one router.
nodes=127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2)),127.0.0.1:$((base + 3))
for i in 1 2 3; do
  "$bin/ringkv" node --id "$i" --listen "127.0.0.1:$((base + i))" --data-dir "$work/n$i" >"$work/node-$i.log" 2>&1 &
  pids+=($!)
  started+=("$!:node-$i")
done
node2_pid=${pids[1]}
retry "$bin/ringkv" --timeout-ms 5000 --addr "127.0.0.1:$((base + 1))" cluster init \
  --nodes "1=127.0.0.1:$((base + 1)),2=127.0.0.1:$((base + 2)),3=127.0.0.1:$((base + 3))"
"$bin/ringkv" router --listen "$router" --nodes "$nodes" >"$work/router.log" 2>&1 &
pids+=($!)
started+=("$!:router")
retry "$bin/ringkv" --timeout-ms 1000 --addr "$router" put demo:ready 1

apps=()
for i in 1 2 3; do
  addr=127.0.0.1:$((base + 5 + i))
  "$bin/examples/session_app" --listen "$addr" --ringkv "$router" --name "app-$i" >"$work/app-$i.log" 2>&1 &
  pids+=($!)
  started+=("$!:app-$i")
  apps+=("$addr")
done
app1_pid=${pids[4]}
"$bin/examples/rr_proxy" "$proxy" "${apps[@]}" >"$work/proxy.log" 2>&1 &
pids+=($!)
started+=("$!:proxy")
for addr in "${apps[@]}" "$proxy"; do
  retry curl -s -o /dev/null --max-time 2 "http://$addr/me"
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
