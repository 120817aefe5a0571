"""Config loading, inheritance, overrides and lr schedules."""
import math
import os

import numpy as np
import pytest

from src.config import ConfigError, load_config, save_config
from src.training.lr_schedule import MultiStepLR, PlateauLR, StepLR, build_lr_schedule

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
    with pytest.raises(ConfigError, match="no section 'trian'"):
        load_config(path, ["trian.lr=1"])
    with pytest.raises(ConfigError, match="not found"):
        load_config("configs/nope.yaml")


def test_every_shipped_config_loads():
    for name in os.listdir(os.path.join(ROOT, "configs")):
        cfg = load_config(os.path.join(ROOT, "configs", name))
        assert cfg.task in ("separation", "enhancement"), name
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
