"""Config loading, inheritance, overrides and lr schedules."""
import math
import os

import numpy as np
import pytest

from src.config import Config, ConfigError, load_config, save_config
from src.training.lr_schedule import (ConstantLR, MultiStepLR, PlateauLR, StepLR, build_lr_schedule,
                                     schedule_settings)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_base_inheritance_and_overrides(tmp_path):
    cfg = load_config(os.path.join(ROOT, "configs/demo.yaml"),
                      ["train.lr=1e-3", "model.C=3", "data.dynamic_mixing=true", "train.lr_decay.type=plateau"])
    assert cfg.model.N == 32 and cfg.model.C == 3            # demo overrides base, command line overrides demo
    assert cfg.model.input_normalize is False                # inherited from the paper config
    assert cfg.train.lr == pytest.approx(1e-3) and cfg.data.dynamic_mixing is True
    save_config(cfg, str(tmp_path / "resolved.yaml"))
    again = load_config(str(tmp_path / "resolved.yaml"))
    assert again.to_dict() == cfg.to_dict()


def test_bad_overrides_are_explained():
    path = os.path.join(ROOT, "configs/demo.yaml")
    with pytest.raises(ConfigError, match="key=value"):
        load_config(path, ["train.lr"])
    with pytest.raises(ConfigError, match="trian: unknown key, did you mean train"):
        load_config(path, ["trian.lr=1"])
    with pytest.raises(ConfigError, match="not found"):
        load_config("configs/nope.yaml")


def test_every_shipped_config_loads():
    for name in os.listdir(os.path.join(ROOT, "configs")):
        cfg = load_config(os.path.join(ROOT, "configs", name))
        assert cfg.task in ("separation", "enhancement", "counting"), name
        build_lr_schedule(cfg.train)


def test_lr_schedules():
    step = StepLR(5e-4, step_size=2, gamma=0.98)
    assert [round(step.step(e) / 5e-4, 6) for e in (1, 2, 3, 4)] == [1.0, 0.98, 0.98, round(0.98 ** 2, 6)]
    multi = MultiStepLR([45, 78], [1e-3, 5e-4, 2e-4])
    assert multi.step(43) == 1e-3 and multi.step(44) == 5e-4 and multi.step(77) == 2e-4
    plateau = PlateauLR(1.0, factor=0.5, patience=2)
    scores = [1.0, 2.0, 1.5, 1.9, 3.0, None, 2.0, 2.0, 2.0, 3.0001, 3.0, 3.0, 3.0]
    lrs = [plateau.step(e, s) for e, s in enumerate(scores, 1)]
    # hand-derived: the lr halves only at the third bad validation in a row (bad > patience);
    # 3.0001 is not better than 3.0 * (1 + 1e-4), so it is the first of three bad ones after 3.0
    assert lrs == [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25]
    assert lrs == reduce_lr_on_plateau(1.0, 0.5, 2, scores)
    restored = PlateauLR(1.0, factor=0.5, patience=2)
    restored.load_state_dict(plateau.state_dict())
    assert [restored.step(14, 1.0), restored.step(15, 1.0)] == [plateau.step(14, 1.0), plateau.step(15, 1.0)]
    assert restored.lr == 0.125                                         # 3.0, then three bad ones in a row


@pytest.mark.parametrize("kind, schedule_class, unread, read", [
    ("constant", ConstantLR, ["train.lr_decay.min_lr=1e-5", "train.lr_decay.gamma=0.5"], "train.lr=1e-4"),
    ("plateau", PlateauLR, ["train.lr_decay.gamma=0.5", "train.lr_decay.step_size=7"], "train.lr_decay.min_lr=1e-5"),
    ("step", StepLR, ["train.lr_decay.patience=9", "train.lr_decay.min_lr=1e-5"], "train.lr_decay.gamma=0.5"),
    ("multistep", MultiStepLR, ["train.lr=1e-4", "train.lr_decay.factor=0.1"], "train.lr_decay.values=[1e-3,1e-4]"),
])
def test_schedule_settings_hold_what_the_type_reads(kind, schedule_class, unread, read):
    """A resume keeps the stored schedule state when these settings are unchanged: keys the type
    does not read must not count as a change (a plateau schedule would lose its best and count)."""
    base = ["train.lr_decay.milestones=[5]", "train.lr_decay.values=[1e-3,5e-4]"] if kind == "multistep" else []

    def settings(*overrides):
        cfg = load_config(os.path.join(ROOT, "configs/demo.yaml"), [f"train.lr_decay.type={kind}", *base, *overrides])
        return schedule_settings(cfg.train)
    assert settings()[0] is schedule_class
    assert settings(*unread) == settings()
    assert settings(read) != settings()


