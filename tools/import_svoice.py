"""Convert an svoice (PyTorch) SWave checkpoint into a MindSpore checkpoint + config.

    python tools/import_svoice.py outputs/exp_/checkpoint.th --out models/swave_svoice.ckpt [--best]

Writes OUT.ckpt and OUT.yaml (the config for separate/evaluate). PyTorch is not needed, and
nothing in the file is executed (see src/svoice_import.py).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="svoice checkpoint.th (or a file with the model package alone)")
    parser.add_argument("--out", required=True, help="output MindSpore checkpoint (.ckpt); the config "
                                                     "is written next to it with .yaml")
    parser.add_argument("--best", action="store_true",
                        help="take best_state (best validation epoch) instead of the last state")
    args = parser.parse_args(argv)
    from src.svoice_import import import_checkpoint  # after the arguments: MindSpore loads with it
    try:
        ckpt, yaml_path, cfg, config_from = import_checkpoint(args.checkpoint, args.out, best=args.best)
    except ValueError as err:   # ImportCheckpointError, ConfigError, SWaveConfigError
        print(f"error: {err}", file=sys.stderr)
        return 1
    m = cfg.model
    print(f"imported {'best_state' if args.best else 'model state'} of {args.checkpoint}: "
          f"SWave N={m.N} L={m.L} H={m.H} R={m.R} C={m.C} input_normalize={m.input_normalize}, "
          f"sample_rate={cfg.sample_rate}, segment={cfg.segment}")
    print(f"configuration from {config_from}")
    print(f"wrote {ckpt} and {yaml_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
