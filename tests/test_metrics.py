"""src/metrics.py against values computed independently (closed forms, a direct least-squares
BSS-eval projection, and known signal-to-noise ratios)."""
import itertools
import warnings

import numpy as np
import pytest

from src import metrics

RATE = 8000


def noisy_copy(ref, snr_db, seed):
    """ref + white noise scaled so that |ref|^2 / |noise|^2 is exactly snr_db (per row)."""
    noise = np.random.default_rng(seed).standard_normal(ref.shape)
    noise -= noise.mean(axis=-1, keepdims=True)
    # make the noise exactly orthogonal to ref so the SI-SNR target is ref itself
    ref_zm = ref - ref.mean(axis=-1, keepdims=True)
    noise -= np.sum(noise * ref_zm, -1, keepdims=True) / np.sum(ref_zm ** 2, -1, keepdims=True) * ref_zm
    gain = np.sqrt(np.sum(ref_zm ** 2, -1, keepdims=True) / np.sum(noise ** 2, -1, keepdims=True) / 10 ** (snr_db / 10))
    return ref + gain * noise


def speech_like(sample_rate, seconds, seed):
    """A voiced, syllable-modulated harmonic signal that PESQ's voice activity detector accepts."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    f0 = 130 + 30 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 25) if k * f0.max() < sample_rate / 2)
    syllables = np.clip(np.sin(2 * np.pi * 3.0 * t + rng.uniform(0, 6)), 0, None) ** 2
    return (0.3 * voiced * syllables).astype(np.float32)


@pytest.fixture(scope="module")
def refs():
    return np.random.default_rng(0).standard_normal((2, 4000))


@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 10.0, 25.0])
def test_si_snr_of_reference_plus_noise_is_the_snr(refs, snr_db):
    est = noisy_copy(refs, snr_db, seed=1)
    np.testing.assert_allclose(metrics.si_snr(est, refs), snr_db, atol=1e-6)


def test_si_snr_is_scale_invariant_and_huge_for_the_reference(refs):
    est = noisy_copy(refs, 7.0, seed=2)
    base = metrics.si_snr(est, refs)
    for scale in (0.01, 3.0):
        np.testing.assert_allclose(metrics.si_snr(scale * est, refs), base, atol=1e-6)
        np.testing.assert_allclose(metrics.si_snr(est, scale * refs), base, atol=1e-6)
    assert not np.allclose(metrics.si_snr(est + 0.5 * refs[::-1], refs), base, atol=0.1)
    assert np.all(metrics.si_snr(refs, refs) > 100)
    assert np.all(metrics.si_snr(refs + 5.0, refs) > 100)  # zero-mean: a DC offset is ignored


def test_si_snr_improvement_is_difference_to_the_mixture(refs):
    # zero-mean orthogonal sources, the second 3 dB below the first: SI-SNR(mix, source) is the
    # power ratio of the source to the other one, +3 dB and -3 dB
    first = refs[0] - refs[0].mean()
    second = refs[1] - refs[1].mean()
    second -= np.dot(second, first) / np.dot(first, first) * first
    second *= np.sqrt(np.sum(first ** 2) / np.sum(second ** 2) * 10 ** (-3 / 10))
    sources = np.stack([first, second])
    mix = sources.sum(axis=0)
    est = noisy_copy(sources, 12.0, seed=3)                 # SI-SNR 12 dB each
    np.testing.assert_allclose(metrics.si_snr_improvement(est, sources, mix), [12.0 - 3.0, 12.0 + 3.0], atol=1e-6)
    # equal-power mixture of two independent sources: SI-SNR(mix, ref) close to 0 dB
    assert np.all(np.abs(metrics.si_snr(np.broadcast_to(refs.sum(axis=0), refs.shape), refs)) < 1.0)


def bss_eval_sdr_by_least_squares(est, ref, filter_length):
    """The bss_eval_sources SDR written out: project the zero-padded estimate on the delayed
    copies (0..filter_length-1) of the reference by least squares."""
    length = len(ref)
    delayed = np.zeros((length + filter_length - 1, filter_length))
    for delay in range(filter_length):
        delayed[delay:delay + length, delay] = ref
    padded = np.concatenate([est, np.zeros(filter_length - 1)])
    coef, *_ = np.linalg.lstsq(delayed, padded, rcond=None)
    target = delayed @ coef
    return 10 * np.log10(np.sum(target ** 2) / np.sum((padded - target) ** 2))


def test_sdr_matches_bss_eval_definition_and_known_snr(refs):
    est = noisy_copy(refs, 10.0, seed=4)
    short = 1500  # the explicit least-squares projection is slow; compare on the first samples
    expected = [bss_eval_sdr_by_least_squares(e, r, metrics.SDR_FILTER_LENGTH)
                for e, r in zip(est[:, :short], refs[:, :short])]
    np.testing.assert_allclose(metrics.sdr(est[:, :short], refs[:, :short]), expected, atol=1e-6)
    got = metrics.sdr(est, refs)
    # The 512-tap filter also absorbs about 512/T of the (white) noise energy into the target:
    # SDR ~ 10 log10((S + N f) / (N (1 - f))), f = 512 / T, slightly above the 10 dB SNR.
    f = metrics.SDR_FILTER_LENGTH / refs.shape[1]
    slack = 10 * np.log10((10 + f) / (1 - f)) - 10
    np.testing.assert_allclose(got, 10.0 + slack, atol=0.3)
    # a delayed, filtered copy of the reference is not distortion for BSS-eval
    # (the references end in 30 zeros so that the echo stays inside the signal)
    short_refs = refs.copy()
    short_refs[:, -30:] = 0
    echo = short_refs.copy()
    echo[:, 30:] += 0.5 * short_refs[:, :-30]
    assert np.all(metrics.sdr(echo, short_refs) > 60)
    assert np.all(metrics.si_snr(echo, short_refs) < 10)


def test_sdr_improvement_and_zero_reference(refs):
    mix = refs.sum(axis=0)
    est = noisy_copy(refs, 15.0, seed=5)
    short = 1500  # the explicit least-squares projection is slow; compare on the first samples
    expected = [bss_eval_sdr_by_least_squares(e, r, metrics.SDR_FILTER_LENGTH)
                - bss_eval_sdr_by_least_squares(mix[:short], r, metrics.SDR_FILTER_LENGTH)
                for e, r in zip(est[:, :short], refs[:, :short])]
    np.testing.assert_allclose(metrics.sdr_improvement(est[:, :short], refs[:, :short], mix[:short]), expected,
                               atol=1e-6)
    assert np.all(np.array(expected) > 10)                  # 15 dB estimates against a ~0 dB mixture
    with pytest.raises(metrics.MetricError, match="all zeros"):
        metrics.sdr(est, np.stack([refs[0], np.zeros(refs.shape[1])]))


def test_best_permutation_recovers_swaps():
    rng = np.random.default_rng(6)
    ref = rng.standard_normal((3, 2000))
    est = noisy_copy(ref, 5.0, seed=7)
    for perm in itertools.permutations(range(3)):
        shuffled = np.empty_like(est)
        shuffled[list(perm)] = est  # estimate of ref[i] now sits at row perm[i]
        assert list(metrics.best_permutation(shuffled, ref)) == list(perm)


def test_exhaustive_and_hungarian_agree():
    rng = np.random.default_rng(8)
    for _ in range(20):
        scores = rng.standard_normal((5, 5))
        rows = np.arange(5)
        brute = metrics.best_permutation_from_scores(scores)
        best = max(scores[rows, list(p)].sum() for p in itertools.permutations(range(5)))
        assert scores[rows, brute].sum() == pytest.approx(best)
    big = rng.standard_normal((9, 9))
    big[np.arange(9), (np.arange(9) + 4) % 9] += 20.0
    assert list(metrics.best_permutation_from_scores(big)) == list((np.arange(9) + 4) % 9)


def test_score_utterance_reorders_and_crops(refs):
    mix = refs.sum(axis=0)
    est = noisy_copy(refs, 10.0, seed=9)
    direct = metrics.score_utterance(est, refs, mix, RATE)
    swapped = metrics.score_utterance(est[::-1], refs, mix, RATE)
    assert direct["perm"] == [0, 1] and swapped["perm"] == [1, 0]
    for key in ("si_snr", "si_snri", "sdr", "sdri"):
        assert swapped[key] == pytest.approx(direct[key])
    assert direct["si_snr"] == pytest.approx(10.0, abs=1e-6)
    assert direct["si_snri"] == pytest.approx(np.mean(metrics.si_snr_improvement(est, refs, mix)))
    # est longer by 100 samples: everything is cropped to the references' length
    longer = np.concatenate([est, np.ones((2, 100))], axis=1)
    assert metrics.score_utterance(longer, refs, mix, RATE)["si_snr"] == pytest.approx(direct["si_snr"])
    shorter = metrics.score_utterance(est[:, :3000], refs, mix, RATE)
    assert shorter["si_snr"] == pytest.approx(np.mean(metrics.si_snr(est[:, :3000], refs[:, :3000])))
    with pytest.raises(metrics.MetricError, match="NaN"):
        metrics.score_utterance(est * np.nan, refs, mix, RATE)


@pytest.mark.parametrize("rate", [8000, 16000])
def test_pesq_and_stoi_high_for_clean_and_drop_for_noise(rate):
    ref = np.stack([speech_like(rate, 3.0, 0), speech_like(rate, 3.0, 1)])
    noisy = noisy_copy(ref.astype(np.float64), -5.0, seed=10)
    mix = ref.sum(axis=0)
    clean = metrics.score_utterance(ref, ref, mix, rate, with_pesq=True, with_stoi=True)
    degraded = metrics.score_utterance(noisy, ref, mix, rate, with_pesq=True, with_stoi=True)
    assert clean["pesq"] > 4.0 and clean["stoi"] > 0.99
    assert degraded["pesq"] < clean["pesq"] - 2.0
    assert degraded["stoi"] < clean["stoi"] - 0.1


def test_pesq_resamples_other_rates_with_a_warning():
    ref = speech_like(22050, 3.0, 2)
    with pytest.warns(UserWarning, match="resampling 22050 Hz audio to 16000 Hz"):
        assert metrics.pesq_score(ref, ref, 22050) > 4.0
    # against the pesq package called directly: narrow band at 8 kHz (no warning, no resampling),
    # wide band after resampling 22050 Hz to 16 kHz (an independent polyphase resampler here)
    from scipy.signal import resample_poly
    from pesq import pesq
    clean8 = speech_like(8000, 3.0, 2).astype(np.float64)
    noisy8 = noisy_copy(clean8, 5.0, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = metrics.pesq_score(noisy8, clean8, 8000)
    assert value == pytest.approx(pesq(8000, clean8, noisy8, "nb"), abs=1e-4) and 1.0 < value < 4.0
    noisy = noisy_copy(ref.astype(np.float64), 5.0, seed=4)
    with pytest.warns(UserWarning, match="resampling"):
        value = metrics.pesq_score(noisy, ref, 22050)
    expected = pesq(16000, resample_poly(ref, 320, 441), resample_poly(noisy, 320, 441), "wb")
    assert value == pytest.approx(expected, abs=0.1) and 1.0 < value < 4.0
    with pytest.raises(metrics.MetricError, match="reference is silent"):
        metrics.pesq_score(np.zeros(24000), np.zeros(24000), 8000)
    with pytest.raises(metrics.MetricError, match="PESQ cannot score.*BufferTooShort"):
        metrics.pesq_score(np.ones(1000), np.ones(1000), 8000)  # PESQ needs >= 0.25 s
