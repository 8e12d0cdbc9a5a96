#!/usr/bin/env bash
# The README's second command: set up .venv if needed, then run the test suite (CPU only).
# Extra arguments go to pytest (e.g. -k stats, -x).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python -m pytest -q "$@"
