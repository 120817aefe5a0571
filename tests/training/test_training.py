"""Trainer: exact resume, --restart, non-finite steps skipped, mismatched checkpoints refused."""
import glob
import json
import os
import re
import shutil

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

from src.config import load_config
from src.runtime import checkpoint as ckpt
from src.training.lr_schedule import PlateauLR, build_lr_schedule
from src.training.step import TrainStep
from src.training import trainer as trainer_module
from src.training.trainer import TrainingError, train

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tiny_config(data_dir, exp_dir, *overrides):
    return load_config(os.path.join(ROOT, "configs/demo.yaml"), [
        f"experiment_dir={exp_dir}", f"data.train={data_dir}/train.mindrecord0",
        f"data.valid={data_dir}/valid.mindrecord0", "model.N=16", "model.H=16", "model.R=2",
        "segment=0.5", "train.batch_size=2", "train.epochs=2", "train.keep_checkpoints=2",
        "train.lr_decay.type=plateau", "train.lr_decay.patience=1", *overrides])


def parameters(exp_dir, epoch):
    params, meta = ckpt.read_checkpoint(os.path.join(ckpt.checkpoint_dir(exp_dir), f"epoch_{epoch:04d}.ckpt"))
    return {k: v.asnumpy() for k, v in params.items()}, meta


class CountingTrainStep(TrainStep):
    """TrainStep that counts the steps it is asked to take (in `CountingTrainStep.calls`)."""
    calls = 0

    def __call__(self, *batch):
        CountingTrainStep.calls += 1
        return super().__call__(*batch)


