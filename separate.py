"""Separate recordings into one file per speaker (or enhance them, with an enhancement model).

    python separate.py INPUT [INPUT ...] --out-dir OUT [--model-path CKPT [CKPT ...]] [--count-model CKPT]
        [--force] [--plot] [--window-seconds 20] [--overlap-seconds 2] [--threshold-db DB] [-c CONFIG]

INPUT: audio files, folders (their audio files, not recursive) or glob patterns ("rec/*.wav").
Writes OUT/<name>_s1.wav ... OUT/<name>_sC.wav (16-bit, at the model's sample rate) and with
--plot OUT/<name>_spectrogram.png (mixture and every speaker). Existing outputs are never
overwritten without --force (the message names the file); with --force, older outputs of the
same input beyond the new speaker count are removed. Inputs are never overwritten: an input
whose outputs would take another input's name (rec.wav and rec_s1.wav in OUT) is refused.

Inputs at another sample rate are resampled (soxr) and multi-channel inputs averaged to mono,
each with a note. Inputs longer than --window-seconds are separated in overlapping windows, so
the network's memory is bounded by the window whatever the length (the audio itself, about 12
bytes per sample for two speakers, is held in memory).

A speech-enhancement checkpoint (train.py -c configs/rt*.yaml) instead writes OUT/<name>_enhanced.wav:
the network's mask on the noisy magnitude, the noisy phase, inverse STFT; same windowing and checks.

Several checkpoints (one per speaker count): the number of speakers of each input is found
(src/inference/speaker_count.py) and as many files are written; --count-model CKPT: a model that
only counts (a counting model, or a separation model by its active outputs), the others separate. Without --model-path, the shipped 2- and
3-speaker models and the shipped counter (pretrained/, see pretrained/MODEL_CARD.md) are used that way.

An input that cannot be read, is empty, too short or silent is reported by name and skipped;
the others are still separated. Exit status: 0 if every input was separated, 1 otherwise,
2 for unusable options or checkpoints.
"""
import argparse
import glob
import os
import re
import sys

import numpy as np

from src.cli import run_main
from src.errors import UserError


class InputError(UserError):
    """An input path that gives no audio file; str() names it."""


def audio_suffixes():
    """File suffixes soundfile can read (.wav, .flac, .ogg, ...)."""
    import soundfile as sf
    return tuple(sorted(f".{name.lower()}" for name in sf.available_formats() if name.lower() != "raw"))


def expand_inputs(inputs):
    """Files named by `inputs` (files, folders, glob patterns), in order, each once ->
    (files, problems) with one message per input that named nothing usable."""
    files, problems, seen = [], [], set()
    suffixes = audio_suffixes()

    def add(path):
        key = os.path.abspath(path)
        if key not in seen:
            seen.add(key)
            files.append(path)

    for item in inputs:
        if os.path.isdir(item):
            found = sorted(os.path.join(item, n) for n in os.listdir(item)
                           if n.lower().endswith(suffixes) and os.path.isfile(os.path.join(item, n)))
            if not found:
                problems.append(f"{item}: folder holds no audio files ({', '.join(suffixes)})")
            for path in found:
                add(path)
        elif os.path.exists(item):
            add(item)
        elif glob.has_magic(item):
            found = sorted(p for p in glob.glob(item) if os.path.isfile(p))
            if not found:
                problems.append(f"{item}: no file matches this pattern")
            for path in found:
                add(path)
        else:
            problems.append(f"{item}: file not found")
    return files, problems


def output_stem(path):
    return os.path.splitext(os.path.basename(path))[0]


def stem_of_output(name):
    """The input stem whose audio output the file name `name` would be (`<stem>_<suffix>.wav` for
    any task's output names: `_s<k>`, `_enhanced`), else None."""
    from src.tasks import all_tasks
    suffixes = "|".join(task.output_pattern for task in all_tasks() if task.output_pattern)
    match = re.fullmatch(rf"(.+)_({suffixes})\.wav", name)
    return match and match.group(1)


def overwritten_inputs(files, out_dir):
    """{input: another input in out_dir that its outputs would overwrite} over `files`."""
    out_dir = os.path.realpath(out_dir)
    in_out_dir = [p for p in files if os.path.dirname(os.path.realpath(p)) == out_dir]
    victims = {stem_of_output(os.path.basename(p)): p for p in in_out_dir if stem_of_output(os.path.basename(p))}
    return {path: victims[output_stem(path)] for path in files if output_stem(path) in victims}


def existing_outputs(out_dir, stem, with_plot):
    """Paths in out_dir that processing `stem` would overwrite (any `<stem>_s<k>.wav`,
    `<stem>_enhanced.wav`, the plot)."""
    if not os.path.isdir(out_dir):
        return []
    found = [os.path.join(out_dir, n) for n in sorted(os.listdir(out_dir)) if stem_of_output(n) == stem]
    plot = plot_path(out_dir, stem)
    if with_plot and os.path.exists(plot):
        found.append(plot)
    return found


def plot_path(out_dir, stem):
    return os.path.join(out_dir, f"{stem}_spectrogram.png")


def read_mixture(path, sample_rate, min_samples):
    """The input as mono float32 at `sample_rate` -> (mixture, notes). AudioError naming the file
    when it is unreadable, empty, too short or silent."""
    from src.audio import AudioError, audio_info, is_silent, read_audio

    rate, _, channels = audio_info(path)
    notes = []
    if channels > 1:
        notes.append(f"{channels} channels averaged to mono")
    if rate != sample_rate:
        notes.append(f"resampled from {rate} Hz to the model's {sample_rate} Hz (outputs are at {sample_rate} Hz)")
    mixture, _ = read_audio(path, sample_rate, resample_to_rate=True, downmix=True)
    if len(mixture) < min_samples:
        raise AudioError(path, f"is too short: {len(mixture)} samples at {sample_rate} Hz "
                               f"(the model needs at least {min_samples})")
    if is_silent(mixture):
        peak = float(np.max(np.abs(mixture)))
        level = "all samples are zero" if peak == 0 else f"peak {20 * np.log10(peak):.0f} dBFS"
        raise AudioError(path, f"holds only silence ({level}): nothing to separate")
    return mixture, notes


