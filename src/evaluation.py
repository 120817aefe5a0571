"""Scoring separators on full utterances: per-utterance rows, averages, reports (CSV + JSON).

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

Utterances that cannot be scored (separator returned NaN, a reference is silent, too short for
SDR, ...) become rows with an `error` and no scores; `summarize` leaves them out of the
averages and counts them in `failed`. Nothing is dropped silently.
"""
import csv
import json
import math
import os
import time
from collections import Counter, defaultdict

import numpy as np
from scipy.optimize import linear_sum_assignment

from src.errors import UserError
from src.inference.separation import SeparationError, separate_long, separate_whole
from src.inference.speaker_count import DEFAULT_THRESHOLD_DB, count_and_separate
from src.metrics import MetricError, crop_to_shortest, pesq_score, score_utterance, sdr, si_snr, stoi_score

SCORES = ("si_snr", "si_snri", "sdr", "sdri", "pesq", "stoi")
DEFAULT_WINDOW_SECONDS = 30.0
DEFAULT_OVERLAP_SECONDS = 2.0
# utterances kept waiting for others of the same length, per batch slot (see evaluate_utterances)
LOOKAHEAD_PER_BATCH = 4


class EvaluationError(UserError):
    """Models or options that cannot be evaluated together; the message says why."""


PRETRAINED_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pretrained")
PRETRAINED_SEPARATION = ("swave_2spk.ckpt", "swave_3spk.ckpt")   # pretrained/MODEL_CARD.md


def pretrained_separation_models():
    """The shipped separation checkpoints (one per speaker count), used when no model is given."""
    paths = [os.path.join(PRETRAINED_DIR, name) for name in PRETRAINED_SEPARATION]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise EvaluationError(f"{', '.join(missing)}: shipped model missing (is this a complete clone?); "
                              "pass --model-path CKPT [CKPT ...]")
    return paths


def add_window_arguments(parser):
    """--window-seconds, --overlap-seconds and --threshold-db (evaluate.py and separate.py)."""
    parser.add_argument("--window-seconds", type=float, default=DEFAULT_WINDOW_SECONDS,
                        help="inputs longer than this are separated in overlapping windows of this length "
                             f"(bounded memory; default {DEFAULT_WINDOW_SECONDS:g}); 0 = always one call")
    parser.add_argument("--overlap-seconds", type=float, default=DEFAULT_OVERLAP_SECONDS,
                        help="overlap of consecutive windows, at most half a window; speakers are matched across "
                             f"windows on it, so keep it longer than pauses (default {DEFAULT_OVERLAP_SECONDS:g})")
    parser.add_argument("--threshold-db", type=float, default=DEFAULT_THRESHOLD_DB,
                        help="several checkpoints: an output counts as a speaker when its energy is at least this "
                             f"many dB relative to the loudest output (default {DEFAULT_THRESHOLD_DB:g}: far below "
                             "the quietest real speaker, at most 5.9 dB under the loudest in all 232 bundled "
                             "mixtures; where your models' silent outputs sit: bench/bench_count_threshold.py)")


def window_samples(window_seconds, overlap_seconds, sample_rate):
    """(window, overlap) in samples, or (None, None) for window_seconds == 0 (one call per input)."""
    if window_seconds < 0 or overlap_seconds < 0:
        raise EvaluationError("--window-seconds and --overlap-seconds must not be negative")
    if window_seconds == 0:
        return None, None
    window = int(round(window_seconds * sample_rate))
    overlap = int(round(overlap_seconds * sample_rate))
    if not 0 < overlap <= window // 2:
        raise EvaluationError(f"--overlap-seconds {overlap_seconds:g} must be above 0 and at most half of "
                              f"--window-seconds {window_seconds:g}")
    return window, overlap


class _Sized:
    """An iterable with a known length (tqdm shows a total)."""

    def __init__(self, iterable, length):
        self.iterable, self.length = iterable, length

    def __iter__(self):
        return iter(self.iterable)

    def __len__(self):
        return self.length


def sized(iterable, length):
    """`iterable` with `len() == length`, so progress bars know the total."""
    return _Sized(iterable, length)


