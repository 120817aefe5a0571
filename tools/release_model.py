"""Release a trained model: its training checkpoint without the optimizer state (weights and the
stored config; a third of the size), checked by loading it back.

    python tools/release_model.py exp/swave_2spk/checkpoints/best.ckpt pretrained/swave_2spk.ckpt [key=value ...]

key=value changes the stored config, for settings that leave the parameters as they are (e.g.
model.input_rms=0.072: the level every mixture is brought to before the network).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from src.cli import run_main  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a training checkpoint (epoch_NNNN.ckpt or best.ckpt)")
    parser.add_argument("out", help="the released checkpoint (.ckpt)")
    parser.add_argument("overrides", nargs="*", help="config changes, e.g. model.input_rms=0.072")
    args = parser.parse_args(argv)
    from src.runtime.checkpoint import load_model, read_checkpoint, save_weights_only
    candidate = args.out + ".unchecked.ckpt"      # `out` is replaced only by a model that loads
    save_weights_only(args.checkpoint, candidate, args.overrides)
    try:
        _, cfg = load_model(candidate)               # strict: every parameter present, nothing extra
    except BaseException:
        os.remove(candidate)
        raise
    os.replace(candidate, args.out)
    state = read_checkpoint(args.out)[1].get("state", {})
    outputs = f" C={cfg.model.C}" if "C" in cfg.model else ""
    print(f"{args.out}: {cfg.model.name}{outputs}, {os.path.getsize(args.out) / 1e6:.1f} MB, "
          f"epoch {state.get('epoch')}, step {state.get('step')}, best validation score {state.get('best_score')}")
    return 0


if __name__ == "__main__":
    run_main(main)
