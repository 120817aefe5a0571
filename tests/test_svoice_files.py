"""svoice checkpoints as svoice writes them, imported without PyTorch or omegaconf.

tests/data/svoice/svoice_oc{1,2}.th were written by tools/make_svoice_fixtures.py with svoice's
own model code and Solver format, and its hydra config pickled by omegaconf 1.4.1 / 2.4.0;
the .npz beside each holds a mixture and svoice's eval output for the last and best states.
Also: pickles that would call code through defaultdict, and tensors larger than their storage.
"""
import collections
import os
import pickletools
import tracemalloc
import zipfile

import numpy as np
import pytest

ms = pytest.importorskip("mindspore")

import src.svoice_import as svoice_import  # noqa: E402
from src.svoice_import import (ImportCheckpointError, import_checkpoint, load_svoice_package,  # noqa: E402
                               plain_config, read_torch_file)
from src.runtime.checkpoint import load_model  # noqa: E402

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "svoice")
FIXTURES = {"oc1": (2, False), "oc2": (3, True)}     # omegaconf major version: C, input_normalize


def _fixture(version, ext=".th"):
    return os.path.join(DATA, f"svoice_{version}{ext}")


@pytest.fixture(scope="module", autouse=True)
def pynative():
    ms.set_context(mode=ms.PYNATIVE_MODE)


@pytest.mark.parametrize("version", sorted(FIXTURES))
@pytest.mark.parametrize("best", [False, True], ids=["last", "best"])
def test_svoice_checkpoint_separates_like_svoice(version, best, tmp_path):
    C, input_normalize = FIXTURES[version]
    _, _, cfg, config_from = import_checkpoint(_fixture(version), str(tmp_path / "m.ckpt"), best=best)
    assert config_from.startswith("the hydra args")
    m = cfg.model
    assert (m.N, m.L, m.H, m.R, m.C, m.input_normalize) == (32, 8, 4, 1, C, input_normalize)
    assert (cfg.sample_rate, cfg.segment) == (8000, 4.0)
    expected = np.load(_fixture(version, ".npz"))
    net, _ = load_model(str(tmp_path / "m.ckpt"))
    ours = net(ms.Tensor(expected["mix"][None])).asnumpy()[0]
    reference = expected["best" if best else "last"]
    assert np.abs(ours - reference).max() < 1e-5 * np.abs(reference).max()
    assert np.abs(expected["best"] - expected["last"]).max() > 0.05 * np.abs(reference).max()


@pytest.mark.parametrize("version", sorted(FIXTURES))
def test_hydra_args_read_as_plain_values(version):
    args = plain_config(read_torch_file(_fixture(version))["args"])
    C, input_normalize = FIXTURES[version]
    assert args["swave"] == {"N": 32, "L": 8, "H": 4, "R": 1, "C": C, "input_normalize": input_normalize}
    assert (args["sample_rate"], args["segment"], args["lr"], args["optim"]) == (8000, 4, 0.01, "adam")
    assert args["dset"]["mix_json"] == "egs/debug/tr/mix.json" and args["dset"]["mix_dir"] is None
    assert args["step"] == {"step_size": 2, "gamma": 0.98}


def test_args_that_contradict_the_model_are_refused(monkeypatch):
    package = read_torch_file(_fixture("oc2"))
    args = package["args"].state
    args["_content"]["sample_rate"].state["_val"] = 16000
    args["_content"]["swave"].state["_content"]["H"].state["_val"] = 8
    monkeypatch.setattr(svoice_import, "read_torch_file", lambda path: package)
    with pytest.raises(ImportCheckpointError) as err:
        load_svoice_package("ck.th")
    message = str(err.value)
    assert "ck.th: the SWave configuration contradicts itself" in message
    assert "sample_rate: args 16000, model kwargs 8000" in message
    assert "swave.H: args 8, model kwargs 4, tensor shapes 4" in message
    # without args the model kwargs are used, checked against the shapes
    del package["args"]
    hparams, _, config_from = load_svoice_package("ck.th")
    assert hparams["sr"] == 8000 and config_from.startswith("the model kwargs (no hydra args")


