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
echo "== setting up .venv (first run only)" >&2
"$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[test]"
echo "$want" > "$stamp"
