"""PIT SI-SNR losses against numpy computed by hand: invariances, masking past `lengths`,
exhaustive and greedy permutation search, multi-scale weights, GRAPH_MODE == PyNative."""
import itertools

import numpy as np
import pytest
import mindspore as ms

from src.losses import (SeparationLoss, multi_scale_pit_si_snr_loss, pairwise_si_snr, pit_si_snr_loss,
                        si_snr)
from src.losses.pit_si_snr import MAX_EXACT_PIT_SPEAKERS


@pytest.fixture(autouse=True)
def pynative():
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield


def T(array):
    return ms.Tensor(np.asarray(array))


def numpy_si_snr(estimate, reference):
    """SI-SNR (dB) of two 1-D signals, from the definition, in float64."""
    estimate = estimate - estimate.mean()
    reference = reference - reference.mean()
    target = (estimate @ reference) / (reference @ reference) * reference
    return 10 * np.log10((target @ target) / ((estimate - target) @ (estimate - target)))


def numpy_pit_loss(estimates, references, lengths):
    """-mean over the batch of max over permutations of the mean SI-SNR (valid samples only)."""
    batch, speakers, _ = estimates.shape
    best = []
    for b in range(batch):
        n = lengths[b]
        est, ref = estimates[b, :, :n].astype(np.float64), references[b, :, :n].astype(np.float64)
        best.append(max(np.mean([numpy_si_snr(est[perm[i]], ref[i]) for i in range(speakers)])
                        for perm in itertools.permutations(range(speakers))))
    return -np.mean(best)


def make_batch(rng, batch=3, speakers=2, samples=800, noise=0.3):
    references = rng.standard_normal((batch, speakers, samples)).astype(np.float32)
    estimates = (references + noise * rng.standard_normal(references.shape)).astype(np.float32)
    lengths = np.array([samples] + [samples - 97 * (b + 1) for b in range(batch - 1)], np.int32)
    for b, n in enumerate(lengths):  # the batch convention: zeros past the length
        references[b, :, n:] = 0
        estimates[b, :, n:] = 0
    return estimates, references, lengths


def test_si_snr_of_reference_plus_noise_matches_numpy():
    rng = np.random.default_rng(0)
    samples = 4000
    reference = rng.standard_normal((2, 1, samples)).astype(np.float32) + 0.5  # non-zero mean on purpose
    noise = rng.standard_normal((2, 1, samples)).astype(np.float32)
    noise *= np.sqrt((reference[..., :3000] ** 2).mean() / (noise ** 2).mean()) * 10 ** (-10 / 20)
    estimate = reference + noise
    lengths = np.array([samples, 3000], np.int32)
    ours = si_snr(T(estimate), T(reference), T(lengths)).asnumpy()
    expected = [numpy_si_snr(estimate[b, 0, :n].astype(np.float64), reference[b, 0, :n].astype(np.float64))
                for b, n in enumerate(lengths)]
    np.testing.assert_allclose(ours[:, 0], expected, atol=1e-3)
    assert 8 < expected[1] < 12  # ~10 dB as constructed


def test_perfect_estimate_gives_large_si_snr():
    rng = np.random.default_rng(1)
    reference = rng.standard_normal((1, 2, 8000)).astype(np.float32)
    assert si_snr(T(reference), T(reference), T(np.array([8000], np.int32))).asnumpy().min() > 60


def test_pairwise_is_every_estimate_against_every_reference():
    rng = np.random.default_rng(2)
    estimates, references, lengths = make_batch(rng, speakers=3)
    pairwise = pairwise_si_snr(T(estimates), T(references), T(lengths)).asnumpy()
    assert pairwise.shape == (3, 3, 3)
    for b, i, j in itertools.product(range(3), range(3), range(3)):
        n = lengths[b]
        expected = numpy_si_snr(estimates[b, i, :n].astype(np.float64), references[b, j, :n].astype(np.float64))
        assert pairwise[b, i, j] == pytest.approx(expected, rel=1e-4, abs=1e-3)  # cross pairs ~ -40 dB


@pytest.mark.parametrize("speakers", [2, 3])
def test_pit_loss_matches_exhaustive_numpy(speakers):
    rng = np.random.default_rng(3)
    estimates, references, lengths = make_batch(rng, speakers=speakers, noise=1.5)
    estimates = estimates[:, ::-1].copy()  # the best permutation is not the identity
    loss = float(pit_si_snr_loss(T(estimates), T(references), T(lengths)).asnumpy())
    assert loss == pytest.approx(numpy_pit_loss(estimates, references, lengths), abs=1e-3)