def open_utterances(path, sample_rate, num_speakers=None, split="test", mix_type="mix_clean", resample=False,
                    downmix=False):
    """Full utterances of `path` (see iterate_utterances) with a known count (`len()`).

    path: a MindRecord split (`<name>.mindrecord0`, prefix or `<name>.json`), a folder holding the
    MindRecord split `<split>.json` (as written by preprocess.py), or an audio folder in any
    layout iterate_utterances accepts (`split` picks the split of a root with several).
    """
    from src.data.dataset import iterate_utterances
    from src.data.layout import find_splits
    from src.data.mindrecord import read_split_info

    if os.path.isdir(path) and os.path.isfile(os.path.join(path, f"{split}.json")):
        path = os.path.join(path, f"{split}.json")
    if os.path.isdir(path):
        splits = find_splits(path, mix_type, num_speakers, split)
        count = sum(len(s.utterances) for s in splits.values()) if len(splits) == 1 else None
    else:
        count = read_split_info(path)["num_rows"]
    utterances = iterate_utterances(path, sample_rate, num_speakers, split, mix_type, resample, downmix)
    return utterances if count is None else sized(utterances, count)


def _progress(total, enabled, desc):
    from tqdm import tqdm
    return tqdm(total=total, disable=not enabled, desc=desc, unit="utt", dynamic_ncols=True, mininterval=1)


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
            if window is None:
                return [separate_whole(separate_fn, utt["mix"], num_speakers)]
            return [separate_long(separate_fn, utt["mix"], num_speakers, window, overlap, batch_size)]
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
    if (window is None) != (overlap is None):
        raise EvaluationError("give both window and overlap (windowed) or neither (one call)")
    total = len(utterances) if hasattr(utterances, "__len__") else None
    rows = []
    with _progress(total, progress, "evaluating") as bar:
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
    mixture = np.broadcast_to(mix, ref.shape)
    assigned = mixture.copy()
    assigned[sources] = est[outputs]
    assignment = np.full(len(ref), -1)
    assignment[sources] = outputs
    si_est, si_mix = si_snr(assigned, ref), si_snr(mixture, ref)
    sdr_est, sdr_mix = sdr(assigned, ref), sdr(mixture, ref)
    return {"si_snr": float(np.mean(si_est)), "si_snri": float(np.mean(si_est - si_mix)),
            "sdr": float(np.mean(sdr_est)), "sdri": float(np.mean(sdr_est - sdr_mix)),
            "assignment": [int(a) for a in assignment],
            "missing": int(len(ref) - len(sources)), "extra": int(len(est) - len(outputs))}


def evaluate_counting(separators, utterances, sample_rate, threshold_db=DEFAULT_THRESHOLD_DB, window=None,
                      overlap=None, batch_size=1, progress=True):
    """Unknown number of speakers: count (count_and_separate) and score every utterance.

    separators: {C: separate_fn}. window, overlap, batch_size: as in evaluate_utterances.
    A row: key, num_speakers (true), found, models_run (e.g. "3>2": the C of each model run),
    length, seconds, si_snr, si_snri, sdr, sdri, assignment, missing, extra (see score_with_count),
    or `error`.
    """
    if (window is None) != (overlap is None):
        raise EvaluationError("give both window and overlap (windowed) or neither (one call)")
    total = len(utterances) if hasattr(utterances, "__len__") else None
    rows = []
    with _progress(total, progress, "counting") as bar:
        for utt in utterances:
            row = _base_row(utt, sample_rate)
            try:
                found, est, trace = count_and_separate(separators, utt["mix"], threshold_db, window, overlap,
                                                       batch_size)
                row["found"] = found
                row["models_run"] = ">".join(str(c) for c, _ in trace)
                row.update(score_with_count(est, utt["src"], utt["mix"]))
            except (SeparationError, MetricError) as err:
                row["error"] = str(err)
            rows.append(row)
            bar.update(1)
    return rows


def _mean(rows, name):
    values = [row[name] for row in rows if name in row and not math.isnan(row[name])]
    return float(np.mean(values)) if values else None