@pytest.mark.parametrize("override, message", [
    ("train.lrr=1", "train.lrr: unknown key, did you mean train.lr?"),
    ("model.CC=3", "model.CC: unknown key, did you mean model.C?"),
    ("train.dynamic_mixing=true", "did you mean data.dynamic_mixing?"),     # right key, wrong section
    ("data.train_snrs=[0]", "data.train_snrs: not a key of a separation config"),
    ("train.lr=-1", "train.lr: must be a number > 0, got -1"),
    ("train.epochs=-1", "train.epochs: must be an integer >= 1, got -1"),
    ("train.batch_size=abc", "train.batch_size: must be an integer >= 1, got 'abc'"),
    ("train.batch_size=2.5", "train.batch_size: must be an integer >= 1, got 2.5"),
    ("train=5", "train: must be a section"),
    ("model.lstm=fast", "model.lstm: must be one of auto, fused, native, got 'fast'"),
    ("data.dynamic_mixing=1", "must be true or false"),
    ("data.dm_gain_db=-1", "data.dm_gain_db: must be a number >= 0"),
    ("data.steps_per_epoch=0", "data.steps_per_epoch: must be an integer >= 1"),
    ("train.lr_decay.type=multistep", "multistep needs milestones and one more value"),
    ("task=translation", "task: 'translation' is not a known task (known: separation, enhancement, counting)"),
    ("model.name=tasnet", "model.name: 'tasnet' is not a known model (known: swave, countnet, rtransformer)"),
])
def test_schema_refuses_unknown_keys_wrong_types_and_ranges(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(os.path.join(ROOT, "configs/demo.yaml"), [override])
    assert message in str(err.value)


def test_schema_lists_every_problem_fills_defaults_and_converts_numbers(tmp_path):
    with pytest.raises(ConfigError, match="2 problems") as err:
        load_config(os.path.join(ROOT, "configs/demo.yaml"), ["train.lrr=1", "model.N=0"])
    assert "train.lrr" in str(err.value) and "model.N: must be an integer >= 1, got 0" in str(err.value)
    (tmp_path / "small.yaml").write_text("experiment_dir: x\nsample_rate: 8000\nsegment: 1\n"
                                         "model: {name: swave, N: 8, L: 4, H: 8, R: 1, C: 2}\n"
                                         "train: {epochs: 1, batch_size: 2, lr: 1}\n")
    cfg = load_config(str(tmp_path / "small.yaml"), ["data.train_speech=speech.lst"])
    assert cfg.task == "separation" and cfg.model.lstm == "auto" and cfg.train.valid_every == 1
    assert cfg.data.train_speech == "speech.lst" and cfg.data.steps_per_epoch == 1000 and cfg.data.train is None
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float) and cfg.segment == 1.0
    assert cfg.train.lr_decay.type == "constant"
    (tmp_path / "bare.yaml").write_text("model: {name: swave}\n")
    with pytest.raises(ConfigError, match="model.N: missing"):
        load_config(str(tmp_path / "bare.yaml"))


def test_schema_knows_every_key_the_shipped_configs_use():
    """Every shipped config passes its task's and model's schema, and checking the resolved
    config again changes nothing."""
    from src.config import check_config
    for name in os.listdir(os.path.join(ROOT, "configs")):
        cfg = load_config(os.path.join(ROOT, "configs", name))
        assert check_config(Config(cfg.to_dict())).to_dict() == cfg.to_dict(), name


def reduce_lr_on_plateau(lr, factor, patience, scores, min_lr=0.0, threshold=1e-4, eps=1e-8):
    """PyTorch's ReduceLROnPlateau.step (mode "max", threshold_mode "rel", cooldown 0), written out
    from torch/optim/lr_scheduler.py; None = an epoch without validation. The lr after each epoch."""
    best, bad, out = -math.inf, 0, []
    for score in scores:
        if score is not None:
            if score > best * (1 + threshold):      # is_better, rel / max
                best, bad = score, 0
            else:
                bad += 1
            if bad > patience:                      # _reduce_lr
                new_lr = max(lr * factor, min_lr)
                if lr - new_lr > eps:
                    lr = new_lr
                bad = 0
        out.append(lr)
    return out


@pytest.mark.parametrize("patience,factor,min_lr", [(0, 0.5, 0.0), (1, 0.1, 1e-3), (3, 0.8, 0.0)])
def test_plateau_matches_reduce_lr_on_plateau(patience, factor, min_lr):
    rng = np.random.default_rng(patience)
    # slow gains (some below the relative threshold), plateaus, drops, negative scores, skipped epochs
    scores = list(np.round(np.cumsum(rng.choice([-0.5, 0.0, 2e-4, 1e-3, 0.4], 60)) - 1.0, 6))
    scores = [None if i % 7 == 6 else float(s) for i, s in enumerate(scores)]
    schedule = PlateauLR(0.1, factor=factor, patience=patience, min_lr=min_lr)
    got = [schedule.step(e, s) for e, s in enumerate(scores, 1)]
    expected = reduce_lr_on_plateau(0.1, factor, patience, scores, min_lr)
    assert got == expected and len(set(expected)) >= 3                 # the lr did change, more than once
