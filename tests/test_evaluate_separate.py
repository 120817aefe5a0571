"""evaluate.py / separate.py: metric wiring, reports, bad inputs (a tiny random-weight checkpoint)."""
import csv
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from mindspore import nn

from src.config import load_config
from src.data.layout import find_splits
from src.evaluation.report import write_report
from src.evaluation.separation import evaluate_utterances, summarize
from src.metrics import si_snr
from src.models import build_model
from src.runtime.checkpoint import config_meta, save_training_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(script, *args):
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ckpt")
    cfg = load_config(os.path.join(ROOT, "configs/demo.yaml"),
                      ["model.N=16", "model.H=16", "model.R=1", f"experiment_dir={tmp}"])
    net = build_model(cfg)
    path = str(tmp / "tiny.ckpt")
    save_training_checkpoint(path, nn.Adam(net.trainable_params()),
                             config_meta(cfg), network=net)
    return path


@pytest.fixture(scope="module")
def test_split(tmp_path_factory, mini_librimix):
    """A single-split folder with 3 mixtures of the bundled test split."""
    split = tmp_path_factory.mktemp("split") / "test3"
    utterances = find_splits(os.path.join(mini_librimix, "Libri2Mix"), split="test")["test"].utterances[:3]
    for folder in ("mix_clean", "s1", "s2"):
        os.makedirs(split / folder)
    for utt in utterances:
        shutil.copy(utt.mix, split / "mix_clean")
        for k, source in enumerate(utt.sources):
            shutil.copy(source, split / f"s{k + 1}")
    return split


