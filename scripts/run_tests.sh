#!/usr/bin/env bash
# The README's test command: sets up .venv and runs the whole test suite.
#   bash scripts/run_tests.sh [pytest args...]
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/env.sh"
cd "$ROOT"
python -m pytest -q tests "$@"
