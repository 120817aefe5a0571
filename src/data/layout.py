"""Find separation utterances in LibriMix / svoice / single-split folders and validate them.

Layouts (split names are mapped to "train", "valid", "test"):
- LibriMix root: `<root>/{train-360|train-100|train, dev, test}/{mix_clean|mix_both|mix_single, s1, s2, ...}`
  (train-360 is used when both train-360 and train-100 exist; `noise/` is ignored).
- svoice root:   `<root>/{tr, cv, tt}/{mix, s1, s2, ...}`.
- split folder:  `<root>/{mix_clean|mix, s1, s2, ...}`; the caller names the split.

An utterance is a mixture file plus one file of the same name (stem) in every `s<k>` folder.
Problems are collected, not raised one at a time: `find_splits` records pairing problems on each
`Split`, `check_split` adds per-file problems, and `DataError` lists all of them.
"""
import os
import re
from dataclasses import dataclass, field

import numpy as np

from src.audio import AudioError, header_problems, read_audio
from src.errors import UserError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
LIBRIMIX_SPLITS = {"train": ("train-360", "train-100", "train"), "valid": ("dev",), "test": ("test",)}
SVOICE_SPLITS = {"train": ("tr",), "valid": ("cv",), "test": ("tt",)}
MIX_TYPES = ("mix_clean", "mix_both", "mix_single")
_SOURCE_DIR = re.compile(r"^s(\d+)$")


class DataError(UserError):
    """Unusable data; the message lists every problem found (each naming its file)."""

    def __init__(self, problems, context=None):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        head = f"{context}: " if context else ""
        if len(self.problems) == 1:
            problem = self.problems[0]   # a problem naming a file inside `context` says enough
            message = problem if context and problem.startswith(context) else head + problem
        else:
            message = f"{head}{len(self.problems)} problems:\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(message)


@dataclass
class Utterance:
    """One mixture and its sources (file paths); `key` is the shared file name without extension."""
    key: str
    mix: str
    sources: tuple


@dataclass
class Split:
    """The utterances of one split folder, and the pairing problems found while listing them."""
    name: str
    folder: str
    num_speakers: int
    utterances: list = field(default_factory=list)
    problems: list = field(default_factory=list)


def resampled_length(frames, orig_sr, target_sr):
    """Length soxr produces when resampling `frames` samples from orig_sr to target_sr."""
    return (2 * frames * target_sr + orig_sr) // (2 * orig_sr)


def _audio_files(folder):
    """{stem: path} of the audio files in `folder`, and problems for stems present twice."""
    files, problems = {}, []
    for name in sorted(os.listdir(folder)):
        stem, ext = os.path.splitext(name)
        if ext.lower() not in AUDIO_EXTENSIONS or not os.path.isfile(os.path.join(folder, name)):
            continue
        if stem in files:
            problems.append(f"{os.path.join(folder, name)}: another file with the same name exists "
                            f"({os.path.basename(files[stem])})")
            continue
        files[stem] = os.path.join(folder, name)
    return files, problems


def _source_folders(folder):
    """Numerically sorted `s<k>` folder names in `folder` (s1, s2, ..., s10)."""
    found = [(int(m.group(1)), name) for name in os.listdir(folder)
             if (m := _SOURCE_DIR.match(name)) and os.path.isdir(os.path.join(folder, name))]
    return [name for _, name in sorted(found)]


def _mix_folder(folder, mix_type):
    """The mixture folder of a split folder: `mix_type` if present, else `mix` (svoice)."""
    for name in (mix_type, "mix"):
        if os.path.isdir(os.path.join(folder, name)):
            return name
    return None