def train_counting(cfg, **kwargs):
    """train(cfg) -> (state, the number of training steps this call took)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer_module, "TrainStep", CountingTrainStep)
        before = CountingTrainStep.calls
        state = train(cfg, **kwargs)
        return state, CountingTrainStep.calls - before


def file_identity(path):
    """What any rewrite of `path` changes (a checkpoint is written to a temporary file and renamed)."""
    info = os.stat(path)
    with open(path, "rb") as f:
        return info.st_ino, info.st_mtime_ns, f.read()


def log_lines(exp_dir, pattern):
    with open(os.path.join(exp_dir, "train.log"), encoding="utf-8") as f:
        return [line for line in f if re.search(pattern, line)]


@pytest.fixture(scope="module")
def runs(tiny_data, tmp_path_factory):
    """An uninterrupted 2-epoch run, and a run stopped after epoch 1 and resumed by re-running
    (with the number of steps each call took, and epoch 1's checkpoint before the resume)."""
    tmp = tmp_path_factory.mktemp("exp")
    full, resumed = str(tmp / "full"), str(tmp / "resumed")
    state_full, steps_full = train_counting(tiny_config(tiny_data, full))
    state_first, steps_first = train_counting(tiny_config(tiny_data, resumed, "train.epochs=1"))
    first_ckpt = os.path.join(ckpt.checkpoint_dir(resumed), "epoch_0001.ckpt")
    first_identity = file_identity(first_ckpt)
    state_resumed, steps_resumed = train_counting(tiny_config(tiny_data, resumed))
    return dict(full=full, resumed=resumed, state_full=state_full, state_first=state_first,
                state_resumed=state_resumed, steps=(steps_full, steps_first, steps_resumed),
                first_identity=first_identity)


def test_resume_is_bit_identical(runs):
    full, resumed = runs["full"], runs["resumed"]
    state_full, state_first, state_resumed = runs["state_full"], runs["state_first"], runs["state_resumed"]
    assert state_first["epoch"] == 1 and state_resumed["epoch"] == 2
    assert [h["train_loss"] for h in state_resumed["history"]] == [h["train_loss"] for h in state_full["history"]]
    assert state_resumed["history"][1]["valid_si_snri"] == state_full["history"][1]["valid_si_snri"]
    params_full, meta_full = parameters(full, 2)
    params_resumed, meta_resumed = parameters(resumed, 2)
    assert params_full.keys() == params_resumed.keys()
    assert any(k.startswith("moment1.") for k in params_full)          # optimizer state is saved
    for name in params_full:
        np.testing.assert_array_equal(params_full[name], params_resumed[name], err_msg=name)
    assert meta_full["lr_schedule"] == meta_resumed["lr_schedule"]
    params_first, _ = parameters(resumed, 1)                         # the weights did change
    assert any(not np.array_equal(params_first[n], params_full[n]) for n in params_full if "." in n)


def test_resume_continues_where_the_run_stopped(runs):
    """What only a resume does (a silent retrain from scratch would give the same final weights)."""
    resumed, state_first, state_resumed = runs["resumed"], runs["state_first"], runs["state_resumed"]
    steps_full, steps_first, steps_resumed = runs["steps"]
    per_epoch = 4                                                      # 8 mixtures, batch 2
    assert (steps_full, steps_first, steps_resumed) == (2 * per_epoch, per_epoch, per_epoch)  # epoch 1 not rerun
    assert state_first["step"] == per_epoch and state_resumed["step"] == 2 * per_epoch      # the counter went on
    assert state_resumed["history"][0] == state_first["history"][0]    # epoch 1's record (and its times) kept
    assert len(log_lines(resumed, r"resuming from .*epoch_0001\.ckpt \(epoch 1, step 4\)")) == 1
    assert len(log_lines(resumed, r"\d epoch 1: ")) == 1              # logged by the first call only
    assert len(log_lines(resumed, r"\d epoch 2: ")) == 1
    assert file_identity(os.path.join(ckpt.checkpoint_dir(resumed), "epoch_0001.ckpt")) == runs["first_identity"]
    _, meta = parameters(resumed, 2)
    assert meta["state"]["step"] == 2 * per_epoch and meta["state"]["epoch"] == 2


def test_resume_with_a_changed_lr_starts_the_new_schedule(runs, tiny_data, tmp_path):
    """Stored schedule state must not override a changed train.lr / train.lr_decay (it did: the
    stored lr won silently); the new schedule is where it would be at the resumed epoch."""
    exp = str(tmp_path / "changed")
    shutil.copytree(runs["resumed"], exp)
    state, steps = train_counting(tiny_config(tiny_data, exp, "train.epochs=3", "train.lr_decay.type=multistep",
                                              "train.lr_decay.milestones=[3]", "train.lr_decay.values=[1e-3,2.5e-4]"))
    assert steps == 4 and state["history"][-1]["lr"] == 2.5e-4
    assert state["history"][:2] == runs["state_resumed"]["history"]
    assert len(log_lines(exp, r"train.lr / train.lr_decay differ from .*epoch_0002\.ckpt's")) == 1


def test_resume_with_a_change_the_schedule_does_not_read_keeps_its_state(runs, tiny_data, tmp_path):
    """train.lr_decay.gamma is not read by the plateau schedule: the stored state (best score, bad
    epochs) goes on, as if nothing had changed, with no "differ" message."""
    exp = str(tmp_path / "unread")
    shutil.copytree(runs["resumed"], exp)
    cfg = tiny_config(tiny_data, exp, "train.epochs=3", "train.lr_decay.gamma=0.5")
    state, steps = train_counting(cfg)
    assert steps == 4 and not log_lines(exp, "differ")
    expected = build_lr_schedule(cfg.train)
    assert isinstance(expected, PlateauLR)
    expected.load_state_dict(parameters(exp, 2)[1]["lr_schedule"])
    expected.step(3, state["history"][-1]["valid_score"])
    assert parameters(exp, 3)[1]["lr_schedule"] == expected.state_dict()


def test_a_checkpoint_from_before_a_config_key_existed_resumes(runs, tiny_data, tmp_path):
    """A stored config lacking a key added since (model.input_rms) is read with the key's default,
    so the run resumes instead of being refused as trained with another model."""
    import yaml
    exp = str(tmp_path / "older")
    shutil.copytree(runs["resumed"], exp)
    path = os.path.join(ckpt.checkpoint_dir(exp), "epoch_0002.ckpt")
    params, meta = ckpt.read_checkpoint(path)
    older = yaml.safe_load(meta["config"])
    del older["model"]["input_rms"]
    ckpt.write_checkpoint(path, params, {**meta, "config": yaml.safe_dump(older)})
    assert ckpt.stored_config(ckpt.read_checkpoint(path)[1]).model.input_rms is None
    state, steps = train_counting(tiny_config(tiny_data, exp, "train.epochs=3"))
    assert steps == 4 and state["epoch"] == 3


def test_experiment_files(runs):
    full = runs["full"]
    names = sorted(os.path.basename(p) for p in glob.glob(os.path.join(ckpt.checkpoint_dir(full), "*")))
    assert names == ["best.ckpt", "epoch_0001.ckpt", "epoch_0002.ckpt"]
    assert os.path.isfile(os.path.join(full, "config.yaml")) and os.path.isfile(os.path.join(full, "history.json"))
    cfg = load_config(os.path.join(full, "config.yaml"))
    assert cfg.model.N == 16 and cfg.experiment_dir == full
    net, stored = ckpt.load_model(os.path.join(ckpt.checkpoint_dir(full), "best.ckpt"))
    assert stored.model.R == 2 and not net.training


def test_finished_run_does_not_train_again_and_restart_starts_over(runs, tiny_data):
    full = runs["full"]
    last = os.path.join(ckpt.checkpoint_dir(full), "epoch_0002.ckpt")
    identities = {name: file_identity(os.path.join(ckpt.checkpoint_dir(full), name))
                  for name in ("epoch_0001.ckpt", "epoch_0002.ckpt", "best.ckpt")}
    epoch_lines = len(log_lines(full, r"\d epoch \d: "))
    state, steps = train_counting(tiny_config(tiny_data, full))  # resumes at epoch 2 of 2: nothing to do
    assert state["epoch"] == 2 and len(state["history"]) == 2 and steps == 0
    assert state == runs["state_full"]
    assert len(log_lines(full, r"resuming from .*epoch_0002\.ckpt \(epoch 2, step 8\)")) == 1
    assert len(log_lines(full, r"\d epoch \d: ")) == epoch_lines  # no epoch ran
    for name, identity in identities.items():                         # nothing was written again
        assert file_identity(os.path.join(ckpt.checkpoint_dir(full), name)) == identity, name
    state = train(tiny_config(tiny_data, full, "train.epochs=1"), restart=True)
    assert state["epoch"] == 1 and len(state["history"]) == 1
    assert glob.glob(os.path.join(full, "previous_runs", "*", "checkpoints", "epoch_0002.ckpt"))
    assert not os.path.exists(last)


def test_released_model_has_the_weights_without_the_optimizer_state(runs, tmp_path):
    import subprocess
    import sys
    best = os.path.join(ckpt.checkpoint_dir(runs["full"]), "best.ckpt")
    out = str(tmp_path / "released.ckpt")
    done = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "release_model.py"), best, out],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    params, meta = ckpt.read_checkpoint(out)
    full, full_meta = ckpt.read_checkpoint(best)
    assert not any(n.startswith(ckpt.OPTIMIZER_STATE) for n in params) and meta == full_meta
    assert any(n.startswith("moment1.") for n in full) and os.path.getsize(out) < os.path.getsize(best) / 2
    for name, value in params.items():
        np.testing.assert_array_equal(value.asnumpy(), full[name].asnumpy(), err_msg=name)
    net, _ = ckpt.load_model(out)
    assert {p.name for p in net.get_parameters()} == set(params)


