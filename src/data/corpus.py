"""The bundled speaker corpus of the shipped models: which speakers train, choose and test them,
and the fixed dev / test mixtures (LibriMix layout, 8 kHz).

- train: `assets/librispeech_train_8k/train/` (115 LibriSpeech train-clean-100 speakers, one
  utterance each), mixed on the fly by the trainer (`data.train_speech`, `mixing.SpeechMixer`).
- dev: `assets/librispeech_train_8k/dev/` (16 other train-clean-100 speakers, 8 F / 8 M, drawn
  by tools/build_librispeech_assets.py with seed 2020); each utterance is cut into pieces of about
  DEV_PIECE_SECONDS, which are mixed. For model selection and the speaker-counting threshold.
- test: `assets/mini_librispeech/` (the 10 LibriSpeech test-other speakers, 10 utterances each).
  For the reported figures.

    python -m src.data.corpus [build/corpus] [--dev-mixtures N]  ->  build/corpus/Libri{2,3}Mix/{dev,test}/...
    python -m src.data.corpus OUT --train-speaker-mixtures N     ->  OUT/Libri{2,3}Mix/train/...

The dev split has DEV_MIXTURES mixtures per speaker count, few enough to validate every epoch;
paired comparisons on them resolve differences of about 0.3 dB. `--dev-mixtures 400` writes a
larger dev split (same speakers, other pairings) into another folder, to choose between late
checkpoints with evaluate.py and tools/compare_reports.py. `--train-speaker-mixtures N` writes
instead N mixtures per count of the training speakers, cut and mixed as the dev split is (split
"train" for evaluate.py): how much better a model does on the speakers it was trained on.
"""
import os

import numpy as np

from src.data.mini_librimix import (DEFAULT_ASSETS, REPO_ROOT, SAMPLE_RATE, builder_parser, print_summary,
                                    read_speakers, write_mixture_sets)
from src.errors import UserError

TRAIN_ASSETS = os.path.join(REPO_ROOT, "assets", "librispeech_train_8k")
TRAIN_SPEECH = os.path.join(TRAIN_ASSETS, "train")
DEV_SPEECH = os.path.join(TRAIN_ASSETS, "dev")
TEST_SPEECH = DEFAULT_ASSETS
DEV_PIECE_SECONDS = 4.0
DEV_MIXTURES = 48             # per speaker count
TEST_MIXTURES = 100
SEED = 2021


def _speakers(folder):
    return sorted((d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d))), key=int)


def _pieces(audio, seconds):
    """Cut every utterance into the nearest number (at least 1) of equal pieces of about `seconds`
    -> {"<id>-<k>": signal}."""
    pieces = {}
    for utt, signal in audio.items():
        count = max(1, round(len(signal) / (seconds * SAMPLE_RATE)))
        for k, piece in enumerate(np.array_split(signal, count)):
            pieces[f"{utt}-{k}"] = piece
    return pieces


def build_corpus(out_dir, dev_mixtures=DEV_MIXTURES):
    """Write the dev and test mixtures (`dev_mixtures` dev ones per speaker count) into out_dir
    -> summary (see write_mixture_sets)."""
    dev_speakers, test_speakers = _speakers(DEV_SPEECH), _speakers(TEST_SPEECH)
    audio = _pieces(read_speakers(DEV_SPEECH, dev_speakers), DEV_PIECE_SECONDS)
    audio.update(read_speakers(TEST_SPEECH, test_speakers))
    return write_mixture_sets(out_dir, audio, {"dev": dev_speakers, "test": test_speakers},
                              {c: {"dev": dev_mixtures, "test": TEST_MIXTURES} for c in (2, 3)}, SEED)


def build_train_speaker_mixtures(out_dir, mixtures):
    """Write `mixtures` mixtures per speaker count of the training speakers' DEV_PIECE_SECONDS pieces
    into out_dir/Libri{2,3}Mix/train -> summary (see write_mixture_sets)."""
    speakers = _speakers(TRAIN_SPEECH)
    audio = _pieces(read_speakers(TRAIN_SPEECH, speakers), DEV_PIECE_SECONDS)
    return write_mixture_sets(out_dir, audio, {"train": speakers}, {c: {"train": mixtures} for c in (2, 3)}, SEED)


def main():
    parser = builder_parser("Build the dev/test mixtures of the bundled speaker corpus (or of its training speakers).",
                            os.path.join("build", "corpus"))
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--dev-mixtures", type=int, default=DEV_MIXTURES,
                        help=f"dev mixtures per speaker count (default {DEV_MIXTURES}, what the configs validate on)")
    which.add_argument("--train-speaker-mixtures", type=int, metavar="N",
                        help="write only N mixtures per speaker count of the training speakers (split train), "
                             "not the dev/test ones")
    args = parser.parse_args()
    for option, value in (("--dev-mixtures", args.dev_mixtures),
                          ("--train-speaker-mixtures", args.train_speaker_mixtures)):
        if value is not None and value < 1:
            parser.error(f"{option} must be at least 1, not {value}")
    try:
        if args.train_speaker_mixtures:
            summary = build_train_speaker_mixtures(args.out_dir, args.train_speaker_mixtures)
        else:
            summary = build_corpus(args.out_dir, args.dev_mixtures)
        print_summary(args.out_dir, summary)
    except UserError as err:
        parser.error(str(err))


if __name__ == "__main__":
    main()
