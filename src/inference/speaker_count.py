"""Unknown number of speakers (Nachmani et al. 2020, Sec. 4): one model per speaker count,
the count chosen at inference from which outputs carry speech.

1. Run the model with the most outputs.
2. Count its active outputs: an output is active when its energy is at least the model's
   threshold (dB, <= 0) relative to the loudest output of the same run. A silent mixture (every
   output exactly zero) counts as one speaker.
3. Pick the model for that count; if there is none, the nearest available count (a tie goes to
   the larger model: an extra near-silent output is less harmful than merged speakers).
4. Run it and count again, until the chosen model is the one just run.

The count can only go down (a model with C outputs has at most C active ones), so this ends
after at most one run per model. If the last model still has silent outputs (no smaller model
exists), they are dropped: the result has exactly the counted number of outputs.

A counter replaces steps 1-4: a callable `counter(mixture, window, overlap, batch_size) -> count`,
e.g. a speaker-count classifier (src/tasks/counting.py) or a separation model used only to count
(`OutputCounter`: its active outputs). The model for that count (or the nearest) separates,
once; its surplus outputs are dropped as above.

Each model's threshold is its config's `counting.threshold_db` (-20 dB unless calibrated on dev
mixtures); the user may set one for all.
"""
from typing import Callable, NamedTuple

import numpy as np

from src.inference.separation import SeparationError
from src.inference.windows import separate


class OutputCounter(NamedTuple):
    """A separation model used only to count: `separate_fn` with `num_outputs` outputs; the count is
    its active outputs at `threshold_db` (at least 1)."""
    separate_fn: Callable
    num_outputs: int
    threshold_db: float

    def __call__(self, mixture, window=None, overlap=None, batch_size=1):
        outputs = separate(self.separate_fn, mixture, self.num_outputs, window, overlap, batch_size)
        return max(active_outputs(outputs, self.threshold_db), 1)


class ClassifierCounter:
    """A counting network as a counter: `counter(mixture (T,), ...) -> count`.

    scores_fn: numpy `features -> (1, len(counts))` logits (src/inference/network.py
    NetworkClassifier, or a replay of stored results); features_fn: `(1, T)` float32 -> its
    input; window: samples per call (the length it was trained on). A longer mixture is scored
    in windows of that length, half overlapping, the last one ending at the mixture's end, and
    the logits are averaged: every call sees what training showed it, and memory stays bounded.
    (The separation windows passed to a counter do not apply.)"""

    def __init__(self, scores_fn, features_fn, counts, window):
        self.scores_fn, self.features_fn, self.counts, self.window = scores_fn, features_fn, list(counts), int(window)

    def scores(self, mixture):
        """Mean logits `(len(counts),)` over the windows of `mixture`."""
        length = len(mixture)
        extra = max(length - self.window, 0)
        starts = np.linspace(0, extra, 1 + -(-2 * extra // self.window)).round().astype(int)
        total = 0.0
        for start in starts:
            chunk = np.asarray(mixture[start:start + self.window], dtype=np.float32)
            total = total + np.asarray(self.scores_fn(self.features_fn(chunk[None])))[0]
        return total / len(starts)

    def __call__(self, mixture, window=None, overlap=None, batch_size=1):
        return self.counts[int(np.argmax(self.scores(mixture)))]


def model_threshold(cfg, threshold_db=None):
    """The counting threshold (dB) of a separation model of config `cfg`: `threshold_db` when given,
    else its counting.threshold_db."""
    return cfg.counting.threshold_db if threshold_db is None else threshold_db


def model_thresholds(configs, threshold_db=None):
    """{C: model_threshold} for the models of `configs` ({C: config})."""
    return {c: model_threshold(cfg, threshold_db) for c, cfg in configs.items()}


def output_levels_db(estimates):
    """Energy of each output of `estimates (C, time)` in dB relative to the loudest: `(C,)`, max 0.
    All-zero estimates give -inf everywhere."""
    energy = np.sum(np.square(np.asarray(estimates, dtype=np.float64)), axis=-1)
    loudest = energy.max()
    if loudest == 0:
        return np.full(energy.shape, -np.inf)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(energy / loudest)


def active_outputs(estimates, threshold_db):
    """Number of outputs of `estimates (C, time)` whose energy is >= `threshold_db` (<= 0)
    relative to the loudest output; 0 when every output is all zeros."""
    if threshold_db > 0:
        raise SeparationError(f"threshold_db is relative to the loudest output and must be <= 0, got {threshold_db}")
    if np.ndim(estimates) != 2:
        raise SeparationError(f"estimates must be (C, time), got shape {np.shape(estimates)}")
    return int(np.sum(output_levels_db(estimates) >= threshold_db))


def describe_runs(trace):
    """count_and_separate's trace in words: "C=3 (2 active) then C=2 (2 active)", "counter: 2 then C=2"."""
    return " then ".join(f"counter: {found}" if c == "counter" else f"C={c}" + ("" if found is None else f" ({found} active)")
                         for c, found in trace)


def _nearest_count(count, available):
    """The available count nearest to `count`; ties go to the larger."""
    return min(available, key=lambda c: (abs(c - count), -c))


def count_and_separate(separators, mixture, threshold_db, window=None, overlap=None, batch_size=1, counter=None):
    """Count the speakers of `mixture (time,)` and separate it.

    separators: {C: separate_fn} with `separate_fn((batch, time)) -> (batch, C, time)`.
    threshold_db: dB (<= 0) for every model, or {C: dB} for each separator.
    window, overlap, batch_size: passed to `separate_long` (samples); window None = one call
        on the whole mixture.
    counter: counts in place of the separators, which then only separate (module docstring).
    Returns `(count, estimates (count, time), trace)`; trace lists `(C of the model run,
    active outputs counted)` for each run, in order; with a counter, `("counter", count)` and
    then `(C, None)` for the model that separated. Only a counter can find more speakers than
    the largest separator has outputs: the estimates are then that separator's.
    """
    if not separators:
        raise SeparationError("no separators given (expected {speaker count: separate_fn})")
    if any(not isinstance(c, (int, np.integer)) or c < 1 for c in separators):
        raise SeparationError(f"separator keys must be speaker counts >= 1, got {sorted(separators)}")
    thresholds = threshold_db if isinstance(threshold_db, dict) else dict.fromkeys(separators, threshold_db)
    available = sorted(separators)

    def run(count):
        return separate(separators[count], mixture, count, window, overlap, batch_size)

    if counter is not None:
        found = counter(mixture, window, overlap, batch_size)
        model_count = _nearest_count(found, available)
        estimates = run(model_count)
        trace = [("counter", found), (model_count, None)]
    else:
        model_count, trace = available[-1], []
        while True:
            estimates = run(model_count)
            found = active_outputs(estimates, thresholds[model_count])
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
