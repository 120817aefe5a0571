"""Convert separation data (LibriMix, svoice or a single split folder) to MindRecord splits.

    python preprocess.py --data-dir DIR --out-dir OUT [--mix-type mix_clean] [--split NAME]
        [--sample-rate 8000] [--num-speakers N] [--num-shards 4]
        [--train-name train] [--valid-name valid] [--test-name test] [--resample] [--downmix]

Writes OUT/<name>.mindrecord0..S-1 (+ .db) and OUT/<name>.json per split. Every file is checked
first; any problem is reported (all of them, each naming its file) with exit code 2 and nothing
is written.

Offline-inference mode (scripts/run_infer_310.sh): instead of MindRecord, write each test mixture
as the raw float32 inputs of an exported graph, plus BINS/index.json (src/inference/offline.py):

    python preprocess.py --infer-bins BINS --data-dir TEST_PATH [--fixed-length N]
        [--window-seconds W] [--overlap-seconds O] [--max-utterances K] [--split test] [--sample-rate 8000]

TEST_PATH: anything evaluate.py reads (MindRecord split, its folder, an audio folder). --fixed-length N
(the graph's input length, export.py --length): windows of N samples; 0 (default): a dynamic-length
graph, windows as evaluate.py's --window-seconds / --overlap-seconds.

For an enhancement model, give its config instead of data (the STFT settings and the fixed pairs
of data.<split>_clean / _noise / _snrs, as evaluate.py scores them):

    python preprocess.py --infer-bins BINS -c CONFIG [--split test] [--max-utterances K]

writes each pair's mask-network inputs (features and frame lengths, src/inference/offline.py).
For a speaker-counting model, its config and a folder holding Libri<n>Mix for every count it tells
apart (default: the config's data.valid, e.g. build/corpus):

    python preprocess.py --infer-bins BINS -c CONFIG [--data-dir ROOT] [--split test] [--max-utterances K]

writes the log-mel features of every window the counter scores, for every mixture of every count.
"""
import argparse
import sys

from src.cli import run_main
from src.data.layout import MIX_TYPES
from src.errors import check_output_dir
from src.inference.windows import DEFAULT_OVERLAP_SECONDS, DEFAULT_WINDOW_SECONDS


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_int(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or a positive integer, got {text}")
    return value


DEFAULT_SAMPLE_RATE = 8000


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", "--in-dir", dest="data_dir",
                        help="LibriMix root (train-360/dev/test), svoice root (tr/cv/tt) or one split folder")
    parser.add_argument("--out-dir", help="folder for the MindRecord files and manifests")
    parser.add_argument("--mix-type", default="mix_clean", choices=MIX_TYPES,
                        help="LibriMix mixture folder (svoice's 'mix' is found by itself)")
    parser.add_argument("--split", help="a single split folder: its name (default: the folder's name); "
                                        "a root: convert only this split (train, valid or test)")
    parser.add_argument("--sample-rate", type=_positive_int,
                        help=f"required rate (default {DEFAULT_SAMPLE_RATE}; with -c the config's)")
    parser.add_argument("--num-speakers", type=_positive_int,
                        help="sources per mixture (default: the number of s<k> folders)")
    parser.add_argument("--num-shards", type=_positive_int, default=4, help="files per split (at most one per row)")
    parser.add_argument("--train-name", default="train")
    parser.add_argument("--valid-name", default="valid")
    parser.add_argument("--test-name", default="test")
    parser.add_argument("--resample", action="store_true", help="resample files at another rate (soxr)")
    parser.add_argument("--downmix", action="store_true", help="average the channels of multi-channel files")
    parser.add_argument("--refuse-silent", action="store_true",
                        help="treat silent sources as errors (default: a warning naming each; evaluation and "
                             "validation cannot score utterances with one)")
    infer = parser.add_argument_group("offline inference (instead of MindRecord)")
    infer.add_argument("--infer-bins", metavar="BINS",
                       help="write the test mixtures as raw float32 model inputs + BINS/index.json "
                            "(--data-dir: any data evaluate.py reads)")
    infer.add_argument("--fixed-length", type=_non_negative_int, default=0, metavar="N",
                       help="input samples of a fixed-length graph (export.py --length N); 0 = dynamic (default)")
    infer.add_argument("--window-seconds", type=float, default=DEFAULT_WINDOW_SECONDS,
                       help="dynamic graph: mixtures longer than this in windows, as evaluate.py (0 = whole)")
    infer.add_argument("--overlap-seconds", type=float, default=DEFAULT_OVERLAP_SECONDS,
                       help="overlap of windows, as evaluate.py (fixed length: at most half of it)")
    infer.add_argument("--max-utterances", type=_non_negative_int, default=0,
                       help="only the first K mixtures (enhancement: clean utterances, each at every SNR; 0 = all)")
    infer.add_argument("-c", "--config", help="an enhancement model's config: write its test pairs' network inputs "
                                              "(instead of --data-dir); a counting model's: its inputs for the "
                                              "mixtures under --data-dir ROOT (default: the config's data.valid)")
    args = parser.parse_args(argv)
    if not args.infer_bins and not args.out_dir:
        parser.error("--out-dir is required (or --infer-bins for offline inference)")
    if args.config and not args.infer_bins:
        parser.error("-c/--config goes with --infer-bins (the inputs of an enhancement model)")
    if not args.config and not args.data_dir:
        parser.error("--data-dir is required (or -c CONFIG with --infer-bins for an enhancement or counting model)")
    return args


def convert(args):
    """The MindRecord conversion mode: writes the splits and prints what was written."""
    from src.data.mindrecord import SILENT_SOURCE, convert_folder
    check_output_dir(args.out_dir)
    written = convert_folder(
        args.data_dir, args.out_dir, args.sample_rate or DEFAULT_SAMPLE_RATE, args.num_shards, mix_type=args.mix_type,
        num_speakers=args.num_speakers, split=args.split, resample=args.resample, downmix=args.downmix,
        refuse_silent=args.refuse_silent,
        split_names={"train": args.train_name, "valid": args.valid_name, "test": args.test_name})
    for info in written:
        for path in info["silent_sources"]:
            print(f"warning: {path}: {SILENT_SOURCE} (--refuse-silent makes this an error)", file=sys.stderr)
        seconds = info["total_samples"] / info["sample_rate"]
        shards = info["files"]
        files = shards[0] if len(shards) == 1 else f"{shards[0][:-1]}{{0..{len(shards) - 1}}}"
        print(f"{info['name']}: {info['num_rows']} mixtures of {info['num_speakers']} speakers, "
              f"{seconds:.1f} s ({seconds / 3600:.2f} h) at {info['sample_rate']} Hz -> "
              f"{files} (+ .db), {info['manifest_path']}")


def write_infer_bins(args):
    """The offline-inference mode: every model input of the test data (separation: --data-dir's
    mixtures; an enhancement or counting config's test data with -c) as a .bin file + index, by its task."""
    from src.config import load_config
    from src.tasks import task_of

    cfg = load_config(args.config) if args.config else None
    if cfg is None:
        args.sample_rate = args.sample_rate or DEFAULT_SAMPLE_RATE
    task = task_of(cfg)
    check_output_dir(args.infer_bins, "--infer-bins")
    task.write_offline_inputs(args, cfg)


def main(argv=None):
    args = parse_args(argv)
    if args.infer_bins:
        write_infer_bins(args)
    else:
        convert(args)
    return 0


if __name__ == "__main__":
    run_main(main)
