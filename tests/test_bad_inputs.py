"""Hostile but ordinary mistakes, one table row each (issue #14): the entry script's command
line, the exit status, a fragment its message must contain and what must not exist afterwards.

Entry scripts run in-process through `run_main` (as `python X.py` does), so the rows are cheap:
every one fails before a graph is compiled, except the silent-validation row, which trains one
epoch of a tiny SWave. Placeholders in the rows: {out} a fresh folder per row, {file} an existing
regular file, {cfg} the demo config, {train} / {valid} tiny MindRecord splits, {silent_valid} a
validation split with an all-zero source, {silent_split} its audio folder, {broken_split} one
with an unreadable file, {truncated} a split whose shard was cut to {truncated_bytes} bytes,
{ckpt} a tiny random-weight checkpoint, {rec} a folder with `rec.wav` and a silent `rec_s1.wav`,
{existing} a folder with an earlier output of `rec_s1.wav`, {bins} an empty bins folder.
"""
import importlib
import os
import shutil
import stat
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from src.cli import run_main
from src.data.layout import find_splits

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["model.N=16", "model.H=16", "model.R=1", "segment=0.5", "train.batch_size=2", "train.epochs=1",
        "data.train={train}", "data.valid={valid}", "experiment_dir={out}/exp"]


def train_args(*overrides):
    return ["-c", "{cfg}", *TINY, *overrides]