def test_release_changes_the_stored_config_and_keeps_the_old_file_on_a_bad_change(runs, tmp_path):
    import subprocess
    import sys
    best = os.path.join(ckpt.checkpoint_dir(runs["full"]), "best.ckpt")
    out = str(tmp_path / "released.ckpt")

    def release(*overrides):
        return subprocess.run([sys.executable, os.path.join(ROOT, "tools", "release_model.py"), best, out,
                               *overrides], capture_output=True, text=True, cwd=ROOT)

    done = release("model.input_rms=0.07")
    assert done.returncode == 0, done.stderr
    _, cfg = ckpt.load_model(out)
    assert cfg.model.input_rms == 0.07 and ckpt.load_model(best)[1].model.input_rms is None
    before = open(out, "rb").read()
    failed = release("model.N=48")                  # the parameters no longer fit: refused
    assert failed.returncode != 0 and "does not match the network" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert open(out, "rb").read() == before and os.listdir(tmp_path) == ["released.ckpt"]


def test_release_averages_the_weights_of_the_last_epochs(runs, tmp_path, load_tool):
    tool = load_tool("release_model")
    folder = ckpt.checkpoint_dir(runs["resumed"])
    second, out = os.path.join(folder, "epoch_0002.ckpt"), str(tmp_path / "averaged.ckpt")
    assert tool.main([second, out, "--average", "2"]) == 0
    params, meta = ckpt.read_checkpoint(out)
    (first_params, _), (second_params, second_meta) = (ckpt.read_checkpoint(os.path.join(folder, name))
                                                        for name in ("epoch_0001.ckpt", "epoch_0002.ckpt"))
    assert meta == {**second_meta, "averaged": ["epoch_0002.ckpt", "epoch_0001.ckpt"]}
    assert set(params) == {n for n in second_params if not n.startswith(ckpt.OPTIMIZER_STATE)}
    changed = 0
    for name, value in params.items():
        mean = (first_params[name].asnumpy() + second_params[name].asnumpy()) / 2
        np.testing.assert_allclose(value.asnumpy(), mean, rtol=1e-6, atol=1e-7, err_msg=name)
        changed += not np.array_equal(value.asnumpy(), second_params[name].asnumpy())
    assert changed and ckpt.load_model(out)[0] is not None
    with pytest.raises(ckpt.CheckpointError, match="not an epoch checkpoint"):
        tool.main([os.path.join(folder, "best.ckpt"), out, "--average", "2"])
    with pytest.raises(ckpt.CheckpointError, match="2 earlier epoch checkpoints wanted beside it, 1 found"):
        tool.main([second, out, "--average", "3"])
    other, dropped = tmp_path / "other", sorted(params)[0]          # epoch 1 of another network
    ckpt.write_checkpoint(str(other / "epoch_0001.ckpt"), {n: p for n, p in first_params.items() if n != dropped}, {})
    shutil.copyfile(second, other / "epoch_0002.ckpt")
    with pytest.raises(ckpt.CheckpointError, match=f"not the same network .*only in one of them: {re.escape(dropped)}"):
        tool.main([str(other / "epoch_0002.ckpt"), out, "--average", "2"])


