"""src/evaluation/ and evaluate.py beyond tests/test_evaluate_separate.py: SDR/PESQ/STOI wiring
against independent values, equal-length batching, the windowed path, unscorable utterances,
count mismatches, and the CLI on a MindRecord split and in speaker-counting mode (two tiny
random-weight checkpoints)."""
import csv
import json
import math
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from src.evaluation import separation as evaluation
from src.evaluation.report import EvaluationError, write_report
from src.data.layout import find_splits, load_utterance
from src.metrics import si_snr

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RATE = 8000


def _independent_sdr(est, ref, taps=512):
    """bss_eval_sources' SDR written out: the zero-padded estimate projected by least squares on
    the `taps` delayed copies of ref (time,)."""
    length = len(ref)
    delayed = np.zeros((length + taps - 1, taps))
    for delay in range(taps):
        delayed[delay:delay + length, delay] = ref
    padded = np.concatenate([np.asarray(est, np.float64), np.zeros(taps - 1)])
    target = delayed @ np.linalg.lstsq(delayed, padded, rcond=None)[0]
    return 10 * np.log10(np.sum(target ** 2) / np.sum((padded - target) ** 2))


class Lookup:
    """Separator returning `fn(utterance)` for the utterance whose mixture it is given; records
    the input shapes."""

    def __init__(self, utterances, fn):
        self.by_mix = {np.asarray(u["mix"], np.float32).tobytes(): u for u in utterances}
        self.fn, self.calls = fn, []

    def __call__(self, batch):
        self.calls.append(batch.shape)
        return np.stack([self.fn(self.by_mix[m.tobytes()]) for m in batch]).astype(np.float32)


@pytest.fixture(scope="module")
def speech(mini_librimix):
    """One real 2-speaker utterance of the bundled test split, its first 1.5 s."""
    utt = find_splits(os.path.join(mini_librimix, "Libri2Mix"), split="test")["test"].utterances[0]
    mix, src = load_utterance(utt, RATE)
    src = src[:, :12000]
    return {"key": utt.key, "mix": src.sum(0), "src": src, "length": 12000, "sample_rate": RATE}


def test_sdr_pesq_stoi_wiring_against_independent_values(speech):
    from pesq import pesq
    from pystoi import stoi
    rms = np.sqrt(np.mean(speech["src"] ** 2, axis=1, keepdims=True))
    noise = 0.1 * rms * np.random.default_rng(3).standard_normal(speech["src"].shape).astype(np.float32)
    estimate = speech["src"][::-1] + noise                     # swapped order, noisy
    rows = evaluation.evaluate_utterances(Lookup([speech], lambda u: estimate), [speech], RATE,
                                          with_pesq=True, with_stoi=True, progress=False)
    (row,) = rows
    ordered, ref, mix = estimate[::-1].astype(np.float64), speech["src"].astype(np.float64), speech["mix"]
    assert row["perm"] == [1, 0]
    assert row["sdr"] == pytest.approx(np.mean([_independent_sdr(e, r) for e, r in zip(ordered, ref)]), abs=1e-4)
    sdr_mix = np.mean([_independent_sdr(mix, r) for r in ref])
    assert row["sdri"] == pytest.approx(row["sdr"] - sdr_mix, abs=1e-3)
    assert row["pesq"] == pytest.approx(np.mean([pesq(RATE, r, e, "nb") for e, r in zip(ordered, ref)]), abs=1e-4)
    assert row["stoi"] == pytest.approx(np.mean([stoi(r, e, RATE) for e, r in zip(ordered, ref)]), abs=1e-6)
    assert (row["key"], row["length"], row["seconds"], row["num_speakers"]) == (speech["key"], 12000, 1.5, 2)


