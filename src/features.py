"""STFT / inverse STFT, network features and mask targets for enhancement (numpy, host side).

Framing: frame f is centred on sample `f * hop` (zeros outside the signal) and a signal of T
samples has `ceil(T / hop) + 1` frames, so every sample lies between two frame centres and
no sample is covered only by the near-zero tail of a window (which would amplify mask
errors at the end of the inverse). When T is a multiple of hop this is exactly librosa's
`center=True, pad_mode="constant"` framing. The analysis window is a periodic Hann window of `win`
samples, centred in `n_fft`. `istft` is the least-squares (weighted overlap-add) inverse,
so `istft(stft(x), length=len(x)) == x` up to float rounding whenever `hop <= win / 2`.

Network input: `log(1 + |X|)`. The compression keeps the large dynamic range of speech
magnitudes in a range a network handles well, maps silence (|X| = 0) to exactly 0, and
needs no floor constant (unlike log|X|).

Training targets (per time-frequency unit, all in [0, 1], matching the sigmoid output):
- `irm`: ideal ratio mask sqrt(|S|^2 / (|S|^2 + |N|^2)) from the clean (S) and noise (N)
  spectra. Wang, Narayanan & Wang, "On training targets for supervised speech separation"
  (IEEE/ACM TASLP 2014) and Narayanan & Wang (ICASSP 2013) found this soft, bounded target
  (beta = 0.5, a square-root Wiener-like gain) better than the binary mask for quality and
  easier to learn than unbounded spectral targets.
- `mag_ratio`: |S| / |Y| of clean over noisy (Y = S + N) magnitude, clipped to [0, 1]
  (the "FFT mask" of the same paper, clipped); applied to |Y| it gives |S| where it is <= 1.
"""
import functools

import librosa
import numpy as np

TARGETS = ("irm", "mag_ratio")
_TINY = 1e-12


