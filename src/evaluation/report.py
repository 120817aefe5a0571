"""Reports of every evaluation (evaluate.py, postprocess.py; separation and enhancement): the
progress bar, averages, `per_utterance.csv` + `summary.json` (written and read back), and `publish`,
the one tail that prints the averages, writes the files and gives the exit status."""
import csv
import json
import math
import os
import re
import time
from collections import namedtuple

import numpy as np
from tqdm import tqdm

from src.data.mixing import LIBRISPEECH_ID
from src.errors import UserError


class EvaluationError(UserError):
    """Models or options that cannot be evaluated together; the message says why."""


Report = namedtuple("Report", "rows summary meta show item")
Report.__doc__ = """An evaluation's result: `rows` (dicts, one per utterance or pair), `summary` (dict with
`failed`), `meta` (what was evaluated: checkpoint, config, data, command ...), `show(summary)`
printing the averages, `item` naming a row ("utterance", "pair")."""


def progress_bar(total, enabled, desc):
    """tqdm bar over `total` utterances (None: unknown)."""
    return tqdm(total=total, disable=not enabled, desc=desc, unit="utt", dynamic_ncols=True, mininterval=1)


def values_of(rows, name):
    """`row[name]` of the rows that have a number there."""
    return [row[name] for row in rows if name in row and not math.isnan(row[name])]


def mean(rows, name):
    """Mean of `row[name]` over the rows that have a number there (None when none has)."""
    values = values_of(rows, name)
    return float(np.mean(values)) if values else None


def mean_with_ci95(values):
    """Mean of `values` and the half-width of its 95 % confidence interval: 1.96 standard errors,
    the values taken as independent -> (mean, half_width); (None, None) without values, half_width
    None with one."""
    values = np.asarray(values, dtype=np.float64)
    if not len(values):
        return None, None
    half_width = 1.96 * values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else None
    return float(values.mean()), None if half_width is None else float(half_width)


_MIXTURE_PART = re.compile(rf"^{LIBRISPEECH_ID}(?:-\d+)?$")   # an utterance id or a piece of one


def speakers_of(key):
    """Speakers of a LibriMix-style mixture key, LibriSpeech utterance ids (or `<id>-<piece>`, as
    in the bundled dev split) joined by "_": `1688-142285-0000_3080-5032-0003` -> ("1688", "3080");
    None for any other key."""
    matches = [_MIXTURE_PART.match(part) for part in key.split("_")]
    if len(matches) < 2 or not all(matches):
        return None
    return tuple(match.group(1) for match in matches)


def speaker_ci95(keys, values):
    """Half-width of the 95 % interval of the mean of `values` (one per mixture of `keys`) with the
    speakers, not the mixtures, taken as the sampled unit: 1.96 delete-one-speaker jackknife
    standard errors (each mixture left out with any of its speakers). Mixtures of a few speakers
    share them, so this is what the mean says about other speakers; taking the mixtures as
    independent understates it (tests/evaluation/test_evaluate.py measures both) -> (half_width,
    number of speakers); None when a key does not name its speakers (`speakers_of`), with fewer
    than 3 speakers, or when one speaker is in every mixture."""
    speakers = [speakers_of(key) for key in keys]
    if not speakers or None in speakers:
        return None
    values = np.asarray(values, dtype=np.float64)
    names = sorted(set().union(*speakers))
    without = [np.array([name not in mixture for mixture in speakers]) for name in names]
    if len(names) < 3 or not all(keep.any() for keep in without):
        return None
    left_out_means = np.array([values[keep].mean() for keep in without])
    n = len(names)
    standard_error = math.sqrt((n - 1) / n * np.sum((left_out_means - left_out_means.mean()) ** 2))
    return 1.96 * standard_error, n


def proportion_ci95(successes, total):
    """Wilson's 95 % interval of a proportion `successes / total` -> (low, high); None without trials."""
    if not total:
        return None
    z, p = 1.96, successes / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(0.0, centre - half), min(1.0, centre + half)


def fmt(value):
    return "n/a" if value is None else f"{value:.2f}"


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



def read_report(out_dir):
    """What write_report wrote in `out_dir` -> (rows: dicts of the CSV's text, {"summary", "meta"})."""
    with open(os.path.join(out_dir, "per_utterance.csv"), newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    with open(os.path.join(out_dir, "summary.json"), encoding="utf-8") as f:
        return rows, json.load(f)



def publish(report, out_dir):
    """Print the averages, write `out_dir/per_utterance.csv` and `summary.json` (write_report),
    print where -> exit status (1 when some row could not be scored, else 0)."""
    report.show(report.summary)
    csv_path, json_path = write_report(report.rows, report.summary, out_dir, report.meta)
    print(f"Per-{report.item} scores: {csv_path}; summary: {json_path}")
    return 1 if report.summary["failed"] else 0