def test_pit_loss_is_invariant_to_permuting_and_rescaling_estimates():
    rng = np.random.default_rng(4)
    estimates, references, lengths = make_batch(rng, speakers=3)
    base = float(pit_si_snr_loss(T(estimates), T(references), T(lengths)).asnumpy())
    permuted = estimates[:, [2, 0, 1]].copy()
    assert float(pit_si_snr_loss(T(permuted), T(references), T(lengths)).asnumpy()) == pytest.approx(base, abs=1e-4)
    rescaled = estimates.copy()
    rescaled[:, 1] *= 7.5
    rescaled[0, 2] *= 0.02
    assert float(pit_si_snr_loss(T(rescaled), T(references), T(lengths)).asnumpy()) == pytest.approx(base, abs=1e-3)


def test_samples_past_lengths_do_not_change_the_loss():
    rng = np.random.default_rng(5)
    estimates, references, lengths = make_batch(rng)
    base = float(pit_si_snr_loss(T(estimates), T(references), T(lengths)).asnumpy())
    noisy_tail_est, noisy_tail_ref = estimates.copy(), references.copy()
    for b, n in enumerate(lengths):
        noisy_tail_est[b, :, n:] = 100 * rng.standard_normal(noisy_tail_est[b, :, n:].shape)
        noisy_tail_ref[b, :, n:] = -50.0
    changed = float(pit_si_snr_loss(T(noisy_tail_est), T(noisy_tail_ref), T(lengths)).asnumpy())
    assert changed == pytest.approx(base, abs=1e-4)
    # and the tail does count once lengths says it is real
    full = np.full_like(lengths, estimates.shape[-1])
    assert abs(float(pit_si_snr_loss(T(noisy_tail_est), T(noisy_tail_ref), T(full)).asnumpy()) - base) > 1.0


def test_greedy_assignment_for_many_speakers():
    speakers = MAX_EXACT_PIT_SPEAKERS + 1
    rng = np.random.default_rng(6)
    estimates, references, lengths = make_batch(rng, batch=2, speakers=speakers, samples=600, noise=0.5)
    order = rng.permutation(speakers)
    shuffled = estimates[:, order].copy()
    loss = float(pit_si_snr_loss(T(shuffled), T(references), T(lengths)).asnumpy())
    # each estimate is clearly closest to one reference: the optimum is the matching permutation
    expected = -np.mean([np.mean([numpy_si_snr(estimates[b, i, :n].astype(np.float64),
                                               references[b, i, :n].astype(np.float64))
                                  for i in range(speakers)]) for b, n in enumerate(lengths)])
    assert loss == pytest.approx(expected, abs=1e-3)
    assert loss < -3  # a wrong assignment would be far worse (cross pairs are ~ -25 dB)


def test_gradient_reaches_the_estimates():
    rng = np.random.default_rng(7)
    estimates, references, lengths = make_batch(rng)
    grad = ms.grad(lambda e: pit_si_snr_loss(e, T(references), T(lengths)))(T(estimates)).asnumpy()
    assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0
    for b, n in enumerate(lengths):
        assert np.all(grad[b, :, n:] == 0)


def test_silent_reference_scores_how_quiet_the_estimate_is():
    """A zero reference: the estimate matched to it scores -10 log10(|e|^2/|mix|^2 + 1e-3), capped at
    30 dB; PIT still pairs the other estimates with their speakers; the gradient makes it quieter."""
    rng = np.random.default_rng(3)
    estimates, references, lengths = make_batch(rng, batch=2, speakers=3)
    references[0, 2] = 0
    estimates[0, 2] *= 0.1           # item 0: the third output is quiet noise, the others are close
    estimates, references = estimates[:, ::-1].copy(), references   # PIT must find the order
    loss = pit_si_snr_loss(T(estimates), T(references), T(lengths)).asnumpy()
    expected = []
    for b in range(2):
        n = lengths[b]
        est, ref = estimates[b, :, :n].astype(np.float64), references[b, :, :n].astype(np.float64)
        est, ref = est - est.mean(axis=1, keepdims=True), ref - ref.mean(axis=1, keepdims=True)
        mix_energy = np.sum(ref.sum(axis=0) ** 2)
        share = mix_energy / np.sum(est ** 2)      # the estimates' energy brought to the mixture's

        def score(e, r):
            if not np.any(r):
                return -10 * np.log10(share * np.sum(e ** 2) / mix_energy + 1e-3)
            return numpy_si_snr(e, r)
        expected.append(max(np.mean([score(est[p[i]], ref[i]) for i in range(3)])
                            for p in itertools.permutations(range(3))))
    np.testing.assert_allclose(loss, -np.mean(expected), rtol=1e-4)
    silent = ms.Tensor(np.zeros((1, 2, 800), np.float32))
    perfect = pit_si_snr_loss(silent, silent, T([800])).asnumpy()
    assert np.isfinite(perfect)
    grad = ms.grad(lambda e: pit_si_snr_loss(e, T(references), T(lengths)))(T(estimates)).asnumpy()
    assert np.all(np.isfinite(grad))
    quiet_output = estimates[0, 0]          # reversed order: output 0 is the one matched to silence
    assert np.sum(grad[0, 0] * quiet_output) > 0      # descending the loss shrinks it


