"""A SWave model with fewer outputs from a trained one: the outputs --keep of CHECKPOINT (their
share of the output layer; every other parameter is common to all speakers), written as a model
checkpoint with C = len(--keep) in its config. It starts a run for fewer speakers from a model
trained for more, e.g. a 2-speaker run from the shipped 3-speaker model (an experiment in
pretrained/EXPERIMENTS.md):

    python tools/select_outputs.py pretrained/swave_3spk.ckpt exp/init/swave_3spk_outputs02.ckpt --keep 0 2
    python train.py -c configs/swave_2spk.yaml train.init_from=exp/init/swave_3spk_outputs02.ckpt
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from src.cli import run_main  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a SWave checkpoint (released model or training checkpoint)")
    parser.add_argument("out", help="the new model checkpoint (.ckpt)")
    parser.add_argument("--keep", type=int, nargs="+", required=True, help="output indices to keep, in order")
    args = parser.parse_args(argv)
    from src.models import build_model
    from src.models.swave import keep_speaker_outputs
    from src.runtime.checkpoint import CheckpointError, config_meta, load_into, load_model, save_network

    old, cfg = load_model(args.checkpoint)          # strict: a complete model with its config
    if cfg.model.name != "swave":
        raise CheckpointError(f"{args.checkpoint}: a {cfg.model.name} model; only SWave outputs can be selected")
    params = keep_speaker_outputs({p.name: p.asnumpy() for p in old.get_parameters()}, cfg.model.N, args.keep)
    cfg.model.C = len(args.keep)
    net = build_model(cfg)
    load_into(net, params, args.checkpoint)
    meta = {**config_meta(cfg), "selected_from": {"checkpoint": os.path.abspath(args.checkpoint), "outputs": args.keep}}
    save_network(args.out, net, meta)
    print(f"{args.out}: outputs {args.keep} of {args.checkpoint} (C={cfg.model.C})")
    return 0


if __name__ == "__main__":
    run_main(main)
