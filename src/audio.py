"""Reading, checking, resampling and writing audio, with errors that name the file."""
import os

import numpy as np
import soundfile as sf

from src.errors import UserError

# a signal whose peak stays below one 16-bit step is silent: nothing to separate, nothing to score
SILENCE_PEAK = 1.0 / 32768


def is_silent(signal):
    """True when the peak of `signal` (any shape) is below one 16-bit step (SILENCE_PEAK)."""
    return float(np.max(np.abs(signal))) < SILENCE_PEAK


class AudioError(UserError):
    """An audio file that cannot be used; str() names the file and the problem."""

    def __init__(self, path, problem):
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


def resample(signal, orig_sr, target_sr):
    """Resample `(time,)` or `(channels, time)` float audio with soxr (high quality)."""
    if orig_sr == target_sr:
        return signal
    import soxr
    if signal.ndim == 1:
        return soxr.resample(signal, orig_sr, target_sr).astype(np.float32)
    return np.stack([soxr.resample(ch, orig_sr, target_sr) for ch in signal]).astype(np.float32)


def read_audio(path, sample_rate=None, resample_to_rate=False, downmix=False, allow_empty=False):
    """Read an audio file as float32 `(time,)`.

    sample_rate: the rate the caller needs; a file at another rate is an error unless
        `resample_to_rate` (then it is resampled with soxr).
    downmix: average channels of multi-channel files; otherwise they are an error.
    Raises AudioError for unreadable, empty, multi-channel or NaN/Inf audio.
    Returns (signal, rate_of_returned_signal).
    """
    if not os.path.isfile(path):
        raise AudioError(path, "file not found")
    try:
        data, sr = sf.read(path, dtype="float32", always_2d=True)
    except Exception as err:  # soundfile raises several types; all mean "not readable audio"
        raise AudioError(path, f"cannot be read as audio ({err})") from None
    if data.shape[0] == 0 and not allow_empty:
        raise AudioError(path, "is empty (0 samples)")
    if data.shape[1] > 1:
        if not downmix:
            raise AudioError(path, f"has {data.shape[1]} channels; expected mono "
                                   "(pass the downmix option to average the channels)")
        data = data.mean(axis=1, keepdims=True)
    signal = np.ascontiguousarray(data[:, 0])
    if not np.all(np.isfinite(signal)):
        raise AudioError(path, "contains NaN or Inf samples")
    if sample_rate is not None and sr != sample_rate:
        if not resample_to_rate:
            raise AudioError(path, f"sample rate is {sr} Hz, expected {sample_rate} Hz "
                                   "(pass the resample option to convert it)")
        signal = resample(signal, sr, sample_rate)
        sr = sample_rate
    return signal.astype(np.float32, copy=False), sr


def audio_info(path):
    """(sample_rate, frames, channels) without reading the samples; AudioError if unreadable."""
    try:
        info = sf.info(path)
    except Exception as err:
        raise AudioError(path, f"cannot be read as audio ({err})") from None
    return info.samplerate, info.frames, info.channels


def header_problems(path, sample_rate, resample=False, downmix=False):
    """Problems visible in a file's header -> (messages, (rate, frames, channels) or None):
    unreadable, empty, multi-channel (unless `downmix`), another rate (unless `resample`).
    Same wording as read_audio's errors."""
    try:
        info = audio_info(path)
    except AudioError as err:
        return [str(err)], None
    rate, frames, channels = info
    problems = []
    if frames == 0:
        problems.append(f"{path}: is empty (0 samples)")
    if channels > 1 and not downmix:
        problems.append(f"{path}: has {channels} channels; expected mono "
                        "(pass the downmix option to average the channels)")
    if rate != sample_rate and not resample:
        problems.append(f"{path}: sample rate is {rate} Hz, expected {sample_rate} Hz "
                        "(pass the resample option to convert it)")
    return problems, info


def write_audio(path, signal, sample_rate, subtype="PCM_16"):
    """Write `(time,)` float audio; peaks above 1 are scaled down rather than clipped."""
    signal = np.asarray(signal, dtype=np.float32)
    peak = float(np.max(np.abs(signal))) if signal.size else 0.0
    if peak > 1.0:
        signal = signal / peak * 0.99
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    sf.write(path, signal, sample_rate, subtype=subtype)
