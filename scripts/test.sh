#!/usr/bin/env bash
# The whole test suite from a fresh clone: installs what it needs, then lint, types and tests.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

# External pieces the tests use: Pushpin 1.36 (differential tests), redis-server (Redis bus)
# and Chromium (the browser tests drive Debian's chromium through Playwright; no browser is
# ever downloaded).
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    need=()
    command -v pushpin >/dev/null 2>&1 || need+=(pushpin)
    command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
    command -v chromium >/dev/null 2>&1 || need+=(chromium)
    if [ ${#need[@]} -gt 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    fi
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'

.venv/bin/ruff format --check gripd tests bench
.venv/bin/ruff check gripd tests bench
.venv/bin/mypy
# Four pytest processes by default (most tests wait on real servers, so more processes than
# cores pays off); GRIPD_TEST_PROCS=0 runs everything in this one process.
exec .venv/bin/python -m pytest -n "${GRIPD_TEST_PROCS:-4}" "$@"
