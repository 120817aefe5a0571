"""Enhancement checkpoint -> evaluate.py -> export.py -> offline pipeline (scripts/run_infer_310.sh).

One tiny random-weight R-Transformer (rt_demo.yaml with d_model 16) and the 12 fixed test pairs of
the bundled assets/mini_enhancement (4 clean utterances x -5/0/5 dB). The evaluate CLI writes a
per-pair CSV and a per-SNR summary whose improvements are over the noisy input; the exported
mask network computes the network's mask (three frame counts in export.py's own check, and every
mask the offline run produced); the offline pipeline reports evaluate.py's numbers.
"""
import glob
import os
import subprocess
import sys

import numpy as np
import pytest

from src.config import load_config, save_config
from src.evaluation.report import read_report
from src.metrics import si_snr, stoi_score
from src.inference.offline import read_index, read_inputs
from src.tasks.enhancement import EnhancementTask

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SNRS = ("-5", "0", "5")
NUM_PAIRS = 4 * len(SNRS)
SCORES = ("si_snr", "si_snri", "stoi", "stoii", "pesq", "pesqi")


def run(*args, **env):
    return subprocess.run(list(args), cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})


@pytest.fixture(scope="module")
def rt(tmp_path_factory):
    """A tiny random R-Transformer checkpoint (as train.py writes it) and its config as a yaml."""
    import mindspore as ms
    from mindspore import nn

    from src.models import build_model
    from src.runtime.checkpoint import config_meta, save_training_checkpoint

    folder = tmp_path_factory.mktemp("rt")
    cfg = load_config(os.path.join(ROOT, "configs", "rt_demo.yaml"),
                      ["model.d_model=16", "model.h=2", f"experiment_dir={folder / 'exp'}"])
    for key, value in cfg.data.items():
        if isinstance(value, str) and value.startswith("assets/"):
            cfg.data[key] = os.path.join(ROOT, value)
    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_seed(5)
    net = build_model(cfg)
    ckpt = str(folder / "exp" / "checkpoints" / "best.ckpt")
    save_training_checkpoint(ckpt, nn.Adam(net.trainable_params(), 1e-3),
                             {"epoch": 0, **config_meta(cfg)}, network=net)
    config = str(folder / "config.yaml")
    save_config(cfg, config)
    return {"folder": folder, "cfg": cfg, "ckpt": ckpt, "config": config}


@pytest.fixture(scope="module")
def evaluated(rt):
    result = run(sys.executable, "evaluate.py", "--model-path", rt["ckpt"])
    assert result.returncode == 0, result.stdout + result.stderr
    report = rt["folder"] / "exp" / "eval"   # default: <experiment>/eval
    rows, report = read_report(report)
    return {"stdout": result.stdout, "rows": rows, "report": report}


@pytest.fixture(scope="module")
def exported(rt):
    mindir = str(rt["folder"] / "rt.mindir")
    result = run(sys.executable, "export.py", "--ckpt", rt["ckpt"], "--file-name", mindir)
    assert result.returncode == 0, result.stdout + result.stderr
    return {"stdout": result.stdout, "mindir": mindir}


