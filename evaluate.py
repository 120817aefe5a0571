"""Score trained separation models on full utterances (SI-SNRi, SDRi, optionally PESQ and STOI),
or a speech enhancement model on noisy/clean pairs (SI-SNR, STOI, PESQ and their improvements).

    python evaluate.py --model-path CKPT [CKPT ...] --data-dir DIR [DIR ...] [--out-dir OUT]
        [--split test] [--batch-size 1] [--pesq] [--stoi] [--window-seconds 20] [--overlap-seconds 2]
        [--threshold-db -20] [-c CONFIG]

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
i.e. 0 dB improvement; outputs beyond the true count are not scored).

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
    from src.data.layout import MIX_TYPES
    from src.evaluation import add_window_arguments
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


def _chained(sources):
    """Utterances of several data folders one after the other, each row tagged with its folder."""
    from src.evaluation import sized

    def generate():
        for path, utterances in sources:
            for utt in utterances:
                utt["data"] = path
                yield utt
    lengths = [len(u) if hasattr(u, "__len__") else None for _, u in sources]
    return generate() if None in lengths else sized(generate(), sum(lengths))


def _command(argv):
    return " ".join([os.path.basename(sys.argv[0] or "evaluate.py")] + (sys.argv[1:] if argv is None else argv))


def evaluate_enhancement(args, cfg, argv):
    """The enhancement report: the config's (or --data-dir's) fixed pairs, scored whole."""
    from src import evaluation

    out_dir = output_dir(args)
    enhancer, cfg = evaluation.load_enhancer(args.model_path, cfg)
    if args.resample:
        cfg.data.resample = True
    if args.downmix:
        cfg.data.downmix = True
    pairs, data = evaluation.enhancement_pairs(cfg, args.split, args.data_dir)
    rows = evaluation.evaluate_enhancement(enhancer, pairs, cfg.sample_rate)
    if not rows:
        raise evaluation.EvaluationError(f"no pairs in {data['clean']}")
    summary = evaluation.summarize_enhancement(rows)
    meta = {"checkpoint": os.path.abspath(args.model_path[0]), "config": cfg.to_dict(), "data": data,
            "sample_rate": cfg.sample_rate, "command": _command(argv)}
    evaluation.print_enhancement_summary(summary)
    csv_path, json_path = evaluation.write_report(rows, summary, out_dir, meta)
    print(f"Per-pair scores: {csv_path}; summary: {json_path}")
    return 1 if summary["failed"] else 0


def main(argv=None):
    args = parse_args(argv)
    from src import evaluation

    first_cfg = evaluation.checkpoint_config(args.model_path[0], args.config)
    if evaluation.is_enhancement(first_cfg):
        return evaluate_enhancement(args, first_cfg, argv)
    if not args.data_dir:
        raise evaluation.EvaluationError("--data-dir is required for a separation model (the test mixtures and "
                                         "their sources)")
    out_dir = output_dir(args)
    separators, configs = evaluation.load_separators(args.model_path, args.config)
    counting = len(separators) > 1
    sample_rate = next(iter(configs.values())).sample_rate
    window, overlap = evaluation.window_samples(args.window_seconds, args.overlap_seconds, sample_rate)
    num_speakers = None if counting else next(iter(configs))
    sources = [(path, evaluation.open_utterances(path, sample_rate, num_speakers, args.split, args.mix_type,
                                                 args.resample, args.downmix))
               for path in args.data_dir]
    utterances = _chained(sources) if len(sources) > 1 else sources[0][1]

    if counting:
        rows = evaluation.evaluate_counting(separators, utterances, sample_rate, args.threshold_db, window,
                                            overlap, args.batch_size)
    else:
        (separate_fn,) = separators.values()
        rows = evaluation.evaluate_utterances(separate_fn, utterances, sample_rate, window, overlap,
                                              args.pesq, args.stoi, batch_size=args.batch_size)
    if not rows:
        raise evaluation.EvaluationError(f"no utterances in {', '.join(args.data_dir)}")

    summary = evaluation.summarize_counting(rows) if counting else evaluation.summarize(rows)
    meta = {
        "checkpoint": [os.path.abspath(p) for p in args.model_path] if counting else os.path.abspath(args.model_path[0]),
        "config": {str(c): cfg.to_dict() for c, cfg in configs.items()} if counting
        else next(iter(configs.values())).to_dict(),
        "data": [os.path.abspath(p) for p in args.data_dir],
        "split": args.split, "mix_type": args.mix_type, "sample_rate": sample_rate,
        "window_seconds": args.window_seconds if window else None,
        "overlap_seconds": args.overlap_seconds if window else None,
        "batch_size": args.batch_size,
        "command": _command(argv),
    }
    if counting:
        meta["threshold_db"] = args.threshold_db
        meta["unmatched_outputs"] = ("a true source without an output is scored with the mixture as its estimate "
                                     "(0 dB improvement); outputs beyond the true count are not scored")
    if counting:
        evaluation.print_counting_summary(summary)
    else:
        evaluation.print_summary(summary)
    csv_path, json_path = evaluation.write_report(rows, summary, out_dir, meta)
    print(f"Per-utterance scores: {csv_path}; summary: {json_path}")
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    run_main(main)
