"""Evaluation metrics in numpy (float64 inside): SI-SNR(i), SDR(i), PESQ, STOI, permutations.

Conventions
- Signals are `(time,)` or `(speakers, time)`; metric functions work on the last axis.
- A permutation `perm` maps references to estimates: `est[perm[i]]` is the estimate of
  `ref[i]`, so `est[perm]` is the estimate reordered to the reference order.
- Length mismatch: estimates, references and mixture are all cropped to the shortest of them,
  keeping the first samples (the model output and the references start at the same sample;
  a separator that drops or adds samples does so at the end).
"""
import itertools
import warnings

import numpy as np
from scipy.optimize import linear_sum_assignment

from src.audio import resample
from src.errors import UserError

EPS = 1e-8
# Exhaustive search up to this many speakers (5! = 120 candidates), Hungarian algorithm above.
MAX_SPEAKERS_EXHAUSTIVE = 5
# bss_eval's distortion filter: 512 taps, as in BSS Eval v3 / mir_eval bss_eval_sources.
SDR_FILTER_LENGTH = 512


class MetricError(UserError):
    """Inputs a metric cannot be computed on; the message says why."""


def _as_float64(x, name):
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 0 or x.shape[-1] == 0:
        raise MetricError(f"{name} is empty (shape {x.shape}); expected (..., time) with time > 0")
    if not np.all(np.isfinite(x)):
        raise MetricError(f"{name} contains NaN or Inf")
    return x


def crop_to_shortest(*signals):
    """Crop every `(..., time)` array to the shortest time axis, keeping the first samples."""
    length = min(s.shape[-1] for s in signals)
    return tuple(s[..., :length] for s in signals)


def si_snr(est, ref):
    """Scale-invariant SNR in dB, zero-mean, over the last axis: `(..., time)` -> `(...)`."""
    est, ref = crop_to_shortest(_as_float64(est, "estimate"), _as_float64(ref, "reference"))
    est = est - est.mean(axis=-1, keepdims=True)
    ref = ref - ref.mean(axis=-1, keepdims=True)
    scale = np.sum(est * ref, axis=-1, keepdims=True) / (np.sum(ref * ref, axis=-1, keepdims=True) + EPS)
    target = scale * ref
    noise = est - target
    return 10.0 * np.log10((np.sum(target ** 2, axis=-1) + EPS) / (np.sum(noise ** 2, axis=-1) + EPS))


def si_snr_improvement(est, ref, mix):
    """SI-SNR(est, ref) - SI-SNR(mix, ref) in dB; est/ref `(..., time)`, mix `(time,)`."""
    mix = _as_float64(mix, "mixture")
    return si_snr(est, ref) - si_snr(np.broadcast_to(mix, np.shape(ref)), ref)


def sdr(est, ref):
    """BSS-eval SDR in dB of `est[i]` against `ref[i]` (no permutation search): `(C, time)` -> `(C,)`.

    Computed with fast_bss_eval (512-tap distortion filter, no mean removal), the definition of
    bss_eval_sources / mir_eval: SDR = 10 log10(|P_i est|^2 / |est - P_i est|^2) with P_i the
    projection on the delayed copies (0..511 samples) of `ref[i]`.
    """
    import fast_bss_eval

    est, ref = crop_to_shortest(_as_float64(est, "estimate"), _as_float64(ref, "reference"))
    est, ref = np.atleast_2d(est), np.atleast_2d(ref)
    if est.shape != ref.shape:
        raise MetricError(f"estimate {est.shape} and reference {ref.shape} differ in speaker count")
    if est.shape[-1] < SDR_FILTER_LENGTH:
        raise MetricError(f"SDR needs at least {SDR_FILTER_LENGTH} samples, got {est.shape[-1]}")
    if np.any(np.sum(ref ** 2, axis=-1) == 0):
        raise MetricError("a reference is all zeros: SDR is undefined")
    with np.errstate(divide="ignore"):  # a perfect estimate has SDR = +inf
        return -fast_bss_eval.sdr_loss(est, ref, filter_length=SDR_FILTER_LENGTH, pairwise=False)


def sdr_improvement(est, ref, mix):
    """SDR(est, ref) - SDR(mix, ref) per speaker in dB; est/ref `(C, time)`, mix `(time,)`."""
    est, ref, mix = crop_to_shortest(np.atleast_2d(est), np.atleast_2d(ref), _as_float64(mix, "mixture"))
    return sdr(est, ref) - sdr(np.broadcast_to(mix, ref.shape), ref)


def best_permutation_from_scores(scores):
    """The permutation `perm` maximising `sum_i scores[i, perm[i]]` for a `(C, C)` score matrix.

    Exhaustive for C <= MAX_SPEAKERS_EXHAUSTIVE (ties go to the first permutation in
    lexicographic order, so the identity wins a tie), linear_sum_assignment above.
    """
    scores = np.asarray(scores, dtype=np.float64)
    num = scores.shape[0]
    if scores.ndim != 2 or scores.shape[1] != num:
        raise MetricError(f"score matrix must be square (C, C), got {scores.shape}")
    if num <= MAX_SPEAKERS_EXHAUSTIVE:
        rows = np.arange(num)
        best, best_total = None, -np.inf
        for perm in itertools.permutations(range(num)):
            total = scores[rows, list(perm)].sum()
            if total > best_total:
                best, best_total = perm, total
        return np.array(best)
    _, cols = linear_sum_assignment(scores, maximize=True)
    return cols