class StftConfig:
    """STFT parameters in samples: `n_fft` (FFT size), `hop`, `win` (Hann window length)."""

    def __init__(self, n_fft=320, hop=160, win=320):
        self.n_fft, self.hop, self.win = int(n_fft), int(hop), int(win)
        if not (0 < self.win <= self.n_fft):
            raise ValueError(f"stft: need 0 < win <= n_fft, got win={win}, n_fft={n_fft}")
        if not (0 < self.hop <= self.win // 2):
            raise ValueError(f"stft: need 0 < hop <= win / 2 for an exact inverse, "
                             f"got hop={hop}, win={win}")

    @classmethod
    def from_cfg(cls, cfg):
        """From the top-level `stft` section of a config."""
        return cls(cfg.stft.n_fft, cfg.stft.hop, cfg.stft.win)

    @classmethod
    def of_counting_model(cls, cfg):
        """A counting model's (`model.n_fft`, `model.hop`; windows n_fft long)."""
        return cls(cfg.model.n_fft, cfg.model.hop, cfg.model.n_fft)

    @property
    def bins(self):
        """Frequency bins per frame: n_fft // 2 + 1."""
        return self.n_fft // 2 + 1

    def num_frames(self, samples):
        """Frames of a signal of `samples` samples: ceil(samples / hop) + 1."""
        return -(-samples // self.hop) + 1

    def window(self):
        """Periodic Hann window of `win` samples, zero-padded (centred) to `n_fft`."""
        hann = np.zeros(self.n_fft)
        start = (self.n_fft - self.win) // 2
        hann[start:start + self.win] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(self.win) / self.win)
        return hann


def stft(signal, config):
    """`(time,)` real signal -> `(frames, bins)` complex64 spectrum, frames = ceil(time / hop) + 1."""
    signal = np.asarray(signal, dtype=np.float64)
    if signal.ndim != 1:
        raise ValueError(f"stft expects a (time,) signal, got shape {signal.shape}")
    half = config.n_fft // 2
    frames = config.num_frames(len(signal))
    right = (frames - 1) * config.hop + config.n_fft - half - len(signal)
    padded = np.concatenate([np.zeros(half), signal, np.zeros(right)])
    starts = np.arange(frames)[:, None] * config.hop
    segments = padded[starts + np.arange(config.n_fft)[None, :]]
    return np.fft.rfft(segments * config.window(), axis=1).astype(np.complex64)


def istft(spectrum, config, length):
    """`(frames, bins)` complex spectrum -> `(length,)` float32 signal (inverse of `stft`).

    Weighted overlap-add: frames are windowed again and divided by the summed squared window,
    which is the least-squares signal for a (possibly modified) spectrum.
    """
    spectrum = np.asarray(spectrum)
    if spectrum.ndim != 2 or spectrum.shape[1] != config.bins:
        raise ValueError(f"istft expects (frames, {config.bins}) spectra, got {spectrum.shape}")
    frames = spectrum.shape[0]
    window = config.window()
    segments = np.fft.irfft(spectrum.astype(np.complex128), n=config.n_fft, axis=1) * window
    total = (frames - 1) * config.hop + config.n_fft
    signal = np.zeros(total)
    weight = np.zeros(total)
    for f in range(frames):
        start = f * config.hop
        signal[start:start + config.n_fft] += segments[f]
        weight[start:start + config.n_fft] += window ** 2
    half = config.n_fft // 2
    signal = signal / np.maximum(weight, _TINY)
    signal = signal[half:half + length]
    if len(signal) < length:  # spectrum has fewer frames than `length` needs
        signal = np.concatenate([signal, np.zeros(length - len(signal))])
    return signal.astype(np.float32)


def features(magnitude):
    """Network input from a magnitude spectrum: log(1 + |X|), same shape, float32."""
    return np.log1p(magnitude).astype(np.float32)


def ideal_ratio_mask(clean_spectrum, noise_spectrum):
    """sqrt(|S|^2 / (|S|^2 + |N|^2)) per TF unit, float32 in [0, 1] (0 where both are 0)."""
    clean_power = np.abs(clean_spectrum) ** 2
    noise_power = np.abs(noise_spectrum) ** 2
    return np.sqrt(clean_power / np.maximum(clean_power + noise_power, _TINY)).astype(np.float32)


def magnitude_ratio_mask(clean_spectrum, noisy_spectrum):
    """|S| / |Y| clipped to [0, 1], float32 (0 where |Y| is 0)."""
    ratio = np.abs(clean_spectrum) / np.maximum(np.abs(noisy_spectrum), _TINY)
    return np.clip(ratio, 0.0, 1.0).astype(np.float32)


def mask_target(kind, clean_spectrum, noise_spectrum):
    """Training mask of `kind` ('irm' or 'mag_ratio') from clean and noise spectra
    (the noisy spectrum is their sum: the STFT is linear)."""
    if kind == "irm":
        return ideal_ratio_mask(clean_spectrum, noise_spectrum)
    if kind == "mag_ratio":
        return magnitude_ratio_mask(clean_spectrum, clean_spectrum + noise_spectrum)
    raise ValueError(f"unknown mask target '{kind}' (choose from {', '.join(TARGETS)})")


@functools.lru_cache(maxsize=4)
def _mel_filters(sample_rate, n_fft, n_mels):
    """librosa's mel filterbank `(n_mels, n_fft // 2 + 1)`, built once per setting (log_mel runs per
    training item and per counter window)."""
    return librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels)


def log_mel(signal, sample_rate, config, n_mels):
    """Speaker-counting features of `(time,)` -> `(frames, n_mels)` float32: log mel-band energies
    of the STFT of `config`, minus each band's mean over the frames, so that a gain on the
    recording (and a fixed channel colouring) changes nothing."""
    energies = np.square(np.abs(stft(signal, config))) @ _mel_filters(sample_rate, config.n_fft, n_mels).T
    logs = np.log(energies + _TINY)
    return (logs - logs.mean(axis=0)).astype(np.float32)
