"""Convert separation data (LibriMix, svoice or a single split folder) to MindRecord splits.

    python preprocess.py --data-dir DIR --out-dir OUT [--mix-type mix_clean] [--split NAME]
        [--sample-rate 8000] [--num-speakers N] [--num-shards 4]
        [--train-name train] [--valid-name valid] [--test-name test] [--resample] [--downmix]

Writes OUT/<name>.mindrecord0..S-1 (+ .db) and OUT/<name>.json per split. Every file is checked
first; any problem is reported (all of them, each naming its file) with exit code 2 and nothing
is written.
"""
import argparse
import sys

from src.audio import AudioError
from src.data.layout import MIX_TYPES, DataError
from src.data.mindrecord import convert_folder


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", "--in-dir", dest="data_dir", required=True,
                        help="LibriMix root (train-360/dev/test), svoice root (tr/cv/tt) or one split folder")
    parser.add_argument("--out-dir", required=True, help="folder for the MindRecord files and manifests")
    parser.add_argument("--mix-type", default="mix_clean", choices=MIX_TYPES,
                        help="LibriMix mixture folder (svoice's 'mix' is found by itself)")
    parser.add_argument("--split", help="a single split folder: its name (default: the folder's name); "
                                        "a root: convert only this split (train, valid or test)")
    parser.add_argument("--sample-rate", type=_positive_int, default=8000)
    parser.add_argument("--num-speakers", type=_positive_int,
                        help="sources per mixture (default: the number of s<k> folders)")
    parser.add_argument("--num-shards", type=_positive_int, default=4, help="files per split (at most one per row)")
    parser.add_argument("--train-name", default="train")
    parser.add_argument("--valid-name", default="valid")
    parser.add_argument("--test-name", default="test")
    parser.add_argument("--resample", action="store_true", help="resample files at another rate (soxr)")
    parser.add_argument("--downmix", action="store_true", help="average the channels of multi-channel files")
    return parser.parse_args(argv)


def convert(args):
    """The MindRecord conversion mode: writes the splits and prints what was written."""
    written = convert_folder(
        args.data_dir, args.out_dir, args.sample_rate, args.num_shards, mix_type=args.mix_type,
        num_speakers=args.num_speakers, split=args.split, resample=args.resample, downmix=args.downmix,
        split_names={"train": args.train_name, "valid": args.valid_name, "test": args.test_name})
    for info in written:
        seconds = info["total_samples"] / info["sample_rate"]
        shards = info["files"]
        files = shards[0] if len(shards) == 1 else f"{shards[0][:-1]}{{0..{len(shards) - 1}}}"
        print(f"{info['name']}: {info['num_rows']} mixtures of {info['num_speakers']} speakers, "
              f"{seconds:.1f} s ({seconds / 3600:.2f} h) at {info['sample_rate']} Hz -> "
              f"{files} (+ .db), {info['manifest_path']}")


def main(argv=None):
    args = parse_args(argv)
    try:
        convert(args)   # the only mode for now; other modes get their own flag and function
    except (DataError, AudioError) as err:
        print(f"preprocess.py: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
