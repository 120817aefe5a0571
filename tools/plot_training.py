"""Plot validation SI-SNRi against training steps for experiments trained from speech mixed on
the fly (the model card's curve).

    python tools/plot_training.py exp/swave_2spk exp/swave_3spk --out pretrained/dev_si_snri.png
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from src.config import load_config  # noqa: E402
from src.plotting import plot_training_curves  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiments", nargs="+", help="experiment folders (config.yaml, history.json)")
    parser.add_argument("--out", required=True, help="PNG to write")
    args = parser.parse_args()
    runs = {}
    for exp in args.experiments:
        cfg = load_config(os.path.join(exp, "config.yaml"))
        with open(os.path.join(exp, "history.json"), encoding="utf-8") as f:
            history = json.load(f)["history"]
        runs[f"{os.path.basename(os.path.normpath(exp))} (C={cfg.model.C})"] = (int(cfg.data.steps_per_epoch), history)
    print(plot_training_curves(runs, args.out, title="dev SI-SNRi (unseen speakers)"))


if __name__ == "__main__":
    main()
