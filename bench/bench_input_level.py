"""How a separation model's SI-SNRi depends on the recording level.

    python bench/bench_input_level.py [key=value ...] --model-path CKPT --data-dir DIR [--split valid]
        [--gains-db -12 -6 0 6 12 20]

Plays every mixture of DIR louder or softer by each gain and prints the mean SI-SNRi (best
permutation, full utterances) per gain, beside the mixtures' own levels. SI-SNR ignores scale,
so a model whose result does not depend on the level prints the same figure for every gain.
key=value overrides the checkpoint's config, e.g. `model.input_rms=null` for the model without
its level scaling.
"""
import argparse
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-path", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--gains-db", nargs="+", type=float, default=[-12, -6, 0, 6, 12, 20])
    parser.add_argument("overrides", nargs="*", help="changes to the checkpoint's config")
    args = parser.parse_args()

    from src.config import apply_overrides, check_config
    from src.data.dataset import open_utterances
    from src.inference.network import NetworkSeparator
    from src.inference.separation import separate_whole
    from src.metrics import score_utterance
    from src.runtime.checkpoint import load_model, model_config
    from src.runtime.device import init_context

    cfg = check_config(apply_overrides(model_config(args.model_path), args.overrides))
    init_context(cfg)
    net, cfg = load_model(args.model_path, cfg)
    separate_fn, count = NetworkSeparator(net), int(cfg.model.C)
    scores, levels = {g: [] for g in args.gains_db}, []
    for utt in open_utterances(args.data_dir, cfg.sample_rate, split=args.split):
        mix, src = np.asarray(utt["mix"], np.float32), utt["src"]
        levels.append(20 * np.log10(np.sqrt(np.mean(mix.astype(np.float64) ** 2)) + 1e-12))
        for gain in args.gains_db:
            factor = np.float32(10 ** (gain / 20))
            est = separate_whole(separate_fn, mix * factor, count)
            scores[gain].append(score_utterance(est, src * factor, mix * factor, cfg.sample_rate)["si_snri"])
    print(f"{args.model_path} (model.input_rms={cfg.model.get('input_rms')}) on {len(levels)} mixtures of "
          f"{args.data_dir} [{args.split}], levels {np.median(levels):.1f} dBFS median "
          f"[{min(levels):.1f}, {max(levels):.1f}]")
    for gain in args.gains_db:
        print(f"gain {gain:+5.1f} dB: SI-SNRi {np.mean(scores[gain]):.2f} dB")


if __name__ == "__main__":
    main()
