#!/usr/bin/env bash
# Train on one device in the background, like the ModelZoo scripts.
#   bash scripts/run_standalone_train.sh [DEVICE_ID] [CONFIG] [key=value overrides...]
# DEVICE_ID defaults to 0, CONFIG to configs/swave_librimix.yaml. The log goes to
# <experiment_dir>/train_standalone.log; re-running resumes from the latest checkpoint.
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/env.sh"
export DEVICE_ID="${1:-0}"
CONFIG="$(realpath -m "${2:-$ROOT/configs/swave_librimix.yaml}")"   # relative to where the user is
shift $(( $# > 2 ? 2 : $# ))
cd "$ROOT"
[ -f "$CONFIG" ] || { echo "error: config not found: $CONFIG" >&2; exit 2; }
EXP_DIR=$(python -c "import sys; from src.config import load_config; print(load_config(sys.argv[1], sys.argv[2:]).experiment_dir)" "$CONFIG" "$@")
mkdir -p "$EXP_DIR"
LOG="$EXP_DIR/train_standalone.log"
nohup python train.py -c "$CONFIG" "$@" > "$LOG" 2>&1 &
echo "training in the background (pid $!), device $DEVICE_ID; log: $LOG"