def test_training_curve_joins_a_continued_run_to_the_one_it_started_from(runs, tmp_path, load_tool):
    tool = load_tool("plot_training")
    run = runs["resumed"]                                           # epochs 1 and 2
    first = os.path.join(ckpt.checkpoint_dir(run), "epoch_0001.ckpt")
    label, _, history = tool.joined_run(f"{first}+{run}")       # a checkpoint, then a folder
    with open(os.path.join(run, "history.json"), encoding="utf-8") as f:
        scores = [record["valid_si_snri"] for record in json.load(f)["history"]]
    assert label == "resumed (C=2)" and len(scores) == 2 and [record["epoch"] for record in history] == [1, 2, 3]
    assert [record["valid_si_snri"] for record in history] == scores[:1] + scores
    out = str(tmp_path / "curve.png")
    assert tool.main([run, f"{first}+{run}", "--out", out]) == 0 and os.path.getsize(out) > 0
    with pytest.raises(tool.UserError, match="no history.json"):
        tool.joined_run(f"{first}+{tmp_path}")


def test_mismatched_checkpoints_are_refused(runs, tiny_data):
    full = runs["full"]
    best = os.path.join(ckpt.checkpoint_dir(full), "best.ckpt")
    other = tiny_config(tiny_data, full, "model.R=1")
    with pytest.raises(ckpt.CheckpointError, match="does not have"):
        ckpt.load_model(best, other)                            # extra layer in the checkpoint
    with pytest.raises(ckpt.CheckpointError, match="wrong shape"):
        ckpt.load_model(best, tiny_config(tiny_data, full, "model.H=8"))
    with pytest.raises(TrainingError, match="--restart"):
        train(tiny_config(tiny_data, full, "model.H=8", "train.epochs=3"))
    with pytest.raises(ckpt.CheckpointError, match="cannot be read"):
        bad = os.path.join(str(tiny_data), "broken.ckpt")
        with open(bad, "wb") as f:
            f.write(b"not a checkpoint")
        ckpt.read_checkpoint(bad)