def separate_file(path, task, separators, sample_rate, min_samples, out_dir, window, overlap, threshold_db,
                  force=False, plot=False, counter=None):
    """Separate one input with the `task`'s models and write its outputs -> (written paths, notes);
    threshold_db, counter: as in count_and_separate. AudioError / SeparationError / InputError name
    the problem."""
    from src.audio import write_audio
    from src.inference.speaker_count import count_and_separate, describe_runs
    from src.inference.windows import separate

    stem = output_stem(path)
    existing = existing_outputs(out_dir, stem, plot)
    if existing and not force:
        raise InputError(f"{path}: {existing[0]} already exists (use --force to overwrite)")
    mixture, notes = read_mixture(path, sample_rate, min_samples)
    if len(separators) == 1 and counter is None:
        (num_speakers, separate_fn), = separators.items()
        estimates = separate(separate_fn, mixture, num_speakers, window, overlap)
    else:
        num_speakers, estimates, trace = count_and_separate(separators, mixture, threshold_db, window, overlap,
                                                            counter=counter)
        notes.append(f"{num_speakers} speaker{'s' if num_speakers > 1 else ''} found "
                     f"(models run: {describe_runs(trace)})")
    estimates = task.output_level(mixture, estimates)
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for index, estimate in enumerate(estimates):
        target = os.path.join(out_dir, task.output_name(stem, index))
        write_audio(target, estimate, sample_rate)
        written.append(target)
    for stale in sorted(set(existing) - set(written) - {plot_path(out_dir, stem)}):
        os.remove(stale)
        notes.append(f"removed {stale} (from an earlier run with more speakers)")
    if plot:
        from src.plotting import plot_separation
        written.append(plot_separation(mixture, estimates, sample_rate, plot_path(out_dir, stem),
                                       task.plot_labels(len(estimates)), title=os.path.basename(path)))
    return written, notes


def parse_args(argv=None):
    from src.cli import add_counting_arguments, add_window_arguments
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="audio files, folders or glob patterns")
    parser.add_argument("--model-path", nargs="+", metavar="CKPT",
                        help="checkpoint(s); several = one per speaker count (the count is found per input); "
                             "default: the shipped 2- and 3-speaker models in pretrained/")
    parser.add_argument("--out-dir", required=True, help="folder for the separated files")
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")
    parser.add_argument("--plot", action="store_true", help="also write <name>_spectrogram.png")
    parser.add_argument("-c", "--config", help="yaml config to use instead of the one stored in the checkpoint "
                                               "(single checkpoint only)")
    add_window_arguments(parser)
    add_counting_arguments(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from src.audio import AudioError
    from src.errors import check_output_dir
    from src.inference.separation import SeparationError
    from src.inference.windows import window_samples
    from src.inference.speaker_count import model_thresholds
    from src.runtime.checkpoint import model_config, pretrained_separation_models
    from src.tasks import load_counter, task_of

    files, problems = expand_inputs(args.inputs)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not files:
        print("error: no input to separate", file=sys.stderr)
        return 1
    check_output_dir(args.out_dir)
    clobbering = overwritten_inputs(files, args.out_dir)
    if args.model_path:
        checkpoints, count_model = args.model_path, args.count_model
    else:
        checkpoints, shipped_counter = pretrained_separation_models()
        count_model = args.count_model or shipped_counter
    cfg = model_config(checkpoints[0], args.config)
    task = task_of(cfg)
    separators, configs = task.load_separators(checkpoints, cfg, args.config)
    counter = count_model and load_counter(count_model, configs, args.threshold_db)
    thresholds = model_thresholds(configs, args.threshold_db) if len(separators) > 1 or counter else None
    sample_rate = next(iter(configs.values())).sample_rate
    min_samples = max(task.min_input_samples(cfg) for cfg in configs.values())
    window, overlap = window_samples(args.window_seconds, args.overlap_seconds, sample_rate)

    first_with_stem, failed = {}, list(problems)
    for path in files:
        stem = output_stem(path)
        try:
            if path in clobbering:
                raise InputError(f"{path}: its outputs would overwrite the input {clobbering[path]} in --out-dir "
                                 f"{args.out_dir}; give another --out-dir")
            if stem in first_with_stem:
                raise InputError(f"{path}: its outputs would take the names of those of {first_with_stem[stem]} "
                                 f"({task.output_name(stem, 0)}, ...); separate it in another run or rename it")
            first_with_stem[stem] = path
            written, notes = separate_file(path, task, separators, sample_rate, min_samples, args.out_dir, window,
                                           overlap, thresholds, args.force, args.plot, counter)
        except (AudioError, SeparationError, InputError) as err:
            message = str(err) if str(err).startswith(path) else f"{path}: {err}"
            print(f"error: {message}", file=sys.stderr)
            failed.append(message)
            continue
        for note in notes:
            print(f"note: {path}: {note}")
        print(f"{path} -> {', '.join(written)}")
    done = len(files) - (len(failed) - len(problems))
    print(f"separated {done} of {len(files) + len(problems)} input(s)"
          + (f"; {len(failed)} failed (see the errors above)" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    run_main(main)