def scan_split(folder, name, mix_type="mix_clean", num_speakers=None):
    """List the utterances of one split folder -> Split (pairing problems in `Split.problems`)."""
    split = Split(name=name, folder=folder, num_speakers=num_speakers or 0)
    mix_name = _mix_folder(folder, mix_type)
    if mix_name is None:
        others = [m for m in MIX_TYPES if os.path.isdir(os.path.join(folder, m))]
        hint = f" (found {', '.join(others)}: choose it with the mix type option)" if others else ""
        split.problems.append(f"{folder}: no mixture folder '{mix_type}' or 'mix'{hint}")
    source_names = _source_folders(folder)
    numbers = [int(s[1:]) for s in source_names]
    if not source_names:
        split.problems.append(f"{folder}: no source folders s1, s2, ...")
    elif numbers != list(range(1, len(numbers) + 1)):
        missing = sorted(set(range(1, max(numbers) + 1)) - set(numbers))
        split.problems.append(f"{folder}: source folders {', '.join(source_names)} are not numbered "
                              f"1..{len(numbers)} (missing {', '.join(f's{k}' for k in missing)})")
    elif num_speakers is not None and len(source_names) != num_speakers:
        split.problems.append(f"{folder}: has {len(source_names)} source folders (s1..s{len(source_names)}) "
                              f"but {num_speakers} speakers were requested")
    if split.problems:
        return split
    split.num_speakers = len(source_names)

    mix_files, problems = _audio_files(os.path.join(folder, mix_name))
    split.problems += problems
    if not mix_files:
        split.problems.append(f"{os.path.join(folder, mix_name)}: no audio files ({'/'.join(AUDIO_EXTENSIONS)})")
    source_files = []
    for source_name in source_names:
        files, problems = _audio_files(os.path.join(folder, source_name))
        split.problems += problems
        for stem in sorted(set(files) - set(mix_files)):
            split.problems.append(f"{files[stem]}: no mixture with this name in {os.path.join(folder, mix_name)}")
        source_files.append(files)
    for stem in sorted(mix_files):
        missing = [os.path.join(folder, s) for s, files in zip(source_names, source_files) if stem not in files]
        if missing:
            split.problems.append(f"{mix_files[stem]}: no source file '{stem}' in {', '.join(missing)}")
            continue
        split.utterances.append(Utterance(stem, mix_files[stem], tuple(files[stem] for files in source_files)))
    return split


def find_splits(root, mix_type="mix_clean", num_speakers=None, split=None):
    """Detect the layout of `root` and list its splits -> {name: Split}.

    For a LibriMix or svoice root the names are "train", "valid", "test" (those present; `split`
    keeps only one of them). For a single split folder `split` is its name (default: the folder's name).
    num_speakers: expected source count (default: the number of `s<k>` folders).
    Raises DataError when `root` is not one of the layouts; pairing problems stay in `Split.problems`.
    """
    if not os.path.isdir(root):
        raise DataError(f"{root}: folder not found")
    for layout in (SVOICE_SPLITS, LIBRIMIX_SPLITS):
        folders = {}
        for canonical, candidates in layout.items():
            present = [c for c in candidates if os.path.isdir(os.path.join(root, c))]
            if present:
                folders[canonical] = os.path.join(root, present[0])
        if folders:
            if split is not None:
                if split not in folders:
                    raise DataError(f"{root}: no '{split}' split (found {', '.join(folders)})")
                folders = {split: folders[split]}
            return {name: scan_split(folder, name, mix_type, num_speakers) for name, folder in folders.items()}
    if _source_folders(root) or _mix_folder(root, mix_type):
        name = split or os.path.basename(os.path.normpath(os.path.abspath(root)))
        return {name: scan_split(root, name, mix_type, num_speakers)}
    hint = ""
    rate_dirs = sorted(d for d in os.listdir(root) if re.match(r"^wav\d+k$", d))
    if rate_dirs:
        hint = f" (this looks like LibriMix's top folder: pass e.g. {os.path.join(root, rate_dirs[0], 'min')})"
    raise DataError(f"{root}: not a LibriMix root (train-360|train-100|train, dev, test), an svoice root "
                    f"(tr, cv, tt) or a split folder ({mix_type}|mix, s1, s2, ...){hint}")


