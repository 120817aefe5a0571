"""Score offline-inference results as evaluate.py does: stitch, align, SI-SNRi / SDRi report
(separation), or mask x noisy spectrum, inverse STFT, SI-SNR / STOI / PESQ report (enhancement),
or speaker counts and their confusion matrix (counting).

    python postprocess.py --bin-dir BINS --result-dir RESULTS [--out-dir OUT] [--data-dir TEST_PATH]
        [--pesq] [--stoi]

BINS: written by `preprocess.py --infer-bins` (its index.json says which data, window and overlap);
RESULTS: written by infer.py. The references are read again from the data preprocess.py read
(or --data-dir). evaluate.py's own separation (windows, speaker alignment across windows,
cross-fades) and scoring run with the stored results in place of the model
(src/inference/offline.py), so a dynamic-length graph gives evaluate.py's numbers.

Enhancement bins (preprocess.py --infer-bins -c CONFIG): the pairs are rebuilt from the config and
data recorded in index.json (--data-dir does not apply), the stored masks go through
evaluate.py's Enhancer (mask x noisy spectrum, noisy phase, inverse STFT) and the pairs are scored
as `evaluate.py` scores an enhancement checkpoint (SI-SNR, STOI, PESQ and their improvements,
per SNR and overall; --pesq / --stoi are implied).

Counting bins (preprocess.py --infer-bins -c COUNTER_CONFIG): the mixtures recorded in index.json are
read again and counted by the counter of the recorded config with the stored logits (windows
averaged as evaluate.py does); the report is evaluate.py's for a counting model: the count found
per mixture, the confusion matrix and the accuracy (--data-dir does not apply).

Writes OUT/per_utterance.csv and OUT/summary.json (default OUT: RESULTS/../report) and prints
`Average SISNR improvement: <dB>` (counting: `Speaker counting accuracy: ...`). Exit status 1 when
some utterance could not be scored.
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


def main(argv=None):
    args = parse_args(argv)
    from src.errors import check_output_dir
    from src.evaluation.report import publish
    from src.inference.offline import read_index, read_run
    from src.tasks import get_task

    check_output_dir(output_dir(args), "--out-dir" if args.out_dir else "the default --out-dir")
    index = read_index(args.bin_dir)
    run = read_run(args.result_dir, index, args.bin_dir)
    return publish(get_task(index["task"]).score_offline(index, run, args, _command(argv)), output_dir(args))


if __name__ == "__main__":
    run_main(main)
