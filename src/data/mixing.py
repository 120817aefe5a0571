"""Mixtures from single-speaker recordings: the level rule shared by every mixture this toolkit
makes, and training batches mixed on the fly.

Level rule (`scale_sources`): every source is normalised to SOURCE_RMS (about -26 dBFS), given its
gain in dB, and if the mixture or a source would peak above PEAK all are scaled down together.

On-the-fly training batches (`SpeechMixer`): step `step` of epoch `epoch` is a global batch whose
item i takes k utterances of k different speakers (k = C, or drawn uniformly from
`speaker_counts`; the other C - k sources are silent, all zeros), a random crop of `segment_samples` of each
(shorter utterances are zero-padded; the item's length is the shortest source), gains uniform in
+-gain_db dB, and sums them. With `speed` > 0 every crop is first played at a speed drawn uniformly
in 1 +- speed (linear interpolation: tempo and pitch change together, as Kaldi's and SpeechBrain's
speed perturbation), which makes new voices from the same speakers. Every choice comes from
`default_rng([seed, epoch, step])`; worker k of n takes items k::n of the global batch, so batches
are the same for any worker count and a resumed run replays an uninterrupted one.

Speaker of a file: the first field of a LibriSpeech-style name (`103-1240-0000.flac` -> 103),
otherwise the name of the folder holding the file.
"""
import functools
import os
import re

import numpy as np

from src.audio import read_audio
from src.data.layout import DataError, check_audio_files, list_audio_files

SOURCE_RMS = 0.05     # about -26 dBFS before the gain
PEAK = 0.9
LIBRISPEECH_ID = r"(\d+)-\d+-\d+"   # a LibriSpeech utterance id, speaker-chapter-utterance (group 1: speaker)
_LIBRISPEECH_NAME = re.compile(rf"^{LIBRISPEECH_ID}$")


def scale_sources(signals, gains_db):
    """Sources `(C, T)` at SOURCE_RMS times their gain `(C,)` dB, peak-limited together
    -> (sources float32 `(C, T)`, mixture float32 `(T,)` = their float32 sum)."""
    signals = np.asarray(signals, np.float64)
    rms = np.sqrt(np.mean(signals ** 2, axis=1, keepdims=True)) + 1e-8
    sources = signals * (10.0 ** (np.asarray(gains_db, np.float64)[:, None] / 20.0) * SOURCE_RMS / rms)
    peak = max(np.abs(sources.sum(axis=0)).max(), np.abs(sources).max())
    if peak > PEAK:
        sources *= PEAK / peak
    sources = sources.astype(np.float32)
    mix = sources[0].copy()
    for source in sources[1:]:
        mix += source
    return sources, mix


def speaker_of(path):
    """Speaker id of an audio file (see the module docstring)."""
    stem = os.path.splitext(os.path.basename(path))[0]
    match = _LIBRISPEECH_NAME.match(stem)
    return match.group(1) if match else os.path.basename(os.path.dirname(os.path.abspath(path)))


@functools.lru_cache(maxsize=2)
def load_speakers(source, sample_rate, resample=False):
    """Every utterance of `source` (folder or list file, `list_audio_files`) grouped by speaker
    -> tuple of (speaker, tuple of float32 `(time,)` signals), sorted by speaker id.
    Cached: the trainer asks again every epoch. Raises DataError naming every unusable file."""
    files = list_audio_files(source, "single-speaker speech")
    problems = check_audio_files(files, sample_rate, resample)
    if problems:
        raise DataError(problems, context=source)
    by_speaker = {}
    for path in files:
        by_speaker.setdefault(speaker_of(path), []).append(read_audio(path, sample_rate, resample)[0])
    return tuple((speaker, tuple(signals)) for speaker, signals in sorted(by_speaker.items()))


def active_sources(sources):
    """The speakers of mixed items: `sources (..., C, T)` -> the number of sources that are not all
    zero `(...)` (SpeechMixer pads items with fewer speakers than C with silent sources)."""
    return np.sum(np.any(np.asarray(sources) != 0, axis=-1), axis=-1)


class SpeechMixer:
    """Training batches mixed on the fly from single-speaker utterances (module docstring).

    speakers: `load_speakers(...)` output; needs at least max(speaker_counts) speakers.
    num_speakers: C, the sources of every item. speaker_counts: the active ones of an item, drawn
    uniformly from this list (each <= C); None = always C. speed: largest relative speed change
    of a source (0 = off)."""

    def __init__(self, speakers, num_speakers, segment_samples, gain_db, seed, where="speech",
                 speaker_counts=None, speed=0.0):
        self.counts = tuple(speaker_counts or (num_speakers,))
        if max(self.counts) > num_speakers or min(self.counts) < 1:
            raise DataError(f"{where}: speaker counts {list(self.counts)} must be between 1 and model.C={num_speakers}")
        if len(speakers) < max(self.counts):
            raise DataError(f"{where}: {len(speakers)} speakers, fewer than the {max(self.counts)} "
                            "a mixture needs (model.C or data.speaker_counts)")
        self.speakers, self.num_speakers = speakers, num_speakers
        self.segment, self.gain_db, self.seed, self.speed = segment_samples, gain_db, seed, speed

    def _crop(self, signal, rng):
        """A random crop of up to `segment` samples of `signal`, played at a random speed when
        `speed` > 0 (no draw otherwise, so the random stream is what it was without it)."""
        if not self.speed:
            start = int(rng.integers(0, max(len(signal) - self.segment, 0) + 1))
            return signal[start:start + self.segment]
        factor = rng.uniform(1.0 - self.speed, 1.0 + self.speed)
        span = min(len(signal), int(np.ceil(self.segment * factor)))
        start = int(rng.integers(0, len(signal) - span + 1))
        times = np.arange(min(self.segment, int(span / factor))) * factor
        return np.interp(times, np.arange(span), signal[start:start + span]).astype(np.float32)

    def _item(self, rng):
        """One mixture -> (mix `(T,)`, sources `(C, T)`, length): levels set on the real samples,
        zeros past the length and in the silent sources."""
        # one count: no draw, so the random stream (and every batch) is what it was before speaker_counts
        active = self.counts[0] if len(self.counts) == 1 else int(rng.choice(self.counts))
        crops = []
        for speaker in rng.choice(len(self.speakers), size=active, replace=False):
            utterances = self.speakers[speaker][1]
            crops.append(self._crop(utterances[rng.integers(len(utterances))], rng))
        length = min(len(crop) for crop in crops)
        sources, mix = scale_sources([crop[:length] for crop in crops],
                                     rng.uniform(-self.gain_db, self.gain_db, size=active))
        pad = self.segment - length
        return np.pad(mix, (0, pad)), np.pad(sources, ((0, self.num_speakers - active), (0, pad))), length

    def batch(self, epoch, step, batch_size, num_shards=1, shard_id=0):
        """Worker `shard_id`'s part of global batch `step` of `epoch` -> numpy
        `(mix (B, T) float32, src (B, C, T) float32, lengths (B,) int32)`, B = batch_size / num_shards."""
        rng = np.random.default_rng([self.seed, epoch, step])
        items = [self._item(rng) for _ in range(batch_size)][shard_id::num_shards]
        mix, src, lengths = zip(*items)
        return np.stack(mix), np.stack(src), np.asarray(lengths, np.int32)

    def epoch_batches(self, epoch, steps, batch_size, num_shards=1, shard_id=0):
        """The `steps` batches of `epoch` for worker `shard_id` (see `batch`)."""
        for step in range(steps):
            yield self.batch(epoch, step, batch_size, num_shards, shard_id)
