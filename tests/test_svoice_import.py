"""svoice checkpoint import: PyTorch reference (svoice's names and maths) -> our MindSpore SWave.

Builds small random svoice models (C=2 and C=3 with input normalisation, R=2), saves them the
way svoice does (checkpoint.th with best_state, a model-package-only file, torch's legacy
format), imports them and compares our eval-mode output with PyTorch's on several lengths.
Also: refusal of pickles that would run code, and clear errors for mismatched tensors.
"""
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ms = pytest.importorskip("mindspore")

from src.svoice_import import (ImportCheckpointError, convert_state, import_checkpoint,  # noqa: E402
                               inert_name, load_svoice_package, read_torch_file)
from src.config import load_config  # noqa: E402
from src.models.swave import SWave  # noqa: E402
from src.runtime.checkpoint import load_model, read_checkpoint  # noqa: E402
from tests.torch_swave import SWave as TorchSWave, serialize_best, serialize_package  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LENGTHS = (400, 401, 997)   # K = 20 here; includes odd lengths and a partial last chunk
TOLERANCE = 1e-4


def _torch_model(C, input_normalize, seed):
    torch.manual_seed(seed)
    model = TorchSWave(N=16, L=4, H=8, R=2, C=C, sr=8000, segment=0.05,
                       input_normalize=input_normalize).eval()
    with torch.no_grad():   # move biases / norms / PReLU away from their constant inits
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def _perturbed_state(model, seed):
    gen = torch.Generator().manual_seed(seed)
    return {k: v + 0.05 * torch.randn(v.shape, generator=gen) for k, v in model.state_dict().items()}


def _torch_output(model, x, state=None):
    if state is not None:
        model = _torch_model(model.C, model.init_kwargs["input_normalize"], 0)
        model.load_state_dict(state)
    with torch.no_grad():
        out = model(torch.from_numpy(x))
    assert out.shape[0] == 1  # eval mode: the last layer's estimate only
    return out[0].numpy()


@pytest.fixture(scope="module", autouse=True)
def pynative():
    ms.set_context(mode=ms.PYNATIVE_MODE)


@pytest.fixture(scope="module", params=[(2, False), (3, True)], ids=["C2", "C3-norm"])
def saved(request, tmp_path_factory):
    C, input_normalize = request.param
    folder = tmp_path_factory.mktemp(f"svoice_C{C}")
    model = _torch_model(C, input_normalize, seed=C)
    best_state = _perturbed_state(model, seed=10 + C)
    checkpoint = str(folder / "checkpoint.th")
    serialize_package(model, checkpoint, best_state=best_state)
    best_file = str(folder / "best.th")
    serialize_best(model, best_file)
    return model, best_state, checkpoint, best_file, folder


def _outputs(ckpt, lengths):
    """{length: (input, our eval output)} of the imported checkpoint on random inputs."""
    net, cfg = load_model(ckpt)       # strict: every parameter present, shapes checked
    rng = np.random.default_rng(len(lengths))
    result = {}
    for length in lengths:
        x = rng.standard_normal((2, length)).astype(np.float32)
        result[length] = x, net(ms.Tensor(x)).asnumpy()
        assert result[length][1].shape == (2, cfg.model.C, length)
    return result


def _max_difference(outputs, reference):
    return max(float(np.abs(ours - reference(x)).max()) for x, ours in outputs.values())


def test_checkpoint_last_state_matches_pytorch(saved):
    model, _, checkpoint, _, folder = saved
    out = str(folder / "last.ckpt")
    _, yaml_path, _, config_from = import_checkpoint(checkpoint, out)
    assert config_from.startswith("the hydra args and the model kwargs")
    assert _max_difference(_outputs(out, LENGTHS), lambda x: _torch_output(model, x)) < TOLERANCE
    cfg = load_config(yaml_path)
    base = load_config(os.path.join(ROOT, "configs", "swave_librimix.yaml"))
    assert set(cfg) == set(base) and set(cfg.model) == set(base.model)
    assert (cfg.model.N, cfg.model.L, cfg.model.H, cfg.model.R, cfg.model.C) == (16, 4, 8, 2, model.C)
    assert cfg.model.input_normalize == model.init_kwargs["input_normalize"]
    assert (cfg.sample_rate, cfg.segment) == (8000, 0.05)


def test_best_state_matches_pytorch_and_differs_from_last(saved):
    model, best_state, checkpoint, _, folder = saved
    out = str(folder / "best.ckpt")
    import_checkpoint(checkpoint, out, best=True)
    outputs = _outputs(out, (401,))
    assert _max_difference(outputs, lambda x: _torch_output(model, x, best_state)) < TOLERANCE
    # the best state really is another set of weights: the last-state output is far from it
    assert _max_difference(outputs, lambda x: _torch_output(model, x)) > 1e-2