def test_level_weight_subtracts_the_level_error_of_each_outputs_share_in_db():
    """The level error is that of the outputs brought, all by one gain, to the mixture's energy: an
    overall gain costs nothing (SI-SNR-trained models have an arbitrary one), one output louder than
    its source relative to the others does."""
    rng = np.random.default_rng(5)
    estimates, references, lengths = make_batch(rng, batch=2, speakers=2)

    def level_error(est):   # mean |dB| over the batch and speakers, identity pairing (noise is small)
        errors = []
        for b, n in enumerate(lengths):
            e, r = est[b, :, :n].astype(np.float64), references[b, :, :n].astype(np.float64)
            e, r = e - e.mean(axis=1, keepdims=True), r - r.mean(axis=1, keepdims=True)
            energy = (e ** 2).sum(1) * np.sum(r.sum(0) ** 2) / np.sum(e ** 2)
            errors.append(np.abs(10 * np.log10(energy / (r ** 2).sum(1))).mean())
        return np.mean(errors)
    plain = pit_si_snr_loss(T(estimates), T(references), T(lengths)).asnumpy()
    louder = estimates * np.float32(10 ** (20 / 20))             # +20 dB overall: SI-SNR unchanged
    unbalanced = estimates.copy()
    unbalanced[:, 0] *= np.float32(10 ** (6 / 20))               # output 0 +6 dB: SI-SNR unchanged
    for est in (louder, unbalanced):
        np.testing.assert_allclose(pit_si_snr_loss(T(est), T(references), T(lengths)).asnumpy(), plain, rtol=1e-4)
    weighted = {}
    for name, est in (("as is", estimates), ("louder", louder), ("unbalanced", unbalanced)):
        weighted[name] = pit_si_snr_loss(T(est), T(references), T(lengths), 0.5).asnumpy()
        np.testing.assert_allclose(weighted[name], plain + 0.5 * level_error(est), rtol=1e-4)
    np.testing.assert_allclose(weighted["louder"], weighted["as is"], rtol=1e-4)
    assert weighted["unbalanced"] > weighted["as is"] + 0.5 * 2


def test_multi_scale_weights_and_loss_cell():
    rng = np.random.default_rng(8)
    _, references, lengths = make_batch(rng)
    layers = 3
    # a quality ladder: every layer estimates `references`, less noisy with depth (-> ~ -6, -12, -20 dB)
    estimates = np.stack([references + noise * rng.standard_normal(references.shape).astype(np.float32)
                          for noise in (0.5, 0.25, 0.1)])
    for b, n in enumerate(lengths):
        estimates[:, b, :, n:] = 0
    per_layer = [numpy_pit_loss(estimates[i], references, lengths) for i in range(layers)]
    assert per_layer[0] > per_layer[1] + 3 > per_layer[2] + 6               # ~6 dB apart, getting better
    expected = sum((i + 1) / layers * per_layer[i] for i in range(layers)) / layers
    uniform, reversed_weights = np.mean(per_layer), sum((layers - i) / layers * per_layer[i] for i in range(layers)) / layers
    assert abs(expected - uniform) > 0.5 and abs(expected - reversed_weights) > 1  # the weights matter
    ours = float(multi_scale_pit_si_snr_loss(T(estimates), T(references), T(lengths)).asnumpy())
    assert ours == pytest.approx(expected, abs=1e-3)
    cell = SeparationLoss()
    assert float(cell(T(estimates), T(references), T(lengths)).asnumpy()) == pytest.approx(ours, abs=1e-5)
    assert float(cell(T(estimates[-1]), T(references), T(lengths)).asnumpy()) == pytest.approx(per_layer[-1],
                                                                                               abs=1e-3)
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        graph = float(cell(T(estimates), T(references), T(lengths)).asnumpy())
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    assert graph == pytest.approx(ours, abs=1e-4)


def test_bad_shapes_are_refused():
    x = T(np.zeros((2, 2, 100), np.float32))
    lengths = T(np.array([100, 100], np.int32))
    with pytest.raises(ValueError, match="same shape"):
        pit_si_snr_loss(x, T(np.zeros((2, 3, 100), np.float32)), lengths)
    with pytest.raises(ValueError, match="R, batch, C, time"):
        multi_scale_pit_si_snr_loss(x, x, lengths)
