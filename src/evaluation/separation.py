"""Scoring separators on full utterances: per-utterance rows, averages, printed summaries.

A separator is a callable `separate_fn(mixture (batch, time) float32) -> (batch, C, time)` (see
src/inference/separation.py). Utterances are dicts `{key, mix (T,), src (C, T), ...}` as yielded by
`src.data.dataset.iterate_utterances`.

- `evaluate_utterances`: one model, every utterance scored with the best SI-SNR permutation.
- `evaluate_counting`: several models (one per speaker count), the speaker count found per
  mixture (src.inference.speaker_count) and the result scored against the true sources.
  Missing and extra outputs (found count != true count) are handled by `score_with_count`:
  sources and outputs are paired by the assignment maximising the total SI-SNR; a source left
  without an output is scored with the unprocessed mixture as its estimate (so its SI-SNRi and
  SDRi are exactly 0 dB); outputs left without a source are not scored, only counted (`extra`).
- `evaluate_counter`: a counter alone (a speaker-counting model): the count found per mixture,
  summarized as accuracy and confusion matrix (`summarize_counts`), nothing separated.

Utterances that cannot be scored (separator returned NaN, a reference is silent, too short for
SDR, ...) become rows with an `error` and no scores; `summarize` leaves them out of the
averages and counts them in `failed`. Nothing is dropped silently.
"""
import math
from collections import Counter, defaultdict

import numpy as np
from scipy.optimize import linear_sum_assignment

from src.evaluation.report import (EvaluationError, fmt, mean, mean_with_ci95, progress_bar, proportion_ci95,
                                   speaker_ci95, values_of)
from src.inference.separation import SeparationError
from src.inference.speaker_count import count_and_separate
from src.inference.windows import separate
from src.metrics import MetricError, crop_to_shortest, mean_scores, pesq_score, score_utterance, si_snr, stoi_score

SCORES = ("si_snr", "si_snri", "sdr", "sdri", "pesq", "stoi")
# utterances kept waiting for others of the same length, per batch slot (see evaluate_utterances)
LOOKAHEAD_PER_BATCH = 4


def _check_window(window, overlap):
    if (window is None) != (overlap is None):
        raise EvaluationError("give both window and overlap (windowed) or neither (one call)")


def _length_groups(utterances, batch_size, window):
    """Yield lists of `(index, utterance)` to separate in one call: equal-length utterances of at
    most `window` samples, up to `batch_size` per group. At most `LOOKAHEAD_PER_BATCH * batch_size`
    utterances wait for a partner; when that many wait, the largest group goes first. Longer
    utterances (windowed) come alone."""
    if batch_size <= 1:
        for item in enumerate(utterances):
            yield [item]
        return
    waiting = defaultdict(list)  # length -> [(index, utt)]
    num_waiting = 0
    for index, utt in enumerate(utterances):
        length = len(utt["mix"])
        if window is not None and length > window:
            yield [(index, utt)]
            continue
        waiting[length].append((index, utt))
        num_waiting += 1
        if len(waiting[length]) == batch_size:
            num_waiting -= batch_size
            yield waiting.pop(length)
        elif num_waiting >= LOOKAHEAD_PER_BATCH * batch_size:
            longest = max(waiting, key=lambda k: len(waiting[k]))
            num_waiting -= len(waiting[longest])
            yield waiting.pop(longest)
    for length in sorted(waiting, key=lambda k: -len(waiting[k])):
        yield waiting[length]


def _separate_group(separate_fn, group, window, overlap, batch_size):
    """Estimates `(C, T)` (or a SeparationError) for each utterance of a group (see _length_groups)."""
    if len(group) == 1:
        (_, utt), = group
        num_speakers = utt["src"].shape[0]
        try:
            return [separate(separate_fn, utt["mix"], num_speakers, window, overlap, batch_size)]
        except SeparationError as err:
            return [err]
    mixtures = np.stack([np.asarray(utt["mix"], dtype=np.float32) for _, utt in group])
    num_speakers = group[0][1]["src"].shape[0]
    results = [None] * len(group)
    finite = np.all(np.isfinite(mixtures), axis=1)
    for row in np.flatnonzero(~finite):
        results[row] = SeparationError("mixture contains NaN or Inf")
    if finite.any():
        rows = np.flatnonzero(finite)
        try:
            out = np.asarray(separate_fn(mixtures[rows]))
        except SeparationError as err:
            return [result if result is not None else err for result in results]
        want = (len(rows), num_speakers, mixtures.shape[1])
        if out.shape != want:
            raise SeparationError(f"separator returned shape {out.shape} for input {mixtures[rows].shape}; "
                                  f"expected {want} (batch, speakers, time)")
        for row, est in zip(rows, out):
            results[row] = est if np.all(np.isfinite(est)) else SeparationError("separator returned NaN or Inf")
    return results


