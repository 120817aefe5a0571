"""Is model B better than model A on the same utterances? Compares two evaluations (the
`--out-dir` folders of evaluate.py or postprocess.py) utterance by utterance: the mean of each,
the mean difference B - A with its 95 % confidence interval, and on how many utterances B
scored higher. Pairing removes what the utterances share (some mixtures are hard for every
model), so a difference is resolved that the two averages' own intervals would hide. For
LibriMix-style keys the difference also gets its interval with the speakers as the unit: whether
B is better for other speakers, not only on these mixtures of these speakers.

    python evaluate.py --model-path A.ckpt --data-dir build/corpus/Libri3Mix --split valid --out-dir eval/a
    python evaluate.py --model-path B.ckpt --data-dir build/corpus/Libri3Mix --split valid --out-dir eval/b
    python tools/compare_reports.py eval/a eval/b [--metric si_snri]
"""
import argparse
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from src.cli import run_main  # noqa: E402
from src.errors import UserError  # noqa: E402


def scores_by_key(out_dir, metric):
    """{utterance key: score} of the rows of the report in `out_dir` that have `metric`."""
    from src.evaluation.report import read_report
    try:
        rows, _ = read_report(out_dir)
    except FileNotFoundError as err:
        raise UserError(f"{out_dir}: no evaluation report there ({os.path.basename(err.filename)} is missing)")
    if rows and metric not in rows[0]:
        numeric = [k for k in rows[0] if k not in ("key", "error", "perm")]
        raise UserError(f"{out_dir}: no '{metric}' column (it has: {', '.join(numeric)})")
    scores = {}
    for row in rows:
        value = float(row[metric]) if row.get(metric) not in (None, "") else math.nan
        if not math.isnan(value):
            scores[row["key"]] = value
    return scores


def compare(scores_a, scores_b):
    """-> {count, mean_a, mean_b, difference, ci95, speaker_ci95, b_higher} over the keys both
    have; speaker_ci95: (half-width, speakers) or None (`src.evaluation.report.speaker_ci95`)."""
    from src.evaluation.report import mean_with_ci95, speaker_ci95
    keys = sorted(scores_a.keys() & scores_b.keys())
    if not keys:
        raise UserError("the two evaluations share no scored utterance (compare evaluations of the same data)")
    differences = [scores_b[k] - scores_a[k] for k in keys]
    difference, ci95 = mean_with_ci95(differences)
    return {"count": len(keys), "mean_a": float(np.mean([scores_a[k] for k in keys])),
            "mean_b": float(np.mean([scores_b[k] for k in keys])), "difference": difference, "ci95": ci95,
            "speaker_ci95": speaker_ci95(keys, differences), "b_higher": sum(scores_b[k] > scores_a[k] for k in keys)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", help="evaluation folder of model A (per_utterance.csv, summary.json)")
    parser.add_argument("b", help="evaluation folder of model B")
    parser.add_argument("--metric", default="si_snri", help="column of per_utterance.csv (default si_snri)")
    args = parser.parse_args(argv)
    scores_a, scores_b = scores_by_key(args.a, args.metric), scores_by_key(args.b, args.metric)
    result = compare(scores_a, scores_b)
    left_out = len(scores_a.keys() ^ scores_b.keys())
    print(f"{args.metric} over the {result['count']} utterances both scored"
          + (f" ({left_out} scored by one only, left out)" if left_out else "") + ":")
    print(f"  A {result['mean_a']:.2f}  ({args.a})")
    print(f"  B {result['mean_b']:.2f}  ({args.b})")
    if result["ci95"] is None:
        print(f"  B - A = {result['difference']:+.2f} (one utterance: no confidence interval)")
    else:
        low, high = result["difference"] - result["ci95"], result["difference"] + result["ci95"]
        print(f"  B - A = {result['difference']:+.2f}, 95 % confidence interval {low:+.2f} to {high:+.2f} "
              "(paired, utterances taken as independent)")
    if result["speaker_ci95"] is not None:
        half, speakers = result["speaker_ci95"]
        print(f"    with the {speakers} speakers as the unit: {result['difference'] - half:+.2f} to "
              f"{result['difference'] + half:+.2f} (for other speakers; delete-one-speaker jackknife)")
    print(f"  B higher on {result['b_higher']} of {result['count']}")
    return 0


if __name__ == "__main__":
    run_main(main)