# (id, script, arguments, exit status, fragment of stderr, paths that must not exist afterwards)
CASES = [
    # 1: a silent source: preprocess warns (or refuses), training keeps the epoch and goes on
    ("preprocess-silent-source-warns", "preprocess",
     ["--data-dir", "{silent_split}", "--out-dir", "{out}/mr", "--split", "valid"], 0,
     "s2/{silent_key}.wav: silent source", []),
    ("preprocess-refuse-silent", "preprocess",
     ["--data-dir", "{silent_split}", "--out-dir", "{out}/mr", "--split", "valid", "--refuse-silent"], 2,
     "error: {silent_split}/s2/{silent_key}.wav: silent source", ["{out}/mr"]),
    ("train-silent-validation-source", "train", train_args("data.valid={silent_valid}"), 0,
     "validation: {silent_key} skipped (a reference is all zeros", []),
    # 2: config typos and nonsense values
    ("config-unknown-key", "train", train_args("train.lrr=1"), 2, "train.lrr: unknown key, did you mean train.lr?",
     ["{out}/exp"]),
    ("config-unknown-model-key", "train", train_args("model.CC=3"), 2, "model.CC: unknown key, did you mean model.C?",
     ["{out}/exp"]),
    ("config-negative-lr", "train", train_args("train.lr=-1"), 2, "train.lr: must be a number > 0, got -1",
     ["{out}/exp"]),
    ("config-negative-epochs", "train", train_args("train.epochs=-1"), 2, "train.epochs: must be an integer >= 1",
     ["{out}/exp"]),
    ("config-batch-not-a-number", "train", train_args("train.batch_size=abc"), 2,
     "train.batch_size: must be an integer >= 1, got 'abc'", ["{out}/exp"]),
    ("config-speaker-counts-without-speech", "train", train_args("data.speaker_counts=[1,2]"), 2,
     "data.speaker_counts: only used when training from data.train_speech", ["{out}/exp"]),
    ("config-speed-perturb-without-speech", "train", train_args("data.speed_perturb=0.1"), 2,
     "data.speed_perturb: only used when training from data.train_speech", ["{out}/exp"]),
    ("config-speaker-counts-above-C", "train",
     train_args("data.train_speech={speech}", "data.speaker_counts=[2,3]"), 2,
     "data.speaker_counts: [2, 3] has more speakers than the model's outputs (model.C=2)", ["{out}/exp"]),
    ("config-counter-hop-above-half-window", "train", ["-c", "{counter_cfg}", "model.hop=200", "experiment_dir={out}/exp"],
     2, "model.hop: 200 is more than half of model.n_fft=256", ["{out}/exp"]),
    ("config-section-replaced", "train", train_args("train=5"), 2, "train: must be a section", ["{out}/exp"]),
    ("config-fractional-batch", "train", train_args("train.batch_size=2.5"), 2,
     "train.batch_size: must be an integer >= 1, got 2.5", ["{out}/exp"]),
    ("config-file-missing", "train", ["-c", "{out}/nope.yaml"], 2, "config file not found", ["{out}/exp"]),
    # 3: evaluate.py's out-dir is checked before the evaluation
    ("evaluate-out-dir-is-a-file", "evaluate",
     ["--model-path", "{ckpt}", "--data-dir", "{valid}", "--out-dir", "{file}"], 2,
     "error: --out-dir {file}: is a file, not a folder", []),
    ("evaluate-out-dir-under-a-file", "evaluate",
     ["--model-path", "{ckpt}", "--data-dir", "{valid}", "--out-dir", "{file}/eval"], 2,
     "error: --out-dir {file}/eval: {file} is a file, not a folder", []),
    # 4: separate.py never writes over an input, even with --force
    ("separate-force-into-input-folder", "separate",
     ["{rec}", "--model-path", "{ckpt}", "--out-dir", "{rec}", "--force"], 1,
     "rec.wav: its outputs would overwrite the input", ["{rec}/rec_s2.wav", "{rec}/rec_s1_s1.wav"]),
    # 5: output locations checked up front
    ("preprocess-out-dir-is-a-file", "preprocess", ["--data-dir", "{silent_split}", "--out-dir", "{file}"], 2,
     "--out-dir", []),
    ("preprocess-infer-bins-is-a-file", "preprocess", ["--data-dir", "{valid}", "--infer-bins", "{file}"], 2,
     "--infer-bins", []),
    ("separate-out-dir-is-a-file", "separate", ["{rec}/rec.wav", "--model-path", "{ckpt}", "--out-dir", "{file}"], 2,
     "is a file, not a folder", []),
    ("export-file-name-under-a-file", "export", ["--ckpt", "{ckpt}", "--file-name", "{file}/model"], 2,
     "is a file, not a folder", []),
    ("infer-results-over-inputs", "infer", ["--mindir", "{file}", "--bin-dir", "{bins}", "--result-dir", "{bins}"], 2,
     "is --bin-dir", []),
    ("postprocess-out-dir-is-a-file", "postprocess",
     ["--bin-dir", "{bins}", "--result-dir", "{bins}", "--out-dir", "{file}"], 2, "is a file, not a folder", []),
    ("train-experiment-dir-is-a-file", "train", train_args("experiment_dir={file}"), 2,
     "experiment_dir", []),
    # 6: user errors of train.py are one line, no traceback
    ("train-missing-mindrecord", "train", train_args("data.train={out}/none.mindrecord0"), 2,
     "none.mindrecord0: missing (no such file or folder)", ["{out}/exp/checkpoints"]),
    ("train-speaker-count-mismatch", "train", train_args("model.C=3"), 2,
     "the split has 2 sources per mixture but the model separates 3", ["{out}/exp/checkpoints"]),
    ("train-batch-larger-than-split", "train", train_args("train.batch_size=16"), 2,
     "fewer than one batch of 16", ["{out}/exp/checkpoints"]),
    ("train-empty-data-path", "train", train_args("data.train="), 2, "no MindRecord split given",
     ["{out}/exp/checkpoints"]),
    # 7: a truncated shard is named
    ("evaluate-truncated-shard", "evaluate", ["--model-path", "{ckpt}", "--data-dir", "{truncated}",
                                              "--out-dir", "{out}/eval"], 2,
     "{truncated}: {truncated_bytes} bytes, but preprocess.py wrote", ["{out}/eval"]),
    # the smaller ones
    ("evaluate-data-dir-missing", "evaluate",
     ["--model-path", "{ckpt}", "--data-dir", "{out}/nowhere", "--out-dir", "{out}/eval"], 2,
     "nowhere: missing (no such file or folder)", ["{out}/eval"]),
    ("preprocess-path-said-once", "preprocess",
     ["--data-dir", "{silent_split}", "--out-dir", "{out}/mr", "--split", "valid", "--num-speakers", "3"], 2,
     "error: {silent_split}: has 2 source folders", ["{out}/mr"]),        # the path once
    # cases that already worked, kept working
    ("preprocess-unreadable-audio-named", "preprocess",
     ["--data-dir", "{broken_split}", "--out-dir", "{out}/mr", "--split", "valid"], 2,
     "error: {broken_split}/s1/{silent_key}.wav: cannot be read", ["{out}/mr"]),
    ("evaluate-checkpoint-missing", "evaluate", ["--model-path", "{out}/none.ckpt", "--data-dir", "{valid}"], 2,
     "none.ckpt: checkpoint not found", []),
    ("separate-count-model-missing", "separate",
     ["{rec}/rec.wav", "--model-path", "{ckpt}", "--count-model", "{out}/none.ckpt", "--out-dir", "{out}/sep"], 2,
     "none.ckpt: checkpoint not found", ["{out}/sep"]),
    ("separate-existing-output-without-force", "separate",
     ["{rec}/rec_s1.wav", "--model-path", "{ckpt}", "--out-dir", "{existing}"], 1,
     "already exists (use --force to overwrite)", []),
]