def summarize(rows):
    """Averages over the scored rows -> {count, failed, si_snr, si_snri, sdr, sdri[, pesq, stoi]}.

    `count`: utterances scored; `failed`: rows with an `error` (keys in `failed_keys`). PESQ/STOI
    are averaged over the utterances where they could be computed (`pesq_count`, `stoi_count`).
    """
    scored = [row for row in rows if "si_snri" in row]
    summary = {"count": len(scored)}
    for name in SCORES:
        if any(name in row for row in scored):
            summary[name] = _mean(scored, name)
            if name in ("pesq", "stoi"):
                summary[f"{name}_count"] = sum(1 for row in scored if not math.isnan(row.get(name, math.nan)))
    failed = [row["key"] for row in rows if "error" in row]
    summary["failed"] = len(failed)
    if failed:
        summary["failed_keys"] = failed
    return summary


def summarize_counting(rows):
    """Speaker-counting summary: accuracy, confusion matrix {true: {found: n}}, and SI-SNRi/SDRi
    over all mixtures (count errors scored as in score_with_count) and over the correctly counted."""
    scored = [row for row in rows if "found" in row]
    confusion = defaultdict(Counter)
    for row in scored:
        confusion[row["num_speakers"]][row["found"]] += 1
    correct = [row for row in scored if row["found"] == row["num_speakers"]]
    summary = summarize(rows)
    summary.update({
        "count": len(scored),
        "correct": len(correct),
        "accuracy": len(correct) / len(scored) if scored else None,
        "confusion": {str(true): {str(found): n for found, n in sorted(found_counts.items())}
                      for true, found_counts in sorted(confusion.items())},
        "accuracy_per_count": {str(true): found_counts[true] / sum(found_counts.values())
                               for true, found_counts in sorted(confusion.items())},
        "si_snri_correct": _mean(correct, "si_snri"),
        "sdri_correct": _mean(correct, "sdri"),
    })
    return summary


def _fmt(value):
    return "n/a" if value is None else f"{value:.2f}"


def print_summary(summary):
    """Print the averages; the SI-SNRi line is exactly `Average SISNR improvement: <x.xx>`."""
    if "sdri" in summary:
        print(f"Average SDR improvement: {_fmt(summary['sdri'])}")
    print(f"Average SISNR improvement: {_fmt(summary.get('si_snri'))}")
    if "pesq" in summary:
        print(f"Average PESQ: {_fmt(summary['pesq'])} ({summary['pesq_count']} utterances)")
    if "stoi" in summary:
        print(f"Average STOI: {_fmt(summary['stoi'])} ({summary['stoi_count']} utterances)")
    print(f"Utterances scored: {summary['count']}")
    if summary.get("failed"):
        print(f"Utterances that could not be scored: {summary['failed']} (see the 'error' column of the CSV)")


def print_counting_summary(summary):
    """Confusion matrix, counting accuracy and the averages (overall and on correct counts)."""
    counts = sorted({int(k) for k in summary["confusion"]}
                    | {int(f) for row in summary["confusion"].values() for f in row})
    print("Speaker counting (rows: true count, columns: count found):")
    print("true\\found " + "".join(f"{c:>6d}" for c in counts))
    for true in sorted(int(k) for k in summary["confusion"]):
        row = summary["confusion"][str(true)]
        print(f"{true:>10d} " + "".join(f"{row.get(str(c), 0):>6d}" for c in counts))
    if summary["accuracy"] is not None:
        print(f"Speaker counting accuracy: {summary['accuracy']:.3f} ({summary['correct']}/{summary['count']})")
    print(f"Average SISNR improvement, correctly counted ({summary['correct']} mixtures): "
          f"{_fmt(summary['si_snri_correct'])}")
    print(f"Average SDR improvement, correctly counted ({summary['correct']} mixtures): "
          f"{_fmt(summary['sdri_correct'])}")
    print("All mixtures (a source without an output is scored with the mixture, extra outputs are ignored):")
    print_summary(summary)


def _csv_value(value):
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return value


