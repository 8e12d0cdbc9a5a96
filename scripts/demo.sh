#!/usr/bin/env bash
# The README's first command: set up .venv if needed, then run the demo end to end on synthetic planted-truth
# data (CPU, a few minutes). Extra arguments go to `interp demo` (e.g. --quick, --out DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/interp demo "$@"
