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
# The verdict-store tests also run on PostgreSQL: start the local cluster when it is installed but not
# answering (best effort; without it those tests are skipped, or fail when CI is set).
if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ] \
   && ! pg_isready -q -h 127.0.0.1 -p 5432 >/dev/null 2>&1; then
  for version in $(ls /etc/postgresql); do
    pg_ctlcluster --skip-systemctl-redirect "$version" main start >/dev/null 2>&1 || true
  done
fi
# The metrics tests check the exposition with promtool (Debian package "prometheus"): install it when
# missing and apt-get is there (best effort; without it that test is skipped, or fails when CI is set).
if ! command -v promtool >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  { DEBIAN_FRONTEND=noninteractive apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; } >/dev/null 2>&1 || true
fi
exec .venv/bin/python -m pytest -n 2 "$@"
