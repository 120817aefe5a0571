"""Shared pieces of the entry scripts: one `error:` line instead of a traceback, and the
window and speaker-counting options of evaluate.py and separate.py.

Every entry script runs its main() through `run_main`: a `UserError` (src/errors.py: config,
data, audio, checkpoint, output location, ...) is printed as `error: <message>` with exit
status 2. `--debug` on any entry script's command line, or `GDPRNN_DEBUG=1` in the environment,
shows the traceback instead.
"""
import argparse
import os
import sys

from src.errors import UserError
from src.inference.windows import DEFAULT_OVERLAP_SECONDS, DEFAULT_WINDOW_SECONDS

DEBUG_FLAG = "--debug"
DEBUG_ENV = "GDPRNN_DEBUG"


def run_main(main):
    """Call main() (which parses sys.argv without `--debug`) and exit with its status; a
    UserError -> `error: <message>` on stderr, exit 2 (re-raised in debug mode)."""
    debug = DEBUG_FLAG in sys.argv[1:] or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    sys.argv = [sys.argv[0]] + [arg for arg in sys.argv[1:] if arg != DEBUG_FLAG]
    try:
        status = main()
    except UserError as err:
        if debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(status or 0)


def add_window_arguments(parser):
    """--window-seconds and --overlap-seconds (evaluate.py and separate.py)."""
    parser.add_argument("--window-seconds", type=float, default=DEFAULT_WINDOW_SECONDS,
                        help="inputs longer than this are separated in overlapping windows of this length "
                             f"(bounded memory; default {DEFAULT_WINDOW_SECONDS:g}); 0 = always one call")
    parser.add_argument("--overlap-seconds", type=float, default=DEFAULT_OVERLAP_SECONDS,
                        help="overlap of consecutive windows, at most half a window; speakers are matched across "
                             f"windows on it, so keep it longer than pauses (default {DEFAULT_OVERLAP_SECONDS:g})")


def _threshold_db(text):
    value = float(text)
    if value > 0:
        raise argparse.ArgumentTypeError(f"is relative to the loudest output and must be <= 0, got {text}")
    return value


def add_counting_arguments(parser):
    """--count-model and --threshold-db (speaker counting in evaluate.py and separate.py)."""
    parser.add_argument("--count-model", metavar="CKPT",
                        help="a model that only counts the speakers (a counting model, e.g. the shipped "
                             "pretrained/counter_2_3spk.ckpt, or a separation model by its active outputs); the "
                             "separator for that count then separates (src/inference/speaker_count.py)")
    parser.add_argument("--threshold-db", type=_threshold_db,
                        help="speaker counting: an output counts as a speaker when its energy is at least this many "
                             "dB relative to the loudest output; default: each model's own counting.threshold_db "
                             "(-20 unless calibrated: bench/bench_count_threshold.py)")
