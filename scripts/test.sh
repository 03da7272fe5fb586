#!/usr/bin/env bash
# Install obsqc with its test extras into .venv (created if missing) and run the whole test suite.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[dev]"
# Numba's on-disk kernel cache lives in the source tree (__pycache__); compile once, then reuse.
.venv/bin/python -c "from obsqc.detectors.warmup import warm_up; print(f'numba kernels ready in {warm_up():.1f} s')"
exec .venv/bin/python -m pytest -n 2 "$@"
