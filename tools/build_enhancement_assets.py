"""Developer tool (run once, not at run time): build assets/mini_enhancement, the bundled demo
data of the enhancement recipe (configs/rt_demo.yaml).

Takes 24 LibriSpeech utterances (16 kHz FLAC, `<speaker>/<utt>.flac`), keeps the loudest
CLIP_SECONDS of each (short fades at the cuts) and cuts one 30 s stretch of a noise recording
into disjoint train / valid / test segments. Speakers are disjoint across splits. Output
(16-bit mono FLAC, 16 kHz):

    <out>/clean/{train,valid,test}/<speaker>/<utt>.flac
    <out>/noise/{train,valid,test}/<noise name>_<start>-<end>s.flac
    <out>/README.md, <out>/LICENSE.md, <out>/LIBRISPEECH_LICENSE.TXT

    python tools/build_enhancement_assets.py --librispeech DIR --noise doing_the_dishes.wav
"""
import argparse
import glob
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from src.audio import read_audio, write_audio  # noqa: E402

SAMPLE_RATE = 16000
CLIP_SECONDS = 1.7         # keeps the set under 1.5 MB (these FLAC clips take ~21 kB/s)
FADE = 160                 # 10 ms fades where an utterance is cut
SEARCH_HOP = 1600          # 0.1 s steps when searching the loudest clip
# speaker -> utterances taken (first ones in id order); female 367 533 1998 3080 3331,
# male 1688 2033 2414 2609 3005
SPEAKERS = {
    "train": {"367": 3, "533": 3, "1998": 2, "1688": 3, "2033": 3, "2414": 2},
    "valid": {"3080": 2, "2609": 2},
    "test": {"3331": 2, "3005": 2},
}
# noise seconds [start, end) per split, from one recording (quieter second half compresses better)
NOISE_SECONDS = {"train": (62, 82), "valid": (82, 87), "test": (87, 92)}

README = """# mini enhancement set (demo data of configs/rt_demo.yaml)

Clean speech: **LibriSpeech ASR corpus (c) 2014 Vassil Panayotov, CC BY 4.0**
(<http://www.openslr.org/12>, licence in `LIBRISPEECH_LICENSE.TXT`): {num_clean} utterances of
the `test-other` subset, {clip:g} s each (the loudest {clip:g} s of the utterance, 10 ms fades at
the cuts), 16 kHz 16-bit FLAC, `clean/<split>/<speaker>/<utterance id>.flac`. Speakers
(disjoint across splits): {speakers}.

Noise: `{noise_name}` from the `_background_noise_` folder of the **Speech Commands dataset
(Warden, 2018), CC BY 4.0** (<https://arxiv.org/abs/1804.03209>), seconds {noise_ranges},
one disjoint segment per split, 16 kHz 16-bit FLAC in `noise/<split>/`.

Both are used under CC BY 4.0 (<https://creativecommons.org/licenses/by/4.0/>); the changes are
the excerpts and the re-encoding listed above, made by `tools/build_enhancement_assets.py`.
Noisy mixtures are made at run time (src/data/enhancement.py).
"""

LICENSE = """# Licences of the files in this folder

- `clean/`: excerpts of the LibriSpeech ASR corpus, (c) 2014 Vassil Panayotov, licensed under
  the Creative Commons Attribution 4.0 International License (CC BY 4.0); LibriSpeech's own
  notice is in `LIBRISPEECH_LICENSE.TXT`.
- `noise/`: excerpts of `{noise_name}` from the Speech Commands dataset (P. Warden, "Speech
  Commands: A Dataset for Limited-Vocabulary Speech Recognition", 2018), licensed under
  CC BY 4.0.

CC BY 4.0: <https://creativecommons.org/licenses/by/4.0/>. The files were cut and re-encoded
(see README.md); no other changes.
"""


def loudest_clip(signal, samples):
    """The `samples`-long stretch of `signal` with the most energy (0.1 s grid), with fades."""
    if len(signal) <= samples:
        return signal.copy()
    energy = np.concatenate([[0.0], np.cumsum(signal.astype(np.float64) ** 2)])
    starts = np.arange(0, len(signal) - samples + 1, SEARCH_HOP)
    start = int(starts[np.argmax(energy[starts + samples] - energy[starts])])
    clip = signal[start:start + samples].copy()
    ramp = np.linspace(0.0, 1.0, FADE, dtype=np.float32)
    clip[:FADE] *= ramp
    clip[-FADE:] *= ramp[::-1]
    return clip


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--librispeech", required=True, help="folder with <speaker>/<utt>.flac and LICENSE.TXT")
    parser.add_argument("--noise", required=True, help="16 kHz noise recording (Speech Commands background noise)")
    parser.add_argument("--out", default="assets/mini_enhancement")
    args = parser.parse_args()

    if os.path.isdir(args.out):
        shutil.rmtree(args.out)
    clip_samples = int(CLIP_SECONDS * SAMPLE_RATE)
    num_clean = 0
    for split, speakers in SPEAKERS.items():
        for speaker, count in speakers.items():
            files = sorted(glob.glob(os.path.join(args.librispeech, speaker, "*.flac")))[:count]
            if len(files) < count:
                sys.exit(f"{args.librispeech}/{speaker}: fewer than {count} utterances")
            for path in files:
                signal, _ = read_audio(path, SAMPLE_RATE)
                out = os.path.join(args.out, "clean", split, speaker, os.path.basename(path))
                write_audio(out, loudest_clip(signal, clip_samples), SAMPLE_RATE, subtype="PCM_16")
                num_clean += 1

    noise, _ = read_audio(args.noise, SAMPLE_RATE)
    noise_name = os.path.splitext(os.path.basename(args.noise))[0]
    for split, (start, end) in NOISE_SECONDS.items():
        if end * SAMPLE_RATE > len(noise):
            sys.exit(f"{args.noise}: shorter than {end} s")
        out = os.path.join(args.out, "noise", split, f"{noise_name}_{start}-{end}s.flac")
        write_audio(out, noise[start * SAMPLE_RATE:end * SAMPLE_RATE], SAMPLE_RATE, subtype="PCM_16")

    shutil.copy(os.path.join(args.librispeech, "LICENSE.TXT"), os.path.join(args.out, "LIBRISPEECH_LICENSE.TXT"))
    speakers = "; ".join(f"{split}: {', '.join(s)}" for split, s in SPEAKERS.items())
    ranges = ", ".join(f"{a}-{b} ({split})" for split, (a, b) in NOISE_SECONDS.items())
    with open(os.path.join(args.out, "README.md"), "w", encoding="utf-8") as f:
        f.write(README.format(num_clean=num_clean, clip=CLIP_SECONDS, speakers=speakers,
                              noise_name=os.path.basename(args.noise), noise_ranges=ranges))
    with open(os.path.join(args.out, "LICENSE.md"), "w", encoding="utf-8") as f:
        f.write(LICENSE.format(noise_name=os.path.basename(args.noise)))
    size = sum(os.path.getsize(os.path.join(d, n)) for d, _, names in os.walk(args.out) for n in names)
    print(f"wrote {num_clean} clean clips and {len(NOISE_SECONDS)} noise segments to {args.out} "
          f"({size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