def _random_utterances(lengths, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i, n in enumerate(lengths):
        src = rng.standard_normal((2, n)).astype(np.float32)
        out.append({"key": f"u{i}", "mix": src.sum(0), "src": src, "length": n, "sample_rate": RATE})
    return out


def _noisy_sources(utt):
    noise = np.random.default_rng(len(utt["mix"])).standard_normal(utt["src"].shape)
    return utt["src"][::-1] + 0.3 * noise


def test_batches_only_equal_lengths_and_keeps_the_order():
    utterances = _random_utterances([1000, 1200, 1000, 1000, 1200, 1500, 1000])
    one = evaluation.evaluate_utterances(Lookup(utterances, _noisy_sources), utterances, RATE, progress=False)
    batched_fn = Lookup(utterances, _noisy_sources)
    batched = evaluation.evaluate_utterances(batched_fn, iter(utterances), RATE, progress=False, batch_size=3)
    assert [r["key"] for r in batched] == [u["key"] for u in utterances]
    for a, b in zip(one, batched):
        assert a["si_snri"] == pytest.approx(b["si_snri"], abs=1e-9) and a["sdri"] == pytest.approx(b["sdri"], abs=1e-9)
    assert max(shape[0] for shape in batched_fn.calls) == 3 and len(batched_fn.calls) < len(utterances)
    assert sum(shape[0] for shape in batched_fn.calls) == len(utterances)


def test_long_utterances_go_through_windows():
    """A pointwise separator is the same windowed or not, so the scores must agree exactly; the
    separator must only ever see windows."""
    utterances = _random_utterances([5000, 800])
    pointwise = lambda batch: np.stack([np.stack([0.7 * m, 0.3 * m]) for m in batch])  # noqa: E731
    calls = []

    def recording(batch):
        calls.append(batch.shape)
        return pointwise(batch)
    windowed = evaluation.evaluate_utterances(recording, utterances, RATE, window=1000, overlap=200, progress=False)
    whole = evaluation.evaluate_utterances(pointwise, utterances, RATE, progress=False)
    assert all(shape[1] <= 1000 for shape in calls) and (1, 800) in calls
    for a, b in zip(windowed, whole):
        assert a["si_snri"] == pytest.approx(b["si_snri"], abs=1e-4)
    with pytest.raises(EvaluationError):
        evaluation.evaluate_utterances(pointwise, utterances, RATE, window=1000, progress=False)


def test_unscorable_utterances_are_reported_not_averaged(tmp_path, capsys):
    utterances = _random_utterances([1000, 1000, 300])   # the last is too short for SDR (512 taps)

    def nan_for_u1(utt):
        return np.full((2, len(utt["mix"])), np.nan) if utt["key"] == "u1" else _noisy_sources(utt)
    rows = evaluation.evaluate_utterances(Lookup(utterances, nan_for_u1), utterances, RATE, progress=False)
    assert "error" not in rows[0] and "NaN" in rows[1]["error"] and "512" in rows[2]["error"]
    summary = evaluation.summarize(rows)
    assert summary["count"] == 1 and summary["failed"] == 2 and summary["failed_keys"] == ["u1", "u2"]
    assert summary["si_snri"] == pytest.approx(rows[0]["si_snri"])
    evaluation.print_summary(summary)
    printed = capsys.readouterr().out
    assert f"Average SISNR improvement: {rows[0]['si_snri']:.2f}\n" in printed and "could not be scored: 2" in printed
    csv_path, json_path = write_report(rows, summary, str(tmp_path), {"checkpoint": "c.ckpt"})
    with open(csv_path) as f:
        written = list(csv.DictReader(f))
    assert [bool(r["error"]) for r in written] == [False, True, True] and written[1]["si_snri"] == ""
    report = json.load(open(json_path))
    assert report["meta"]["checkpoint"] == "c.ckpt" and report["summary"]["failed"] == 2


def test_score_with_count_handles_missing_and_extra_outputs():
    utt = _random_utterances([4000])[0]
    ref, mix = utt["src"], utt["mix"]
    rng = np.random.default_rng(5)
    est = ref[::-1] + 0.1 * rng.standard_normal(ref.shape)
    # one output too many: the extra (noise) output is left out, the others are paired
    extra = evaluation.score_with_count(np.concatenate([est, rng.standard_normal((1, 4000))]), ref, mix)
    expected = np.mean([si_snr(est[1 - i], ref[i]) - si_snr(mix, ref[i]) for i in range(2)])
    assert extra["assignment"] == [1, 0] and extra["extra"] == 1 and extra["missing"] == 0
    assert extra["si_snri"] == pytest.approx(expected, abs=1e-6)
    # one output too few: the unpaired source is scored with the mixture (0 dB improvement)
    missing = evaluation.score_with_count(est[:1], ref, mix)
    assert missing["assignment"] == [-1, 0] and missing["missing"] == 1
    assert missing["si_snri"] == pytest.approx((si_snr(est[0], ref[1]) - si_snr(mix, ref[1])) / 2, abs=1e-6)

    rows = [{"key": "a", "num_speakers": 2, "found": 2, "si_snri": 10.0, "sdri": 9.0},
            {"key": "b", "num_speakers": 2, "found": 3, "si_snri": 4.0, "sdri": 3.0},
            {"key": "c", "num_speakers": 3, "found": 3, "si_snri": 6.0, "sdri": 5.0}]
    summary = evaluation.summarize_counting(rows)
    assert summary["confusion"] == {"2": {"2": 1, "3": 1}, "3": {"3": 1}}
    assert summary["accuracy"] == pytest.approx(2 / 3) and summary["si_snri_correct"] == pytest.approx(8.0)
    assert summary["si_snri"] == pytest.approx(20 / 3) and summary["accuracy_per_count"] == {"2": 0.5, "3": 1.0}


class KnownOutputs:
    """A C-output separator with outputs designed per utterance (`outputs[key]`, `(C, time)`):
    for any window of a mixture (found by its first 32 samples) it returns the designed outputs
    under that window, zero past the end, in a new random order per call."""

    def __init__(self, utterances, outputs, seed=0):
        self.outputs, self.rng, self.calls = outputs, np.random.default_rng(seed), []
        self.where = {}
        for u in utterances:
            mix = np.asarray(u["mix"], np.float32)
            for start in range(len(mix) - 32):
                self.where.setdefault(mix[start:start + 32].tobytes(), (u["key"], start))

    def __call__(self, batch):
        self.calls.append(batch.shape)
        out = []
        for window in batch:
            key, start = self.where[np.asarray(window[:32], np.float32).tobytes()]
            designed = self.outputs[key][:, start:start + batch.shape[1]]
            est = np.zeros((len(designed), batch.shape[1]), np.float32)
            est[:, :designed.shape[1]] = designed
            out.append(est[self.rng.permutation(len(est))])
        return np.stack(out)


def _at_level(signal, reference, level_db):
    """`signal` scaled so that its energy is `level_db` relative to `reference`'s."""
    return signal * np.sqrt(np.sum(reference ** 2) / np.sum(signal ** 2) * 10 ** (level_db / 10))


def _counting_cases(length):
    """Utterances and the outputs of a 3- and a 2-speaker separator for them, at levels around
    the -20 dB threshold, with the count the procedure must find and the models it must run."""
    rng = np.random.default_rng(21)
    utterances, outputs3, outputs2, expected = [], {}, {}, {}

    def add(key, sources, third, two, found, models_run):
        sources = np.asarray(sources, np.float32)
        utterances.append({"key": key, "mix": sources.sum(0), "src": sources, "length": length, "sample_rate": RATE})
        outputs3[key] = np.stack([sources[0], sources[1], third]).astype(np.float32)
        outputs2[key] = np.asarray(two, np.float32)
        expected[key] = (found, models_run)

    def signals():                      # new sources for every mixture (the separators tell them apart)
        s1, s2, s3, noise = rng.standard_normal((4, length))
        return s1, _at_level(s2, s1, -3.0), s3, noise

    # two speakers; the third output is noise just below / just above the threshold
    s1, s2, _, noise = signals()
    add("below", [s1, s2], _at_level(noise, s1, -20.5), [s1, s2], 2, "3>2")
    s1, s2, _, noise = signals()
    add("above", [s1, s2], _at_level(noise, s1, -19.5), [s1, s2], 3, "3")
    # two speakers; speaker 1 leaks into the third output, audibly (-12 dB) or not (-30 dB)
    s1, s2, _, _ = signals()
    add("leak_loud", [s1, s2], _at_level(s1, s1, -12.0), [s1, s2], 3, "3")
    s1, s2, _, _ = signals()
    add("leak_quiet", [s1, s2], _at_level(s1, s1, -30.0), [s1, s2], 2, "3>2")
    # three speakers, the quietest just above / just below the threshold (then the 2-speaker
    # model merges it into its second output)
    s1, s2, s3, _ = signals()
    near = _at_level(s3, s1, -19.5)
    add("three", [s1, s2, near], near, [s1, s2 + near], 3, "3")
    s1, s2, s3, _ = signals()
    far = _at_level(s3, s1, -20.5)
    add("three_quiet", [s1, s2, far], far, [s1, s2 + far], 2, "3>2")
    return utterances, outputs3, outputs2, expected


@pytest.mark.parametrize("windowed", [False, True])
def test_counting_with_outputs_at_known_levels(windowed):
    length = 4500
    utterances, outputs3, outputs2, expected = _counting_cases(length)
    separators = {3: KnownOutputs(utterances, outputs3, seed=3), 2: KnownOutputs(utterances, outputs2, seed=2)}
    window = dict(window=1000, overlap=200) if windowed else {}
    rows = evaluation.evaluate_counting(separators, utterances, RATE, threshold_db=-20.0, progress=False, **window)
    got = {row["key"]: (row["found"], row["models_run"]) for row in rows}
    assert got == expected
    calls = separators[3].calls + separators[2].calls
    assert all(shape[1] == (1000 if windowed else length) for shape in calls)
    for row in rows:
        true, found = row["num_speakers"], row["found"]
        assert (row["missing"], row["extra"]) == (max(0, true - found), max(0, found - true)), row["key"]
    by_key = {row["key"]: row for row in rows}
    # the outputs paired with the sources are the sources (also through windows); an extra output
    # is left unscored; the speaker merged by the 2-speaker model is missing
    for key in ("below", "leak_quiet", "above", "leak_loud"):
        assert by_key[key]["si_snr"] > 60, key
    assert by_key["three"]["si_snr"] > 60
    assert by_key["three_quiet"]["assignment"].count(-1) == 1
    summary = evaluation.summarize_counting(rows)
    assert summary["confusion"] == {"2": {"2": 2, "3": 2}, "3": {"2": 1, "3": 1}}
    assert summary["accuracy"] == pytest.approx(3 / 6)


# --- the CLI with tiny random-weight checkpoints ---------------------------------------------

def _tiny_checkpoint(folder, num_speakers):
    from mindspore import nn
    from src.config import load_config
    from src.models import build_model
    from src.runtime.checkpoint import config_meta, save_training_checkpoint
    cfg = load_config(os.path.join(ROOT, "configs/demo.yaml"),
                      ["model.N=16", "model.H=16", "model.R=1", f"model.C={num_speakers}", f"experiment_dir={folder}"])
    net = build_model(cfg)
    path = os.path.join(folder, "checkpoints", f"c{num_speakers}.ckpt")
    save_training_checkpoint(path, nn.Adam(net.trainable_params()), config_meta(cfg),
                             network=net)
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("exp")
    return {c: _tiny_checkpoint(str(folder), c) for c in (2, 3)}


def _run(*args):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "evaluate.py"), *args], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result


