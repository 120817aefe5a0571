"""A deeper SWave model from a trained one: CHECKPOINT's R dual-path layers followed by new ones up
to --layers, each new layer starting as the identity (its block projections zero; src/models/swave.py
add_dual_path_layers), written as a model checkpoint with model.R = --layers. The new model
separates exactly as the trained one at the start, and training goes on with more capacity (an
experiment in pretrained/EXPERIMENTS.md):

    python tools/add_layers.py pretrained/swave_2spk.ckpt exp/init/swave_2spk_R6.ckpt --layers 6
    python train.py -c configs/swave_2spk.yaml model.R=6 train.init_from=exp/init/swave_2spk_R6.ckpt
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
    parser.add_argument("--layers", type=int, required=True, help="dual-path layers of the new model (model.R)")
    args = parser.parse_args(argv)
    from src.models import build_model
    from src.models.swave import add_dual_path_layers
    from src.runtime.checkpoint import CheckpointError, config_meta, load_into, load_model, save_network

    old, cfg = load_model(args.checkpoint)          # strict: a complete model with its config
    if cfg.model.name != "swave":
        raise CheckpointError(f"{args.checkpoint}: a {cfg.model.name} model; only SWave layers can be added")
    if args.layers <= cfg.model.R:
        raise CheckpointError(f"--layers {args.layers}: {args.checkpoint} has {cfg.model.R} layers already; "
                              "give more")
    trained_layers, cfg.model.R = cfg.model.R, args.layers
    net = build_model(cfg)
    params = add_dual_path_layers({p.name: p.asnumpy() for p in old.get_parameters()},
                                  {p.name: p.asnumpy() for p in net.get_parameters()})
    load_into(net, params, args.checkpoint)
    meta = {**config_meta(cfg), "layers_added_to": {"checkpoint": os.path.abspath(args.checkpoint),
                                                     "layers": args.layers}}
    save_network(args.out, net, meta)
    print(f"{args.out}: the {trained_layers} layers of {args.checkpoint} and {args.layers - trained_layers} new ones "
          f"(model.R={args.layers})")
    return 0


if __name__ == "__main__":
    run_main(main)
