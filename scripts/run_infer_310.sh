#!/usr/bin/env bash
# Offline inference of an exported MindIR on a test set, scored as evaluate.py scores a checkpoint.
#   bash scripts/run_infer_310.sh [MINDIR_PATH] [TEST_PATH] [NEED_PREPROCESS] [DEVICE_TARGET] [DEVICE_ID]
#
# MINDIR_PATH      export.py's output (a dynamic-length graph, or a fixed-length one: --length N)
# TEST_PATH        test data with references: a MindRecord split, its folder, or an audio folder
#                  (LibriMix / svoice root or split folder), as evaluate.py --data-dir;
#                  for an enhancement model its config (.yaml, e.g. exp/rt/config.yaml): the STFT
#                  settings and the fixed pairs of data.test_clean / test_noise / test_snrs;
#                  for a speaker-counting model its config (e.g. configs/counter_2_3spk.yaml): the
#                  mixtures of data.valid/Libri<n>Mix/<SPLIT> for every count it tells apart
# NEED_PREPROCESS  y (default): write the model inputs first; n: reuse $INFER_OUT/bins
# DEVICE_TARGET    auto (default) | Ascend | GPU | CPU
# DEVICE_ID        default $DEVICE_ID or 0
# Environment (optional): INFER_OUT (output folder, default <repo>/infer_output), SAMPLE_RATE (8000;
#   enhancement: the config's), SPLIT (test: the split of a data root or config), MAX_UTTERANCES
#   (0 = all; enhancement: clean utterances, each at every SNR), WINDOW_SECONDS (30) and
#   OVERLAP_SECONDS (2) as evaluate.py's options (separation; a fixed-length graph uses windows of
#   its length).
#
# Steps: preprocess.py --infer-bins -> $INFER_OUT/bins (+ index.json); infer.py (MindSpore Lite when
# installed, else MindSpore) -> $INFER_OUT/results; postprocess.py -> $INFER_OUT/report
# (per_utterance.csv, summary.json) and "Average SISNR improvement: <dB>" (enhancement: also STOI
# and PESQ, per SNR; counting: the confusion matrix and accuracy instead). Logs: $INFER_OUT/*.log.
set -euo pipefail
usage="usage: bash scripts/run_infer_310.sh MINDIR_PATH TEST_PATH [NEED_PREPROCESS y|n] [DEVICE_TARGET] [DEVICE_ID]"
if [ $# -lt 2 ] || [ $# -gt 5 ]; then echo "$usage" >&2; exit 2; fi

real_path() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
MINDIR=$(real_path "$1")
TEST_PATH=$(real_path "$2")
NEED_PREPROCESS="${3:-y}"
DEVICE_TARGET="${4:-auto}"
DEVICE_ID="${5:-${DEVICE_ID:-0}}"
OUT="${INFER_OUT:-}"
[ -n "$OUT" ] && OUT=$(real_path "$OUT")
case "$NEED_PREPROCESS" in
  y|n) ;;
  *) echo "error: NEED_PREPROCESS must be y or n, got '$NEED_PREPROCESS'" >&2; exit 2 ;;
esac
[ -f "$MINDIR" ] || { echo "error: model file not found: $MINDIR (export one with export.py)" >&2; exit 2; }

source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/env.sh"
cd "$ROOT"
OUT="${OUT:-$ROOT/infer_output}"
mkdir -p "$OUT"
BINS="$OUT/bins"; RESULTS="$OUT/results"; REPORT="$OUT/report"

LENGTH=$(python infer.py --mindir "$MINDIR" --input-length)
echo "model: $MINDIR (input length: $([ "$LENGTH" = 0 ] && echo any || echo "$LENGTH samples"))"

case "$TEST_PATH" in
  *.yaml|*.yml)  # an enhancement or counting model's config: its test data, scored from what index.json records
    DATA_ARGS=(-c "$TEST_PATH" ${SAMPLE_RATE:+--sample-rate "$SAMPLE_RATE"})
    REFERENCE_ARGS=() ;;
  *)
    DATA_ARGS=(--data-dir "$TEST_PATH" --sample-rate "${SAMPLE_RATE:-8000}"
               --window-seconds "${WINDOW_SECONDS:-30}" --overlap-seconds "${OVERLAP_SECONDS:-2}")
    REFERENCE_ARGS=(--data-dir "$TEST_PATH") ;;
esac

if [ "$NEED_PREPROCESS" = y ]; then
  echo "==== preprocess: $TEST_PATH -> $BINS"
  python preprocess.py --infer-bins "$BINS" "${DATA_ARGS[@]}" --fixed-length "$LENGTH" \
    --split "${SPLIT:-test}" --max-utterances "${MAX_UTTERANCES:-0}" 2>&1 | tee "$OUT/preprocess.log"
fi

echo "==== inference: $BINS -> $RESULTS"
python infer.py --mindir "$MINDIR" --bin-dir "$BINS" --result-dir "$RESULTS" \
  --device-target "$DEVICE_TARGET" --device-id "$DEVICE_ID" 2>&1 | tee "$OUT/infer.log"

echo "==== postprocess: $RESULTS -> $REPORT"
python postprocess.py --bin-dir "$BINS" --result-dir "$RESULTS" --out-dir "$REPORT" ${REFERENCE_ARGS[@]+"${REFERENCE_ARGS[@]}"} \
  2>&1 | tee "$OUT/acc.log"
