# Shared by the demo scripts (session-demo.sh, chat-demo.sh): a temporary
# directory, ports, process bookkeeping and a local 3-node cluster with a
# router, started by hand rather than with `ringkv dev` (which stops
# everything when a node dies, and the demos kill nodes on purpose).
#
# Source it from a script that has `set -euo pipefail`, then:
#   demo_start_cluster NAME     # sets: bin, work, base, router, node2_pid
# Before sourcing it, a script may set demo_bin (the binaries' directory;
# default the debug build); before calling demo_start_cluster,
# demo_server_flags (extra flags of every node and router) and demo_cli_flags
# (extra flags of the CLI calls here), both arrays.
#   demo_spawn NAME CMD...      # starts a process, logged to $work/NAME.log; sets last_pid
#   demo_retry CMD...           # until it succeeds, 60 s at most, failing fast if a process died
# Everything started is stopped, and $work removed, on exit.

demo_name=${demo_name:-demo}
work=$(mktemp -d -t "ringkv-$demo_name.XXXXXX")
pids=()
started=()
demo_cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap demo_cleanup EXIT

# Ports: ten from a random base below the kernel's ephemeral range (32768+),
# so they cannot collide with this machine's outgoing connections.
base=$((20000 + RANDOM % 1200 * 10))
router=127.0.0.1:$base
bin=${demo_bin:-${CARGO_TARGET_DIR:-target}/debug}

# Fails at once, with its log, if a process we started has exited.
demo_check_alive() {
  local pid name
  for entry in "${started[@]}"; do
    pid=${entry%%:*} name=${entry#*:}
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$demo_name: $name exited:" >&2
      cat "$work/$name.log" >&2
      exit 1
    fi
  done
}

demo_retry() {
  for _ in $(seq 120); do
    "$@" >/dev/null 2>&1 && return 0
    demo_check_alive
    # A bounded poll interval: 120 tries of 0.5 s.
    sleep 0.5
  done
  echo "$demo_name: gave up waiting for: $*" >&2
  cat "$work"/*.log >&2
  exit 1
}

demo_spawn() {
  local name=$1
  shift
  "$@" >"$work/$name.log" 2>&1 &
  last_pid=$!
  pids+=("$last_pid")
  started+=("$last_pid:$name")
}

# Three nodes on base+1..3, `cluster init`, a router on base; waits until a
# write goes through the router.
demo_start_cluster() {
  local nodes=127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2)),127.0.0.1:$((base + 3))
  local i
  for i in 1 2 3; do
    demo_spawn "node-$i" "$bin/ringkv" node --id "$i" --listen "127.0.0.1:$((base + i))" --data-dir "$work/n$i" \
      ${demo_server_flags[@]+"${demo_server_flags[@]}"}
    if [ "$i" = 2 ]; then node2_pid=$last_pid; fi
  done
  demo_retry "$bin/ringkv" ${demo_cli_flags[@]+"${demo_cli_flags[@]}"} --timeout-ms 5000 \
    --addr "127.0.0.1:$((base + 1))" cluster init --nodes "1=127.0.0.1:$((base + 1)),2=127.0.0.1:$((base + 2)),3=127.0.0.1:$((base + 3))"
  demo_spawn router "$bin/ringkv" router --listen "$router" --nodes "$nodes" \
    ${demo_server_flags[@]+"${demo_server_flags[@]}"}
  demo_retry "$bin/ringkv" ${demo_cli_flags[@]+"${demo_cli_flags[@]}"} --timeout-ms 1000 --addr "$router" put demo:ready 1
}