def _base_row(utt, sample_rate):
    """key, [data (the utterance's `data` tag, when it has one)], num_speakers, length, seconds."""
    length = len(utt["mix"])
    row = {"key": utt["key"]}
    if "data" in utt:
        row["data"] = utt["data"]
    row.update(num_speakers=int(utt["src"].shape[0]), length=length, seconds=round(length / sample_rate, 3))
    return row


def _score_row(row, est, utt, sample_rate, with_pesq, with_stoi):
    """Fill `row` with the scores of `est (C, T)`; MetricError -> `row["error"]`."""
    try:
        scores = score_utterance(est, utt["src"], utt["mix"], sample_rate)
    except MetricError as err:
        row["error"] = str(err)
        return row
    perm = scores.pop("perm")
    row.update(scores)
    ordered, ref = crop_to_shortest(np.asarray(est)[perm], np.asarray(utt["src"]))
    for name, wanted, metric in (("pesq", with_pesq, pesq_score), ("stoi", with_stoi, stoi_score)):
        if not wanted:
            continue
        try:
            row[name] = float(np.mean([metric(e, r, sample_rate) for e, r in zip(ordered, ref)]))
        except MetricError as err:
            row[name] = math.nan
            row["error"] = f"{name.upper()}: {err}"
    row["perm"] = perm
    return row


def evaluate_utterances(separate_fn, utterances, sample_rate, window=None, overlap=None, with_pesq=False,
                        with_stoi=False, progress=True, batch_size=1):
    """Separate and score every utterance -> list of rows (dicts), in the order of `utterances`.

    window, overlap: samples; utterances longer than `window` are separated by `separate_long`
        (overlapping windows, bounded memory), shorter ones in one call. window None: every
        utterance in one call (memory grows with the length).
    batch_size: windows per separator call for long utterances; utterances of equal length (and
        at most `window` samples) are also separated together, up to `batch_size` per call.
        Utterances of different lengths are never padded into one batch (padding changes a
        recurrent network's output).
    A row: key, num_speakers, length (samples), seconds, si_snr, si_snri, sdr, sdri (dB, means over
    speakers), pesq / stoi when asked, perm (`est[perm[i]]` estimates source i); rows of
    utterances that could not be scored have `error` instead of the scores (a failed PESQ/STOI
    gives NaN for it and an `error`, the other scores stay).
    """
    _check_window(window, overlap)
    total = len(utterances) if hasattr(utterances, "__len__") else None
    rows = []
    with progress_bar(total, progress, "evaluating") as bar:
        for group in _length_groups(utterances, batch_size, window):
            for (index, utt), est in zip(group, _separate_group(separate_fn, group, window, overlap, batch_size)):
                row = _base_row(utt, sample_rate)
                if isinstance(est, Exception):
                    row["error"] = str(est)
                else:
                    _score_row(row, est, utt, sample_rate, with_pesq, with_stoi)
                rows.append((index, row))
                bar.update(1)
    return [row for _, row in sorted(rows, key=lambda pair: pair[0])]


def score_with_count(est, ref, mix):
    """Scores of `est (K, T)` against the true sources `ref (C, T)` when K may differ from C.

    Sources and outputs are paired by the assignment maximising the total SI-SNR (Hungarian);
    a source without an output gets the mixture as its estimate (0 dB improvement); unpaired
    outputs are not scored. Returns si_snr, si_snri, sdr, sdri (means over the C sources),
    `assignment` (output index per source, -1 = missing), `missing`, `extra`.
    """
    est = np.atleast_2d(np.asarray(est, dtype=np.float64))
    ref = np.atleast_2d(np.asarray(ref, dtype=np.float64))
    est, ref, mix = crop_to_shortest(est, ref, np.asarray(mix, dtype=np.float64))
    pairwise = np.stack([si_snr(est, r) for r in ref])  # [i, j] = SI-SNR(est[j], ref[i])
    sources, outputs = linear_sum_assignment(pairwise, maximize=True)
    assigned = np.broadcast_to(mix, ref.shape).copy()
    assigned[sources] = est[outputs]
    assignment = np.full(len(ref), -1)
    assignment[sources] = outputs
    return {**mean_scores(assigned, ref, mix),
            "assignment": [int(a) for a in assignment],
            "missing": int(len(ref) - len(sources)), "extra": int(len(est) - len(outputs))}


