"""Release a trained model: its training checkpoint without the optimizer state (weights and the
stored config; a third of the size), checked by loading it back.

    python tools/release_model.py exp/swave_2spk/checkpoints/best.ckpt pretrained/swave_2spk.ckpt [key=value ...]
    python tools/release_model.py exp/swave_3spk/checkpoints/epoch_0012.ckpt out.ckpt --average 8

key=value changes the stored config, for settings that leave the parameters as they are (e.g.
model.input_rms=0.072: the level every mixture is brought to before the network).
--average K releases the mean of the weights of the checkpoint and of the K-1 epoch checkpoints
before it in its folder (weight averaging over the last epochs, as in fairseq or ESPnet).
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
    parser.add_argument("--average", type=int, default=1, metavar="K",
                        help="average the weights of the checkpoint (epoch_NNNN.ckpt) and the K-1 epochs before it")
    args = parser.parse_intermixed_args(argv)     # key=value may follow --average
    if args.average < 1:
        parser.error(f"--average must be at least 1, not {args.average}")
    from src.runtime.checkpoint import load_model, preceding_epoch_checkpoints, read_checkpoint, save_weights_only
    earlier = preceding_epoch_checkpoints(args.checkpoint, args.average - 1) if args.average > 1 else []
    candidate = args.out + ".unchecked.ckpt"      # `out` is replaced only by a model that loads
    save_weights_only(args.checkpoint, candidate, args.overrides, earlier)
    try:
        _, cfg = load_model(candidate)               # strict: every parameter present, nothing extra
    except BaseException:
        os.remove(candidate)
        raise
    os.replace(candidate, args.out)
    meta = read_checkpoint(args.out)[1]
    state = meta.get("state", {})
    outputs = f" C={cfg.model.C}" if "C" in cfg.model else ""
    averaged = f", weights averaged over {', '.join(meta['averaged'])}" if "averaged" in meta else ""
    print(f"{args.out}: {cfg.model.name}{outputs}, {os.path.getsize(args.out) / 1e6:.1f} MB, "
          f"epoch {state.get('epoch')}, step {state.get('step')}, best validation score {state.get('best_score')}"
          f"{averaged}")
    return 0


if __name__ == "__main__":
    run_main(main)
