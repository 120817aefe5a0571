"""The speaker-counting task (src/tasks/counting.py): level-free features, labelled batches, the
counter's windows, and a tiny CountNet trained by train.py used as separate.py's --count-model,
scored alone by evaluate.py, exported, and run through the offline pipeline
(scripts/run_infer_310.sh), which must give evaluate.py's counts."""
import os

import numpy as np
import pytest
import soundfile as sf

from src.config import load_config
from src.features import StftConfig, log_mel
from src.tasks.counting import CountingModelError, CountingTask, classifier_counter

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPEECH = os.path.join(ROOT, "assets/librispeech_train_8k/train")
TINY = ["model.channels=8", "model.n_mels=16", "data.steps_per_epoch=4", "train.batch_size=4", "train.epochs=1",
        "segment=1.0", f"data.train_speech={SPEECH}"]


def test_log_mel_ignores_the_recording_level():
    rng = np.random.default_rng(0)
    signal = rng.standard_normal(4000)
    stft = StftConfig(256, 80, 256)
    features = log_mel(signal, 8000, stft, 40)
    assert features.shape == (stft.num_frames(4000), 40)
    np.testing.assert_allclose(log_mel(0.01 * signal, 8000, stft, 40), features, atol=1e-4)
    np.testing.assert_allclose(features.mean(axis=0), 0, atol=1e-4)


def test_batches_are_labelled_with_their_speaker_count_and_repeat_per_epoch(mini_librimix):
    cfg = load_config(os.path.join(ROOT, "configs/counter_2_3spk.yaml"), [*TINY, f"data.valid={mini_librimix}"])
    first = list(CountingTask().train_batches(cfg, 1))
    assert len(first) == 4
    features, labels, lengths = first[0]
    assert features.shape == (4, StftConfig(256, 80, 256).num_frames(8000), 16) and labels.dtype == np.int32
    assert set(np.concatenate([b[1] for b in first])) == {0, 1}            # both counts drawn
    again = list(CountingTask().train_batches(cfg, 1))
    assert all(np.array_equal(a[1], b[1]) and np.array_equal(a[0], b[0]) for a, b in zip(first, again))
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(first, CountingTask().train_batches(cfg, 2)))


class _Logits:
    """A stand-in network: logits (1, 2) favouring 3 speakers for inputs of more than `frames` frames
    (and 2 speakers for shorter ones)."""

    def __init__(self, frames):
        self.frames, self.inputs = frames, []

    def __call__(self, features):
        self.inputs.append(tuple(features.shape))
        long = features.shape[1] > self.frames
        return np.array([[0.0, 1.0 if long else -3.0]], np.float32)


def test_counter_averages_the_scores_of_windows_of_the_training_length(mini_librimix):
    cfg = load_config(os.path.join(ROOT, "configs/counter_2_3spk.yaml"), [*TINY, f"data.valid={mini_librimix}"])
    net = _Logits(frames=90)
    counter = classifier_counter(net, cfg)                     # 1 s windows (segment=1.0), half overlapping
    rng = np.random.default_rng(1)
    assert counter(rng.standard_normal(4000).astype(np.float32)) == 2 and net.inputs == [(1, 51, 16)]
    net.inputs.clear()
    assert counter(rng.standard_normal(8000).astype(np.float32)) == 3 and net.inputs == [(1, 101, 16)]
    # 2.2 s: windows at 0, 0.4, 0.8, 1.2 s (the last ends at the end), all 1 s long
    net.inputs.clear()
    mixture = rng.standard_normal(17600).astype(np.float32)
    assert counter(mixture) == 3 and net.inputs == [(1, 101, 16)] * 4
    np.testing.assert_allclose(counter.scores(mixture), [0.0, 1.0], atol=1e-6)


@pytest.fixture(scope="module")
def trained_counter(mini_librimix, tmp_path_factory):
    """A tiny counting model trained for one epoch by train.py -> (checkpoint, history)."""
    import mindspore as ms
    import train
    out = tmp_path_factory.mktemp("counter")
    previous_mode = ms.get_context("mode")
    assert train.main(["-c", os.path.join(ROOT, "configs/counter_2_3spk.yaml"), *TINY,
                       f"data.valid={mini_librimix}", f"experiment_dir={out}"]) in (0, None)
    ms.set_context(mode=previous_mode)
    return str(out / "checkpoints" / "best.ckpt"), str(out)


