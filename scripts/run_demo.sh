#!/usr/bin/env bash
# The README's demo command: sets up .venv, builds the bundled mini LibriMix, and runs the
# whole pipeline on it (preprocess -> train -> evaluate -> export -> offline inference -> separate).
#   bash scripts/run_demo.sh            (outputs under build/ and exp/demo/)
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/env.sh"
cd "$ROOT"
step() { printf '\n==== %s\n' "$*"; }

step "1. build the bundled mini LibriMix (8 kHz, LibriSpeech test-other) into build/mini_librimix"
python -m src.data.mini_librimix --out build/mini_librimix

step "2. preprocess: LibriMix layout -> manifests + MindRecord in build/mini_librimix_mr"
python preprocess.py --data-dir build/mini_librimix/Libri2Mix --out-dir build/mini_librimix_mr --num-shards 2
