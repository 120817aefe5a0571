"""The one place that decides how a recording goes through a separator: whole or in windows.

`separate(separate_fn, mixture (time,), C, window, overlap)` -> `(C, time)`: window None = one
call on the whole mixture, else `separate_long` (which also takes a mixture of at most `window`
samples in one call). The window defaults and checks of every command (evaluate.py, separate.py,
preprocess.py --infer-bins) live here too.
"""
from src.inference.separation import SeparationError, separate_long, separate_whole

# evaluate.py's and separate.py's windows (paper config on CPU: peak RSS ~0.59 GB + ~13 MB per second
# of window; quality and speed of the choice: README, "Speed and memory")
DEFAULT_WINDOW_SECONDS = 20.0
DEFAULT_OVERLAP_SECONDS = 2.0


def separate(separate_fn, mixture, num_speakers, window=None, overlap=None, batch_size=1):
    """Estimates `(C, time)` of `mixture (time,)`: whole (window None) or in overlapping windows of
    `window` samples sharing `overlap` (batch_size windows per call)."""
    if (window is None) != (overlap is None):
        raise SeparationError("give both window and overlap (windowed) or neither (one call)")
    if window is None:
        return separate_whole(separate_fn, mixture, num_speakers)
    return separate_long(separate_fn, mixture, num_speakers, window, overlap, batch_size)


def window_samples(window_seconds, overlap_seconds, sample_rate):
    """(window, overlap) in samples, or (None, None) for window_seconds == 0 (one call per input)."""
    if window_seconds < 0 or overlap_seconds < 0:
        raise SeparationError("--window-seconds and --overlap-seconds must not be negative")
    if window_seconds == 0:
        return None, None
    window = int(round(window_seconds * sample_rate))
    overlap = int(round(overlap_seconds * sample_rate))
    if not 0 < overlap <= window // 2:
        raise SeparationError(f"--overlap-seconds {overlap_seconds:g} must be above 0 and at most half of "
                              f"--window-seconds {window_seconds:g}")
    return window, overlap


def plan_windows(sample_rate, fixed_length=0, window_seconds=DEFAULT_WINDOW_SECONDS,
                 overlap_seconds=DEFAULT_OVERLAP_SECONDS):
    """(window, overlap) in samples for a graph taking `fixed_length` samples (0: any length).

    fixed_length N > 0: windows of N samples, the overlap `overlap_seconds` capped at N // 2.
    0: window_samples; (None, None) for window_seconds == 0 (whole mixtures).
    """
    if fixed_length < 0:
        raise SeparationError(f"fixed length {fixed_length}: must be 0 (dynamic graph) or samples")
    if not fixed_length:
        return window_samples(window_seconds, overlap_seconds, sample_rate)
    overlap = min(int(round(overlap_seconds * sample_rate)), fixed_length // 2)
    if overlap < 1:
        raise SeparationError(f"fixed length {fixed_length} with overlap {overlap_seconds:g} s leaves no "
                              "overlap to align the speakers of consecutive windows on")
    return fixed_length, overlap