def _json_safe(value):
    """NaN/Inf -> None (JSON has no NaN), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value


def write_report(rows, summary, out_dir, meta):
    """Write `out_dir/per_utterance.csv` (one line per row; lists space-separated, `error`
    column last) and `out_dir/summary.json` ({"summary": ..., "meta": ...}, NaN as null).
    Returns (csv_path, json_path)."""
    os.makedirs(out_dir, exist_ok=True)
    columns = []
    for row in rows:
        columns += [k for k in row if k not in columns and k != "error"]
    columns.append("error")
    csv_path = os.path.join(out_dir, "per_utterance.csv")
    json_path = os.path.join(out_dir, "summary.json")
    with open(csv_path + ".tmp", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_value(v) for k, v in row.items()})
    os.replace(csv_path + ".tmp", csv_path)
    report = {"summary": summary, "meta": {"written": time.strftime("%Y-%m-%d %H:%M:%S"), **meta}}
    with open(json_path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(_json_safe(report), f, indent=1)
    os.replace(json_path + ".tmp", json_path)
    return csv_path, json_path


class MinLengthSeparator:
    """A separator that refuses inputs shorter than `min_samples` with a SeparationError (the
    network cannot take them, and a failed MindSpore call can leave the runtime unusable)."""

    def __init__(self, separate_fn, min_samples):
        self.separate_fn, self.min_samples = separate_fn, min_samples

    def __call__(self, mixture):
        if mixture.shape[-1] < self.min_samples:
            raise SeparationError(f"{mixture.shape[-1]} samples is shorter than the {self.min_samples} samples "
                                  "the model needs")
        return self.separate_fn(mixture)


def load_separators(checkpoints, config_path=None):
    """Load separation models -> ({C: separate_fn}, {C: config}), MindSpore context set up
    from the first model's config (device, mode). The separators refuse inputs shorter than
    the model's encoder window (model.L samples) with a SeparationError.

    checkpoints: paths (one model per speaker count). config_path: a yaml used instead of the
    config stored in the checkpoint; only with a single checkpoint (each checkpoint written by
    train.py or tools/import_svoice.py carries its own).
    Raises CheckpointError / EvaluationError naming the file and the problem.
    """
    from src.config import load_config
    from src.inference.network import NetworkSeparator
    from src.runtime.checkpoint import CheckpointError, load_model, read_checkpoint, stored_config
    from src.runtime.device import init_context

    first_cfg = checkpoint_config(checkpoints[0], config_path)
    if is_enhancement(first_cfg):
        return _load_enhancer(checkpoints, first_cfg)
    if config_path and len(checkpoints) > 1:
        raise EvaluationError("-c/--config works with a single checkpoint; with several, each uses the config "
                              "stored in it")
    separators, configs, paths = {}, {}, {}
    for index, path in enumerate(checkpoints):
        if config_path:
            cfg = load_config(config_path)
        else:
            cfg = stored_config(read_checkpoint(path)[1])
            if cfg is None:
                raise CheckpointError(f"{path}: holds no config; pass one with -c CONFIG")
        if cfg.get("task", "separation") != "separation":
            raise EvaluationError(f"{path}: is a '{cfg.task}' model, not a speech separation model")
        if index == 0:
            init_context(cfg)
        net, cfg = load_model(path, cfg)
        num_speakers = int(cfg.model.C)
        if num_speakers in separators:
            raise EvaluationError(f"{path} and {paths[num_speakers]} both separate {num_speakers} speakers; "
                                  "give one checkpoint per speaker count")
        first = next(iter(configs), None)
        if first is not None and cfg.sample_rate != configs[first].sample_rate:
            raise EvaluationError(f"{path}: works at {cfg.sample_rate} Hz but {paths[first]} at "
                                  f"{configs[first].sample_rate} Hz; speaker counting needs models at one sample rate")
        separators[num_speakers] = MinLengthSeparator(NetworkSeparator(net), min_input_samples(cfg))
        configs[num_speakers], paths[num_speakers] = cfg, path
    return separators, configs


def min_input_samples(cfg):
    """Shortest input a model of this config takes (SWave: its encoder window L; the
    enhancement model: one STFT window)."""
    if cfg.get("task", "separation") == "enhancement":
        from src.tasks.enhancement import EnhancementTask
        return int(EnhancementTask.stft_config(cfg).win)
    return int(cfg.model.L)


def checkpoint_config(checkpoint, config_path=None):
    """The config of a model: `config_path` (a yaml) when given, else the one stored in
    `checkpoint` (None when it holds none)."""
    from src.config import load_config
    from src.runtime.checkpoint import read_checkpoint, stored_config
    return load_config(config_path) if config_path else stored_config(read_checkpoint(checkpoint)[1])


def is_enhancement(cfg):
    return cfg is not None and cfg.get("task", "separation") == "enhancement"


def load_enhancer(checkpoints, cfg):
    """An enhancement model -> (Enhancer, cfg), MindSpore context set up from its config.
    checkpoints: a list holding exactly one checkpoint (an enhancement model is used alone)."""
    from src.tasks.enhancement import EnhancementTask, Enhancer
    from src.runtime.checkpoint import load_model
    from src.runtime.device import init_context

    if len(checkpoints) > 1:
        raise EvaluationError(f"{checkpoints[0]}: is a speech enhancement model; give it alone")
    init_context(cfg)
    net, cfg = load_model(checkpoints[0], cfg)
    return Enhancer(net, EnhancementTask.stft_config(cfg)), cfg


def _load_enhancer(checkpoints, cfg):
    """An enhancement model as a one-output separator -> ({1: separate_fn}, {1: cfg}), so that
    separate.py enhances files with the same windowing, checks and outputs."""
    enhancer, cfg = load_enhancer(checkpoints, cfg)

    def enhance_batch(mixtures):
        return np.stack([enhancer(mixture)[None] for mixture in mixtures])

    return {1: MinLengthSeparator(enhance_batch, min_input_samples(cfg))}, {1: cfg}


# ------------------------------------------------------------------------------ enhancement
ENHANCEMENT_SCORES = ("si_snr", "si_snri", "stoi", "stoii", "pesq", "pesqi")


def enhancement_pairs(cfg, split="test", data=None, max_utterances=0):
    """The fixed noisy/clean pairs of an enhancement config's `split` (every clean utterance at
    every SNR of `data.<split>_snrs`, noise as in validation) -> (pairs with len(), data description).

    data: (clean, noise) folders or list files instead of `data.<split>_clean` / `_noise`.
    max_utterances: only the first N clean utterances (0 = all)."""
    import copy

    from src.tasks.enhancement import SPLITS, EnhancementTask

    if split not in SPLITS[1:]:
        raise EvaluationError(f"--split {split}: enhancement pairs come from the config's "
                              f"{' or '.join(SPLITS[1:])} data (data.<split>_clean, _noise, _snrs)")
    if data is not None:
        if len(data) != 2:
            raise EvaluationError(f"--data-dir {' '.join(data)}: an enhancement model takes two paths, CLEAN NOISE "
                                  "(clean speech and noise: folders or list files), or none for the config's "
                                  f"data.{split}_clean and data.{split}_noise")
        cfg = copy.deepcopy(cfg)
        cfg.data[f"{split}_clean"], cfg.data[f"{split}_noise"] = data
    mixer = EnhancementTask().mixer(cfg, split)
    count = len(mixer.clean_files) if not max_utterances else min(max_utterances, len(mixer.clean_files))
    description = {"clean": os.path.abspath(str(cfg.data[f"{split}_clean"])),
                   "noise": os.path.abspath(str(cfg.data[f"{split}_noise"])),
                   "snrs_db": mixer.snrs_db, "seed": mixer.seed, "split": split,
                   "resample": mixer.resample, "downmix": mixer.downmix, "max_utterances": max_utterances}
    return sized(mixer.fixed_pairs(max_utterances), count * len(mixer.snrs_db)), description


def evaluate_enhancement(enhancer, pairs, sample_rate, progress=True):
    """Enhance and score every pair -> rows (dicts) in order: key (clean utterance), snr_db, length,
    seconds, si_snr, si_snri, stoi, stoii, pesq, pesqi (score_pair: enhanced and improvement over
    the noisy input), clean, noise (files). A non-finite enhanced signal gives a row with an
    `error` and no scores; a pair PESQ/STOI cannot score keeps its SI-SNR scores and gets an `error`."""
    from src.tasks.enhancement import score_pair

    total = len(pairs) if hasattr(pairs, "__len__") else None
    rows = []
    with _progress(total, progress, "enhancing") as bar:
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
            means[name] = _mean(scored, name)
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
                parts.append(f"{label} {_fmt(means[name])} ({'n/a' if gain is None else f'{gain:+.2f}'})")
        return ", ".join(parts)

    for snr, means in summary["per_snr"].items():
        print(f"input SNR {snr} dB ({means['count']} pairs): {line(means)}")
    print(f"all SNRs ({summary['count']} pairs): {line(summary)}")
    print(f"Average SISNR improvement: {_fmt(summary.get('si_snri'))}")
    if summary.get("failed"):
        print(f"Pairs with an error: {summary['failed']} (see the 'error' column of the CSV)")
