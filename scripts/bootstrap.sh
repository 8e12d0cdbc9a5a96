#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv: Python 3.11, the CPU build of
# PyTorch pinned to 2.13.0 (a plain `torch` would pull a multi-GB CUDA build), and interp with its test extras.
# Idempotent: it does nothing when .venv already matches pyproject.toml and this script.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
stamp=.venv/.interp-installed
want=$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x .venv/bin/interp ]; then
  exit 0
fi
echo "== setting up .venv (first run only; log in .venv/install.log)" >&2
"$PYTHON" -m venv .venv
log=.venv/install.log
install() {
  if ! .venv/bin/python -m pip install "$@" >>"$log" 2>&1; then
    echo "pip install $* failed; the end of $log:" >&2
    tail -n 30 "$log" >&2
    exit 1
  fi
}
.venv/bin/python -m pip install --upgrade pip >>"$log" 2>&1 || true  # optional
install "torch==2.13.0"
install -e ".[test]"
echo "$want" > "$stamp"
