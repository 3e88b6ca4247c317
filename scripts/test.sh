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

.venv/bin/ruff format --check gripd tests bench setup.py
.venv/bin/ruff check gripd tests bench setup.py
.venv/bin/mypy

# Stage 1, the pure-Python package (this tree). Four pytest processes by default (most tests wait
# on real servers, so more processes than cores pays off); GRIPD_TEST_PROCS=0 runs everything in
# this one process.
procs=${GRIPD_TEST_PROCS:-4}
GRIPD_EXPECT_COMPILED=0 .venv/bin/python -m pytest -n "$procs" "$@"

# Stage 2, the compiled build (GRIPD_MYPYC, setup.py): the tests again, on gripd's legs only
# (the Pushpin legs test Pushpin), against a copy of this tree whose hot modules are compiled
# by mypyc, so that the working tree stays pure Python. It runs for the whole suite (no pytest
# arguments) unless GRIPD_TEST_COMPILED=0, and with arguments when GRIPD_TEST_COMPILED=1.
want=${GRIPD_TEST_COMPILED:-auto}
if [ "$want" = 0 ] || { [ "$want" = auto ] && [ $# -gt 0 ]; }; then
    exit 0
fi
root=$(pwd)
copy=$(mktemp -d "${TMPDIR:-/tmp}/gripd-compiled.XXXXXX")
trap 'rm -rf "$copy"' EXIT
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -co --exclude-standard -z | tar --null -T - -cf - | tar -xf - -C "$copy"
else
    tar --exclude=./.venv --exclude=./build -cf - . | tar -xf - -C "$copy"
fi
echo "compiled build: mypyc in $copy (about a minute) ..."
# One C file per module, compiled in parallel (GRIPD_MYPYC_SPLIT, see setup.py): the same
# compiled code as an install's, split for the C compiler, and built three times faster.
if ! (cd "$copy" && GRIPD_MYPYC=require GRIPD_MYPYC_SPLIT=1 "$root/.venv/bin/python" setup.py -q build_ext \
        --inplace >"$copy/build.log" 2>&1); then
    tail -n 30 "$copy/build.log"
    if [ "${CI:-}" = true ]; then
        echo "compiled build failed" >&2
        exit 1
    fi
    echo "compiled build not possible here (no C compiler or Python headers?): stage skipped"
    exit 0
fi
cd "$copy"
GRIPD_EXPECT_COMPILED=1 GRIPD_TEST_IMPLS=gripd PYTHONPATH="$copy" \
    "$root/.venv/bin/python" -m pytest -n "$procs" -p no:cacheprovider "$@"
