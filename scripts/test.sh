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
# Real tools the tests drive, from Debian's packages: promtool and prometheus (metrics exposition, alert
# rules, the end-to-end alert), amtool (Alertmanager config) and chromium (the /ui pages, driven by
# Playwright). Installed with apt when missing and apt-get is there (best effort; without them those
# tests are skipped, or fail when CI is set).
missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v amtool >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ "${#missing[@]}" -gt 0 ] && command -v apt-get >/dev/null 2>&1; then
  { DEBIAN_FRONTEND=noninteractive apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >/dev/null 2>&1 || true
fi
# The Debian package starts a system Prometheus on :9090; the tests start their own on free ports.
# --dist loadgroup: the tests sharing the observed service (obsqc up + Prometheus, tests/deploy/conftest.py)
# run in one worker, so it starts once.
exec .venv/bin/python -m pytest -n 2 --dist loadgroup "$@"
