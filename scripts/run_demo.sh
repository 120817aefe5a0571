#!/usr/bin/env bash
# The README's demo command: sets up .venv; separates bundled test mixtures (speakers never heard in
# training) with the shipped models (pretrained/) and scores them; then builds the bundled mini
# LibriMix and runs the whole pipeline on it: preprocess -> train (2- and 3-speaker SWave) -> evaluate
# -> export -> offline inference -> separate a file (with speaker counting) -> speech-enhancement recipe.
#   bash scripts/run_demo.sh            (data under build/, experiments under exp/)
# Re-running resumes/reuses what is there (training resumes from the latest checkpoint).
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/env.sh"
cd "$ROOT"
step() { printf '\n==== %s\n' "$*"; }
CKPT2=exp/demo/checkpoints/best.ckpt
CKPT3=exp/demo_3spk/checkpoints/best.ckpt

step "0. the shipped models on unseen speakers: build the corpus's test mixtures, separate one, score all"
python -m src.data.corpus build/corpus
python separate.py build/corpus/Libri2Mix/test/mix_clean/1688-142285-0000_3080-5032-0003.wav \
    build/corpus/Libri3Mix/test/mix_clean/1688-142285-0001_2609-156975-0003_3005-163389-0002.wav \
    --out-dir exp/pretrained/separated --plot --force       # no --model-path: both shipped models, speakers counted
python evaluate.py --model-path pretrained/swave_2spk.ckpt --data-dir build/corpus/Libri2Mix --out-dir exp/pretrained/eval_2spk
python evaluate.py --model-path pretrained/swave_3spk.ckpt --data-dir build/corpus/Libri3Mix --out-dir exp/pretrained/eval_3spk

step "1. build the bundled mini LibriMix (8 kHz, LibriSpeech test-other) in build/mini_librimix"
python -m src.data.mini_librimix build/mini_librimix

step "2. preprocess: LibriMix layout -> manifests + MindRecord"
python preprocess.py --data-dir build/mini_librimix/Libri2Mix --out-dir build/mini_librimix_mr --num-shards 2
python preprocess.py --data-dir build/mini_librimix/Libri3Mix --out-dir build/mini_libri3mix_mr --num-shards 2

step "3. train the demo SWave (2 speakers, configs/demo.yaml), then a 3-speaker one"
python train.py -c configs/demo.yaml
python train.py -c configs/demo_3spk.yaml

step "4. evaluate the 2-speaker model on the test split (full utterances)"
python evaluate.py --model-path "$CKPT2" --data-dir build/mini_librimix_mr/test.mindrecord0 --out-dir exp/demo/eval

step "5. export MindIR (dynamic length) and run the offline inference pipeline on the test split"
python export.py --ckpt "$CKPT2" --file-name exp/demo/swave_demo
INFER_OUT=exp/demo/infer bash scripts/run_infer_310.sh exp/demo/swave_demo.mindir build/mini_librimix_mr/test.mindrecord0 y

step "6. separate a recording; two models let separate.py count the speakers"
MIX=$(ls build/mini_librimix/Libri3Mix/test/mix_clean/*.wav | head -n 1)
python separate.py "$MIX" --model-path "$CKPT2" "$CKPT3" --out-dir exp/demo/separated --plot --force
python evaluate.py --model-path "$CKPT2" "$CKPT3" --data-dir build/mini_librimix/Libri2Mix build/mini_librimix/Libri3Mix \
    --out-dir exp/demo/eval_counting

step "7. speech enhancement: train the tiny R-Transformer (configs/rt_demo.yaml)"
python train.py -c configs/rt_demo.yaml

step "done: experiments in exp/demo, exp/demo_3spk, exp/rt_demo; separated files in exp/demo/separated"