@pytest.fixture(scope="module")
def places(tmp_path_factory, mini_librimix, tiny_data):
    """The placeholders of CASES (see the module docstring)."""
    import preprocess
    tmp = tmp_path_factory.mktemp("bad_inputs")
    utterances = find_splits(os.path.join(mini_librimix, "Libri2Mix"), split="valid")["valid"].utterances[:3]
    silent_split, broken_split = tmp / "silent_split", tmp / "broken_split"
    for split in (silent_split, broken_split):
        for utt in utterances:
            for path in (utt.mix, *utt.sources):
                folder = split / os.path.basename(os.path.dirname(path))
                folder.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, folder)
    key = utterances[0].key
    audio, rate = sf.read(silent_split / "s2" / f"{key}.wav")
    sf.write(silent_split / "s2" / f"{key}.wav", np.zeros_like(audio), rate)
    (broken_split / "s1" / f"{key}.wav").write_bytes(b"RIFF....WAVEjunk")
    assert preprocess.main(["--data-dir", str(silent_split), "--out-dir", str(tmp / "silent_mr"),
                            "--split", "valid", "--num-shards", "1"]) == 0
    truncated = tmp / "truncated"
    shutil.copytree(tiny_data, truncated)
    with open(truncated / "valid.mindrecord0", "r+b") as f:
        f.truncate(os.path.getsize(truncated / "valid.mindrecord0") // 2)
    truncated_bytes = os.path.getsize(truncated / "valid.mindrecord0")
    rec, existing, bins = tmp / "rec", tmp / "existing", tmp / "bins"
    for folder in (rec, existing, bins):
        folder.mkdir()
    sf.write(rec / "rec.wav", sf.read(utterances[0].mix)[0], rate)
    sf.write(rec / "rec_s1.wav", np.zeros(rate), rate)
    (existing / "rec_s1_s1.wav").write_bytes(b"an earlier output")
    (tmp / "afile").write_text("a regular file")
    return {"cfg": os.path.join(ROOT, "configs/demo.yaml"), "counter_cfg": os.path.join(ROOT, "configs/counter_2_3spk.yaml"), "speech": os.path.join(ROOT, "assets/librispeech_train_8k/train"),
            "train": f"{tiny_data}/train.mindrecord0",
            "valid": f"{tiny_data}/valid.mindrecord0", "silent_valid": str(tmp / "silent_mr" / "valid.mindrecord0"),
            "silent_split": str(silent_split), "broken_split": str(broken_split), "silent_key": key,
            "truncated": str(truncated / "valid.mindrecord0"), "truncated_bytes": truncated_bytes,
            "ckpt": _tiny_checkpoint(tmp), "rec": str(rec), "existing": str(existing), "bins": str(bins),
            "file": str(tmp / "afile")}


def _tiny_checkpoint(folder):
    """A random-weight 2-speaker SWave checkpoint holding its config."""
    from mindspore import nn

    from src.config import load_config
    from src.models import build_model
    from src.runtime.checkpoint import config_meta, save_training_checkpoint
    cfg = load_config(os.path.join(ROOT, "configs/demo.yaml"),
                      ["model.N=16", "model.H=16", "model.R=1", f"experiment_dir={folder}"])
    net = build_model(cfg)
    path = str(folder / "tiny.ckpt")
    save_training_checkpoint(path, nn.Adam(net.trainable_params()), config_meta(cfg),
                             network=net)
    return path


def run_entry(script, args, capsys):
    """`python <script>.py ARGS` in-process -> (exit status, stderr)."""
    module = importlib.import_module(script)
    saved = sys.argv
    sys.argv = [f"{script}.py", *args]
    try:
        with pytest.raises(SystemExit) as done:
            run_main(module.main)
    finally:
        sys.argv = saved
    return done.value.code, capsys.readouterr().err


@pytest.mark.parametrize("name, script, args, status, fragment, absent", CASES, ids=[c[0] for c in CASES])
def test_bad_input(name, script, args, status, fragment, absent, places, tmp_path, capsys):
    fill = {**places, "out": str(tmp_path)}
    before = {p: open(p, "rb").read() for p in (os.path.join(places["rec"], n) for n in ("rec.wav", "rec_s1.wav"))}
    code, err = run_entry(script, [a.format(**fill) for a in args], capsys)
    assert code == status, err
    assert fragment.format(**fill) in err, err
    assert "Traceback" not in err
    if status == 2:
        assert err.strip().splitlines()[-1].startswith("error: ") and err.count("error: ") == 1, err
    for path in absent:
        assert not os.path.exists(path.format(**fill)), path
    assert before == {p: open(p, "rb").read() for p in before}          # no input is ever written over
    assert open(places["file"]).read() == "a regular file"
    if name == "train-silent-validation-source":                        # the epoch is kept, readable by others
        epoch = os.path.join(tmp_path, "exp", "checkpoints", "epoch_0001.ckpt")
        umask = os.umask(0)
        os.umask(umask)
        assert stat.S_IMODE(os.stat(epoch).st_mode) == 0o666 & ~umask


def test_debug_shows_the_traceback(places):
    """`--debug` (or GDPRNN_DEBUG=1) turns the one-line error back into a traceback."""
    command = [sys.executable, os.path.join(ROOT, "train.py"), "-c", places["cfg"], "train.lrr=1"]
    plain = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    debug = subprocess.run(command + ["--debug"], capture_output=True, text=True, cwd=ROOT)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr and "train.lrr" in plain.stderr
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "ConfigError: train.lrr" in debug.stderr


def test_distributed_preflight_refuses_bad_config(places):
    """scripts/run_distribute_train.sh checks the config before starting any worker."""
    run = subprocess.run(["bash", os.path.join(ROOT, "scripts/run_distribute_train.sh"), "2", places["cfg"],
                          "train.batch_size=abc"], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 2 and "train.batch_size: must be an integer >= 1, got 'abc'" in run.stderr
    assert "Traceback" not in run.stderr


def test_a_run_stopped_during_validation_validates_that_epoch_first(places, tmp_path, monkeypatch):
    """The epoch checkpoint written before validation says validation is pending; re-running
    validates that epoch before anything else (then best.ckpt appears)."""
    from src.config import load_config
    from src.tasks.separation import SeparationTask
    from src.runtime import checkpoint as ckpt
    from src.training.trainer import train

    def config():
        return load_config(places["cfg"], [a.format(**places, out=str(tmp_path)) for a in TINY])

    def killed(*_):
        raise KeyboardInterrupt
    monkeypatch.setattr(SeparationTask, "validate", killed)
    with pytest.raises(KeyboardInterrupt):
        train(config())
    folder = ckpt.checkpoint_dir(config().experiment_dir)
    _, meta = ckpt.read_checkpoint(os.path.join(folder, "epoch_0001.ckpt"))
    assert meta["state"]["validation_pending"] and "valid_si_snri" not in meta["state"]["history"][0]
    monkeypatch.undo()
    state = train(config())
    assert not state["validation_pending"] and state["best_epoch"] == 1
    assert "valid_si_snri" in state["history"][0] and os.path.isfile(os.path.join(folder, "best.ckpt"))
