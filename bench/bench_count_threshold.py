"""Output levels of silent vs active outputs, and speaker-counting accuracy per threshold.

    python bench/bench_count_threshold.py --model-path C2.ckpt C3.ckpt [--data-dir DIR ...] [--split test]
        [--thresholds -40 -30 -25 -20 -15 -10 -6 -3]
    python bench/bench_count_threshold.py --count-model COUNTER.ckpt [--data-dir DIR ...] [--split valid] ...

Runs every model once on every mixture of the data folders (default: the bundled Libri2Mix and
Libri3Mix test splits), then prints
0. the levels of the true sources (same measure): an active output of a good separator is about
   as loud as its source, so the threshold must stay below the quietest source's level;
1. each model's output levels (dB relative to its loudest output, src.inference.speaker_count.
   output_levels_db), sorted, for mixtures of each true speaker count: with a model of C outputs
   on a mixture of fewer speakers, the lowest levels are the "silent" outputs; on a mixture of C
   speakers, every output is active;
2. the counting accuracy of the real procedure (count_and_separate, fed the cached outputs) for
   each threshold, overall and per true count; with --count-model, that model's count alone (its
   active outputs, at least 1), which is what the procedure takes from a counter.
A counting network (--count-model of a `task: counting` checkpoint) has no outputs and no
threshold: its accuracy alone is printed.
The threshold to choose lies between the silent and the active levels.
"""
import argparse
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


class Cached:
    """A separator that returns the outputs stored for each mixture (keyed by its bytes)."""

    def __init__(self, outputs):
        self.outputs = outputs

    def __call__(self, batch):
        return np.stack([self.outputs[m.tobytes()] for m in batch])


def print_classifier_accuracy(counter, args, sample_rate, open_utterances):
    """Counting accuracy of a counting network, overall and per true count (no threshold)."""
    found = [(utt["src"].shape[0], counter(np.asarray(utt["mix"], dtype=np.float32)))
             for path in args.data_dir for utt in open_utterances(path, sample_rate, split=args.split)]
    true_counts = sorted({n for n, _ in found})
    print(f"{len(found)} mixtures; counting accuracy {np.mean([f == n for n, f in found]):.3f} ("
          + ", ".join(f"{t} speakers: {np.mean([f == n for n, f in found if n == t]):.3f}" for t in true_counts) + ")")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--model-path", nargs="+", help="one checkpoint per speaker count")
    group.add_argument("--count-model", help="a model that only counts (separate.py --count-model)")
    parser.add_argument("--data-dir", nargs="+", default=[os.path.join(ROOT, "build/mini_librimix/Libri2Mix"),
                                                          os.path.join(ROOT, "build/mini_librimix/Libri3Mix")])
    parser.add_argument("--split", default="test")
    parser.add_argument("--thresholds", nargs="+", type=float, default=[-40, -30, -25, -20, -15, -10, -6, -3])
    args = parser.parse_args()

    from src.data.dataset import open_utterances
    from src.inference.speaker_count import OutputCounter, count_and_separate, output_levels_db
    from src.runtime.checkpoint import model_config
    from src.tasks import load_counter
    from src.tasks.separation import SeparationTask

    if args.count_model:
        cfg = model_config(args.count_model)
        counter = load_counter(args.count_model, {0: cfg})      # {0: cfg}: no separators, its own sample rate
        if not isinstance(counter, OutputCounter):              # a counting network: no outputs, no threshold
            return print_classifier_accuracy(counter, args, cfg.sample_rate, open_utterances)
        separators = {counter.num_outputs: counter.separate_fn}
    else:
        separators, configs = SeparationTask().load_separators(args.model_path, None)
        cfg = next(iter(configs.values()))
    sample_rate = cfg.sample_rate
    mixtures, outputs, source_levels = [], {c: {} for c in separators}, {}
    for path in args.data_dir:
        for utt in open_utterances(path, sample_rate, split=args.split):
            mix = np.asarray(utt["mix"], dtype=np.float32)
            mixtures.append((utt["src"].shape[0], mix))
            source_levels.setdefault(utt["src"].shape[0], []).append(np.sort(output_levels_db(utt["src"]))[::-1])
            for c, separate_fn in separators.items():
                outputs[c][mix.tobytes()] = separate_fn(mix[None])[0]
    true_counts = sorted({n for n, _ in mixtures})
    print(f"{len(mixtures)} mixtures ({', '.join(f'{sum(n == t for n, _ in mixtures)} with {t} speakers' for t in true_counts)}), "
          f"models C = {', '.join(map(str, sorted(separators)))}")

    print("\n0. true source levels, dB relative to the loudest source (median [min, max] over mixtures)")
    for t in true_counts:
        levels = np.array(source_levels[t])
        print(f"  mixtures of {t}: " + ", ".join(f"#{k + 1}: {np.median(levels[:, k]):.1f} "
                                                  f"[{levels[:, k].min():.1f}, {levels[:, k].max():.1f}]"
                                                  for k in range(1, t)))

    print("\n1. output levels, dB relative to the loudest output (sorted; median [min, max] over mixtures)")
    for c in sorted(separators):
        for t in true_counts:
            levels = np.array([np.sort(output_levels_db(outputs[c][m.tobytes()]))[::-1] for n, m in mixtures if n == t])
            ranks = ", ".join(f"#{k + 1}: {np.median(levels[:, k]):.1f} [{levels[:, k].min():.1f}, {levels[:, k].max():.1f}]"
                              for k in range(1, c))
            print(f"  model C={c}, mixtures of {t}: {ranks}")

    print("\n2. counting accuracy of the procedure per threshold")
    cached = {c: Cached(outputs[c]) for c in separators}
    print("  threshold  overall  " + "  ".join(f"{t} spk" for t in true_counts))
    for threshold in args.thresholds:
        if args.count_model:
            (c, separate_fn), = cached.items()
            found = [(n, OutputCounter(separate_fn, c, threshold)(m)) for n, m in mixtures]
        else:
            found = [(n, count_and_separate(cached, m, threshold)[0]) for n, m in mixtures]
        per_count = [np.mean([f == n for n, f in found if n == t]) for t in true_counts]
        print(f"  {threshold:9.1f}  {np.mean([f == n for n, f in found]):7.3f}  "
              + "  ".join(f"{a:5.3f}" for a in per_count))


if __name__ == "__main__":
    main()