def evaluate_counting(separators, utterances, sample_rate, threshold_db, window=None, overlap=None, batch_size=1,
                      progress=True, counter=None):
    """Unknown number of speakers: count (count_and_separate) and score every utterance.

    separators: {C: separate_fn}; threshold_db, counter: as in count_and_separate. window, overlap,
    batch_size: as in evaluate_utterances.
    A row: key, num_speakers (true), found, models_run (e.g. "3>2": the C of each model run;
    "counter>2": counted by the counter, separated by the 2-speaker model),
    length, seconds, si_snr, si_snri, sdr, sdri, assignment, missing, extra (see score_with_count),
    or `error`.
    """
    _check_window(window, overlap)

    def count_and_score(row, utt):
        found, est, trace = count_and_separate(separators, utt["mix"], threshold_db, window, overlap, batch_size,
                                               counter)
        row.update(found=found, models_run=">".join(str(c) for c, _ in trace))
        row.update(score_with_count(est, utt["src"], utt["mix"]))
    return _counting_rows(utterances, sample_rate, progress, count_and_score)


def evaluate_counter(counter, utterances, sample_rate, progress=True):
    """The speaker count of every utterance found by `counter` (`mixture (T,) -> count`) alone.
    A row: key, num_speakers (true), found, length, seconds, or `error`."""
    return _counting_rows(utterances, sample_rate, progress, lambda row, utt: row.update(found=counter(utt["mix"])))


def _counting_rows(utterances, sample_rate, progress, fill):
    """A row per utterance: `_base_row` completed by `fill(row, utt)`, or its `error`."""
    total = len(utterances) if hasattr(utterances, "__len__") else None
    rows = []
    with progress_bar(total, progress, "counting") as bar:
        for utt in utterances:
            row = _base_row(utt, sample_rate)
            try:
                fill(row, utt)
            except (SeparationError, MetricError) as err:
                row["error"] = str(err)
            rows.append(row)
            bar.update(1)
    return rows


def summarize(rows):
    """Averages over the scored rows -> {count, failed, si_snr, si_snri, sdr, sdri[, pesq, stoi],
    si_snri_ci95, sdri_ci95}.

    `count`: utterances scored; `failed`: rows with an `error` (keys in `failed_keys`). PESQ/STOI
    are averaged over the utterances where they could be computed (`pesq_count`, `stoi_count`).
    `<name>_ci95`: half-width of the 95 % confidence interval of the mean (`mean_with_ci95`; None
    below 2 utterances). `si_snri_speaker_ci95`, `speakers`: the same with the speakers as the unit
    (`speaker_ci95`; only for keys that name their speakers, as LibriMix's do).
    """
    scored = [row for row in rows if "si_snri" in row]
    summary = {"count": len(scored)}
    for name in SCORES:
        if any(name in row for row in scored):
            summary[name], half_width = mean_with_ci95(values_of(scored, name))
            if name in ("si_snri", "sdri"):
                summary[f"{name}_ci95"] = half_width
            if name in ("pesq", "stoi"):
                summary[f"{name}_count"] = sum(1 for row in scored if not math.isnan(row.get(name, math.nan)))
    finite = [row for row in scored if not math.isnan(row["si_snri"])]
    by_speaker = speaker_ci95([row["key"] for row in finite], [row["si_snri"] for row in finite])
    if by_speaker:
        summary["si_snri_speaker_ci95"], summary["speakers"] = by_speaker
    failed = [row["key"] for row in rows if "error" in row]
    summary["failed"] = len(failed)
    if failed:
        summary["failed_keys"] = failed
    return summary


def summarize_counts(rows):
    """`summarize` plus the speaker counting: count (mixtures counted), correct, accuracy, its 95 %
    interval accuracy_ci95 (low, high; Wilson) and, for keys that name their speakers,
    accuracy_speaker_ci95 (half-width with the speakers as the unit, `speaker_ci95`), confusion
    matrix {true: {found: n}} and accuracy_per_count."""
    scored = [row for row in rows if "found" in row]
    confusion = defaultdict(Counter)
    for row in scored:
        confusion[row["num_speakers"]][row["found"]] += 1
    right = [float(row["found"] == row["num_speakers"]) for row in scored]
    correct = int(sum(right))
    summary = summarize(rows)
    by_speaker = speaker_ci95([row["key"] for row in scored], right)
    if by_speaker:
        summary["accuracy_speaker_ci95"], summary["speakers"] = by_speaker
    summary.update({
        "count": len(scored),
        "correct": correct,
        "accuracy": correct / len(scored) if scored else None,
        "accuracy_ci95": proportion_ci95(correct, len(scored)),
        "confusion": {str(true): {str(found): n for found, n in sorted(found_counts.items())}
                      for true, found_counts in sorted(confusion.items())},
        "accuracy_per_count": {str(true): found_counts[true] / sum(found_counts.values())
                               for true, found_counts in sorted(confusion.items())},
    })
    return summary


