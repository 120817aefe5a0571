#!/usr/bin/env bash
# The README's test command: sets up .venv (requirements.txt), adds the optional test
# requirement (torch, for the svoice-import tests), and runs the whole test suite.
#   bash scripts/run_tests.sh [pytest args...]
# Set GDPRNN_SKIP_TORCH=1 to skip installing torch (its tests then skip).
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/env.sh"
cd "$ROOT"
if [ -z "${GDPRNN_SKIP_TORCH:-}" ] && ! python -c "import torch" >/dev/null 2>&1; then
  echo "[setup] installing requirements-test.txt (torch, optional: svoice-import tests)"
  python -m pip install -q -r requirements-test.txt \
    || echo "[setup] could not install torch; the svoice-import tests will be skipped"
fi
python -m pytest -q tests "$@"
