"""MindIR export and the offline-inference pipeline (preprocess --infer-bins -> infer.py ->
postprocess.py, scripts/run_infer_310.sh).

Fast part (no MindSpore graph): the bins and the replay reproduce evaluate.py's separation with a
fake model exactly. Slow part (module fixtures, one network compile + two exports): a tiny random
SWave checkpoint exported with a dynamic and a fixed length, compared with the network, and run
through the whole script on a few bundled test mixtures.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import preprocess
from src.evaluation.report import read_report
from src.evaluation.separation import evaluate_utterances
from src.metrics import score_utterance
from src.inference.offline import OfflineInferenceError, ReplaySeparator, read_index, read_run, write_input_bins
from src.inference.runners import run_bins
from src.inference.windows import plan_windows
from src.tasks.separation import SeparationTask

check_inputs_fit = SeparationTask().check_offline_inputs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RATE = 8000
NUM_UTTERANCES = 2
FIXED_LENGTH = 8000  # 1 s windows
OVERLAP_SECONDS = 0.25


# ------------------------------------------------------------------ fake model, no MindSpore
class FakeModel:
    """Deterministic stand-in for a separation graph: output 0 is a smoothed input, output 1 the
    rest, swapped when the input's first sample is negative (so windows come out in different
    speaker orders and the alignment across windows matters)."""

    input_shape, backend, device = [1, -1], "fake", "CPU"

    def __init__(self):
        self.calls = 0

    def __call__(self, mixture):
        self.calls += 1
        x = np.asarray(mixture, np.float64)
        smooth = np.stack([np.convolve(row, np.ones(9) / 9, mode="same") for row in x])
        out = np.stack([smooth, x - smooth], axis=1)
        if x[0, 0] < 0:
            out = out[:, ::-1]
        return out.astype(np.float32)


def fake_utterances():
    rng = np.random.default_rng(5)
    utterances = []
    for i, length in enumerate((5000, 8000, 23001, 40000)):
        src = (0.3 * rng.standard_normal((2, length))).astype(np.float32)
        utterances.append({"key": f"utt{i}", "mix": src.sum(axis=0), "src": src, "length": length})
    return utterances


@pytest.mark.parametrize("fixed_length", [0, 8000])
def test_replayed_results_score_exactly_as_evaluation(tmp_path, fixed_length):
    """Bins -> runner -> replay through evaluate_utterances gives the rows of evaluating the model
    directly (dynamic: evaluate.py's windows; fixed: windows of the graph, short inputs padded)."""
    window, overlap = plan_windows(RATE, fixed_length, window_seconds=2.0, overlap_seconds=0.5)
    utterances = fake_utterances()
    index = write_input_bins(utterances, tmp_path / "bins", RATE, fixed_length, window, overlap,
                             log=lambda *_: None)
    model = FakeModel()
    if fixed_length:
        model.input_shape = [1, fixed_length]
    run = run_bins(model, "fake.mindir", tmp_path / "bins", tmp_path / "results", SeparationTask(), progress=False)
    assert model.calls == len(index["bins"]) == run["num_inputs"] > len(utterances)  # the 40000 one is windowed
    if fixed_length:
        assert {b["samples"] for b in index["bins"].values()} == {fixed_length}

    replayed = evaluate_utterances(ReplaySeparator(read_index(tmp_path / "bins"), tmp_path / "results"),
                                   utterances, RATE, window, overlap, progress=False)

    def direct(batch):  # the model itself, padded to the fixed length like the graph
        if fixed_length and batch.shape[1] < fixed_length:
            padded = np.zeros((batch.shape[0], fixed_length), np.float32)
            padded[:, :batch.shape[1]] = batch
            return model(padded)[:, :, :batch.shape[1]]
        return model(batch)
    expected = evaluate_utterances(direct, utterances, RATE, window, overlap, progress=False)
    assert [r["key"] for r in replayed] == [u["key"] for u in utterances]
    for got, want in zip(replayed, expected):
        assert "error" not in got
        assert got["si_snri"] == pytest.approx(want["si_snri"], abs=1e-9)
        assert got["perm"] == want["perm"]


def test_replay_refuses_inputs_it_has_no_result_for(tmp_path):
    utterances = fake_utterances()[:2]
    window, overlap = plan_windows(RATE, 0, 2.0, 0.5)
    write_input_bins(utterances, tmp_path / "bins", RATE, 0, window, overlap, log=lambda *_: None)
    run_bins(FakeModel(), "fake.mindir", tmp_path / "bins", tmp_path / "results", SeparationTask(), progress=False)
    replay = ReplaySeparator(read_index(tmp_path / "bins"), tmp_path / "results")
    other = utterances[0]["mix"].copy()
    other[10] += 0.01
    with pytest.raises(OfflineInferenceError, match="not among the preprocessed inputs"):
        replay(other[None])


def test_missing_files_and_stale_results_are_named(tmp_path):
    with pytest.raises(OfflineInferenceError, match="no preprocessed .bin files"):
        read_index(tmp_path / "nothing")
    window, overlap = plan_windows(RATE, 0, 2.0, 0.5)
    utterances = fake_utterances()[:1]
    write_input_bins(utterances, tmp_path / "bins", RATE, 0, window, overlap, log=lambda *_: None)
    index = read_index(tmp_path / "bins")
    with pytest.raises(OfflineInferenceError, match="no run.json"):
        read_run(tmp_path / "results", index, tmp_path / "bins")
    run_bins(FakeModel(), "fake.mindir", tmp_path / "bins", tmp_path / "results", SeparationTask(), progress=False)
    assert read_run(tmp_path / "results", index, tmp_path / "bins")["num_outputs"] == 2
    # preprocessing again makes the old results stale
    write_input_bins(utterances, tmp_path / "bins", RATE, 0, window, overlap, log=lambda *_: None)
    with pytest.raises(OfflineInferenceError, match="preprocessed again"):
        read_run(tmp_path / "results", read_index(tmp_path / "bins"), tmp_path / "bins")
    os.remove(tmp_path / "bins" / index["utterances"][0]["bins"][0])
    with pytest.raises(OfflineInferenceError, match="missing"):
        read_index(tmp_path / "bins")


def test_fixed_length_graph_refuses_bins_of_another_length(tmp_path):
    window, overlap = plan_windows(RATE, 0, 2.0, 0.5)
    write_input_bins(fake_utterances()[:2], tmp_path / "bins", RATE, 0, window, overlap, log=lambda *_: None)
    index = read_index(tmp_path / "bins")
    with pytest.raises(OfflineInferenceError, match="fixed-length graph of 4000 samples.*--fixed-length 4000"):
        check_inputs_fit([1, 4000], index, "m.mindir", tmp_path / "bins")
    with pytest.raises(OfflineInferenceError, match="not \\(1, time\\)"):
        check_inputs_fit([1, 2, 4000], index, "m.mindir", tmp_path / "bins")
    check_inputs_fit([1, -1], index, "m.mindir", tmp_path / "bins")


def test_export_refuses_what_cannot_work():
    from src.export import ExportError, check_request
    with pytest.raises(ExportError, match="Ascend"):
        check_request("AIR", 0, 8, "CPU")
    with pytest.raises(ExportError, match="fixed length"):
        check_request("ONNX", 0, 8, "CPU")
    with pytest.raises(ExportError, match="at least 8 samples"):
        check_request("MINDIR", 4, 8, "CPU")
    check_request("MINDIR", 0, 8, "CPU")


# ------------------------------------------------------ real export and the whole script on CPU
@pytest.fixture(scope="module")
def exported(tmp_path_factory, mini_librimix):
    """A tiny random SWave checkpoint (with model.input_rms, as the shipped models), its network
    (compiled once, dynamic length) and its dynamic and fixed-length MindIR exports with the
    measured differences."""
    import mindspore as ms
    from mindspore import nn

    from src.config import load_config
    from src.export import compare_with_network, export_network
    from src.models import build_model
    from src.runtime.checkpoint import config_meta, load_model, save_training_checkpoint

    folder = tmp_path_factory.mktemp("export")
    previous_mode = ms.get_context("mode")
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_seed(3)
    cfg = load_config(os.path.join(REPO, "configs", "demo.yaml"),
                      ["model.N=16", "model.L=4", "model.H=8", "model.R=1", "segment=1.0", "model.input_rms=0.07"])
    net = build_model(cfg)
    ckpt = str(folder / "tiny.ckpt")
    save_training_checkpoint(ckpt, nn.Adam(net.trainable_params(), 1e-3),
                             {"epoch": 0, **config_meta(cfg)})
    net, _ = load_model(ckpt)
    dynamic = export_network(net, str(folder / "tiny_dynamic"))
    fixed = export_network(net, str(folder / "tiny_fixed"), length=FIXED_LENGTH)
    checks = {"dynamic": compare_with_network(net, dynamic, "MINDIR", [4000, 8000, 12345]),
              "fixed": compare_with_network(net, fixed, "MINDIR", [FIXED_LENGTH])}
    yield {"test_data": os.path.join(mini_librimix, "Libri2Mix", "test"), "folder": folder, "ckpt": ckpt, "net": net, "dynamic": dynamic, "fixed": fixed, "checks": checks}
    ms.set_context(mode=previous_mode)


def run_script(model, data, out_dir, cwd=REPO, **env):
    script = os.path.join("scripts", "run_infer_310.sh") if cwd == REPO else "run_infer_310.sh"
    data = os.path.relpath(data, cwd)
    full_env = {**os.environ, "INFER_OUT": str(out_dir), "MAX_UTTERANCES": str(NUM_UTTERANCES), **env}
    return subprocess.run(["bash", script, model, data, "y", "CPU", "0"], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=600)


def reference_rows(exported, separate):
    """Scores of the checkpoint's network on the first test utterances, `separate(fn, mix)`."""
    from src.data.dataset import iterate_utterances
    from src.inference.network import NetworkSeparator
    separator = NetworkSeparator(exported["net"])
    rows = []
    for i, utt in enumerate(iterate_utterances(exported["test_data"], RATE, 2)):
        if i == NUM_UTTERANCES:
            break
        scores = score_utterance(separate(separator, utt["mix"]), utt["src"], utt["mix"], RATE)
        rows.append({"key": utt["key"], "si_snri": scores["si_snri"]})
    return rows


def test_exported_graphs_compute_what_the_network_computes(exported):
    for kind, checks in exported["checks"].items():
        for length, diff, peak in checks:
            assert diff <= 1e-5 * max(1.0, peak), (kind, length, diff)
    assert [length for length, _, _ in exported["checks"]["dynamic"]] == [4000, 8000, 12345]


def test_dynamic_graph_pipeline_gives_evaluation_numbers(exported):
    from src.inference.separation import separate_whole
    out = exported["folder"] / "out_dynamic"
    result = run_script(exported["dynamic"], exported["test_data"], out)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "input length: any" in result.stdout
    average = [line for line in result.stdout.splitlines() if line.startswith("Average SISNR improvement:")]
    assert len(average) == 1
    rows, report = read_report(out / "report")
    want = reference_rows(exported, lambda fn, mix: separate_whole(fn, mix, 2))
    assert [r["key"] for r in rows] == [r["key"] for r in want]
    for got, ref in zip(rows, want):
        assert float(got["si_snri"]) == pytest.approx(ref["si_snri"], abs=0.01)  # CSV rounds to 1e-4
    mean = np.mean([r["si_snri"] for r in want])
    assert float(average[0].split(":")[1]) == pytest.approx(mean, abs=0.01)
    assert report["summary"]["count"] == NUM_UTTERANCES
    assert report["meta"]["backend"] in ("mindspore", "mindspore_lite") and report["meta"]["fixed_length"] is None
    for log in ("preprocess.log", "infer.log", "acc.log"):
        assert os.path.getsize(out / log) > 0


def test_fixed_length_graph_pipeline_stitches_windows_like_separate_long(exported):
    """Run from scripts/: windows of the graph's length, stitched as separate_long(static_length)."""
    from src.inference.separation import separate_long
    out = exported["folder"] / "out_fixed"
    result = run_script(exported["fixed"], exported["test_data"], out, cwd=os.path.join(REPO, "scripts"),
                        OVERLAP_SECONDS=str(OVERLAP_SECONDS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"input length: {FIXED_LENGTH} samples" in result.stdout
    index = read_index(out / "bins")
    assert index["window"] == FIXED_LENGTH and index["overlap"] == int(OVERLAP_SECONDS * RATE)
    assert len(index["bins"]) > NUM_UTTERANCES
    overlap = int(OVERLAP_SECONDS * RATE)
    want = reference_rows(exported, lambda fn, mix: separate_long(fn, mix, 2, FIXED_LENGTH, overlap,
                                                                  static_length=True))
    rows, _ = read_report(out / "report")
    for got, ref in zip(rows, want):
        assert float(got["si_snri"]) == pytest.approx(ref["si_snri"], abs=0.01)

    # the fixed-length graph refuses inputs written for a dynamic graph, naming the fix
    dynamic_bins = str(exported["folder"] / "dynamic_bins")
    assert preprocess.main(["--infer-bins", dynamic_bins, "--data-dir", exported["test_data"], "--max-utterances", "1"]) == 0
    wrong = subprocess.run([sys.executable, "infer.py", "--mindir", exported["fixed"], "--bin-dir", dynamic_bins,
                            "--result-dir", str(out / "wrong")], cwd=REPO, capture_output=True, text=True,
                           timeout=300)
    assert wrong.returncode == 2
    assert f"fixed-length graph of {FIXED_LENGTH} samples" in wrong.stderr
    assert "Traceback" not in wrong.stderr


def test_export_cli_explains_a_refused_format(exported):
    result = subprocess.run([sys.executable, "export.py", "--ckpt", exported["ckpt"], "--file-name",
                             str(exported["folder"] / "tiny"), "--file-format", "onnx"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "ONNX export needs a fixed length (--length N)" in result.stderr
    assert "Traceback" not in result.stderr
    assert not os.path.exists(exported["folder"] / "tiny.onnx")


def test_script_names_a_missing_model(tmp_path):
    result = run_script(str(tmp_path / "missing.mindir"), str(tmp_path), tmp_path / "out")
    assert result.returncode == 2
    assert "model file not found" in result.stderr and "missing.mindir" in result.stderr