def check_split(split, sample_rate, resample=False, downmix=False, read_samples=False):
    """Problems of a split -> list of messages (empty when usable).

    Includes `split.problems` (pairing), then for every utterance reads the file headers: unreadable
    or empty files, channels (unless `downmix`), sample rate (unless `resample`), and mixture/source
    length mismatches. read_samples: also read the audio of every file whose header is fine
    (finds NaN/Inf samples).
    """
    problems = list(split.problems)
    for utt in split.utterances:
        utt_problems, lengths, readable = [], {}, []
        for path in (utt.mix, *utt.sources):
            file_problems, info = header_problems(path, sample_rate, resample, downmix)
            if info is None:
                utt_problems += file_problems
                continue
            rate, frames, _ = info
            if rate == sample_rate or resample:
                lengths[path] = resampled_length(frames, rate, sample_rate)
            if not file_problems:
                readable.append(path)
            utt_problems += file_problems
        if lengths.get(utt.mix):
            for path in utt.sources:
                if lengths.get(path) and lengths[path] != lengths[utt.mix]:
                    utt_problems.append(f"{path}: {lengths[path]} samples but the mixture {utt.mix} "
                                        f"has {lengths[utt.mix]}")
        if read_samples:
            for path in readable:
                try:
                    read_audio(path, sample_rate, resample_to_rate=resample, downmix=downmix)
                except AudioError as err:
                    utt_problems.append(str(err))
        problems += utt_problems
    return problems


def load_utterance(utt, sample_rate, resample=False, downmix=False):
    """Read one utterance -> (mix `(time,)`, src `(speakers, time)`), float32 at `sample_rate`.

    Raises DataError listing every file of the utterance that is unusable or has another length.
    """
    signals, problems = [], []
    for path in (utt.mix, *utt.sources):
        try:
            signals.append(read_audio(path, sample_rate, resample_to_rate=resample, downmix=downmix)[0])
        except AudioError as err:
            problems.append(str(err))
    if not problems:
        for path, signal in zip(utt.sources, signals[1:]):
            if len(signal) != len(signals[0]):
                problems.append(f"{path}: {len(signal)} samples but the mixture {utt.mix} has {len(signals[0])}")
    if problems:
        raise DataError(problems)
    return signals[0], np.stack(signals[1:])


def list_audio_files(source, what):
    """Sorted audio files of `source`: a folder (searched recursively for .wav/.flac/.ogg) or a list
    file (one path per line; relative paths are relative to the list file; blank lines and lines
    starting with '#' are skipped). `what` names the role in errors ("clean speech", "noise").
    Raises DataError when the source is missing or lists no audio."""
    if not source:
        raise DataError(f"no {what} given (a folder or a list file)")
    source = str(source)
    if os.path.isdir(source):
        files = sorted(
            os.path.join(folder, name)
            for folder, _, names in os.walk(source, followlinks=True)
            for name in names if os.path.splitext(name)[1].lower() in AUDIO_EXTENSIONS)
        if not files:
            raise DataError(f"{source}: {what} folder has no audio files "
                            f"({'/'.join(AUDIO_EXTENSIONS)}, searched recursively)")
        return files
    if os.path.isfile(source):
        base = os.path.dirname(os.path.abspath(source))
        with open(source, encoding="utf-8") as f:
            lines = [line.strip() for line in f]
        files = [os.path.join(base, line) for line in lines if line and not line.startswith("#")]
        if not files:
            raise DataError(f"{source}: {what} list file lists no files")
        return files
    raise DataError(f"{source}: {what} folder or list file not found")


def check_audio_files(files, sample_rate, resample=False, downmix=False):
    """Header check of every file -> list of problems (empty when all are usable): unreadable,
    empty, multi-channel (unless downmix), other sample rate (unless resample)."""
    problems = []
    for path in files:
        problems += header_problems(path, sample_rate, resample, downmix)[0]
    return problems
