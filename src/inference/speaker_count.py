"""Unknown number of speakers (Nachmani et al. 2020, Sec. 4): one model per speaker count,
the count chosen at inference from which outputs carry speech.

1. Run the model with the most outputs.
2. Count its active outputs: an output is active when its energy is at least `threshold_db`
   (default -20 dB) relative to the loudest output of the same run. A silent mixture (every
   output exactly zero) counts as one speaker.
3. Pick the model for that count; if there is none, the nearest available count (a tie goes to
   the larger model: an extra near-silent output is less harmful than merged speakers).
4. Run it and count again, until the chosen model is the one just run.

The count can only go down (a model with C outputs has at most C active ones), so this ends
after at most one run per model. If the last model still has silent outputs (no smaller model
exists), they are dropped: the result has exactly the counted number of outputs.
"""
import numpy as np

from src.inference.separation import SeparationError
from src.inference.windows import separate

DEFAULT_THRESHOLD_DB = -20.0


def output_levels_db(estimates):
    """Energy of each output of `estimates (C, time)` in dB relative to the loudest: `(C,)`, max 0.
    All-zero estimates give -inf everywhere."""
    energy = np.sum(np.square(np.asarray(estimates, dtype=np.float64)), axis=-1)
    loudest = energy.max()
    if loudest == 0:
        return np.full(energy.shape, -np.inf)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(energy / loudest)


def active_outputs(estimates, threshold_db=DEFAULT_THRESHOLD_DB):
    """Number of outputs of `estimates (C, time)` whose energy is >= `threshold_db` (<= 0)
    relative to the loudest output; 0 when every output is all zeros."""
    if threshold_db > 0:
        raise SeparationError(f"threshold_db is relative to the loudest output and must be <= 0, got {threshold_db}")
    if np.ndim(estimates) != 2:
        raise SeparationError(f"estimates must be (C, time), got shape {np.shape(estimates)}")
    return int(np.sum(output_levels_db(estimates) >= threshold_db))


def _nearest_count(count, available):
    """The available count nearest to `count`; ties go to the larger."""
    return min(available, key=lambda c: (abs(c - count), -c))


def count_and_separate(separators, mixture, threshold_db=DEFAULT_THRESHOLD_DB, window=None,
                       overlap=None, batch_size=1):
    """Count the speakers of `mixture (time,)` and separate it.

    separators: {C: separate_fn} with `separate_fn((batch, time)) -> (batch, C, time)`.
    window, overlap, batch_size: passed to `separate_long` (samples); window None = one call
        on the whole mixture.
    Returns `(count, estimates (count, time), trace)`; trace lists `(C of the model run,
    active outputs counted)` for each run, in order.
    """
    if not separators:
        raise SeparationError("no separators given (expected {speaker count: separate_fn})")
    if any(not isinstance(c, (int, np.integer)) or c < 1 for c in separators):
        raise SeparationError(f"separator keys must be speaker counts >= 1, got {sorted(separators)}")
    available = sorted(separators)
    model_count = available[-1]
    trace = []
    while True:
        estimates = separate(separators[model_count], mixture, model_count, window, overlap, batch_size)
        found = active_outputs(estimates, threshold_db)
        trace.append((model_count, found))
        chosen = _nearest_count(max(found, 1), available)
        if chosen == model_count:
            break
        model_count = chosen
    count = max(found, 1)
    if count < model_count:  # no smaller model: keep the loudest `count` outputs, in model order
        keep = np.sort(np.argsort(-output_levels_db(estimates), kind="stable")[:count])
        estimates = estimates[keep]
    return count, estimates, trace