def test_cli_on_a_mindrecord_split_with_batches(checkpoints, mini_librimix, tmp_path):
    from src.data.mindrecord import write_split
    utterances = find_splits(os.path.join(mini_librimix, "Libri2Mix"), split="test")["test"].utterances
    write_split(utterances, str(tmp_path / "mr"), "test", 2, RATE)
    # the folder holding test.json stands for the split; --batch-size groups equal lengths
    result = _run("--model-path", checkpoints[2], "--data-dir", str(tmp_path / "mr"), "--batch-size", "4")
    assert result.returncode == 0, result.stderr[-3000:]
    out_dir = os.path.join(os.path.dirname(os.path.dirname(checkpoints[2])), "eval")   # <experiment>/eval
    with open(os.path.join(out_dir, "per_utterance.csv")) as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["key"] for r in rows) == sorted(u.key for u in utterances)
    average = float(re.search(r"^Average SISNR improvement: (-?\d+\.\d\d)$", result.stdout, re.M).group(1))
    assert average == pytest.approx(np.mean([float(r["si_snri"]) for r in rows]), abs=0.006)
    meta = json.load(open(os.path.join(out_dir, "summary.json")))["meta"]
    assert meta["checkpoint"] == checkpoints[2] and meta["config"]["model"]["C"] == 2 and meta["batch_size"] == 4
    assert meta["data"] == [str(tmp_path / "mr")]