def summarize_counting(rows):
    """Speaker counting and separation: `summarize_counts`, with SI-SNRi/SDRi over all mixtures (count
    errors scored as in score_with_count) and over the correctly counted."""
    summary = summarize_counts(rows)
    correct = [row for row in rows if "found" in row and row["found"] == row["num_speakers"]]
    summary.update(si_snri_correct=mean(correct, "si_snri"), sdri_correct=mean(correct, "sdri"))
    return summary


def print_summary(summary):
    """Print the averages; the SI-SNRi line is exactly `Average SISNR improvement: <x.xx>`."""
    if "sdri" in summary:
        print(f"Average SDR improvement: {fmt(summary['sdri'])}")
    print(f"Average SISNR improvement: {fmt(summary.get('si_snri'))}")
    if summary.get("si_snri_ci95") is not None:
        low, high = summary["si_snri"] - summary["si_snri_ci95"], summary["si_snri"] + summary["si_snri_ci95"]
        print(f"SI-SNRi 95 % confidence interval: {low:.2f} to {high:.2f} dB (mean ± 1.96 standard errors, "
              "utterances taken as independent)")
    if summary.get("si_snri_speaker_ci95") is not None:
        low, high = (summary["si_snri"] - summary["si_snri_speaker_ci95"],
                     summary["si_snri"] + summary["si_snri_speaker_ci95"])
        print(f"  with the {summary['speakers']} speakers as the unit: {low:.2f} to {high:.2f} dB "
              "(what it says about other speakers; delete-one-speaker jackknife)")
    if "pesq" in summary:
        print(f"Average PESQ: {fmt(summary['pesq'])} ({summary['pesq_count']} utterances)")
    if "stoi" in summary:
        print(f"Average STOI: {fmt(summary['stoi'])} ({summary['stoi_count']} utterances)")
    print(f"Utterances scored: {summary['count']}")
    if summary.get("failed"):
        print(f"Utterances that could not be scored: {summary['failed']} (see the 'error' column of the CSV)")


def print_count_summary(summary):
    """Confusion matrix and counting accuracy (a counter alone: also the mixtures not counted)."""
    counts = sorted({int(k) for k in summary["confusion"]}
                    | {int(f) for row in summary["confusion"].values() for f in row})
    print("Speaker counting (rows: true count, columns: count found):")
    print("true\\found " + "".join(f"{c:>6d}" for c in counts))
    for true in sorted(int(k) for k in summary["confusion"]):
        row = summary["confusion"][str(true)]
        print(f"{true:>10d} " + "".join(f"{row.get(str(c), 0):>6d}" for c in counts))
    if summary["accuracy"] is not None:
        low, high = summary["accuracy_ci95"]
        print(f"Speaker counting accuracy: {summary['accuracy']:.3f} ({summary['correct']}/{summary['count']}; "
              f"95 % interval {low:.3f} to {high:.3f})")
        if summary.get("accuracy_speaker_ci95") is not None:
            half = summary["accuracy_speaker_ci95"]
            print(f"  with the {summary['speakers']} speakers as the unit: {max(0.0, summary['accuracy'] - half):.3f} "
                  f"to {min(1.0, summary['accuracy'] + half):.3f} (delete-one-speaker jackknife)")
    if summary.get("failed") and "si_snri_correct" not in summary:
        print(f"Mixtures that could not be counted: {summary['failed']} (see the 'error' column of the CSV)")


def print_counting_summary(summary):
    """Confusion matrix, counting accuracy and the averages (overall and on correct counts)."""
    print_count_summary(summary)
    print(f"Average SISNR improvement, correctly counted ({summary['correct']} mixtures): "
          f"{fmt(summary['si_snri_correct'])}")
    print(f"Average SDR improvement, correctly counted ({summary['correct']} mixtures): "
          f"{fmt(summary['sdri_correct'])}")
    print("All mixtures (a source without an output is scored with the mixture, extra outputs are ignored):")
    print_summary(summary)