def test_trained_counter_counts_for_separate_and_refuses_to_separate(trained_counter, mini_librimix, tmp_path,
                                                                    capsys):
    import csv
    import json

    import evaluate
    import separate
    from src.runtime.checkpoint import model_config
    from src.tasks import load_counter
    ckpt, folder = trained_counter
    history = json.load(open(os.path.join(folder, "history.json")))
    assert 0 <= history["history"][0]["valid_accuracy"] <= 1
    cfg = model_config(ckpt)
    mix = sorted(os.listdir(os.path.join(mini_librimix, "Libri2Mix", "test", "mix_clean")))[0]
    path = os.path.join(mini_librimix, "Libri2Mix", "test", "mix_clean", mix)
    counter = load_counter(ckpt, {2: cfg})
    found = counter(sf.read(path, dtype="float32")[0])
    assert found in (2, 3)
    tiny_separator = _tiny_separator(tmp_path)
    assert separate.main([path, "--model-path", tiny_separator, "--count-model", ckpt, "--out-dir",
                          str(tmp_path / "out")]) == 0
    assert f"{found} speaker" in capsys.readouterr().out
    assert len(os.listdir(tmp_path / "out")) == 2          # the only separator's two outputs
    assert evaluate.main(["--model-path", tiny_separator, "--count-model", ckpt, "--data-dir",
                          os.path.join(mini_librimix, "Libri3Mix"), "--out-dir", str(tmp_path / "eval")]) in (0, None)
    report = json.load(open(tmp_path / "eval" / "summary.json"))
    assert report["meta"]["count_model"] == os.path.abspath(ckpt) and report["summary"]["count"] == 12
    with open(tmp_path / "eval" / "per_utterance.csv") as f:
        assert {row["models_run"] for row in csv.DictReader(f)} == {"counter>2"}
    with pytest.raises(CountingModelError, match=f"{ckpt}: a speaker-counting model cannot separate; give it as"):
        separate.main([path, "--model-path", ckpt, "--out-dir", str(tmp_path / "out2")])
    with pytest.raises(CountingModelError, match="cannot separate"):
        CountingTask().load_separators([ckpt], cfg)


@pytest.fixture(scope="module")
def counted(trained_counter, tmp_path_factory):
    """The tiny counter scored alone by evaluate.py (default data: its config's data.valid, the mini
    LibriMix), exported by export.py and run by run_infer_310.sh with its config -> paths and reports."""
    import subprocess

    import evaluate
    import export
    from src.evaluation.report import read_report
    ckpt, folder = trained_counter
    out = tmp_path_factory.mktemp("counted")
    assert evaluate.main(["--model-path", ckpt, "--out-dir", str(out / "eval")]) == 0
    mindir = str(out / "counter.mindir")
    assert export.main(["--ckpt", ckpt, "--file-name", mindir]) == 0
    result = subprocess.run(["bash", os.path.join("scripts", "run_infer_310.sh"), mindir,
                             os.path.join(folder, "config.yaml"), "y", "CPU", "0"], cwd=ROOT, capture_output=True,
                            text=True, timeout=300, env={**os.environ, "INFER_OUT": str(out / "infer")})
    assert result.returncode == 0, result.stdout + result.stderr
    (rows, report), (offline_rows, offline_report) = read_report(out / "eval"), read_report(out / "infer" / "report")
    return {"ckpt": ckpt, "mindir": mindir, "out": out, "stdout": result.stdout, "eval": rows,
            "eval_summary": report, "offline": offline_rows, "offline_summary": offline_report}