def test_cli_counts_speakers_on_two_and_three_speaker_folders(checkpoints, mini_librimix, tmp_path):
    data = []
    for name, count in (("Libri2Mix", 2), ("Libri3Mix", 3)):      # two mixtures of each
        folder = tmp_path / name
        for utt in find_splits(os.path.join(mini_librimix, name), split="test")["test"].utterances[:2]:
            for sub, path in zip(["mix_clean"] + [f"s{k + 1}" for k in range(count)], (utt.mix, *utt.sources)):
                os.makedirs(folder / sub, exist_ok=True)
                shutil.copy(path, folder / sub)
        data.append(str(folder))
    out = tmp_path / "out"
    result = _run("--model-path", checkpoints[2], checkpoints[3], "--data-dir", *data, "--out-dir", str(out),
                  "--threshold-db", "-12")
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out / "per_utterance.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["num_speakers"]) for r in rows] == [2, 2, 3, 3] and [r["data"] for r in rows] == [data[0]] * 2 + [data[1]] * 2
    for r in rows:
        found = int(r["found"])
        assert r["models_run"].startswith("3") and 1 <= found <= 3
        assert int(r["missing"]) == max(0, int(r["num_speakers"]) - found)
        assert int(r["extra"]) == max(0, found - int(r["num_speakers"]))
    correct = [r for r in rows if int(r["found"]) == int(r["num_speakers"])]
    accuracy = float(re.search(r"^Speaker counting accuracy: (\d\.\d+) \((\d)/4; 95 % interval ", result.stdout, re.M).group(1))
    assert accuracy == pytest.approx(len(correct) / 4, abs=1e-3)
    average = float(re.search(r"^Average SISNR improvement: (-?\d+\.\d\d)$", result.stdout, re.M).group(1))
    assert average == pytest.approx(np.mean([float(r["si_snri"]) for r in rows]), abs=0.006)
    report = json.load(open(out / "summary.json"))
    confusion = report["summary"]["confusion"]
    assert sum(sum(row.values()) for row in confusion.values()) == 4 and set(confusion) == {"2", "3"}
    assert report["meta"]["threshold_db"] == {"2": -12, "3": -12} and set(report["meta"]["config"]) == {"2", "3"}
    if correct:
        assert report["summary"]["si_snri_correct"] == pytest.approx(np.mean([float(r["si_snri"]) for r in correct]),
                                                                     abs=1e-3)
    else:
        assert report["summary"]["si_snri_correct"] is None or math.isnan(report["summary"]["si_snri_correct"])


