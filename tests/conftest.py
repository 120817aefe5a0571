"""Shared fixtures: a tiny MindRecord copy of the bundled mini LibriMix for training tests; the
modules of tools/."""
import importlib.util
import os

import pytest

from src.data.layout import find_splits
from src.data.mindrecord import write_split
from src.data.mini_librimix import build_mini_librimix

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def load_tool():
    """`load_tool(name)` -> the module tools/<name>.py (the tools folder is not a package)."""
    def load(name):
        spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "tools", f"{name}.py"))
        tool = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(tool)
        return tool
    return load


@pytest.fixture(scope="session")
def mini_librimix(tmp_path_factory):
    """The bundled mini LibriMix (`Libri2Mix/`, `Libri3Mix/`), generated once per test session."""
    path = tmp_path_factory.mktemp("mini") / "mini_librimix"
    build_mini_librimix(str(path))
    return str(path)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory, mini_librimix):
    """Folder with 8 training mixtures (`train.mindrecord0..1`) and 3 validation mixtures
    (`valid.mindrecord0`) of the bundled set at 8 kHz, generated once per test session."""
    tmp = tmp_path_factory.mktemp("data")
    splits = find_splits(os.path.join(mini_librimix, "Libri2Mix"))
    write_split(splits["train"].utterances[:8], str(tmp / "mr"), "train", 2, 8000)
    write_split(splits["valid"].utterances[:3], str(tmp / "mr"), "valid", 1, 8000)
    return tmp / "mr"
