"""Long-recording separation (windows, speaker alignment, cross-fade, memory) and speaker counting,
with an exact fake separator and one tiny real SWave."""
import tracemalloc

import numpy as np
import pytest

from src.inference.separation import SeparationError, separate_long, separate_whole
from src.inference.speaker_count import OutputCounter, active_outputs, count_and_separate, output_levels_db
from src.metrics import best_permutation, si_snr

RATE = 8000


class Oracle:
    """Fake separator that knows the sources.

    It finds each input window in the mixture by its first 32 samples (windows must start at one
    of `starts`, or be the whole mixture), returns the sources under it (zeros past the end of the
    recording), in a random speaker order per window when `shuffle`, plus white noise of relative
    level `noise`. With `num_outputs` above the number of sources the extra outputs are quiet noise
    at `silent_db`; below it, the surplus sources are summed into the last output.
    """

    def __init__(self, sources, starts, num_outputs=None, shuffle=True, noise=0.0, silent_db=-40.0, seed=0):
        self.sources = np.asarray(sources, dtype=np.float32)
        self.mixture = self.sources.sum(axis=0)
        self.num_outputs = num_outputs or len(self.sources)
        self.shuffle, self.noise, self.silent_db = shuffle, noise, silent_db
        self.rng = np.random.default_rng(seed)
        self.index = {self._key(self.mixture[s:s + 32]): s for s in starts}
        self.calls = []  # input shapes

    @staticmethod
    def _key(head):
        return np.asarray(head, dtype=np.float32).tobytes()

    def __call__(self, batch):
        assert batch.dtype == np.float32 and batch.ndim == 2
        self.calls.append(batch.shape)
        out = np.zeros((batch.shape[0], self.num_outputs, batch.shape[1]), np.float32)
        for row, window in enumerate(batch):
            start = self.index[self._key(window[:32])]
            np.testing.assert_array_equal(window[:len(self.mixture) - start],
                                          self.mixture[start:start + batch.shape[1]])
            length = min(batch.shape[1], len(self.mixture) - start)
            truth = self.sources[:, start:start + length]
            est = np.zeros((self.num_outputs, batch.shape[1]), np.float32)
            kept = min(self.num_outputs, len(truth))
            est[:kept, :length] = truth[:kept]
            est[kept - 1, :length] += truth[kept:].sum(axis=0)
            scale = np.sqrt(np.mean(truth ** 2))
            for extra in range(kept, self.num_outputs):
                est[extra] = scale * 10 ** (self.silent_db / 20) * self.rng.standard_normal(batch.shape[1])
            if self.noise:
                est += self.noise * scale * self.rng.standard_normal(est.shape).astype(np.float32)
            out[row] = est[self.rng.permutation(self.num_outputs)] if self.shuffle else est
        return out


def make_sources(num_speakers, num_samples, seed, pauses=True):
    """Random sources with speech-like pauses: in each 0.25 s block one speaker (chosen at random)
    is silent half of the time, so some overlap regions lack a speaker but at most one speaker is
    silent throughout an overlap (more cannot be ordered from the overlap; see separation.py)."""
    rng = np.random.default_rng(seed)
    sources = rng.standard_normal((num_speakers, num_samples)).astype(np.float32)
    sources *= rng.uniform(0.5, 1.0, (num_speakers, 1)).astype(np.float32)
    if pauses:
        block = RATE // 4
        for start in range(0, num_samples, block):
            if rng.uniform() < 0.5:
                sources[rng.integers(num_speakers), start:start + block] = 0
    return sources


def match_global_permutation(estimate, sources):
    """Reorder the output channels by the permutation that best matches whole signals."""
    scores = sources.astype(np.float64) @ estimate.astype(np.float64).T
    perm = np.argmax(scores, axis=1)
    assert sorted(perm) == list(range(len(sources))), "two sources ended in the same output channel"
    return estimate[perm]


WINDOW, OVERLAP = 2000, 500
HOP = WINDOW - OVERLAP


