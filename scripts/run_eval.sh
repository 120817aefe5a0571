#!/usr/bin/env bash
# Evaluate a checkpoint on full utterances, with a log, like the ModelZoo scripts.
#   bash scripts/run_eval.sh [DEVICE_ID] [MODEL_PATH] [DATA_DIR] [extra evaluate.py args...]
# DEVICE_ID defaults to 0, MODEL_PATH to exp/demo/checkpoints/best.ckpt, DATA_DIR to the bundled
# test split build/mini_librimix_mr/test.mindrecord0. The report goes next to the checkpoint's
# experiment (evaluate.py's default --out-dir) and the log to eval.log in the current directory.
# Extra arguments are passed to evaluate.py as they are.
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/env.sh"
export DEVICE_ID="${1:-0}"
# paths given by the user are relative to where they are; the defaults to the repository
MODEL_PATH="$(realpath -m "${2:-$ROOT/exp/demo/checkpoints/best.ckpt}")"
DATA_DIR="$(realpath -m "${3:-$ROOT/build/mini_librimix_mr/test.mindrecord0}")"
shift $(( $# > 3 ? 3 : $# ))
LOG="$PWD/eval.log"
cd "$ROOT"
[ -f "$MODEL_PATH" ] || { echo "error: checkpoint not found: $MODEL_PATH" >&2; exit 2; }
python evaluate.py --model-path "$MODEL_PATH" --data-dir "$DATA_DIR" "$@" 2>&1 | tee "$LOG"
exit "${PIPESTATUS[0]}"
