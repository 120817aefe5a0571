"""Score trained separation models on full utterances (SI-SNRi, SDRi, optionally PESQ and STOI),
or a speech enhancement model on noisy/clean pairs (SI-SNR, STOI, PESQ and their improvements).

    python evaluate.py --model-path CKPT [CKPT ...] --data-dir DIR [DIR ...] [--out-dir OUT]
        [--split test] [--batch-size 1] [--pesq] [--stoi] [--window-seconds 20] [--overlap-seconds 2]
        [--count-model CKPT] [--threshold-db DB] [-c CONFIG]

DIR: a MindRecord split (test.mindrecord0, its prefix or test.json), a folder holding the split
`<split>.json` written by preprocess.py, or an audio folder (LibriMix / svoice root or one split
folder: mix_clean|mix, s1, s2, ...). Several DIRs are evaluated together.

Every utterance is scored whole (never cropped), estimates matched to the sources by the best
SI-SNR permutation. Utterances longer than --window-seconds are separated in overlapping windows
(src/inference/separation.py), so memory stays bounded whatever their length; shorter ones in
one call, as in the paper's protocol. --batch-size separates up to N utterances of equal
length together (and N windows of a long one); utterances of different lengths are never
padded into a batch.

One checkpoint: the model separates every mixture into C speakers (the data must have C sources).
Several checkpoints (one per speaker count, e.g. C=2 and C=3): the unknown-number-of-speakers
procedure (src/inference/speaker_count.py) picks the count per mixture; the report has the
counting confusion matrix, SI-SNRi on correctly counted mixtures, and SI-SNRi on all mixtures
against the true sources (a source without an output is scored with the unprocessed mixture,
i.e. 0 dB improvement; outputs beyond the true count are not scored). --count-model CKPT: that
model counts, the checkpoints of --model-path (one or more) separate.

Speaker-counting checkpoint alone (train.py -c configs/counter_2_3spk.yaml):

    python evaluate.py --model-path CKPT [--data-dir DIR [DIR ...]] [--split test] [--out-dir OUT]

The count found for every mixture of the DIRs (default: the Libri<n>Mix folder of every count in the
config's data.valid, e.g. build/corpus); prints the confusion matrix and the accuracy.

Enhancement checkpoint (train.py -c configs/rt*.yaml):

    python evaluate.py --model-path CKPT [--data-dir CLEAN NOISE] [--split test] [--out-dir OUT] [-c CONFIG]

The config's fixed test pairs (every utterance of data.test_clean at every SNR of data.test_snrs,
noise from data.test_noise chosen as in validation; --split valid: the validation pairs) are
enhanced whole and scored: SI-SNR, STOI and PESQ (wide band at 16 kHz), each as enhanced and as
improvement over the noisy input, per SNR and overall. --data-dir CLEAN NOISE: other clean
speech and noise (folders or list files). The window and batch options do not apply.

Writes OUT/per_utterance.csv and OUT/summary.json (averages + checkpoint, config, data) and prints
`Average SISNR improvement: <dB>`. Exit status 1 when some utterance could not be scored.
"""
import argparse
import os
import sys

from src.cli import run_main


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def parse_args(argv=None):
    from src.cli import add_counting_arguments, add_window_arguments
    from src.data.layout import MIX_TYPES
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-path", nargs="+", required=True, metavar="CKPT",
                        help="checkpoint(s); several = one per speaker count (speaker counting)")
    parser.add_argument("--data-dir", nargs="+", metavar="DIR",
                        help="MindRecord split(s) or audio folder(s) with mixtures and sources (required for "
                             "separation); enhancement: CLEAN NOISE instead of the config's test data")
    parser.add_argument("--out-dir", help="where per_utterance.csv and summary.json go (default: <experiment>/eval "
                                          "for a checkpoint in <experiment>/checkpoints, else <ckpt folder>/eval)")
    parser.add_argument("-c", "--config", help="yaml config to use instead of the one stored in the checkpoint "
                                               "(single checkpoint only)")
    parser.add_argument("--split", default="test", help="split of a data root with several (default: test)")
    parser.add_argument("--mix-type", default="mix_clean", choices=MIX_TYPES, help="LibriMix mixture folder")
    parser.add_argument("--resample", action="store_true", help="audio folders: resample files at another rate")
    parser.add_argument("--downmix", action="store_true", help="audio folders: average multi-channel files")
    parser.add_argument("--batch-size", type=_positive_int, default=1,
                        help="utterances of equal length separated together, and windows per call for long "
                             "ones (default 1)")
    parser.add_argument("--pesq", action="store_true", help="also compute PESQ (slow; enhancement: always)")
    parser.add_argument("--stoi", action="store_true", help="also compute STOI (enhancement: always)")
    add_window_arguments(parser)
    add_counting_arguments(parser)
    return parser.parse_args(argv)


def default_out_dir(checkpoint):
    folder = os.path.dirname(os.path.abspath(checkpoint))
    if os.path.basename(folder) == "checkpoints":
        folder = os.path.dirname(folder)
    return os.path.join(folder, "eval")


def output_dir(args):
    """--out-dir or the default, checked writable before anything is evaluated."""
    from src.errors import check_output_dir
    out_dir = args.out_dir or default_out_dir(args.model_path[0])
    check_output_dir(out_dir, "--out-dir" if args.out_dir else "the default --out-dir")
    return out_dir


def _command(argv):
    return " ".join([os.path.basename(sys.argv[0] or "evaluate.py")] + (sys.argv[1:] if argv is None else argv))


def main(argv=None):
    args = parse_args(argv)
    from src.evaluation.report import publish
    from src.runtime.checkpoint import model_config
    from src.tasks import load_counter, task_of

    cfg = model_config(args.model_path[0], args.config)
    task = task_of(cfg)
    out_dir = output_dir(args)
    return publish(task.evaluate(args, cfg, _command(argv), load_counter), out_dir)


if __name__ == "__main__":
    run_main(main)