def test_evaluate_scores_a_counter_alone_with_its_own_decisions(counted, mini_librimix):
    from src.data.dataset import open_utterances
    from src.runtime.checkpoint import model_config
    from src.tasks import load_counter
    cfg = model_config(counted["ckpt"])
    counter = load_counter(counted["ckpt"], {2: cfg})
    want = [(utt["key"], str(count), str(counter(utt["mix"])))
            for count in (2, 3) for utt in open_utterances(os.path.join(mini_librimix, f"Libri{count}Mix"), 8000)]
    assert [(r["key"], r["num_speakers"], r["found"]) for r in counted["eval"]] == want
    assert {true for _, true, _ in want} == {"2", "3"}
    summary, total = counted["eval_summary"]["summary"], len(want)
    right = sum(found == true for _, true, found in want)
    assert summary["count"] == total and summary["correct"] == right
    assert summary["accuracy"] == pytest.approx(right / total) and summary["failed"] == 0
    assert sum(sum(row.values()) for row in summary["confusion"].values()) == total
    assert counted["eval_summary"]["meta"]["data"] == [os.path.join(mini_librimix, f"Libri{n}Mix") for n in (2, 3)]


def test_offline_pipeline_counts_as_evaluate_with_the_networks_logits(counted):
    from src.inference.network import NetworkClassifier
    from src.inference.offline import read_index, read_inputs
    from src.runtime.checkpoint import load_model
    assert "input length: any" in counted["stdout"] and "Speaker counting accuracy: " in counted["stdout"]
    assert ([(r["key"], r["num_speakers"], r["found"]) for r in counted["offline"]]
            == [(r["key"], r["num_speakers"], r["found"]) for r in counted["eval"]])
    ours, theirs = counted["offline_summary"]["summary"], counted["eval_summary"]["summary"]
    assert ours["confusion"] == theirs["confusion"] and ours["accuracy"] == theirs["accuracy"]
    bins = counted["out"] / "infer" / "bins"
    index = read_index(bins)
    assert index["task"] == "counting" and len(index["utterances"]) == len(counted["eval"])
    assert len(index["bins"]) > len(index["utterances"])       # mixtures longer than 1 s: several windows
    network = NetworkClassifier(load_model(counted["ckpt"])[0])
    for name, info in index["bins"].items():
        (features,) = read_inputs(bins, info)
        stored = np.fromfile(counted["out"] / "infer" / "results" / name, dtype="<f4").reshape(1, 2)
        np.testing.assert_allclose(stored, network(features), atol=1e-5)


def test_counter_stages_refuse_what_does_not_apply(counted, trained_counter):
    import evaluate
    import export
    import postprocess
    import preprocess
    from src.evaluation.report import EvaluationError
    from src.export import ExportError
    from src.inference.offline import OfflineInferenceError
    ckpt, folder = trained_counter
    out = counted["out"]
    with pytest.raises(EvaluationError, match="is a speaker-counting model; give it alone"):
        evaluate.main(["--model-path", ckpt, "--count-model", ckpt, "--out-dir", str(out / "e2")])
    with pytest.raises(ExportError, match="a speaker-counting network is exported with a dynamic frame axis only"):
        export.main(["--ckpt", ckpt, "--file-name", str(out / "fixed"), "--length", "100"])
    with pytest.raises(OfflineInferenceError, match="--fixed-length 8000: counting graphs take any number of frames"):
        preprocess.main(["--infer-bins", str(out / "b2"), "-c", os.path.join(folder, "config.yaml"),
                         "--fixed-length", "8000"])
    with pytest.raises(OfflineInferenceError, match="a counting index reads the mixtures recorded in"):
        postprocess.main(["--bin-dir", str(out / "infer" / "bins"), "--result-dir", str(out / "infer" / "results"),
                          "--out-dir", str(out / "r2"), "--data-dir", str(out)])


def _tiny_separator(folder):
    """A random-weight 2-speaker SWave checkpoint."""
    from mindspore import nn

    from src.models import build_model
    from src.runtime.checkpoint import config_meta, save_training_checkpoint
    cfg = load_config(os.path.join(ROOT, "configs/demo.yaml"), ["model.N=16", "model.H=16", "model.R=1",
                                                               f"experiment_dir={folder}"])
    net = build_model(cfg)
    path = str(folder / "c2.ckpt")
    save_training_checkpoint(path, nn.Adam(net.trainable_params()), config_meta(cfg), network=net)
    return path
