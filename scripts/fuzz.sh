#!/usr/bin/env bash
# Long fuzz run: every target for N inputs each (default 1,000,000), one after the other.
# Usage: scripts/fuzz.sh [N] [target...]     (not part of the default test command)
# Environment: FUZZ_ENGINE=auto|atheris|random (auto: atheris when installed), FUZZ_OUT=dir
# for finds and corpora (default: $TMPDIR/gripd-fuzz), NICE=niceness (default 19).
# Prints, per target, the inputs run, the time and the finds; exits 1 if anything was found.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${1:-1000000}
shift || true
OUT=${FUZZ_OUT:-${TMPDIR:-/tmp}/gripd-fuzz}
ENGINE=${FUZZ_ENGINE:-auto}
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <("$PY" -c 'from tests.fuzz.targets import TARGETS; print("\n".join(TARGETS))')
fi

mkdir -p "$OUT"
status=0
summaries=()
for t in "${targets[@]}"; do
    log="$OUT/$t.log"
    echo "== $t: $N inputs (log: $log)"
    # libFuzzer's own chatter goes to the log; FIND/SUMMARY lines are shown.
    if ! nice -n "${NICE:-19}" "$PY" -m tests.fuzz.run "$t" --runs "$N" --engine "$ENGINE" \
        --out "$OUT" >"$log" 2>&1; then
        echo "   $t: the fuzzer process failed (crash in native code?), see $log"
        status=1
    fi
    grep -E '^(FIND|  +[0-9]+ x )' "$log" || true
    line=$(grep '^SUMMARY' "$log" | tail -1 || true)
    [ -n "$line" ] || line="SUMMARY target=$t runs=? (no summary; see $log)"
    echo "   $line"
    summaries+=("$line")
    case "$line" in *"finds=0"*) ;; *) status=1 ;; esac
done
echo
echo "== all targets ($N inputs each)"
printf '%s\n' "${summaries[@]}"
exit $status