def test_model_package_file_gives_the_same_weights(saved):
    _, _, checkpoint, best_file, folder = saved
    from_package = str(folder / "from_package.ckpt")
    from_checkpoint = str(folder / "from_checkpoint.ckpt")
    import_checkpoint(best_file, from_package)
    import_checkpoint(checkpoint, from_checkpoint)
    ours = read_checkpoint(from_package)[0]
    reference = read_checkpoint(from_checkpoint)[0]
    assert set(ours) == set(reference) and len(ours) > 90
    for name, value in reference.items():
        np.testing.assert_array_equal(ours[name].asnumpy(), value.asnumpy())
    with pytest.raises(ImportCheckpointError, match="holds one model state only"):
        import_checkpoint(best_file, str(folder / "x.ckpt"), best=True)


def test_reader_matches_torch_load_without_running_code(saved, tmp_path):
    model, best_state, checkpoint, _, _ = saved
    package = read_torch_file(checkpoint)
    assert inert_name(package["model"]["class"]) == "svoice.models.swave.SWave"
    assert inert_name(package["args"]) == "omegaconf.dictconfig.DictConfig"
    assert package["args"].state["_content"]["swave"]["C"] == model.C
    assert package["history"][0]["valid"] == -2.0
    for name, tensor in model.state_dict().items():
        np.testing.assert_array_equal(package["model"]["state"][name], tensor.numpy())
        np.testing.assert_array_equal(package["best_state"][name], best_state[name].numpy())
    # the pre-1.6 torch format and non-contiguous / offset tensors read the same
    legacy = str(tmp_path / "legacy.th")
    serialize_package(model, legacy, best_state=best_state, legacy_format=True)
    hparams, state, _ = load_svoice_package(legacy, best=True)
    assert hparams["C"] == model.C and hparams["sr"] == 8000
    for name, tensor in best_state.items():
        np.testing.assert_array_equal(state[name], tensor.numpy())
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    views = {"t": base.t(), "slice": base[1:3, 2:5], "step": base[:, ::2], "scalar": base[2, 3],
             "half": base.half()[1], "long": torch.arange(5)[1:]}
    odd = str(tmp_path / "views.th")
    torch.save(views, odd)
    for loaded in (read_torch_file(odd), _legacy_roundtrip(views, tmp_path)):
        for name, tensor in views.items():
            np.testing.assert_array_equal(loaded[name], tensor.numpy())


def _legacy_roundtrip(obj, folder):
    path = str(folder / "views_legacy.th")
    torch.save(obj, path, _use_new_zipfile_serialization=False)
    return read_torch_file(path)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _Evaluates:
    def __reduce__(self):
        return eval, ("1 + 1",)


def test_refuses_pickles_that_run_code(saved, tmp_path):
    _, _, checkpoint, _, _ = saved
    marker = tmp_path / "was_run"
    # 1) a torch.save zip whose data.pkl calls os.system
    evil_zip = tmp_path / "evil_checkpoint.th"
    with zipfile.ZipFile(checkpoint) as src, zipfile.ZipFile(evil_zip, "w") as dst:
        for item in src.namelist():
            data = src.read(item)
            if item.endswith("/data.pkl"):
                data = pickle.dumps({"model": _RunsCode(str(marker))}, protocol=2)
            dst.writestr(item, data)
    # 2) a plain pickle (read as the legacy format)
    evil_plain = tmp_path / "evil_plain.th"
    evil_plain.write_bytes(pickle.dumps(_RunsCode(str(marker)), protocol=2))
    for path in (evil_zip, evil_plain):
        with pytest.raises(ImportCheckpointError, match=r"refusing to load the global '(posix|os)\.system'") as err:
            load_svoice_package(str(path))
        assert str(path) in str(err.value)
    assert not marker.exists()
    # eval / exec through builtins are refused too
    evil_eval = tmp_path / "evil_eval.th"
    evil_eval.write_bytes(pickle.dumps(_Evaluates(), protocol=2))
    with pytest.raises(ImportCheckpointError, match="builtins.eval"):
        read_torch_file(str(evil_eval))


def test_bad_files_give_clear_errors(tmp_path):
    not_torch = tmp_path / "notes.th"
    not_torch.write_text("hello")
    with pytest.raises(ImportCheckpointError, match="notes.th: not a PyTorch checkpoint"):
        read_torch_file(str(not_torch))
    with pytest.raises(ImportCheckpointError, match="file not found"):
        read_torch_file(str(tmp_path / "missing.th"))
    other = tmp_path / "other.th"
    torch.save({"model": {"class": torch.nn.Linear, "args": (), "kwargs": {}, "state": {}}}, other)
    with pytest.raises(ImportCheckpointError, match="torch.nn.modules.linear.Linear"):
        load_svoice_package(str(other))
    plain = tmp_path / "state_dict.th"
    torch.save({"encoder.conv.weight": torch.zeros(2)}, plain)
    with pytest.raises(ImportCheckpointError, match="not an svoice checkpoint"):
        load_svoice_package(str(plain))


