#!/usr/bin/env bash
# Runs the Python session example against a running ringkv.
#   RINGKV_ADDR=127.0.0.1:7000 client/examples/python/run.sh
#
# Sets up (once) a virtualenv with the pinned packages of requirements.txt,
# generates the ringkv.v1 stubs from proto/ into a temporary directory (grpcio-tools
# bundles protoc), and runs session_example.py. Exits non-zero on any failure.
#
# Environment:
#   RINGKV_ADDR       router or node address(es); default 127.0.0.1:7000 (the router)
#   RINGKV_PY_VENV    virtualenv to create or reuse; default ~/.cache/ringkv/py-venv
#   PYTHON            interpreter that creates the virtualenv; default python3
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
venv="${RINGKV_PY_VENV:-$HOME/.cache/ringkv/py-venv}"
python="${PYTHON:-python3}"
requirements="$here/requirements.txt"

if ! command -v "$python" >/dev/null 2>&1; then
  echo "run.sh: '$python' not found: install Python 3 (with its venv module) or set PYTHON" >&2
  exit 1
fi

# The virtualenv is reused while it holds exactly the pinned requirements; the
# copy of requirements.txt inside it, written last, marks a finished install.
# The lock keeps two concurrent runs from building it at the same time.
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
if command -v flock >/dev/null 2>&1; then flock 9; fi
stamp="$venv/ringkv-requirements.txt"
if ! cmp -s "$requirements" "$stamp"; then
  # --clear empties the directory: never do that to something else by mistake.
  if [ -d "$venv" ] && [ ! -f "$venv/pyvenv.cfg" ] && [ -n "$(ls -A "$venv")" ]; then
    echo "run.sh: $venv is not empty and not a virtualenv; set RINGKV_PY_VENV elsewhere" >&2
    exit 1
  fi
  echo "run.sh: creating virtualenv $venv" >&2
  "$python" -m venv --clear "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$stamp"
fi
exec 9>&-

gen="$(mktemp -d "${TMPDIR:-/tmp}/ringkv-py-stubs.XXXXXX")"
trap 'rm -rf "$gen"' EXIT

"$venv/bin/python" -m grpc_tools.protoc -I "$root/proto/proto" \
  --python_out="$gen" --grpc_python_out="$gen" ringkv/v1/kv.proto

# Not exec: the EXIT trap must still remove the stubs. -u: unbuffered output, so
# the lines so far are seen even if the run is killed.
RINGKV_ADDR="${RINGKV_ADDR:-127.0.0.1:7000}" PYTHONPATH="$gen${PYTHONPATH:+:$PYTHONPATH}" \
  "$venv/bin/python" -u "$here/session_example.py"
