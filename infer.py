"""Offline-inference runner: feed preprocessed .bin inputs to an exported MindIR, write the results.

    python infer.py --mindir MODEL.mindir --bin-dir BINS --result-dir RESULTS
        [--device-target auto] [--device-id 0] [--backend auto]
    python infer.py --mindir MODEL.mindir --input-length     (prints the graph's input length; 0 = any)

BINS is written by `preprocess.py --infer-bins BINS` (raw inputs + index.json, which lists each
model call's input files in the graph's order). Separation: each input `(1, T)` goes through the
model and its output `(1, C, T)` is written to RESULTS under the same name; enhancement: features
`(1, frames, bins)` + frame_lengths `(1,)` give a mask `(1, frames, bins)`; counting: features
`(1, frames, n_mels)` give logits `(1, counts)`. Results are raw float32,
plus RESULTS/run.json. postprocess.py then scores them.

Backends: MindSpore Lite's Python API (`mindspore_lite`, the cloud-side inference package with
the Ascend backend for Ascend 310/310P, or CPU) when it is installed, otherwise MindSpore's
GraphCell. --device-target auto: MindSpore Lite uses Ascend when /dev/davinci<device-id> exists,
else CPU; MindSpore picks Ascend > GPU > CPU. The MindSpore Lite path is untested here (the package
is not on PyPI).
"""
import argparse
import os

from src.cli import run_main

DEVICES = ("auto", "Ascend", "GPU", "CPU")


def _device_name(text):
    """Device names in any case (cpu, CPU, ascend) -> the spelling MindSpore uses."""
    return {d.lower(): d for d in DEVICES}.get(text.lower(), text)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mindir", "--mindir-path", dest="mindir", required=True, help="exported model (export.py)")
    parser.add_argument("--input-length", action="store_true",
                        help="only print the graph's input length in samples (frames for an enhancement graph; "
                             "0 = any length) and exit")
    parser.add_argument("--bin-dir", help="preprocessed inputs (preprocess.py --infer-bins)")
    parser.add_argument("--result-dir", help="where the results go")
    parser.add_argument("--device-target", default="auto", type=_device_name, choices=DEVICES)
    parser.add_argument("--device-id", type=int, default=int(os.environ.get("DEVICE_ID", 0)))
    parser.add_argument("--backend", default="auto", choices=("auto", "lite", "mindspore"),
                        help="auto: MindSpore Lite when installed, else MindSpore")
    args = parser.parse_args(argv)
    if not args.input_length and not (args.bin_dir and args.result_dir):
        parser.error("--bin-dir and --result-dir are required (or --input-length)")
    return args


def input_length(model_path, backend):
    """The graph's fixed input length, 0 for a dynamic axis: samples of a separation graph
    `(1, time)`, frames of an enhancement graph `(1, frames, bins)`."""
    from src.inference.offline import OfflineInferenceError
    from src.inference.runners import lite_available, mindir_input_shapes, open_runner
    if not os.path.isfile(model_path):
        raise OfflineInferenceError(f"{model_path}: model file not found (export one with export.py)")
    if backend == "mindspore" or (backend == "auto" and not lite_available()):
        shape = mindir_input_shapes(model_path)[0]  # read from the file, nothing compiled
    else:
        shape = open_runner(model_path, "CPU", 0, "lite").input_shape
    if len(shape) not in (2, 3):
        raise OfflineInferenceError(f"{model_path}: takes inputs of shape {shape}, neither (1, time) nor "
                                    "(1, frames, bins)")
    return max(shape[1], 0)


def main(argv=None):
    args = parse_args(argv)
    from src.errors import OutputError, check_output_dir
    from src.inference.offline import read_index
    from src.inference.runners import open_runner, run_bins
    from src.tasks import get_task

    if args.input_length:
        print(input_length(args.mindir, args.backend))
        return 0
    if os.path.realpath(args.result_dir) == os.path.realpath(args.bin_dir):
        raise OutputError(f"--result-dir {args.result_dir}: is --bin-dir; the results take the inputs' names, "
                          "give another folder")
    check_output_dir(args.result_dir, "--result-dir")
    runner = open_runner(args.mindir, args.device_target, args.device_id, args.backend)
    task = get_task(read_index(args.bin_dir)["task"])
    run = run_bins(runner, args.mindir, args.bin_dir, args.result_dir, task)
    print(f"{run['num_inputs']} inputs ({run['audio_seconds']:.1f} s of audio) through {args.mindir} with "
          f"{run['backend']} on {run['device']} in {run['elapsed_seconds']:.1f} s "
          f"(real-time factor {run['real_time_factor']:.3f}) -> {args.result_dir}")
    return 0


if __name__ == "__main__":
    run_main(main)
