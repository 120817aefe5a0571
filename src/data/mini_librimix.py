"""Deterministic generator of the bundled demo set ("mini LibriMix") from assets/mini_librispeech.

Layout as LibriMix (8 kHz, "min" mode):
`out_dir/Libri{2,3}Mix/{train,dev,test}/{mix_clean,s1,s2[,s3]}/<uttA>_<uttB>[_<uttC>].wav`.
Speakers are disjoint across splits. Sources are cropped to the shortest and scaled by
`mixing.scale_sources` with random gains of +-GAIN_DB dB; the mixture is the float32 sum of the
sources as written (float32 WAV, so `mix == s1 + s2 (+ s3)` exactly). Same output on every run
(fixed seed, numpy RNG).

    python -m src.data.mini_librimix build/mini_librimix
"""
import argparse
import os
import shutil

import numpy as np

from src.audio import read_audio, write_audio
from src.data.mixing import scale_sources
from src.errors import UserError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_ASSETS = os.path.join(REPO_ROOT, "assets", "mini_librispeech")
SAMPLE_RATE = 8000
SEED = 2020
SPEAKERS = {"train": ("367", "533", "1688", "2033"),
            "dev": ("1998", "2414", "3080"),
            "test": ("2609", "3005", "3331")}
NUM_MIXTURES = {2: {"train": 120, "dev": 20, "test": 20},
                3: {"train": 60, "dev": 12, "test": 12}}
GAIN_DB = 3.0
MAX_REPEATS = 10000             # draws in a row that repeat a chosen mixture before giving up


def _choose_mixtures(utterances, count, num_speakers, rng):
    """`count` distinct tuples of utterance ids, each from `num_speakers` different speakers,
    using every utterance about equally often. utterances: {speaker: [utt ids]}."""
    speakers = sorted(utterances)
    uses = {u: 0 for utts in utterances.values() for u in utts}
    chosen, seen, repeats = [], set(), 0
    while len(chosen) < count:
        if repeats > MAX_REPEATS:
            raise UserError(f"cannot draw {count} distinct mixtures of {num_speakers} from {len(speakers)} speakers "
                            f"with {len(uses)} utterances (found {len(chosen)})")
        group = []
        for speaker in rng.choice(speakers, size=num_speakers, replace=False):
            candidates = utterances[speaker]
            least = min(uses[u] for u in candidates)
            group.append(rng.choice([u for u in candidates if uses[u] == least]))
        if frozenset(group) in seen:
            repeats += 1
            continue
        seen.add(frozenset(group))
        repeats = 0
        for u in group:
            uses[u] += 1
        chosen.append(tuple(str(u) for u in group))
    return chosen


def _mix(signals, rng):
    """Sources cropped to the shortest, at random gains of +-GAIN_DB dB (`mixing.scale_sources`)
    -> (sources `(speakers, time)`, mixture `(time,)`)."""
    length = min(len(s) for s in signals)
    return scale_sources([s[:length] for s in signals], rng.uniform(-GAIN_DB, GAIN_DB, size=len(signals)))


def read_speakers(assets_dir, speakers, sample_rate=SAMPLE_RATE):
    """{utterance id: float32 `(time,)`} of every audio file in `assets_dir/<speaker>/` for `speakers`."""
    audio = {}
    for speaker in speakers:
        folder = os.path.join(assets_dir, speaker)
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"{folder}: missing (the bundled LibriSpeech assets are incomplete)")
        for name in sorted(os.listdir(folder)):
            stem, ext = os.path.splitext(name)
            if ext in (".flac", ".ogg"):
                audio[stem] = read_audio(os.path.join(folder, name), sample_rate)[0]
    return audio


def write_mixture_sets(out_dir, audio, speakers_by_split, counts, seed=SEED):
    """Write `out_dir/Libri{C}Mix/<split>/{mix_clean,s1..sC}/` for every C of `counts`, replacing those
    splits' old mixtures (other splits in `out_dir` are kept).

    audio: {utterance id: signal}; an id's speaker is its text before the first "-".
    speakers_by_split: {split: speaker ids}; counts: {C: {split: number of mixtures}}.
    -> summary {"Libri{C}Mix": {split: count}, "seconds": total mixture seconds}."""
    summary, total = {}, 0
    for num_speakers, split_counts in counts.items():
        dataset = f"Libri{num_speakers}Mix"
        summary[dataset] = {}
        for split_index, (split, speakers) in enumerate(speakers_by_split.items()):
            rng = np.random.default_rng([seed, num_speakers, split_index])
            utterances = {s: sorted(u for u in audio if u.split("-")[0] == s) for s in speakers}
            folder = os.path.join(out_dir, dataset, split)
            shutil.rmtree(folder, ignore_errors=True)
            for group in _choose_mixtures(utterances, split_counts[split], num_speakers, rng):
                sources, mix = _mix([audio[u] for u in group], rng)
                name = "_".join(group) + ".wav"
                write_audio(os.path.join(folder, "mix_clean", name), mix, SAMPLE_RATE, subtype="FLOAT")
                for k, source in enumerate(sources):
                    write_audio(os.path.join(folder, f"s{k + 1}", name), source, SAMPLE_RATE, subtype="FLOAT")
                total += len(mix)
            summary[dataset][split] = split_counts[split]
    summary["seconds"] = total / SAMPLE_RATE
    return summary


def build_mini_librimix(out_dir, assets_dir=DEFAULT_ASSETS):
    """Write Libri2Mix and Libri3Mix (train/dev/test) into out_dir, replacing old ones -> summary dict
    {"out_dir", "sample_rate", "Libri2Mix": {split: count}, "Libri3Mix": {...}, "seconds": total mixture seconds}."""
    audio = read_speakers(assets_dir, [s for speakers in SPEAKERS.values() for s in speakers])
    return {"out_dir": out_dir, "sample_rate": SAMPLE_RATE,
            **write_mixture_sets(out_dir, audio, SPEAKERS, NUM_MIXTURES)}


def builder_parser(description, default_out):
    """Command line of a mixture-set builder: `python -m MODULE [OUT_DIR]` (add options to it)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("out_dir", nargs="?", default=default_out)
    return parser


def print_summary(out_dir, summary):
    print(f"{out_dir}: Libri2Mix {summary['Libri2Mix']}, Libri3Mix {summary['Libri3Mix']}, "
          f"{summary['seconds'] / 60:.1f} min of mixtures")


if __name__ == "__main__":
    out_dir = builder_parser("Build the mini LibriMix demo set.", os.path.join("build", "mini_librimix")).parse_args().out_dir
    print_summary(out_dir, build_mini_librimix(out_dir))
