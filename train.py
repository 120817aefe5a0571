"""Train a model (SWave separation or R-Transformer enhancement) from a yaml config.

    python train.py -c configs/demo.yaml [key=value ...] [--restart] [--distributed]

Re-running the same command resumes from the experiment's latest checkpoint.
"""
import argparse

from src.cli import run_main


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", required=True, help="yaml config (configs/*.yaml)")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. train.lr=1e-3 model.R=4")
    parser.add_argument("--restart", action="store_true",
                        help="start over even if the experiment has checkpoints (old ones are moved aside)")
    parser.add_argument("--distributed", action="store_true",
                        help="data-parallel worker (started by scripts/run_distribute_train.sh / msrun)")
    args = parser.parse_args(argv)

    from src.config import load_config
    from src.training.trainer import train
    train(load_config(args.config, args.overrides), restart=args.restart, distributed=args.distributed)


if __name__ == "__main__":
    run_main(main)