def test_cli_refuses_two_checkpoints_for_one_count_and_config_with_several(checkpoints, tmp_path):
    result = _run("--model-path", checkpoints[2], checkpoints[2], "--data-dir", str(tmp_path))
    assert result.returncode == 2 and "both separate 2 speakers" in result.stderr
    result = _run("--model-path", checkpoints[2], checkpoints[3], "--data-dir", str(tmp_path), "-c",
                  os.path.join(ROOT, "configs/demo.yaml"))
    assert result.returncode == 2 and "single checkpoint" in result.stderr


def test_summary_gives_the_95_percent_interval_of_the_mean(capsys):
    """summarize: si_snri_ci95 is 1.96 standard errors of the scored utterances (the failed one
    left out), and print_summary prints the interval; one utterance has none."""
    import statistics
    values = [1.0, 2.5, 4.0, 7.0]
    rows = [{"key": f"u{i}", "si_snri": v, "sdri": v + 1} for i, v in enumerate(values)] + [{"key": "bad", "error": "x"}]
    summary = evaluation.summarize(rows)
    half = 1.96 * statistics.stdev(values) / math.sqrt(len(values))
    assert summary["si_snri_ci95"] == pytest.approx(half) and summary["sdri_ci95"] == pytest.approx(half)
    evaluation.print_summary(summary)
    mean_value = statistics.mean(values)
    assert (f"SI-SNRi 95 % confidence interval: {mean_value - half:.2f} to {mean_value + half:.2f} dB"
            in capsys.readouterr().out)
    assert "si_snri_speaker_ci95" not in summary      # keys that do not name their speakers
    keys, values = _speaker_effect_mixtures(np.random.default_rng(2))
    by_speaker = evaluation.summarize([{"key": k, "si_snri": v} for k, v in zip(keys, values)])
    assert by_speaker["speakers"] == 10 and by_speaker["si_snri_speaker_ci95"] > by_speaker["si_snri_ci95"]
    evaluation.print_summary(by_speaker)
    low = by_speaker["si_snri"] - by_speaker["si_snri_speaker_ci95"]
    assert f"with the 10 speakers as the unit: {low:.2f} to" in capsys.readouterr().out
    single = evaluation.summarize(rows[:1])
    assert single["si_snri_ci95"] is None
    evaluation.print_summary(single)
    assert "confidence" not in capsys.readouterr().out