def test_mapping_checks_every_name(saved):
    model, _, checkpoint, _, _ = saved
    hparams, state, _ = load_svoice_package(checkpoint)
    net = SWave(16, 4, 8, 2, model.C, 8000, 0.05, input_normalize=hparams["input_normalize"])
    converted = convert_state(state, net)
    assert set(converted) == {p.name for p in net.get_parameters()}
    expected_count = 2 * (2 * 22) + 4 + (4 * 2 if hparams["input_normalize"] else 0)
    assert len(converted) == len(state) == expected_count

    # the paper's depth: R=6 gives svoice's 268 tensors, all mapped
    paper_depth = TorchSWave(N=16, L=4, H=8, R=6, C=2, sr=8000, segment=0.05).state_dict()
    paper_state = {k: v.numpy() for k, v in paper_depth.items()}
    assert len(convert_state(paper_state, SWave(16, 4, 8, 6, 2, 8000, 0.05))) == len(paper_state) == 268

    broken = dict(state)
    del broken["separator.rnn_model.cols_grnn.1.gate_rnn.bias_hh_l0_reverse"]
    broken["separator.rnn_model.extra.weight"] = np.zeros(3, np.float32)
    broken["separator.rnn_model.rows_grnn.5.rnn_proj.weight"] = np.zeros((16, 16), np.float32)
    broken["encoder.conv.weight"] = np.zeros((16, 1, 8), np.float32)
    with pytest.raises(ImportCheckpointError) as err:
        convert_state(broken, net, source="ck.th")
    message = str(err.value)
    for part in ("ck.th", "no counterpart: separator.rnn_model.extra.weight",
                 "rows_grnn.5.rnn_proj.weight", "encoder.conv.weight (16, 1, 8)",
                 "unfilled: separator.rnn_model.cols_grnn.1.gate_rnn.bias_hh_l0_reverse"):
        assert part in message


def test_cli(tmp_path):
    checkpoint = str(tmp_path / "checkpoint.th")
    model = _torch_model(2, False, seed=5)
    serialize_package(model, checkpoint, best_state=model.state_dict())
    out = tmp_path / "cli.ckpt"
    env = dict(os.environ, PYTHONPATH=ROOT)
    tool = os.path.join(ROOT, "tools", "import_svoice.py")
    done = subprocess.run([sys.executable, tool, checkpoint, "--out", str(out), "--best"],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert out.exists() and (tmp_path / "cli.yaml").exists() and "best_state" in done.stdout
    assert load_config(str(tmp_path / "cli.yaml")).model.C == 2
    bad = subprocess.run([sys.executable, tool, str(tmp_path / "cli.yaml"), "--out", str(tmp_path / "x.ckpt")],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "cli.yaml: not a PyTorch checkpoint" in bad.stderr


def test_mindspore_loss_matches_svoice_cal_loss():
    from src.losses import multi_scale_pit_si_snr_loss, pit_si_snr_loss
    from tests.torch_swave import cal_loss, multi_scale_loss
    rng = np.random.default_rng(3)
    for C in (2, 3):
        src = rng.standard_normal((3, C, 500)).astype(np.float32)
        lengths = np.array([500, 431, 377], np.int32)
        for b, length in enumerate(lengths):
            src[b, :, length:] = 0      # padding is zero, as in svoice's batches
        # two layers: a noisy permuted copy of the sources, and plain noise
        estimates = np.stack([src[:, ::-1] + 0.3 * rng.standard_normal(src.shape),
                              rng.standard_normal(src.shape)]).astype(np.float32)
        ours_last = float(pit_si_snr_loss(ms.Tensor(estimates[0]), ms.Tensor(src), ms.Tensor(lengths)).asnumpy())
        ours = float(multi_scale_pit_si_snr_loss(ms.Tensor(estimates), ms.Tensor(src), ms.Tensor(lengths)).asnumpy())
        t = [torch.from_numpy(a) for a in (estimates, src, lengths)]
        reference_last = float(cal_loss(t[1], t[0][0], t[2]))
        reference = float(multi_scale_loss(t[0], t[1], t[2]))
        assert reference_last < -5      # the permuted copy is found: a good SI-SNR
        assert abs(ours_last - reference_last) < 1e-3 and abs(ours - reference) < 1e-3
