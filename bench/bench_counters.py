"""Counting networks compared on many fresh mixtures of held-out speakers, alone and averaged.

    python bench/bench_counters.py --count-model A.ckpt [B.ckpt ...]
        [--speech assets/librispeech_train_8k/dev] [--mixtures 600] [--seconds 4] [--seed 123]

The fixed dev split has 96 mixtures, so one mixture is 1 % and runs that differ by a few percent
cannot be told apart on it. This script mixes `--mixtures` new ones from the speakers of
`--speech` (default: the 16 dev speakers, never trained on) with the training mixer
(src/data/mixing.py: crops of `--seconds`, gains of +-GAIN_DB dB as in the bundled dev and test
mixtures, the counts of the first model drawn uniformly) and prints, for every counter, the accuracy overall and per count and, for two counts,
the AUC of its score (logit of the larger count minus the smaller: how well it ranks the
mixtures, whatever its bias); then the accuracy of all counters together (softmax probabilities
averaged). The CPU is printed beside the time taken.
"""
import argparse
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.harness import cpu_description  # noqa: E402


def auc(negatives, positives):
    """P(a positive scores above a negative), ties counted half."""
    neg, pos = np.asarray(negatives)[None, :], np.asarray(positives)[:, None]
    return float(np.mean(pos > neg) + 0.5 * np.mean(pos == neg))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count-model", nargs="+", required=True, help="`task: counting` checkpoints")
    parser.add_argument("--speech", default=os.path.join(ROOT, "assets/librispeech_train_8k/dev"),
                        help="single-speaker utterances of speakers the counters never heard")
    parser.add_argument("--mixtures", type=int, default=600)
    parser.add_argument("--seconds", type=float, default=4.0, help="crop per source")
    parser.add_argument("--seed", type=int, default=123)
    args = parser.parse_args()

    from src.data.mini_librimix import GAIN_DB
    from src.data.mixing import SpeechMixer, active_sources, load_speakers
    from src.runtime.checkpoint import model_config
    from src.tasks import load_counter

    started = time.time()
    configs = [model_config(path) for path in args.count_model]
    counters = [load_counter(path, {0: cfg})                  # {0: cfg}: no separators, its own sample rate
                for path, cfg in zip(args.count_model, configs)]
    for path, counter in zip(args.count_model, counters):
        if not hasattr(counter, "scores"):
            sys.exit(f"{path}: not a counting network (task: counting)")
    counts, rate = counters[0].counts, configs[0].sample_rate
    if any(c.counts != counts or cfg.sample_rate != rate for c, cfg in zip(counters, configs)):
        sys.exit("the counters differ in speaker counts or sample rate: "
                 + ", ".join(f"{c.counts} at {cfg.sample_rate} Hz" for c, cfg in zip(counters, configs)))
    mixer = SpeechMixer(load_speakers(args.speech, rate), max(counts), int(round(args.seconds * rate)),
                        GAIN_DB, args.seed, where=args.speech, speaker_counts=counts)
    truth, mixtures = [], []
    for step in range(args.mixtures):
        mix, sources, lengths = mixer.batch(0, step, 1)
        truth.append(int(active_sources(sources[0])))
        mixtures.append(mix[0, :lengths[0]])
    truth = np.array(truth)
    print(f"{len(mixtures)} mixtures of {args.speech} ({args.seconds:g} s crops): "
          + ", ".join(f"{np.sum(truth == c)} with {c} speakers" for c in counts))

    probabilities = []
    for path, counter in zip(args.count_model, counters):
        logits = np.stack([counter.scores(m) for m in mixtures])
        found = np.array(counts)[logits.argmax(axis=1)]
        line = (f"{path}: accuracy {np.mean(found == truth):.3f} ("
                + ", ".join(f"{c}: {np.mean(found[truth == c] == c):.3f}" for c in counts) + ")")
        if len(counts) == 2:
            score = logits[:, 1] - logits[:, 0]
            line += f", AUC {auc(score[truth == counts[0]], score[truth == counts[1]]):.3f}"
        print(line)
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities.append(exp / exp.sum(axis=1, keepdims=True))
    if len(counters) > 1:
        found = np.array(counts)[np.mean(probabilities, axis=0).argmax(axis=1)]
        print(f"all {len(counters)} averaged: accuracy {np.mean(found == truth):.3f}")
    print(f"{time.time() - started:.0f} s on {cpu_description()}")


if __name__ == "__main__":
    main()