def best_permutation(est, ref):
    """Permutation of `est (C, time)` maximising the mean SI-SNR against `ref (C, time)`.

    Returns `perm (C,)` with `est[perm[i]]` the estimate of `ref[i]`.
    """
    est, ref = np.atleast_2d(est), np.atleast_2d(ref)
    if est.shape[0] != ref.shape[0]:
        raise MetricError(f"estimate has {est.shape[0]} speakers, reference {ref.shape[0]}")
    pairwise = np.stack([si_snr(est, r) for r in ref])  # [i, j] = SI-SNR(est[j], ref[i])
    return best_permutation_from_scores(pairwise)


def _pesq_rate_and_mode(sample_rate):
    """PESQ is defined at 8 kHz (narrow band) and 16 kHz (wide band)."""
    if sample_rate == 8000:
        return 8000, "nb"
    if sample_rate == 16000:
        return 16000, "wb"
    target = 16000 if sample_rate > 16000 else 8000
    warnings.warn(f"PESQ is defined at 8 or 16 kHz only: resampling {sample_rate} Hz audio to "
                  f"{target} Hz for PESQ ({'wb' if target == 16000 else 'nb'})", stacklevel=3)
    return target, "wb" if target == 16000 else "nb"


def pesq_score(est, ref, sample_rate):
    """PESQ (ITU-T P.862) of `est (time,)` against `ref (time,)`: 'nb' at 8 kHz, 'wb' at 16 kHz.

    Other rates are resampled (with a warning): above 16 kHz to 16 kHz ('wb'), below to 8 kHz
    ('nb'). Raises MetricError when PESQ finds no speech in the reference.
    """
    from pesq import pesq, PesqError

    est, ref = crop_to_shortest(_as_float64(est, "estimate"), _as_float64(ref, "reference"))
    if not np.any(ref):
        raise MetricError("PESQ: the reference is silent (all zeros)")
    rate, mode = _pesq_rate_and_mode(sample_rate)
    est = resample(est.astype(np.float32), sample_rate, rate)
    ref = resample(ref.astype(np.float32), sample_rate, rate)
    try:
        return float(pesq(rate, ref, est, mode))
    except PesqError as err:
        raise MetricError(f"PESQ cannot score this utterance: {type(err).__name__} ({err})") from None


def stoi_score(est, ref, sample_rate):
    """STOI (pystoi; it resamples to 10 kHz itself) of `est (time,)` against `ref (time,)`."""
    from pystoi import stoi

    est, ref = crop_to_shortest(_as_float64(est, "estimate"), _as_float64(ref, "reference"))
    return float(stoi(ref, est, sample_rate, extended=False))


def mean_scores(est, ref, mix):
    """si_snr, si_snri, sdr, sdri (dB, means over speakers) of ordered estimates `est (C, time)`
    against `ref (C, time)`; improvements over the mixture `mix (time,)` as every estimate."""
    mixture = np.broadcast_to(mix, ref.shape)
    si_snr_est, sdr_est = si_snr(est, ref), sdr(est, ref)
    return {"si_snr": float(np.mean(si_snr_est)), "si_snri": float(np.mean(si_snr_est - si_snr(mixture, ref))),
            "sdr": float(np.mean(sdr_est)), "sdri": float(np.mean(sdr_est - sdr(mixture, ref)))}


def score_utterance(est, ref, mix, sample_rate, with_pesq=False, with_stoi=False):
    """Scores of one separated utterance, estimates reordered by the best SI-SNR permutation.

    est `(C, time)`, ref `(C, time)`, mix `(time,)`; all cropped to the shortest.
    Returns a dict: `si_snr`, `si_snri`, `sdr`, `sdri` (dB, means over speakers), optionally
    `pesq` and `stoi` (means over speakers), and `perm` (list, `est[perm[i]]` estimates `ref[i]`).
    """
    est = np.atleast_2d(_as_float64(est, "estimate"))
    ref = np.atleast_2d(_as_float64(ref, "reference"))
    mix = _as_float64(mix, "mixture")
    if mix.ndim != 1:
        raise MetricError(f"mixture must be (time,), got shape {mix.shape}")
    est, ref, mix = crop_to_shortest(est, ref, mix)
    perm = best_permutation(est, ref)
    est = est[perm]
    scores = mean_scores(est, ref, mix)
    if with_pesq:
        scores["pesq"] = float(np.mean([pesq_score(e, r, sample_rate) for e, r in zip(est, ref)]))
    if with_stoi:
        scores["stoi"] = float(np.mean([stoi_score(e, r, sample_rate) for e, r in zip(est, ref)]))
    scores["perm"] = [int(p) for p in perm]
    return scores
