"""Plot validation SI-SNRi against training steps for experiments trained from speech mixed on
the fly (the model card's curve).

    python tools/plot_training.py exp/swave_2spk exp/swave_3spk --out dev_si_snri.png
    python tools/plot_training.py first.ckpt+pretrained/swave_3spk.ckpt --out dev_si_snri.png

A run is an experiment folder (config.yaml, history.json) or a checkpoint (its stored config and
history, which end at the checkpoint's epoch). Runs joined with "+" are one curve: each continued
from the previous one's weights (train.init_from), so its epochs are counted on after them.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from src.cli import run_main  # noqa: E402
from src.errors import UserError  # noqa: E402


def read_run(source):
    """(config, history records) of an experiment folder or a checkpoint."""
    from src.config import load_config
    from src.runtime.checkpoint import read_checkpoint, stored_config
    if os.path.isdir(source):
        path = os.path.join(source, "history.json")
        if not os.path.isfile(path):
            raise UserError(f"{source}: no history.json; not an experiment folder")
        with open(path, encoding="utf-8") as f:
            return load_config(os.path.join(source, "config.yaml")), json.load(f)["history"]
    meta = read_checkpoint(source)[1]
    cfg, history = stored_config(meta), meta.get("state", {}).get("history")
    if cfg is None or history is None:
        raise UserError(f"{source}: a checkpoint without a stored config and training history")
    return cfg, history


def joined_run(spec):
    """(label, steps per epoch, history) of "RUN[+RUN...]", the later runs' epochs counted on."""
    history, steps_per_epoch = [], None
    for source in spec.split("+"):
        cfg, part = read_run(source)
        if steps_per_epoch not in (None, int(cfg.data.steps_per_epoch)):
            raise UserError(f"{spec}: the runs differ in data.steps_per_epoch; they cannot share a step axis")
        steps_per_epoch = int(cfg.data.steps_per_epoch)
        offset = history[-1]["epoch"] if history else 0
        history += [dict(record, epoch=record["epoch"] + offset) for record in part]
    name = os.path.splitext(os.path.basename(os.path.normpath(source)))[0]
    return f"{name} (C={cfg.model.C})", steps_per_epoch, history


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="experiment folders or checkpoints, continued runs joined with +")
    parser.add_argument("--out", required=True, help="PNG to write")
    args = parser.parse_args(argv)
    from src.plotting import plot_training_curves
    runs = {}
    for spec in args.runs:
        label, steps_per_epoch, history = joined_run(spec)
        runs[label] = (steps_per_epoch, history)
    print(plot_training_curves(runs, args.out, title="dev SI-SNRi (unseen speakers)"))
    return 0


if __name__ == "__main__":
    run_main(main)
