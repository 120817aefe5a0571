"""Trainer: exact resume, --restart, non-finite steps skipped, mismatched checkpoints refused."""
import glob
import os

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

from src.config import load_config
from src.training import checkpoint as ckpt
from src.training.step import TrainStep
from src.training.trainer import TrainingError, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(data_dir, exp_dir, *overrides):
    return load_config(os.path.join(ROOT, "configs/demo.yaml"), [
        f"experiment_dir={exp_dir}", f"data.train={data_dir}/train.mindrecord0",
        f"data.valid={data_dir}/valid.mindrecord0", "model.N=16", "model.H=16", "model.R=2",
        "segment=0.5", "train.batch_size=2", "train.epochs=2", "train.keep_checkpoints=2",
        "train.lr_decay.type=plateau", "train.lr_decay.patience=1", *overrides])


def parameters(exp_dir, epoch):
    params, meta = ckpt.read_checkpoint(os.path.join(ckpt.checkpoint_dir(exp_dir), f"epoch_{epoch:04d}.ckpt"))
    return {k: v.asnumpy() for k, v in params.items()}, meta


@pytest.fixture(scope="module")
def runs(tiny_data, tmp_path_factory):
    """An uninterrupted 2-epoch run, and a run stopped after epoch 1 and resumed by re-running."""
    tmp = tmp_path_factory.mktemp("exp")
    full, resumed = str(tmp / "full"), str(tmp / "resumed")
    state_full = train(tiny_config(tiny_data, full))
    state_first = train(tiny_config(tiny_data, resumed, "train.epochs=1"))
    state_resumed = train(tiny_config(tiny_data, resumed))
    return full, resumed, state_full, state_first, state_resumed


def test_resume_is_bit_identical(runs):
    full, resumed, state_full, state_first, state_resumed = runs
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


def test_experiment_files(runs):
    full = runs[0]
    names = sorted(os.path.basename(p) for p in glob.glob(os.path.join(ckpt.checkpoint_dir(full), "*")))
    assert names == ["best.ckpt", "epoch_0001.ckpt", "epoch_0002.ckpt"]
    assert os.path.isfile(os.path.join(full, "config.yaml")) and os.path.isfile(os.path.join(full, "history.json"))
    cfg = load_config(os.path.join(full, "config.yaml"))
    assert cfg.model.N == 16 and cfg.experiment_dir == full
    net, stored = ckpt.load_model(os.path.join(ckpt.checkpoint_dir(full), "best.ckpt"))
    assert stored.model.R == 2 and not net.training


def test_finished_run_does_not_train_again_and_restart_starts_over(runs, tiny_data):
    full = runs[0]
    before = parameters(full, 2)[0]
    state = train(tiny_config(tiny_data, full))                 # resumes at epoch 2 of 2: nothing to do
    assert state["epoch"] == 2 and len(state["history"]) == 2
    after = parameters(full, 2)[0]
    assert all(np.array_equal(before[k], after[k]) for k in before)
    state = train(tiny_config(tiny_data, full, "train.epochs=1"), restart=True)
    assert state["epoch"] == 1 and len(state["history"]) == 1
    assert glob.glob(os.path.join(full, "previous_runs", "*", "checkpoints", "epoch_0002.ckpt"))


def test_mismatched_checkpoints_are_refused(runs, tiny_data):
    full = runs[0]
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
