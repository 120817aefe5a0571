"""Separating recordings of any length with bounded memory.

A separator is a plain callable `separate_fn(mixture (batch, time) float32) -> (batch, C, time)`
numpy array (a MindSpore net or exported MindIR GraphCell wrapped by
`src.inference.network.NetworkSeparator`, or an offline-inference runner).

`separate_long` cuts the mixture into overlapping windows (window k covers samples
`[k * hop, k * hop + window)`, `hop = window - overlap`), separates them a few at a time, puts
each window's speakers in the order of the previous window (the permutation that best matches
the two estimates on their shared `overlap` samples) and joins them with linear cross-fades:
in a shared region the earlier window's weight falls from 1 to 0 while the later one's rises
from 0 to 1 (the weights sum to 1), and where one window covers alone its estimate is copied
unchanged. Each output sample is written exactly once, so the output may be a memmap.

Limitation: the order is taken from the overlap alone, so speakers who are silent throughout
an overlap cannot be told apart there (with two speakers, one active speaker is enough to fix
the order). Choose an overlap longer than typical pauses (about 1 s or more).
"""
import numpy as np

from src.errors import UserError
from src.metrics import best_permutation_from_scores


class SeparationError(UserError):
    """Bad input to a separator or bad output from one; the message says which and why."""


def _check_finite(chunk, start):
    if not np.all(np.isfinite(chunk)):
        bad = start + int(np.flatnonzero(~np.isfinite(chunk))[0])
        raise SeparationError(f"mixture contains NaN or Inf (first at sample {bad})")


def _run(separate_fn, batch, num_speakers):
    """Call the separator on `(batch, time)` float32 and check its `(batch, C, time)` output."""
    out = np.asarray(separate_fn(batch))
    want = (batch.shape[0], num_speakers, batch.shape[1])
    if out.shape != want:
        raise SeparationError(f"separator returned shape {out.shape} for input {batch.shape}; "
                              f"expected {want} (batch, speakers, time)")
    if not np.all(np.isfinite(out)):
        raise SeparationError("separator returned NaN or Inf")
    return out


def separate_whole(separate_fn, mixture, num_speakers):
    """One-shot separation of `mixture (time,)` -> `(C, time)` float32."""
    if np.ndim(mixture) != 1 or len(mixture) == 0:
        raise SeparationError(f"mixture must be a non-empty (time,) array, got shape {np.shape(mixture)}")
    chunk = np.asarray(mixture, dtype=np.float32)
    _check_finite(chunk, 0)
    return _run(separate_fn, chunk[None, :], num_speakers)[0]


def at_mixture_level(estimates, mixture):
    """`estimates (C, time)` times one gain that makes their total energy the mixture's `(time,)`:
    a model trained with SI-SNR has an arbitrary output gain (the shipped ones: about +35 dB), so
    its raw outputs are not at the recording's level; the speakers' relative levels are kept.
    Energies are dot products, so the only new array is the scaled copy (long recordings)."""
    total = sum(float(np.dot(row, row)) for row in estimates)
    if total == 0:
        return estimates
    return estimates * np.float32(np.sqrt(float(np.dot(mixture, mixture)) / total))


def separate_long(separate_fn, mixture, num_speakers, window, overlap, batch_size=1, out=None,
                  static_length=False):
    """Separate `mixture (time,)` of any length into `(C, time)` float32 in overlapping windows.

    window, overlap: samples (e.g. 8 s and 1 s); `0 < overlap <= window // 2`.
    batch_size: windows per separator call.
    out: optional preallocated `(C, time)` array (e.g. `np.memmap`) to write into; returned.
    static_length: the separator accepts only `window` samples (a MindIR exported with a static
        length): inputs shorter than a window are zero-padded to it and the output cropped.
        Otherwise a mixture of at most `window` samples is separated in one call, unpadded.
    The last window is zero-padded past the end of the mixture and its output cropped.
    Peak memory is O(batch_size * window * C) besides `out`; `mixture` may be a memmap (only
    the current windows are read).
    """
    num_samples = len(mixture)
    if np.ndim(mixture) != 1 or num_samples == 0:
        raise SeparationError(f"mixture must be a non-empty (time,) array, got shape {np.shape(mixture)}")
    if not isinstance(window, (int, np.integer)) or not isinstance(overlap, (int, np.integer)):
        raise SeparationError(f"window and overlap are sample counts (integers), got {window!r}, {overlap!r}")
    if window <= 1 or not 0 < overlap <= window // 2:
        raise SeparationError(f"need window > 1 and 0 < overlap <= window // 2 samples, "
                              f"got window={window}, overlap={overlap}")
    if batch_size < 1:
        raise SeparationError(f"batch_size must be >= 1, got {batch_size}")
    if out is None:
        out = np.empty((num_speakers, num_samples), dtype=np.float32)
    elif out.shape != (num_speakers, num_samples):
        raise SeparationError(f"out has shape {out.shape}, expected {(num_speakers, num_samples)}")

    if num_samples <= window:
        if static_length:
            padded = np.zeros(window, dtype=np.float32)
            padded[:num_samples] = mixture
            out[:] = separate_whole(separate_fn, padded, num_speakers)[:, :num_samples]
        else:
            out[:] = separate_whole(separate_fn, mixture, num_speakers)
        return out

    hop = window - overlap
    num_windows = 1 + -(-(num_samples - window) // hop)  # ceil: the last window reaches the end
    fade_in = ((np.arange(overlap) + 0.5) / overlap).astype(np.float32)
    fade_out = 1.0 - fade_in
    previous_tail = None  # (C, overlap): the previous window's aligned estimate on the shared part
    for first in range(0, num_windows, batch_size):
        indices = range(first, min(first + batch_size, num_windows))
        batch = np.zeros((len(indices), window), dtype=np.float32)
        for row, k in enumerate(indices):
            chunk = np.asarray(mixture[k * hop: k * hop + window], dtype=np.float32)
            _check_finite(chunk, k * hop)
            batch[row, :len(chunk)] = chunk
        estimates = _run(separate_fn, batch, num_speakers)
        for row, k in enumerate(indices):
            start = k * hop
            est = estimates[row]
            if previous_tail is not None:
                head = est[:, :overlap]
                # [i, j] = <previous speaker i, current output j>: maximising the total is
                # minimising the squared difference of the two estimates on the shared part.
                perm = best_permutation_from_scores(previous_tail @ head.T)
                est = est[perm]
                out[:, start:start + overlap] = previous_tail * fade_out + est[:, :overlap] * fade_in
                body_start = overlap
            else:
                body_start = 0
            last = k == num_windows - 1
            body_end = min(window, num_samples - start) if last else window - overlap
            out[:, start + body_start:start + body_end] = est[:, body_start:body_end]
            previous_tail = est[:, window - overlap:].astype(np.float64)
    return out
