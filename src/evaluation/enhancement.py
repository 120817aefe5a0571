"""Scoring a speech enhancer on noisy/clean pairs (evaluate.py, postprocess.py and validation):
SI-SNR, STOI and PESQ of the enhanced signal, each also as improvement over the noisy input,
per pair, per SNR and overall."""
import numpy as np

from src.evaluation.report import fmt, mean, progress_bar
from src.metrics import MetricError, pesq_score, si_snr, stoi_score

# scores of an enhanced signal and of the noisy input against the clean speech (see score_pair)
BASIC_SCORES = ("si_snr", "si_snri")
PESQ_STOI_SCORES = ("stoi", "stoii", "pesq", "pesqi")
ENHANCEMENT_SCORES = BASIC_SCORES + PESQ_STOI_SCORES



def noisy_scores(pair, sample_rate, with_pesq_stoi):
    """Scores of the unprocessed noisy signal of `pair`: {si_snr[, stoi, pesq]} (MetricError when
    PESQ/STOI cannot score it)."""
    scores = {"si_snr": float(si_snr(pair.noisy, pair.clean))}
    if with_pesq_stoi:
        scores["stoi"] = stoi_score(pair.noisy, pair.clean, sample_rate)
        scores["pesq"] = pesq_score(pair.noisy, pair.clean, sample_rate)
    return scores


def score_pair(enhanced, pair, sample_rate, with_pesq_stoi, noisy=None):
    """Scores of `enhanced (time,)` against `pair.clean`, each also as improvement over the noisy
    input: si_snr, si_snri [, stoi, stoii, pesq, pesqi] (PESQ wide band at 16 kHz, narrow band at
    8 kHz). `noisy`: the pair's noisy_scores when already known (they do not change between calls).
    Raises MetricError when PESQ/STOI cannot score the pair."""
    noisy = noisy or noisy_scores(pair, sample_rate, with_pesq_stoi)
    value = float(si_snr(enhanced, pair.clean))
    scores = {"si_snr": value, "si_snri": value - noisy["si_snr"]}
    if with_pesq_stoi:
        for name, metric in (("stoi", stoi_score), ("pesq", pesq_score)):
            value = metric(enhanced, pair.clean, sample_rate)
            scores[name], scores[f"{name}i"] = value, value - noisy[name]
    return scores



def evaluate_enhancement(enhancer, pairs, sample_rate, progress=True):
    """Enhance and score every pair -> rows (dicts) in order: key (clean utterance), snr_db, length,
    seconds, si_snr, si_snri, stoi, stoii, pesq, pesqi (score_pair: enhanced and improvement over
    the noisy input), clean, noise (files). A non-finite enhanced signal gives a row with an
    `error` and no scores; a pair PESQ/STOI cannot score keeps its SI-SNR scores and gets an `error`."""
    total = len(pairs) if hasattr(pairs, "__len__") else None
    rows = []
    with progress_bar(total, progress, "enhancing") as bar:
        for pair in pairs:
            length = len(pair.clean)
            row = {"key": pair.key, "snr_db": pair.snr_db, "length": length,
                   "seconds": round(length / sample_rate, 3)}
            enhanced = enhancer(pair.noisy)
            if not np.all(np.isfinite(enhanced)):
                row["error"] = "the enhanced signal contains NaN or Inf"
            else:
                try:
                    row.update(score_pair(enhanced, pair, sample_rate, with_pesq_stoi=True))
                except MetricError as err:
                    row.update(score_pair(enhanced, pair, sample_rate, with_pesq_stoi=False))
                    row["error"] = f"PESQ/STOI: {err}"
            row.update(clean=pair.clean_path, noise=pair.noise_path)
            rows.append(row)
            bar.update(1)
    return rows


def _enhancement_means(rows):
    scored = [row for row in rows if "si_snri" in row]
    means = {"count": len(scored)}
    for name in ENHANCEMENT_SCORES:
        if any(name in row for row in scored):
            means[name] = mean(scored, name)
    return means


def summarize_enhancement(rows):
    """Averages of evaluate_enhancement's rows, overall and per SNR -> {count, si_snr, si_snri,
    stoi, stoii, pesq, pesqi, per_snr: {"<snr>": {count, ...}}, failed[, failed_keys]}."""
    summary = _enhancement_means(rows)
    summary["per_snr"] = {f"{snr:g}": _enhancement_means([row for row in rows if row["snr_db"] == snr])
                          for snr in sorted({row["snr_db"] for row in rows})}
    failed = [f"{row['key']}@{row['snr_db']:g}dB" for row in rows if "error" in row]
    summary["failed"] = len(failed)
    if failed:
        summary["failed_keys"] = failed
    return summary


def print_enhancement_summary(summary):
    """Per-SNR and overall averages (enhanced, and in brackets the improvement over the noisy
    input); the SI-SNRi line is exactly `Average SISNR improvement: <x.xx>` as for separation."""
    def line(means):
        parts = []
        for name, label in (("si_snr", "SI-SNR"), ("stoi", "STOI"), ("pesq", "PESQ")):
            if name in means:
                gain = means.get(name + "i")
                parts.append(f"{label} {fmt(means[name])} ({'n/a' if gain is None else f'{gain:+.2f}'})")
        return ", ".join(parts)

    for snr, means in summary["per_snr"].items():
        print(f"input SNR {snr} dB ({means['count']} pairs): {line(means)}")
    print(f"all SNRs ({summary['count']} pairs): {line(summary)}")
    print(f"Average SISNR improvement: {fmt(summary.get('si_snri'))}")
    if summary.get("failed"):
        print(f"Pairs with an error: {summary['failed']} (see the 'error' column of the CSV)")