def _torch_zip(path, data_pkl, storage=b"\0\0\0\0", compression=zipfile.ZIP_STORED):
    """A torch.save-style zip: archive/data.pkl and one storage archive/data/0."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/data/0", storage, compress_type=compression)
    return str(path)


def _defaultdict_pickle(factory):
    """defaultdict(<global `factory`>) with one item, as protocol-2 opcodes."""
    return (b"\x80\x02ccollections\ndefaultdict\nc" + factory.encode() +
            b"\n\x85RX\x01\x00\x00\x00aK\x01s.")


def test_defaultdict_only_with_a_builtin_factory(tmp_path):
    allowed = read_torch_file(_torch_zip(tmp_path / "ok.th", _defaultdict_pickle("__builtin__\ndict")))
    assert isinstance(allowed, collections.defaultdict) and allowed.default_factory is dict
    assert allowed == {"a": 1}
    for factory, refused in (("copyreg\n_reconstructor", "collections.defaultdict with the factory"),
                             ("omegaconf.nodes\nAnyNode", "collections.defaultdict with the factory"),
                             ("torch._utils\n_rebuild_parameter", "collections.defaultdict with the factory"),
                             ("builtins\neval", "the global 'builtins.eval'"),
                             ("os\nsystem", r"the global '(os|posix)\.system'")):
        path = _torch_zip(tmp_path / "evil.th", _defaultdict_pickle(factory))
        with pytest.raises(ImportCheckpointError, match=f"evil.th: refusing .*{refused}"):
            read_torch_file(path)
        plain = tmp_path / "evil_plain.th"         # the legacy reader too
        plain.write_bytes(_defaultdict_pickle(factory))
        with pytest.raises(ImportCheckpointError, match=f"refusing .*{refused}"):
            read_torch_file(str(plain))


def _tensor_pickle(size, stride):
    """{'w': tensor} as torch.save pickles it: _rebuild_tensor_v2 over float storage '0' (1 element)."""
    def ints(values):
        return b"(" + b"".join(b"J" + int(v).to_bytes(4, "little") for v in values) + b"t"
    return (b"\x80\x02}X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n("
            b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x01tQ"
            b"K\x00" + ints(size) + ints(stride) + b"\x89ccollections\nOrderedDict\n)RtRs.")


def test_tensor_larger_than_its_storage_is_refused_before_allocating(tmp_path):
    ok = read_torch_file(_torch_zip(tmp_path / "ok.th", _tensor_pickle((1, 1), (1, 1)),
                                    storage=np.float32([1.5]).tobytes()))
    np.testing.assert_array_equal(ok["w"], [[1.5]])
    bomb = _torch_zip(tmp_path / "stride0.th", _tensor_pickle((100000, 100000), (0, 0)))
    assert os.path.getsize(bomb) < 1000
    tracemalloc.start()
    try:
        with pytest.raises(ImportCheckpointError, match=r"stride0.th: .*size \(100000, 100000\) "
                                                        r"\(10000000000 elements\) on a storage of 1 elements"):
            read_torch_file(bomb)
        assert tracemalloc.get_traced_memory()[1] < 10 * 2**20
    finally:
        tracemalloc.stop()
    deflated = _torch_zip(tmp_path / "zipped.th", _tensor_pickle((1,), (1,)), compression=zipfile.ZIP_DEFLATED)
    with pytest.raises(ImportCheckpointError, match="storage 0 is compressed"):
        read_torch_file(deflated)


def test_fixture_pickles_hold_only_the_expected_globals():
    """What svoice's files reference: if a new fixture needs more, the allow-list must be
    reviewed, not widened silently."""
    expected = {
        "oc1": {"omegaconf.dictconfig DictConfig", "omegaconf.nodes UntypedNode"},
        "oc2": {"omegaconf.dictconfig DictConfig", "omegaconf.nodes AnyNode", "omegaconf.base Metadata",
                "omegaconf.base ContainerMetadata", "typing Any"},
    }
    common = {"collections OrderedDict", "collections defaultdict", "__builtin__ dict",
              "torch FloatStorage", "torch._utils _rebuild_tensor_v2", "svoice.models.swave SWave"}
    for version, names in expected.items():
        with zipfile.ZipFile(_fixture(version)) as archive:
            data = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
        found = {arg for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"}
        assert found == names | common