def test_compare_reports_pairs_the_utterances(tmp_path, capsys, load_tool):
    """tools/compare_reports.py: B - A over the utterances both scored, with the paired interval
    (narrow when B is A plus a near-constant, however spread the utterances are); clear refusals."""
    tool = load_tool("compare_reports")
    rng = np.random.default_rng(0)
    base = rng.normal(3.0, 3.0, size=40)
    gain = 0.2 + rng.normal(0.0, 0.05, size=40)
    rows_a = [{"key": f"u{i}", "si_snri": float(v)} for i, v in enumerate(base)] + [{"key": "only_a", "si_snri": 9.0}]
    rows_b = [{"key": f"u{i}", "si_snri": float(v + g)} for i, (v, g) in enumerate(zip(base, gain))]
    rows_b.append({"key": "failed_b", "error": "NaN"})
    for name, rows in (("a", rows_a), ("b", rows_b)):
        write_report(rows, evaluation.summarize(rows), str(tmp_path / name), {})
    assert tool.main([str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    printed = capsys.readouterr().out
    half = 1.96 * np.std(gain, ddof=1) / np.sqrt(40)
    assert "over the 40 utterances both scored (1 scored by one only, left out)" in printed
    assert (f"B - A = {gain.mean():+.2f}, 95 % confidence interval {gain.mean() - half:+.2f} to "
            f"{gain.mean() + half:+.2f}") in printed
    assert f"B higher on {int(np.sum(gain > 0))} of 40" in printed
    from src.errors import UserError
    with pytest.raises(UserError, match="no 'pesq' column"):
        tool.main([str(tmp_path / "a"), str(tmp_path / "b"), "--metric", "pesq"])
    with pytest.raises(UserError, match="no evaluation report"):
        tool.main([str(tmp_path / "a"), str(tmp_path / "none")])
    keys, values = _speaker_effect_mixtures(rng)
    gains = [0.5 if "100-" in key else 0.0 for key in keys]   # B helps one speaker's mixtures only
    for name, scores in (("la", values), ("lb", np.add(values, gains))):
        rows = [{"key": k, "si_snri": float(v)} for k, v in zip(keys, scores)]
        write_report(rows, evaluation.summarize(rows), str(tmp_path / name), {})
    assert tool.main([str(tmp_path / "la"), str(tmp_path / "lb")]) == 0
    from src.evaluation.report import speaker_ci95
    half, _ = speaker_ci95(keys, gains)
    assert (f"with the 10 speakers as the unit: {np.mean(gains) - half:+.2f} to {np.mean(gains) + half:+.2f}"
            in capsys.readouterr().out)
    assert half > 1.96 * np.std(gains, ddof=1) / np.sqrt(len(gains))
    write_report([{"key": "other", "si_snri": 1.0}], {}, str(tmp_path / "c"), {})
    with pytest.raises(UserError, match="share no scored utterance"):
        tool.main([str(tmp_path / "a"), str(tmp_path / "c")])


def _speaker_effect_mixtures(rng, speakers=10, mixtures=100, count=2):
    """LibriMix-style keys and SI-SNRi-like scores whose mean depends on which speakers were drawn:
    score = mean of the speakers' effects (sd 1.4) + the mixture's own noise (sd 2) + 3 dB. The
    mean over unseen speakers is 3 dB."""
    effects = rng.normal(0.0, 1.4, speakers)
    keys, values = [], []
    for i in range(mixtures):
        drawn = rng.choice(speakers, count, replace=False)
        keys.append("_".join(f"{100 + s}-{i}-{j:04d}" for j, s in enumerate(drawn)))
        values.append(3.0 + effects[drawn].mean() + rng.normal(0.0, 2.0))
    return keys, values


def test_speaker_interval_covers_the_mean_over_other_speakers():
    """speaker_ci95 (delete-one-speaker jackknife): on simulated test sets of 10 speakers and 100
    mixtures whose scores depend on the speakers, its 95 % interval covers the mean over unseen
    speakers about 95 % of the time; the interval that takes the mixtures as independent covers it
    far less often. Keys that do not name speakers, or too few speakers, give None."""
    from src.evaluation.report import mean_with_ci95, speaker_ci95, speakers_of
    rng = np.random.default_rng(1)
    covered_by_speakers = covered_by_mixtures = 0
    trials = 300
    for _ in range(trials):
        keys, values = _speaker_effect_mixtures(rng)
        mean_value, mixture_half = mean_with_ci95(values)
        speaker_half, speakers = speaker_ci95(keys, values)
        assert speakers == 10
        covered_by_speakers += abs(mean_value - 3.0) < speaker_half
        covered_by_mixtures += abs(mean_value - 3.0) < mixture_half
    assert 0.89 <= covered_by_speakers / trials <= 0.99
    assert covered_by_mixtures / trials < 0.8
    assert speakers_of("1688-142285-0000_3080-5032-0003_367-1-0002") == ("1688", "3080", "367")
    assert speakers_of("2817-142371-0000-0_328-129766-0000-1") == ("2817", "328")   # dev pieces
    assert speakers_of("u1") is None and speakers_of("1688-142285-0000") is None
    assert speakers_of("1688-142285_3080-5032-0003") is None
    assert speaker_ci95(["u1", "u2", "u3"], [1.0, 2.0, 3.0]) is None
    assert speaker_ci95(["1-1-1_2-1-1", "1-1-2_2-1-2"], [1.0, 2.0]) is None          # 2 speakers only
    assert speaker_ci95(["1-1-1_2-1-1", "1-1-2_3-1-2", "1-1-3_4-1-3"], [1.0, 2.0, 3.0]) is None  # 1 in all


def test_counting_accuracy_with_the_speakers_as_the_unit(capsys):
    """summarize_counts: the accuracy's speaker-level half-width is the jackknife of the 0/1
    correctness (a speaker whose mixtures are all miscounted widens it), printed clipped to [0, 1]."""
    from src.evaluation.report import speaker_ci95
    keys = [f"{a}-1-{i:04d}_{b}-1-{i:04d}" for i, (a, b) in enumerate(
        [(1, 2), (1, 3), (2, 3), (2, 4), (3, 4), (4, 5), (5, 1), (5, 2)] * 3)]
    rows = [{"key": k, "num_speakers": 2, "found": 3 if k.startswith("5-") else 2} for k in keys]
    summary = evaluation.summarize_counts(rows)
    right = [float(not k.startswith("5-")) for k in keys]
    assert summary["accuracy"] == pytest.approx(np.mean(right))
    assert summary["accuracy_speaker_ci95"] == pytest.approx(speaker_ci95(keys, right)[0])
    assert summary["speakers"] == 5 and summary["accuracy_speaker_ci95"] > 0.1
    evaluation.print_count_summary(summary)
    low = max(0.0, summary["accuracy"] - summary["accuracy_speaker_ci95"])
    assert f"with the 5 speakers as the unit: {low:.3f} to 1.000" in capsys.readouterr().out


def test_wilson_interval_of_a_proportion():
    """Known values of Wilson's 95 % interval: 0/10 -> [0, 0.2775], 10/10 -> [0.7225, 1], and a
    symmetric one around 1/2."""
    from src.evaluation.report import proportion_ci95
    assert proportion_ci95(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert proportion_ci95(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    low, high = proportion_ci95(50, 100)
    assert low == pytest.approx(1 - high) and high == pytest.approx(0.5 + 0.0960, abs=1e-3)
    assert proportion_ci95(0, 0) is None
