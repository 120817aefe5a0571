"""Score offline-inference results as evaluate.py does: stitch, align, SI-SNRi / SDRi report
(separation), or mask x noisy spectrum, inverse STFT, SI-SNR / STOI / PESQ report (enhancement).

    python postprocess.py --bin-dir BINS --result-dir RESULTS [--out-dir OUT] [--data-dir TEST_PATH]
        [--pesq] [--stoi]

BINS: written by `preprocess.py --infer-bins` (its index.json says which data, window and overlap);
RESULTS: written by infer.py. The references are read again from the data preprocess.py read
(or --data-dir). evaluate.py's own separation (windows, speaker alignment across windows,
cross-fades) and scoring run with the stored results in place of the model
(src/offline_inference.py), so a dynamic-length graph gives evaluate.py's numbers.

Enhancement bins (preprocess.py --infer-bins -c CONFIG): the pairs are rebuilt from the config and
data recorded in index.json (--data-dir does not apply), the stored masks go through
evaluate.py's Enhancer (mask x noisy spectrum, noisy phase, inverse STFT) and the pairs are scored
as `evaluate.py` scores an enhancement checkpoint (SI-SNR, STOI, PESQ and their improvements,
per SNR and overall; --pesq / --stoi are implied).

Writes OUT/per_utterance.csv and OUT/summary.json (default OUT: RESULTS/../report) and prints
`Average SISNR improvement: <dB>`. Exit status 1 when some utterance could not be scored.
"""
import argparse
import os
import sys

from src.cli import run_main


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin-dir", required=True, help="preprocessed inputs with index.json")
    parser.add_argument("--result-dir", required=True, help="infer.py's results")
    parser.add_argument("--out-dir", help="report folder (default: <result dir>/../report)")
    parser.add_argument("--data-dir", help="separation: data with the references (default: the one in index.json)")
    parser.add_argument("--pesq", action="store_true", help="also compute PESQ (slow)")
    parser.add_argument("--stoi", action="store_true", help="also compute STOI")
    return parser.parse_args(argv)


def output_dir(args):
    return args.out_dir or os.path.join(os.path.dirname(os.path.abspath(args.result_dir)), "report")


def _command(argv):
    return " ".join([os.path.basename(sys.argv[0] or "postprocess.py")] + (sys.argv[1:] if argv is None else argv))


def _run_meta(run):
    return {"model": run["model"], "backend": run["backend"], "device": run["device"],
            "input_shape": run["input_shape"], "real_time_factor": run["real_time_factor"]}


def score_enhancement(args, index, run, argv):
    """Enhancement bins: replay the stored masks through the Enhancer and score the pairs."""
    from src import evaluation
    from src.offline_inference import OfflineInferenceError, ReplayMasker, indexed_pairs, stft_config_of
    from src.tasks.enhancement import Enhancer

    if args.data_dir:
        raise OfflineInferenceError(f"--data-dir {args.data_dir}: enhancement pairs are rebuilt from the config "
                                    f"and data recorded in {args.bin_dir}/index.json; preprocess again for other data")
    enhancer = Enhancer(ReplayMasker(index, args.result_dir), stft_config_of(index))
    rows = evaluation.evaluate_enhancement(enhancer, indexed_pairs(index), index["sample_rate"])
    summary = evaluation.summarize_enhancement(rows)
    meta = {**_run_meta(run), "config": index["config"], "data": index["data"],
            "sample_rate": index["sample_rate"], "bins": os.path.abspath(args.bin_dir),
            "results": os.path.abspath(args.result_dir), "command": _command(argv)}
    evaluation.print_enhancement_summary(summary)
    csv_path, json_path = evaluation.write_report(rows, summary, output_dir(args), meta)
    print(f"Per-pair scores: {csv_path}; summary: {json_path}")
    return 1 if summary["failed"] else 0


def main(argv=None):
    args = parse_args(argv)
    from src import evaluation
    from src.errors import check_output_dir
    from src.offline_inference import ReplaySeparator, indexed_utterances, read_index, read_run

    check_output_dir(output_dir(args), "--out-dir" if args.out_dir else "the default --out-dir")
    index = read_index(args.bin_dir)
    run = read_run(args.result_dir, index, args.bin_dir)
    if index["task"] == "enhancement":
        return score_enhancement(args, index, run, argv)
    rows = evaluation.evaluate_utterances(ReplaySeparator(index, args.result_dir),
                                          indexed_utterances(index, args.data_dir), index["sample_rate"],
                                          index["window"], index["overlap"], args.pesq, args.stoi)
    summary = evaluation.summarize(rows)
    sample_rate = index["sample_rate"]
    meta = {
        **_run_meta(run),
        "data": args.data_dir and os.path.abspath(args.data_dir) or index["data"].get("path"),
        "split": index["data"].get("split"), "mix_type": index["data"].get("mix_type"), "sample_rate": sample_rate,
        "fixed_length": index["fixed_length"] or None,
        "window_seconds": index["window"] / sample_rate if index["window"] else None,
        "overlap_seconds": index["overlap"] / sample_rate if index["overlap"] else None,
        "bins": os.path.abspath(args.bin_dir), "results": os.path.abspath(args.result_dir),
        "command": _command(argv),
    }
    evaluation.print_summary(summary)
    csv_path, json_path = evaluation.write_report(rows, summary, output_dir(args), meta)
    print(f"Per-utterance scores: {csv_path}; summary: {json_path}")
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    run_main(main)