class _SquaredError(nn.Cell):
    def construct(self, prediction, target):
        return ((prediction - target) ** 2).mean()


class ScriptedTask:
    """A task with a tiny Dense network whose validation scores are given per epoch, to check
    which checkpoints the trainer keeps."""
    name = "separation"           # the config's task (the trainer refuses to resume another one)
    scores = {}

    def build_network(self, cfg):
        ms.set_seed(0)
        return nn.Dense(3, 1)

    def build_loss(self, cfg):
        class Loss(nn.Cell):
            def construct(self, prediction, target, lengths):
                return ((prediction - target) ** 2).mean()
        return Loss()

    def train_batches(self, cfg, epoch, num_shards=1, shard_id=0):
        self.epoch = epoch
        rng = np.random.default_rng(epoch)
        for _ in range(2):
            x = rng.standard_normal((4, 3)).astype(np.float32)
            yield x, x.sum(axis=1, keepdims=True), np.full(4, 3, np.int32)

    def validate(self, net, cfg, info=None):
        return {"score": self.scores[self.epoch]}


def scripted_config(exp_dir, epochs, keep):
    return load_config(os.path.join(ROOT, "configs/demo.yaml"), [
        f"experiment_dir={exp_dir}", f"train.epochs={epochs}", f"train.keep_checkpoints={keep}",
        "train.lr=0.01", "train.lr_decay.type=constant"])


@pytest.fixture
def scripted(monkeypatch):
    monkeypatch.setattr(trainer_module, "get_task", lambda name: ScriptedTask())
    monkeypatch.setattr(ScriptedTask, "scores", {1: 1.0, 2: 3.0, 3: 2.0, 4: 2.5, 5: 0.5, 6: 4.0})
    return ScriptedTask