@pytest.fixture(scope="module")
def offline(rt, exported):
    out = rt["folder"] / "infer"
    result = run("bash", os.path.join("scripts", "run_infer_310.sh"), exported["mindir"], rt["config"], "y", "CPU",
                 "0", INFER_OUT=str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    rows, report = read_report(out / "report")
    return {"stdout": result.stdout, "out": out, "rows": rows, "report": report}


def test_evaluate_cli_scores_every_pair_per_snr_against_the_noisy_input(rt, evaluated):
    rows, report = evaluated["rows"], evaluated["report"]
    assert len(rows) == NUM_PAIRS
    assert sorted({f"{float(r['snr_db']):g}" for r in rows}) == sorted(SNRS)
    assert all(r["error"] == "" for r in rows)
    # improvements are over the noisy input: recompute the noisy scores of the same fixed pairs
    pairs = list(EnhancementTask().mixer(rt["cfg"], "test").fixed_pairs())
    assert [(p.key, p.snr_db) for p in pairs] == [(r["key"], float(r["snr_db"])) for r in rows]
    for pair, row in zip(pairs, rows):
        noisy_si_snr = si_snr(pair.noisy, pair.clean)
        assert float(row["si_snr"]) - float(row["si_snri"]) == pytest.approx(noisy_si_snr, abs=2e-4)
        noisy_stoi = stoi_score(pair.noisy, pair.clean, rt["cfg"].sample_rate)
        assert float(row["stoi"]) - float(row["stoii"]) == pytest.approx(noisy_stoi, abs=2e-4)
        assert 1.0 <= float(row["pesq"]) <= 4.7 and 0 < float(row["stoi"]) <= 1

    summary = report["summary"]
    assert summary["count"] == NUM_PAIRS and summary["failed"] == 0
    assert sorted(summary["per_snr"]) == sorted(SNRS)
    for snr in SNRS:
        per_snr = summary["per_snr"][snr]
        assert per_snr["count"] == 4
        at_snr = [float(r["si_snri"]) for r in rows if f"{float(r['snr_db']):g}" == snr]
        assert per_snr["si_snri"] == pytest.approx(np.mean(at_snr), abs=1e-4)
    for name in SCORES:
        assert summary[name] == pytest.approx(np.mean([float(r[name]) for r in rows]), abs=1e-4)
    meta = report["meta"]
    assert meta["checkpoint"] == rt["ckpt"] and meta["config"]["task"] == "enhancement"
    assert meta["data"]["clean"] == rt["cfg"].data.test_clean and meta["data"]["snrs_db"] == [-5.0, 0.0, 5.0]
    printed = [line for line in evaluated["stdout"].splitlines() if line.startswith("Average SISNR improvement:")]
    assert printed == [f"Average SISNR improvement: {summary['si_snri']:.2f}"]
    assert sum(line.startswith("input SNR ") for line in evaluated["stdout"].splitlines()) == len(SNRS)


def test_export_checks_the_mask_network_at_three_frame_counts(rt, exported):
    checks = [line for line in exported["stdout"].splitlines() if line.startswith("check at ")]
    assert len(checks) == 3 and all(" frames: " in line for line in checks)
    for line in checks:
        assert float(line.split("= ")[1].split()[0]) <= 1e-5, line
    assert "features (1, frames, 161) float32 + frame_lengths (1,) int32 -> mask (1, frames, 161)" in exported["stdout"]

    refused = run(sys.executable, "export.py", "--ckpt", rt["ckpt"], "--file-name", str(rt["folder"] / "fixed"),
                  "--length", "100")
    assert refused.returncode == 2 and "dynamic frame axis" in refused.stderr and "Traceback" not in refused.stderr


def test_offline_pipeline_gives_evaluate_numbers_and_the_network_mask(rt, evaluated, offline):
    assert "input length: any" in offline["stdout"]
    assert [(r["key"], r["snr_db"]) for r in offline["rows"]] == [(r["key"], r["snr_db"]) for r in evaluated["rows"]]
    for got, want in zip(offline["rows"], evaluated["rows"]):
        for name in SCORES:
            assert float(got[name]) == pytest.approx(float(want[name]), abs=1e-4), (got["key"], name)
    ours, theirs = offline["report"]["summary"], evaluated["report"]["summary"]
    for name in SCORES:
        assert ours[name] == pytest.approx(theirs[name], abs=1e-6), name
        for snr in SNRS:
            assert ours["per_snr"][snr][name] == pytest.approx(theirs["per_snr"][snr][name], abs=1e-6)
    assert offline["report"]["meta"]["backend"] in ("mindspore", "mindspore_lite")

    # every mask the exported graph wrote is the checkpoint network's mask for the same features
    from src.inference.enhancement import NetworkMasker
    from src.runtime.checkpoint import load_model
    net, cfg = load_model(rt["ckpt"])
    masker = NetworkMasker(net, 161)
    bins = offline["out"] / "bins"
    index = read_index(bins)
    assert index["task"] == "enhancement" and len(index["bins"]) == NUM_PAIRS
    assert len(glob.glob(str(bins / "*_lengths.bin"))) == NUM_PAIRS
    for name, info in index["bins"].items():
        features, frame_lengths = read_inputs(bins, info)
        assert frame_lengths.tolist() == [features.shape[1]]
        stored = np.fromfile(offline["out"] / "results" / name, dtype="<f4").reshape(features.shape)
        np.testing.assert_allclose(stored, masker(features, frame_lengths), atol=1e-5)