def _utterances(n=3, length=4000, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        src = rng.standard_normal((2, length)).astype(np.float32)
        out.append({"key": f"u{i}", "mix": src.sum(0), "src": src, "length": length, "sample_rate": 8000})
    return out


def test_scores_against_independent_values(tmp_path):
    utterances = _utterances()
    by_mix = {u["mix"].tobytes(): u for u in utterances}
    noise = np.random.default_rng(1).standard_normal((2, 4000)).astype(np.float32)

    def swapped_noisy_oracle(mixture):   # references in swapped order plus noise 10x weaker
        return np.stack([by_mix[m.tobytes()]["src"][::-1] + 0.1 * noise for m in mixture])

    rows = evaluate_utterances(swapped_noisy_oracle, utterances, 8000, progress=False)
    for row, utt in zip(rows, utterances):
        est = utt["src"] + 0.1 * noise[::-1]           # noise rows follow the swapped estimates
        expected = np.mean([si_snr(est[k], utt["src"][k]) - si_snr(utt["mix"], utt["src"][k]) for k in range(2)])
        assert row["si_snri"] == pytest.approx(expected, abs=1e-6)
        assert list(row["perm"]) == [1, 0]
        assert 15 < row["si_snr"] < 25                     # ~20 dB by construction
    rows_mix = evaluate_utterances(lambda m: np.stack([np.stack([x, x]) for x in m]), utterances, 8000,
                                   progress=False)
    assert all(abs(r["si_snri"]) < 1e-6 for r in rows_mix)   # returning the mixture improves nothing
    summary = summarize(rows)
    assert summary["si_snri"] == pytest.approx(np.mean([r["si_snri"] for r in rows]))
    csv_path, json_path = write_report(rows, summary, str(tmp_path), {"checkpoint": "x.ckpt"})
    with open(csv_path) as f:
        assert [r["key"] for r in csv.DictReader(f)] == ["u0", "u1", "u2"]
    assert json.load(open(json_path))["meta"]["checkpoint"] == "x.ckpt"


def test_evaluate_cli(checkpoint, test_split, tmp_path):
    result = run("evaluate.py", "--model-path", checkpoint, "--data-dir", str(test_split), "--out-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    average = float(re.search(r"^Average SISNR improvement: (-?[\d.]+)", result.stdout, re.M).group(1))
    with open(tmp_path / "per_utterance.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3
    assert average == pytest.approx(np.mean([float(r["si_snri"]) for r in rows]), abs=0.01)
    assert json.load(open(tmp_path / "summary.json"))["meta"]


def test_evaluate_cli_bad_input(checkpoint, tmp_path):
    result = run("evaluate.py", "--model-path", checkpoint, "--data-dir", str(tmp_path / "nowhere"))
    assert result.returncode == 2 and "nowhere" in result.stderr and "Traceback" not in result.stderr
    result = run("evaluate.py", "--model-path", str(tmp_path / "missing.ckpt"), "--data-dir", str(tmp_path))
    assert result.returncode == 2 and "missing.ckpt" in result.stderr and "Traceback" not in result.stderr


def test_separate_cli(checkpoint, test_split, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    mix = sorted((test_split / "mix_clean").iterdir())[0]
    shutil.copy(mix, inputs / "good.wav")
    audio, rate = sf.read(mix)
    sf.write(inputs / "stereo16k.wav", np.stack([audio, audio], 1)[::1], rate * 2)   # declared 16 kHz, 2 channels
    (inputs / "broken.wav").write_bytes(b"RIFF not audio")
    sf.write(inputs / "empty.wav", np.zeros(0), rate)
    sf.write(inputs / "silent.wav", np.zeros(rate), rate)
    out = tmp_path / "out"
    result = run("separate.py", str(inputs), "--model-path", checkpoint, "--out-dir", str(out), "--plot")
    assert result.returncode == 1 and "Traceback" not in result.stderr   # some inputs failed ...
    for name in ("broken.wav", "empty.wav", "silent.wav"):
        assert re.search(rf"error: .*{name}", result.stderr), name           # ... each named
    assert "resampled from 16000 Hz" in result.stdout and "averaged to mono" in result.stdout
    for stem in ("good", "stereo16k"):                                        # ... the others written
        for k in (1, 2):
            written, sr = sf.read(out / f"{stem}_s{k}.wav")
            assert sr == 8000 and np.abs(written).max() > 0
        assert (out / f"{stem}_spectrogram.png").stat().st_size > 1000
    again = run("separate.py", str(inputs / "good.wav"), "--model-path", checkpoint, "--out-dir", str(out))
    assert again.returncode == 1 and "--force" in again.stderr and "good_s1.wav" in again.stderr
    forced = run("separate.py", str(inputs / "good.wav"), "--model-path", checkpoint, "--out-dir", str(out), "--force")
    assert forced.returncode == 0, forced.stderr[-2000:]


def test_separate_cli_enhances_with_an_enhancement_checkpoint(tmp_path):
    """One command for both tasks: an enhancement checkpoint writes <name>_enhanced.wav, equal to
    the Enhancer's output (noisy magnitude x mask, noisy phase, inverse STFT). The network's last
    layer is set to a known mask (1 below 2 kHz, 0 above, whatever the input), so the file is also
    checked against that mask applied here with the STFT."""
    import mindspore as ms
    from src.features import istft, stft
    from src.inference.enhancement import Enhancer
    from src.tasks.enhancement import EnhancementTask
    cfg = load_config(os.path.join(ROOT, "configs/rt_demo.yaml"), ["model.d_model=16", f"experiment_dir={tmp_path}"])
    net = build_model(cfg)
    bins = net.decoder.bias.shape[0]
    cutoff = bins // 4                                     # 161 bins of 50 Hz: 40 -> 2 kHz
    net.decoder.weight.set_data(ms.Tensor(np.zeros(net.decoder.weight.shape, np.float32)))
    net.decoder.bias.set_data(ms.Tensor(np.where(np.arange(bins) < cutoff, 30.0, -30.0).astype(np.float32)))
    path = str(tmp_path / "rt.ckpt")
    save_training_checkpoint(path, nn.Adam(net.trainable_params()),
                             config_meta(cfg), network=net)
    noisy = np.random.default_rng(0).standard_normal(16000 + 123).astype(np.float32) * 0.1
    sf.write(tmp_path / "noisy.wav", noisy, 16000, subtype="FLOAT")
    result = run("separate.py", str(tmp_path / "noisy.wav"), "--model-path", path, "--out-dir", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-2000:]
    enhanced, sr = sf.read(tmp_path / "out" / "noisy_enhanced.wav")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    expected = Enhancer(net, EnhancementTask.stft_config(cfg))(noisy)
    assert sr == 16000 and enhanced.shape == noisy.shape
    np.testing.assert_allclose(enhanced, expected, atol=1e-4)          # 16-bit output
    stft_config = EnhancementTask.stft_config(cfg)
    spectrum = stft(noisy, stft_config)
    lowpass = istft(spectrum * (np.arange(bins) < cutoff), stft_config, len(noisy))
    np.testing.assert_allclose(enhanced, lowpass, atol=1e-4)
    assert np.sum(lowpass ** 2) < 0.4 * np.sum(noisy ** 2)                # white noise: a quarter of the band
    assert not os.path.exists(tmp_path / "out" / "noisy_s1.wav")