@pytest.mark.parametrize("batch_size", [1, 3])
def test_windowed_matches_the_sources_despite_per_window_flips(batch_size):
    sources = make_sources(2, 10 * HOP + 321, seed=1)
    oracle = Oracle(sources, range(0, sources.shape[1], HOP), seed=batch_size)
    out = separate_long(oracle, sources.sum(axis=0), 2, WINDOW, OVERLAP, batch_size=batch_size)
    assert out.shape == sources.shape and out.dtype == np.float32
    np.testing.assert_allclose(match_global_permutation(out, sources), sources, atol=1e-6)
    assert all(rows <= batch_size and length == WINDOW for rows, length in oracle.calls)
    assert len(oracle.calls) == -(-10 // batch_size)  # 10 windows in ceil(10 / batch) calls


def test_windowed_equals_one_shot_for_a_noisy_oracle():
    sources = make_sources(3, 8 * HOP + 77, seed=2)
    mixture = sources.sum(axis=0)
    windowed = separate_long(Oracle(sources, range(0, len(mixture), HOP), noise=1e-3, seed=3),
                             mixture, 3, WINDOW, OVERLAP, batch_size=2)
    one_shot = separate_whole(Oracle(sources, [0], noise=1e-3, seed=4), mixture, 3)
    windowed = match_global_permutation(windowed, sources)
    one_shot = match_global_permutation(one_shot, sources)
    # both are the sources plus -60 dB noise; the cross-fades only average noise
    assert np.max(np.abs(windowed - one_shot)) < 1e-2
    assert np.max(np.abs(windowed - sources)) < 1e-2


@pytest.mark.parametrize("num_samples", [WINDOW - 700, WINDOW, WINDOW + 1, 4 * HOP, 4 * HOP + OVERLAP,
                                         4 * HOP + OVERLAP + 1])
def test_length_edge_cases(num_samples):
    sources = make_sources(2, num_samples, seed=num_samples, pauses=False)
    oracle = Oracle(sources, range(0, num_samples, HOP), seed=5)
    out = separate_long(oracle, sources.sum(axis=0), 2, WINDOW, OVERLAP)
    assert out.shape == (2, num_samples)
    np.testing.assert_allclose(match_global_permutation(out, sources), sources, atol=1e-6)
    if num_samples <= WINDOW:
        assert oracle.calls == [(1, num_samples)]  # one call, unpadded
    else:
        assert len(oracle.calls) == 1 + -(-(num_samples - WINDOW) // HOP)
        assert {length for _, length in oracle.calls} == {WINDOW}


def test_static_length_pads_short_inputs_and_out_is_written():
    sources = make_sources(2, 900, seed=6, pauses=False)
    oracle = Oracle(sources, [0], seed=7)
    out = np.full((2, 900), np.nan, dtype=np.float32)
    result = separate_long(oracle, sources.sum(axis=0), 2, WINDOW, OVERLAP, out=out, static_length=True)
    assert result is out and oracle.calls == [(1, WINDOW)]
    np.testing.assert_allclose(match_global_permutation(out, sources), sources, atol=1e-6)


def test_cross_fade_weights_sum_to_one():
    """A separator that returns constant outputs 1 and 2 (never flipped): the output must be
    exactly 1 and 2 everywhere, so the window weights sum to one, including at the ends."""
    def constant(batch):
        out = np.ones((batch.shape[0], 2, batch.shape[1]), np.float32)
        out[:, 1] = 2.0
        return out
    out = separate_long(constant, np.zeros(5 * HOP + 123, np.float32), 2, WINDOW, OVERLAP, batch_size=2)
    np.testing.assert_allclose(out[0], 1.0, atol=1e-6)
    np.testing.assert_allclose(out[1], 2.0, atol=1e-6)


def test_bad_inputs_and_outputs_are_reported():
    mixture = np.zeros(5000, np.float32)
    ok = lambda batch: np.zeros((batch.shape[0], 2, batch.shape[1]), np.float32)  # noqa: E731
    with pytest.raises(SeparationError, match="overlap"):
        separate_long(ok, mixture, 2, WINDOW, WINDOW // 2 + 1)
    with pytest.raises(SeparationError, match="integers"):
        separate_long(ok, mixture, 2, 0.25 * RATE, 0.05 * RATE)
    with pytest.raises(SeparationError, match=r"expected \(1, 3, 2000\)"):
        separate_long(ok, mixture, 3, WINDOW, OVERLAP)
    with pytest.raises(SeparationError, match="out has shape"):
        separate_long(ok, mixture, 2, WINDOW, OVERLAP, out=np.zeros((2, 10), np.float32))
    with pytest.raises(SeparationError, match=r"\(time,\)"):
        separate_long(ok, np.zeros((2, 5000), np.float32), 2, WINDOW, OVERLAP)
    bad = mixture.copy()
    bad[4321] = np.nan
    with pytest.raises(SeparationError, match="first at sample 4321"):
        separate_long(ok, bad, 2, WINDOW, OVERLAP)
    with pytest.raises(SeparationError, match="NaN or Inf"):
        separate_long(lambda b: ok(b) * np.nan, mixture, 2, WINDOW, OVERLAP)


def _peak_traced_bytes(minutes, tmp_path):
    window, overlap = 8 * RATE, RATE
    num_samples = minutes * 60 * RATE
    sources = make_sources(2, num_samples, seed=minutes, pauses=False)
    mixture = sources.sum(axis=0)
    oracle = Oracle(sources, range(0, num_samples, window - overlap), seed=8)
    out = np.lib.format.open_memmap(str(tmp_path / f"out{minutes}.npy"), mode="w+",
                                    dtype=np.float32, shape=(2, num_samples))
    tracemalloc.start()
    try:
        separate_long(oracle, mixture, 2, window, overlap, batch_size=2, out=out)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_allclose(match_global_permutation(np.asarray(out), sources), sources, atol=1e-6)
    return peak, window


def test_memory_is_bounded_by_the_window_not_the_length(tmp_path):
    peak_2min, window = _peak_traced_bytes(2, tmp_path)
    peak_10min, _ = _peak_traced_bytes(10, tmp_path)
    output_10min = 2 * 10 * 60 * RATE * 4
    # batch of 2 windows in, 2 x 2 speakers out, the oracle's work: a few dozen window-sized arrays
    assert peak_10min < 24 * window * 4 < output_10min / 6
    assert peak_10min < 1.1 * peak_2min


def test_active_outputs_thresholds():
    rng = np.random.default_rng(9)
    base = rng.standard_normal(4000)
    estimates = np.stack([base, 10 ** (-10 / 20) * base, 10 ** (-30 / 20) * base])  # 0, -10, -30 dB
    np.testing.assert_allclose(output_levels_db(estimates), [0.0, -10.0, -30.0], atol=1e-9)
    assert active_outputs(estimates, -20.0) == 2
    assert active_outputs(estimates, -5.0) == 1
    assert active_outputs(estimates, -35.0) == 3
    assert active_outputs(np.zeros((3, 100)), -20.0) == 0
    with pytest.raises(SeparationError, match="<= 0"):
        active_outputs(estimates, 20.0)


def test_count_two_speakers_with_three_and_two_speaker_models():
    sources = make_sources(2, 3 * RATE, seed=10)
    mixture = sources.sum(axis=0)
    models = {n: Oracle(sources, [0], num_outputs=n, seed=n) for n in (2, 3)}
    count, estimates, trace = count_and_separate(models, mixture, threshold_db=-20.0)
    assert count == 2 and trace == [(3, 2), (2, 2)]
    assert len(models[3].calls) == 1 and len(models[2].calls) == 1
    np.testing.assert_allclose(match_global_permutation(estimates, sources), sources, atol=1e-6)


def test_count_is_stable_at_once_for_three_speakers_and_windowed():
    sources = make_sources(3, 4 * RATE + 55, seed=11)
    mixture = sources.sum(axis=0)
    models = {n: Oracle(sources, range(0, len(mixture), HOP), num_outputs=n, seed=n) for n in (2, 3)}
    count, estimates, trace = count_and_separate(models, mixture, -20.0, window=WINDOW, overlap=OVERLAP)
    assert count == 3 and trace == [(3, 3)] and models[2].calls == []
    np.testing.assert_allclose(match_global_permutation(estimates, sources), sources, atol=1e-6)


def test_count_without_a_model_for_the_count_uses_the_nearest():
    sources = make_sources(1, 2 * RATE, seed=12)
    mixture = sources.sum(axis=0)
    models = {n: Oracle(sources, [0], num_outputs=n, seed=n) for n in (2, 3, 5)}
    count, estimates, trace = count_and_separate(models, mixture, -20.0)
    # 5 outputs -> 1 active -> no 1-speaker model, nearest is 2 -> still 1 active: keep the loud one
    assert trace == [(5, 1), (2, 1)] and count == 1 and estimates.shape == (1, mixture.size)
    np.testing.assert_allclose(estimates[0], sources[0], atol=1e-6)
    # 5 outputs, 4 speakers: no 4-speaker model, tie between 3 and 5 goes to the larger
    four = make_sources(4, 2 * RATE, seed=13)
    models = {n: Oracle(four, [0], num_outputs=n, seed=n) for n in (3, 5)}
    count, estimates, trace = count_and_separate(models, four.sum(axis=0), -20.0)
    assert trace == [(5, 4)] and count == 4 and estimates.shape == (4, four.shape[1])
    np.testing.assert_allclose(match_global_permutation(estimates, four), four, atol=1e-6)



def test_a_counter_counts_and_the_model_for_its_count_separates_once():
    """The counter's active outputs at its own threshold decide; the separators' thresholds and
    silent outputs do not (the 3-speaker separator here never goes quiet)."""
    sources = make_sources(2, 2 * RATE, seed=14)
    mixture = sources.sum(axis=0)
    models = {n: Oracle(sources, [0], num_outputs=n, seed=n, silent_db=-3.0) for n in (2, 3)}
    quiet_third = Oracle(sources, [0], num_outputs=3, silent_db=-12.0)
    count, estimates, trace = count_and_separate(models, mixture, -20.0, counter=OutputCounter(quiet_third, 3, -8.0))
    assert count == 2 and trace == [("counter", 2), (2, None)]
    assert len(quiet_third.calls) == 1 and len(models[2].calls) == 1 and models[3].calls == []
    np.testing.assert_allclose(match_global_permutation(estimates, sources), sources, atol=1e-6)
    # at a threshold below the quiet output the counter finds 3: the 3-speaker model separates
    count, estimates, trace = count_and_separate(models, mixture, {2: -20.0, 3: -20.0},
                                                 counter=OutputCounter(quiet_third, 3, -15.0))
    assert count == 3 and trace == [("counter", 3), (3, None)] and estimates.shape == (3, mixture.size)
    # no model for the count: the nearest separates and keeps its loudest outputs
    count, estimates, trace = count_and_separate({3: models[3]}, mixture, -20.0, counter=OutputCounter(quiet_third, 3, -8.0))
    assert count == 2 and trace == [("counter", 2), (3, None)]
    np.testing.assert_allclose(match_global_permutation(estimates, sources), sources, atol=1e-6)


def test_each_model_counts_at_its_own_threshold():
    sources = make_sources(2, 2 * RATE, seed=15)
    models = {n: Oracle(sources, [0], num_outputs=n, seed=n, silent_db=-12.0) for n in (2, 3)}
    assert count_and_separate(models, sources.sum(axis=0), {2: -20.0, 3: -8.0})[2] == [(3, 2), (2, 2)]
    assert count_and_separate(models, sources.sum(axis=0), {2: -8.0, 3: -15.0})[2] == [(3, 3)]

# --- a tiny real SWave ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_swave_separator():
    ms = pytest.importorskip("mindspore")
    from src.inference.network import NetworkSeparator
    from src.models.swave import SWave
    previous_mode = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_seed(0)
    yield NetworkSeparator(SWave(N=16, L=8, H=16, R=1, C=2, sample_rate=RATE, segment=0.5))
    ms.set_context(mode=previous_mode)


def test_real_swave_windowed_against_one_shot(tiny_swave_separator):
    separate_fn = tiny_swave_separator
    window, overlap = 800, 200
    hop = window - overlap
    mixture = np.random.default_rng(14).standard_normal(window + hop).astype(np.float32) * 0.1
    # one window: separate_long is the net itself
    np.testing.assert_allclose(separate_long(separate_fn, mixture[:window], 2, window, overlap),
                               separate_fn(mixture[None, :window])[0], atol=1e-6)
    # two windows: the body of each is the net's output on that window, speakers aligned
    first = separate_fn(mixture[None, :window])[0]
    second = separate_fn(mixture[None, hop:])[0]
    windowed = separate_long(separate_fn, mixture, 2, window, overlap, batch_size=2)
    np.testing.assert_allclose(windowed[:, :hop], first[:, :hop], atol=1e-5)
    agreement = [np.sum(first[:, hop:] * second[list(p), :overlap]) for p in ([0, 1], [1, 0])]
    second = second[[0, 1] if agreement[0] >= agreement[1] else [1, 0]]
    np.testing.assert_allclose(windowed[:, window:], second[:, overlap:], atol=1e-5)
    fade_in = (np.arange(overlap) + 0.5) / overlap
    np.testing.assert_allclose(windowed[:, hop:window],
                               first[:, hop:] * (1 - fade_in) + second[:, :overlap] * fade_in, atol=1e-5)
    # and close to one call on the whole input: an untrained SWave is nearly local (measured
    # 41 / 48 dB for this seed); a misaligned or mis-faded join would fall far below 15 dB
    one_shot = separate_fn(mixture[None])[0]
    perm = best_permutation(windowed, one_shot)
    assert np.all(si_snr(windowed[perm], one_shot) > 15.0)