def test_checkpoints_kept_best_is_the_best_validation_and_a_failed_save_keeps_the_last(scripted, tmp_path,
                                                                                        monkeypatch):
    exp = str(tmp_path / "exp")
    folder = ckpt.checkpoint_dir(exp)
    names = lambda: sorted(os.listdir(folder))  # noqa: E731
    state = train(scripted_config(exp, 5, keep=2))
    assert names() == ["best.ckpt", "epoch_0004.ckpt", "epoch_0005.ckpt"]        # pruned to the last 2
    assert state["best_epoch"] == 2 and state["best_score"] == 3.0
    best_params, best_meta = ckpt.read_checkpoint(os.path.join(folder, "best.ckpt"))
    assert best_meta["state"]["epoch"] == 2 and best_meta["state"]["best_score"] == 3.0
    assert [h["valid_score"] for h in best_meta["state"]["history"]] == [1.0, 3.0]
    last_params, _ = ckpt.read_checkpoint(os.path.join(folder, "epoch_0005.ckpt"))
    assert not np.array_equal(best_params["weight"].asnumpy(), last_params["weight"].asnumpy())
    with open(os.path.join(exp, "history.json")) as f:
        assert json.load(f)["best_epoch"] == 2

    # epoch 6 (the new best) fails while its checkpoint is written: nothing earlier is damaged
    kept = {name: file_identity(os.path.join(folder, name)) for name in names()}
    real_save = ms.save_checkpoint

    def interrupted_save(params, path, **kwargs):
        real_save(params, path, **kwargs)
        with open(path, "r+b") as f:      # a half-written file, then the process dies
            f.truncate(os.path.getsize(path) // 2)
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt.ms, "save_checkpoint", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        train(scripted_config(exp, 6, keep=2))
    monkeypatch.undo()
    monkeypatch.setattr(trainer_module, "get_task", lambda name: ScriptedTask())
    monkeypatch.setattr(ScriptedTask, "scores", {6: 4.0})
    assert ckpt.latest_checkpoint(exp).endswith("epoch_0005.ckpt")
    for name, identity in kept.items():
        assert file_identity(os.path.join(folder, name)) == identity, name
    ckpt.read_checkpoint(os.path.join(folder, "epoch_0005.ckpt"))                # still readable
    state = train(scripted_config(exp, 6, keep=2))                                # and resumable
    assert state["epoch"] == 6 and state["best_epoch"] == 6
    assert [h["epoch"] for h in state["history"]] == [1, 2, 3, 4, 5, 6]
    assert names() == ["best.ckpt", "epoch_0005.ckpt", "epoch_0006.ckpt"]


def test_non_finite_steps_are_skipped():
    ms.set_context(mode=ms.GRAPH_MODE)
    net = nn.Dense(3, 1)
    step = TrainStep(net, _SquaredError(), nn.Adam(net.trainable_params(), 0.1), clip_grad_norm=1.0)
    before = {p.name: p.asnumpy().copy() for p in step.optimizer.get_parameters()}
    x, y = np.ones((2, 3), np.float32), np.ones((2, 1), np.float32)
    loss, updated = step(ms.Tensor(x), ms.Tensor(np.full_like(y, np.nan)))
    assert not bool(updated.asnumpy()) and np.isnan(loss.asnumpy())
    for p in step.optimizer.get_parameters():   # weights, moments and step counter untouched
        np.testing.assert_array_equal(p.asnumpy(), before[p.name], err_msg=p.name)
    loss, updated = step(ms.Tensor(x), ms.Tensor(y))
    assert bool(updated.asnumpy())
    assert not np.array_equal(net.weight.asnumpy(), before["weight"])


def test_enhancement_resume_is_bit_identical_with_dropout(tmp_path):
    """The R-Transformer recipe trains through the same loop; dropout masks survive a resume."""
    def config(exp, *extra):
        return load_config(os.path.join(ROOT, "configs/rt_demo.yaml"), [
            f"experiment_dir={exp}", "model.dropout=0.1", "model.emb_dropout=0.1", "model.d_model=16",
            "train.epochs=2", "train.valid_every=2", "train.valid_max_utterances=1",
            "train.valid_pesq_stoi=false", *extra])
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    state_full = train(config(full))
    train(config(resumed, "train.epochs=1"))
    state_resumed = train(config(resumed))
    assert [h["train_loss"] for h in state_resumed["history"]] == [h["train_loss"] for h in state_full["history"]]
    params_full, params_resumed = parameters(str(full), 2)[0], parameters(str(resumed), 2)[0]
    assert params_full["emb_dropout.calls"] > 0                          # dropout counters are saved
    for name in params_full:
        np.testing.assert_array_equal(params_full[name], params_resumed[name], err_msg=name)


def test_reproducible_dropout():
    from src.models.layers import ReproducibleDropout
    ms.set_context(mode=ms.GRAPH_MODE)
    dropout = ReproducibleDropout(0.25)
    dropout.set_train(True)
    x = ms.Tensor(np.ones((64, 256), np.float32))
    first, second = dropout(x).asnumpy(), dropout(x).asnumpy()
    assert set(np.unique(first)) == {0.0, np.float32(1 / 0.75)}
    assert abs((first == 0).mean() - 0.25) < 0.01                     # drop rate
    assert not np.array_equal(first, second)                           # a new mask every call
    assert int(dropout.calls.asnumpy()) == 2
    dropout.calls.set_data(ms.Tensor(0, ms.int32))                     # as after loading a checkpoint
    np.testing.assert_array_equal(dropout(x).asnumpy(), first)
    dropout.set_train(False)
    np.testing.assert_array_equal(dropout(x).asnumpy(), x.asnumpy())
