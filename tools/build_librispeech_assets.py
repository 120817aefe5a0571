"""Developer tool (run once, not at run time): build 8 kHz LibriSpeech assets for the repository.

Reads a folder of LibriSpeech FLAC utterances (`SPEAKER-CHAPTER-UTT.flac`, at any depth, 16 kHz),
resamples to 8 kHz with soxr, trims leading silence, keeps at most `--max-seconds` from the start
(0: all; a 10 ms fade-out at a cut) and writes `<out>/<speaker>/<utt>.flac` (16-bit FLAC) or
`.ogg` (`--ogg`: Ogg Vorbis, about a third of the size), plus LibriSpeech's LICENSE.TXT, the
SPEAKERS.TXT lines of the speakers used, and a README. With `--dev-per-sex K`, K female and K male
speakers drawn with `--seed` go to `<out>/dev/`, the others to `<out>/train/`.

    python tools/build_librispeech_assets.py --librispeech DIR [--out assets/mini_librispeech]
    python tools/build_librispeech_assets.py --librispeech ../shared/data/librispeech-train-clean-100 \
        --out assets/librispeech_train_8k --max-seconds 0 --ogg --dev-per-sex 8 --seed 2020
"""
import argparse
import glob
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from src.audio import read_audio, resample, write_audio  # noqa: E402

TARGET_RATE = 8000
FRAME = 160           # 20 ms frames at 8 kHz for the silence detector
SILENCE_DB = -40.0    # frames this far below the loudest frame count as silence
LEAD_IN = 800         # keep 100 ms before the first loud frame
FADE = 80             # 10 ms fade-out where an utterance is cut

README = """# LibriSpeech {subset}, 8 kHz ({num_files} utterances of {num_speakers} speakers)

Source: **LibriSpeech ASR corpus (c) 2014 Vassil Panayotov, CC BY 4.0**
(<http://www.openslr.org/12>, licence in `LICENSE.TXT`, speakers in `SPEAKERS.TXT`).

{num_files} utterances ({seconds:.0f} s) of the LibriSpeech `{subset}` subset, from the speakers
{speakers}.

What was changed (by `tools/build_librispeech_assets.py`):
- resampled from 16 kHz to 8 kHz with soxr (high quality);
- leading silence trimmed (audio from 100 ms before the first 20 ms frame within 40 dB of the
  loudest frame){cut};
- stored as {codec}, `{layout}<speaker>/<utterance id>.{ext}` (LibriSpeech's utterance ids).
{split}
`src/data/corpus.py` says which speakers each split (train / dev / test) uses and mixes these
files into LibriMix-layout sets; see the README there and in the repository root.
"""


def trim(signal, max_samples):
    """Drop leading silence, keep at most `max_samples` (None: all), fade out if cut. `(time,)` -> `(time',)`."""
    frames = len(signal) // FRAME
    energy = (signal[:frames * FRAME].reshape(frames, FRAME) ** 2).mean(axis=1) + 1e-12
    level = 10 * np.log10(energy / energy.max())
    start = max(int(np.argmax(level > SILENCE_DB)) * FRAME - LEAD_IN, 0)
    if max_samples is None:
        return signal[start:].copy()
    out = signal[start:start + max_samples].copy()
    if len(signal) - start > max_samples:
        out[-FADE:] *= np.linspace(1.0, 0.0, FADE, dtype=np.float32)
    return out


def _draw_dev(speaker_lines, per_sex, seed):
    """`per_sex` female and `per_sex` male speaker ids drawn from SPEAKERS.TXT rows -> set (empty for 0)."""
    if not per_sex:
        return set()
    rows = [ln.split("|") for ln in speaker_lines if not ln.startswith(";")]
    rng = np.random.default_rng(seed)
    by_sex = [sorted((r[0].strip() for r in rows if r[1].strip() == sex), key=int) for sex in ("F", "M")]
    return {str(s) for group in by_sex for s in rng.choice(group, per_sex, replace=False)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--librispeech", required=True, help="folder with <speaker>/<utt>.flac, SPEAKERS.TXT, LICENSE.TXT")
    parser.add_argument("--out", default="assets/mini_librispeech")
    parser.add_argument("--max-seconds", type=float, default=4.0, help="0: keep whole utterances")
    parser.add_argument("--ogg", action="store_true", help="Ogg Vorbis instead of 16-bit FLAC")
    parser.add_argument("--dev-per-sex", type=int, default=0, help="female and male speakers each put in dev/")
    parser.add_argument("--seed", type=int, default=2020, help="draw of the dev speakers")
    args = parser.parse_args()

    files = sorted(glob.glob(os.path.join(args.librispeech, "**", "*.flac"), recursive=True))
    if not files:
        sys.exit(f"no .flac files in {args.librispeech}")
    if os.path.isdir(args.out):
        shutil.rmtree(args.out)
    max_samples = int(round(args.max_seconds * TARGET_RATE)) or None
    ext, subtype = ("ogg", "VORBIS") if args.ogg else ("flac", "PCM_16")
    speakers = sorted({os.path.basename(f).split("-")[0] for f in files}, key=int)
    with open(os.path.join(args.librispeech, "SPEAKERS.TXT"), encoding="utf-8") as f:
        lines = f.readlines()
    kept = [ln for ln in lines if ln.startswith(";") or ln.split("|")[0].strip() in speakers]
    dev = _draw_dev(kept, args.dev_per_sex, args.seed)
    total = 0
    for path in files:
        signal, rate = read_audio(path)
        signal = trim(resample(signal, rate, TARGET_RATE), max_samples)
        utt = os.path.basename(path)[:-len(".flac")]
        speaker = utt.split("-")[0]
        split = ("dev" if speaker in dev else "train") if dev else ""
        write_audio(os.path.join(args.out, split, speaker, f"{utt}.{ext}"), signal, TARGET_RATE, subtype=subtype)
        total += len(signal)

    shutil.copy(os.path.join(args.librispeech, "LICENSE.TXT"), os.path.join(args.out, "LICENSE.TXT"))
    with open(os.path.join(args.out, "SPEAKERS.TXT"), "w", encoding="utf-8") as f:
        f.writelines(kept)
    subsets = sorted({ln.split("|")[2].strip() for ln in kept if not ln.startswith(";")})
    cut = f", then cut to at most {args.max_seconds:g} s from the start, with a 10 ms fade-out at the cut" \
        if max_samples else ""
    codec = "Ogg Vorbis (libsndfile's default quality)" if args.ogg else "16-bit mono FLAC"
    with open(os.path.join(args.out, "README.md"), "w", encoding="utf-8") as f:
        f.write(README.format(subset=", ".join(subsets), num_files=len(files), num_speakers=len(speakers),
                              seconds=total / TARGET_RATE, speakers=", ".join(speakers), cut=cut,
                              codec=codec, ext=ext, layout="{train,dev}/" if dev else "",
                              split=f"- dev/ holds the speakers {', '.join(sorted(dev, key=int))} ({args.dev_per_sex} "
                                    f"female, {args.dev_per_sex} male, drawn with seed {args.seed}); train/ the others.\n"
                                    if dev else ""))
    print(f"wrote {len(files)} files, {total / TARGET_RATE:.1f} s of audio, to {args.out}")


if __name__ == "__main__":
    main()
