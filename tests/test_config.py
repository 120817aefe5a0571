"""Config loading, inheritance, overrides and lr schedules."""
import os

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
    lrs = [plateau.step(e, s) for e, s in enumerate([1.0, 2.0, 1.5, 1.9, 3.0, None, 2.0, 2.0], 1)]
    assert lrs == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.25]
    restored = PlateauLR(1.0, factor=0.5, patience=2)
    restored.load_state_dict(plateau.state_dict())
    assert restored.step(9, 1.0) == plateau.step(9, 1.0)
