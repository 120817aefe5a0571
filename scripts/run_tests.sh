#!/usr/bin/env bash
# The README's test command: sets up .venv (requirements.txt), adds the optional test
# requirement (torch, for the svoice-import tests), and runs the whole test suite.
#   bash scripts/run_tests.sh [pytest args...]
# torch is expected: when it cannot be installed the command fails before running any test
# (otherwise the svoice-import tests would skip and the run would look green). Set
# GDPRNN_SKIP_TORCH=1 to run without it on purpose (those tests then skip). The number of
# skipped tests, with the reasons, is printed at the end.
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/env.sh"
cd "$ROOT"
if [ -z "${GDPRNN_SKIP_TORCH:-}" ] && ! python -c "import torch" >/dev/null 2>&1; then
  echo "[setup] installing requirements-test.txt (torch, for the svoice-import tests)"
  if ! python -m pip install -q -r requirements-test.txt || ! python -c "import torch" >/dev/null 2>&1; then
    echo "[setup] torch (requirements-test.txt) could not be installed, so the svoice-import tests cannot run." >&2
    echo "[setup] Fix the installation, or set GDPRNN_SKIP_TORCH=1 to run the suite without them." >&2
    exit 1
  fi
fi
output="$(mktemp)"
trap 'rm -f "$output"' EXIT
status=0
python -m pytest -q -rs tests "$@" 2>&1 | tee "$output" || status=$?
skipped="$(grep -oE '[0-9]+ skipped' "$output" | tail -n 1 | cut -d' ' -f1 || true)"
echo "[tests] ${skipped:-0} test(s) skipped${GDPRNN_SKIP_TORCH:+ (GDPRNN_SKIP_TORCH is set: torch was not required)}"
exit "$status"
