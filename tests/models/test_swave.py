"""SWave: parameter layout (svoice's state dict), outputs against a float64 numpy transcription of
svoice's forward pass (its chunk padding, overlap-add and final pad/crop), shapes for odd and very
short inputs, and GRAPH_MODE gradients (repeatable and equal to PyNative: the pad-bug guard)."""
import itertools
import os

import numpy as np
import pytest
import mindspore as ms

from src.config import Config, ConfigError, load_config
from tests.models.net_with_loss import NetWithLoss
from src.models import build_model
from src.models.swave import SWave, SWaveConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO_CONFIG = os.path.join(ROOT, "configs", "demo.yaml")


@pytest.fixture(autouse=True)
def pynative():
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield


def params_of(net):
    return {p.name: p.asnumpy().astype(np.float64) for p in net.get_parameters()}


# ---------------------------------------------------------------- numpy transcription of svoice
def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _lstm_direction(x, P, prefix, suffix):
    w_ih, w_hh = P[f"{prefix}.weight_ih_l0{suffix}"], P[f"{prefix}.weight_hh_l0{suffix}"]
    bias = P[f"{prefix}.bias_ih_l0{suffix}"] + P[f"{prefix}.bias_hh_l0{suffix}"]
    hidden = w_hh.shape[1]
    h = np.zeros((x.shape[0], hidden))
    c = np.zeros((x.shape[0], hidden))
    out = []
    for t in range(x.shape[1]):
        i, f, g, o = np.split(x[:, t] @ w_ih.T + h @ w_hh.T + bias, 4, axis=1)  # PyTorch gate order
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c)
        out.append(h)
    return np.stack(out, axis=1)


def _bilstm(x, P, prefix):
    forward = _lstm_direction(x, P, prefix, "")
    backward = _lstm_direction(x[:, ::-1], P, prefix, "_reverse")[:, ::-1]
    return np.concatenate([forward, backward], axis=2)


def _linear(x, P, prefix):
    return x @ P[f"{prefix}.weight"].T + P[f"{prefix}.bias"]


def _mulcat(x, P, prefix):
    rnn = _linear(_bilstm(x, P, f"{prefix}.rnn"), P, f"{prefix}.rnn_proj")
    gate = _linear(_bilstm(x, P, f"{prefix}.gate_rnn"), P, f"{prefix}.gate_rnn_proj")
    return _linear(np.concatenate([rnn * gate, x], axis=2), P, f"{prefix}.block_projection")


def _group_norm(x, P, prefix):  # GroupNorm(1, N, eps=1e-8) on (B, N, d1, d2)
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    var = x.var(axis=(1, 2, 3), keepdims=True)
    y = (x - mean) / np.sqrt(var + 1e-8)
    return y * P[f"{prefix}.weight"][None, :, None, None] + P[f"{prefix}.bias"][None, :, None, None]


def svoice_forward(P, mixture, N, L, R, C, K, input_normalize):
    """svoice SWave.forward step by step, in svoice's (B, N, K, S) layout; returns (R, B, C, T)."""
    B, T = mixture.shape
    hop = L // 2
    frames = (T - L) // hop + 1
    windows = np.stack([mixture[:, f * hop:f * hop + L] for f in range(frames)], axis=1)
    w = np.maximum(windows @ P["encoder.conv.weight"][:, 0].T, 0).transpose(0, 2, 1)  # (B, N, F)
    # Separator.pad_segment / create_chuncks
    stride = K // 2
    rest = K - (stride + frames % K) % K
    x = np.concatenate([w, np.zeros((B, N, rest))], axis=2) if rest > 0 else w
    x = np.concatenate([np.zeros((B, N, stride)), x, np.zeros((B, N, stride))], axis=2)
    seg1 = x[:, :, :-stride].reshape(B, N, -1, K)
    seg2 = x[:, :, stride:].reshape(B, N, -1, K)
    out = np.concatenate([seg1, seg2], axis=3).reshape(B, N, -1, K).transpose(0, 1, 3, 2)
    d1, d2 = out.shape[2], out.shape[3]
    m = "separator.rnn_model"
    heads = []
    for i in range(R):
        row = _mulcat(out.transpose(0, 3, 2, 1).reshape(B * d2, d1, N), P, f"{m}.rows_grnn.{i}")
        row = row.reshape(B, d2, d1, N).transpose(0, 3, 2, 1)
        if input_normalize:
            row = _group_norm(row, P, f"{m}.rows_normalization.{i}")
        out = out + row
        col = _mulcat(out.transpose(0, 2, 3, 1).reshape(B * d1, d2, N), P, f"{m}.cols_grnn.{i}")
        col = col.reshape(B, d1, d2, N).transpose(0, 3, 1, 2)
        if input_normalize:
            col = _group_norm(col, P, f"{m}.cols_normalization.{i}")
        out = out + col
        a = P[f"{m}.output.0.weight"][0]
        h = np.where(out > 0, out, a * out)
        h = np.einsum("oc,bcks->boks", P[f"{m}.output.1.weight"][:, :, 0, 0], h)
        heads.append(h + P[f"{m}.output.1.bias"][None, :, None, None])
    estimates = []
    frame_length = N // L
    for h in heads:
        # merge_chuncks
        D = h.shape[1]
        h = h.transpose(0, 1, 3, 2).reshape(B, D, -1, 2 * K)
        merged = h[..., :K].reshape(B, D, -1)[:, :, stride:] + h[..., K:].reshape(B, D, -1)[:, :, :-stride]
        merged = merged[:, :, :-rest] if rest > 0 else merged
        # view (B, C, N, F), Decoder: AvgPool2d((1, L)) then overlap_and_add(hop)
        est = merged.reshape(B, C, N, frames).transpose(0, 1, 3, 2)[..., :frame_length * L]
        est = est.reshape(B, C, frames, frame_length, L).mean(axis=-1)
        wave = np.zeros((B, C, (frames - 1) * hop + frame_length))
        for f in range(frames):
            wave[..., f * hop:f * hop + frame_length] += est[:, :, f]
        # F.pad(output, (0, T_mix - T_est)): zeros at the end or crop
        wave = wave[..., :T] if wave.shape[-1] >= T else np.concatenate(
            [wave, np.zeros((B, C, T - wave.shape[-1]))], axis=-1)
        estimates.append(wave)
    return np.stack(estimates)


# ---------------------------------------------------------------- layout
def test_paper_config_has_svoice_parameter_count():
    net = SWave(128, 8, 128, 6, 2, 8000, 4.0)
    assert sum(int(np.prod(p.shape)) for p in net.trainable_params()) == 7_558_913
    assert net.chunk_size == 126


def svoice_state_dict_shapes(N, L, H, R, C, input_normalize):
    shapes = {"encoder.conv.weight": (N, 1, L)}
    m = "separator.rnn_model"
    for i, side in itertools.product(range(R), ("rows", "cols")):
        block = f"{m}.{side}_grnn.{i}"
        for rnn in ("rnn", "gate_rnn"):
            for suffix in ("", "_reverse"):
                shapes[f"{block}.{rnn}.weight_ih_l0{suffix}"] = (4 * H, N)
                shapes[f"{block}.{rnn}.weight_hh_l0{suffix}"] = (4 * H, H)
                shapes[f"{block}.{rnn}.bias_ih_l0{suffix}"] = (4 * H,)
                shapes[f"{block}.{rnn}.bias_hh_l0{suffix}"] = (4 * H,)
            shapes[f"{block}.{rnn}_proj.weight"] = (N, 2 * H)
            shapes[f"{block}.{rnn}_proj.bias"] = (N,)
        shapes[f"{block}.block_projection.weight"] = (N, 2 * N)
        shapes[f"{block}.block_projection.bias"] = (N,)
        if input_normalize:
            shapes[f"{m}.{side}_normalization.{i}.weight"] = (N,)
            shapes[f"{m}.{side}_normalization.{i}.bias"] = (N,)
    shapes[f"{m}.output.0.weight"] = (1,)
    shapes[f"{m}.output.1.weight"] = (N * C, N, 1, 1)
    shapes[f"{m}.output.1.bias"] = (N * C,)
    return shapes


@pytest.mark.parametrize("input_normalize, lstm", [(False, "native"), (True, "native"), (False, "fused")])
def test_parameters_have_svoice_names_and_shapes(input_normalize, lstm):
    net = SWave(16, 4, 8, 2, 3, 8000, 0.05, input_normalize=input_normalize, lstm=lstm)
    ours = {p.name: tuple(p.shape) for p in net.get_parameters()}
    assert ours == svoice_state_dict_shapes(16, 4, 8, 2, 3, input_normalize)


def test_weights_are_xavier_normal():
    net = SWave(64, 8, 64, 1, 2, 8000, 1.0)
    w = params_of(net)["separator.rnn_model.rows_grnn.0.rnn.weight_ih_l0"]  # (4H, N)
    assert abs(w.std() - np.sqrt(2 / (64 + 256))) < 0.1 * np.sqrt(2 / (64 + 256))
    assert params_of(net)["separator.rnn_model.output.0.weight"][0] == pytest.approx(0.25)


def test_registry_builds_from_config():
    cfg = load_config(DEMO_CONFIG, ["model.C=3", "model.input_normalize=true"])
    net = build_model(cfg)
    assert isinstance(net, SWave)
    assert (net.N, net.L, net.H, net.R, net.C) == (cfg.model.N, cfg.model.L, cfg.model.H, cfg.model.R, 3)
    assert net.chunk_size == int(np.sqrt(2 * cfg.sample_rate * cfg.segment / (cfg.model.L / 2)))
    with pytest.raises(ConfigError, match="not a known model"):
        build_model(load_config(DEMO_CONFIG, ["model.name=nope"]))
    with pytest.raises(ConfigError, match="missing config key"):
        build_model(Config({"model": {"name": "swave", "N": 8}, "sample_rate": 8000, "segment": 1.0}))


def test_selected_outputs_are_those_of_the_bigger_model(tmp_path, load_tool):
    """tools/select_outputs.py: a model with outputs [2, 0] of a 3-speaker one gives exactly those."""
    from src.runtime.checkpoint import CheckpointError, config_meta, load_model, save_network
    tool = load_tool("select_outputs")
    cfg = load_config(DEMO_CONFIG, ["model.C=3"])
    big = build_model(cfg)
    save_network(str(tmp_path / "big.ckpt"), big, config_meta(cfg))
    assert tool.main([str(tmp_path / "big.ckpt"), str(tmp_path / "small.ckpt"), "--keep", "2", "0"]) == 0
    small, small_cfg = load_model(str(tmp_path / "small.ckpt"))
    assert small_cfg.model.C == 2
    big.set_train(False)
    mixture = ms.Tensor(np.random.default_rng(0).standard_normal((1, 1203)).astype(np.float32))
    np.testing.assert_allclose(small(mixture).asnumpy(), big(mixture).asnumpy()[:, [2, 0]], rtol=1e-5, atol=1e-6)
    for keep in (["0", "3"], ["1", "1"]):
        with pytest.raises(SWaveConfigError, match="distinct speaker indices in 0..2"):
            tool.main([str(tmp_path / "big.ckpt"), str(tmp_path / "bad.ckpt"), "--keep", *keep])
    with pytest.raises(CheckpointError, match="not found"):
        tool.main([str(tmp_path / "none.ckpt"), str(tmp_path / "bad.ckpt"), "--keep", "0"])


def test_added_layers_start_as_the_identity(tmp_path, load_tool):
    """tools/add_layers.py: the deeper model separates exactly as the trained one, and its new layers
    are there to train (their LSTMs are fresh, their block projections zero)."""
    from src.runtime.checkpoint import CheckpointError, config_meta, load_model, save_network
    tool = load_tool("add_layers")
    cfg = load_config(DEMO_CONFIG, ["model.R=1"])
    shallow = build_model(cfg)
    save_network(str(tmp_path / "shallow.ckpt"), shallow, config_meta(cfg))
    assert tool.main([str(tmp_path / "shallow.ckpt"), str(tmp_path / "deep.ckpt"), "--layers", "2"]) == 0
    deep, deep_cfg = load_model(str(tmp_path / "deep.ckpt"))
    assert deep_cfg.model.R == 2
    params = {p.name: p.asnumpy() for p in deep.get_parameters()}
    for name, value in params.items():
        if ".1.block_projection." in name:
            assert not value.any(), name
        elif "grnn.1." in name and name.endswith("weight_ih_l0"):
            assert np.abs(value).max() > 0, name
    shallow.set_train(False)
    mixture = ms.Tensor(np.random.default_rng(0).standard_normal((1, 1203)).astype(np.float32))
    np.testing.assert_allclose(deep(mixture).asnumpy(), shallow(mixture).asnumpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(CheckpointError, match="--layers 1: .* has 1 layers already"):
        tool.main([str(tmp_path / "shallow.ckpt"), str(tmp_path / "bad.ckpt"), "--layers", "1"])


def test_bad_hyper_parameters_and_input_are_refused():
    with pytest.raises(SWaveConfigError, match="C=0"):
        SWave(16, 4, 8, 1, 0, 8000, 1.0)
    with pytest.raises(SWaveConfigError, match="N=4 must be >= L=8"):
        SWave(4, 8, 8, 1, 2, 8000, 1.0)
    with pytest.raises(SWaveConfigError, match="chunk size"):
        SWave(16, 4, 8, 1, 2, 8000, 0.0001)
    net = SWave(16, 4, 8, 1, 2, 8000, 0.05)
    with pytest.raises(ValueError, match="batch, time"):
        net(ms.Tensor(np.zeros(100, np.float32)))


# ---------------------------------------------------------------- forward against svoice
# (N, L): frame N//L vs hop L/2 covers every overlap-add case: equal (16, 4), frame shorter than
# the hop (16, 8), hop not dividing the frame (24, 6), N not a multiple of L (20, 8).
@pytest.mark.parametrize("N, L, C, input_normalize, lengths", [
    (16, 4, 2, False, [4, 251]),   # shortest input (T = L) and an odd length
    (16, 4, 3, True, [37]),
    (16, 8, 3, False, [99]),
    (24, 6, 2, False, [6]),
    (20, 8, 2, True, [131]),
])
def test_forward_matches_svoice_transcription(N, L, C, input_normalize, lengths):
    R, H, segment = 2, 8, 0.05
    net = SWave(N, L, H, R, C, 8000, segment, input_normalize=input_normalize)
    if input_normalize:  # make the affine part of GroupNorm matter
        for p in net.get_parameters():
            if "normalization" in p.name:
                p.set_data(ms.Tensor(np.random.default_rng(1).uniform(0.5, 1.5, p.shape).astype(np.float32)))
    P = params_of(net)
    rng = np.random.default_rng(0)
    net.set_train(True)
    for T in lengths:
        mixture = rng.standard_normal((2, T)).astype(np.float32)
        expected = svoice_forward(P, mixture.astype(np.float64), N, L, R, C, net.chunk_size, input_normalize)
        all_layers = net(ms.Tensor(mixture)).asnumpy()
        assert all_layers.shape == (R, 2, C, T)
        np.testing.assert_allclose(all_layers, expected, atol=2e-5, rtol=1e-4, err_msg=f"T={T}")
        assert np.abs(expected).max() > 1e-3  # the comparison is not between zeros
    net.set_train(False)
    last = net(ms.Tensor(mixture)).asnumpy()
    assert last.shape == (2, C, T)
    np.testing.assert_allclose(last, expected[-1], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("input_normalize, mode", [(False, ms.GRAPH_MODE), (True, ms.PYNATIVE_MODE)])
def test_host_inference_matches_construct(input_normalize, mode):
    """HostInference (evaluate.py's and separate.py's path on CPU) = the whole inference graph,
    with blocks in several pieces (rows and columns), batch 2, short and odd lengths; the
    parameters keep their names."""
    from src.models.swave import HostInference
    net = SWave(16, 4, 8, 2, 3, 8000, 0.05, input_normalize=input_normalize)
    names = [p.name for p in net.get_parameters()]
    net.set_train(False)
    rng = np.random.default_rng(3)
    mixtures = [rng.standard_normal((2, T)).astype(np.float32) for T in (4, 251, 1003)]
    expected = [net(ms.Tensor(mixture)).asnumpy() for mixture in mixtures]  # PyNative
    ms.set_context(mode=mode)
    runner = HostInference(net, piece_steps=64)  # K = 14: 4 sequences per row piece
    for mixture, ref in zip(mixtures, expected):
        np.testing.assert_allclose(runner(mixture), ref, atol=1e-5, rtol=1e-4, err_msg=f"T={mixture.shape[1]}")
    assert [p.name for p in net.get_parameters()] == names


def test_input_rms_makes_the_estimates_follow_the_level_of_the_mixture():
    """With input_rms the network sees every mixture at that RMS: a mixture 20 dB louder gives
    estimates exactly 10 times larger (whole graph, HostInference and training outputs), each
    item of a batch on its own; without it the network's result depends on the level."""
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_seed(0)
    rng = np.random.default_rng(4)
    quiet = (rng.standard_normal((2, 803)) * [[0.01], [0.2]]).astype(np.float32)
    plain = SWave(16, 4, 8, 2, 2, 8000, 0.05)
    net = SWave(16, 4, 8, 2, 2, 8000, 0.05, input_rms=0.07)
    ms.load_param_into_net(net, {p.name: p for p in plain.get_parameters()})
    for model in (plain, net):
        model.set_train(False)
    loud = net(ms.Tensor(quiet * 10)).asnumpy()
    np.testing.assert_allclose(loud, net(ms.Tensor(quiet)).asnumpy() * 10, rtol=1e-4, atol=1e-6 * np.abs(loud).max())
    np.testing.assert_allclose(net.host_inference()(quiet * 10), loud, rtol=1e-4, atol=1e-6 * np.abs(loud).max())
    at_rms = quiet[:1] * 0.07 / np.sqrt(np.mean(quiet[:1] ** 2))    # what the network sees for item 0
    np.testing.assert_allclose(loud[:1], plain(ms.Tensor(at_rms)).asnumpy() * np.sqrt(np.mean(quiet[:1] ** 2)) * 10
                               / 0.07, rtol=1e-3, atol=1e-5 * np.abs(loud).max())
    plain_loud = plain(ms.Tensor(quiet * 10)).asnumpy()
    assert np.abs(plain_loud - plain(ms.Tensor(quiet)).asnumpy() * 10).max() > 1e-3 * np.abs(plain_loud).max()
    net.set_train(True)
    train_loud = net(ms.Tensor(quiet * 10)).asnumpy()              # (R, batch, C, time)
    np.testing.assert_allclose(train_loud, net(ms.Tensor(quiet)).asnumpy() * 10, rtol=1e-4,
                               atol=1e-6 * np.abs(train_loud).max())
    with pytest.raises(SWaveConfigError, match="input_rms"):
        SWave(16, 4, 8, 2, 2, 8000, 0.05, input_rms=0.0)


# ---------------------------------------------------------------- gradients in GRAPH_MODE
def test_graph_gradients_repeat_and_match_pynative():
    """Also covers recompute=True (the paper config's setting) in GRAPH_MODE."""
    ms.set_seed(0)
    net = SWave(16, 8, 8, 2, 2, 8000, 0.05, recompute=True)
    net.set_train(True)
    with_loss = NetWithLoss(net)
    rng = np.random.default_rng(0)
    T = 203
    sources = rng.standard_normal((2, 2, T)).astype(np.float32)
    inputs = (ms.Tensor(sources.sum(axis=1)), ms.Tensor(sources), ms.Tensor(np.array([T, 150], np.int32)))
    grad_fn = ms.value_and_grad(with_loss, None, net.trainable_params())

    def as_numpy(result):
        return float(result[0].asnumpy()), [g.asnumpy() for g in result[1]]

    loss_py, grads_py = as_numpy(grad_fn(*inputs))
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        step = ms.jit(grad_fn)
        first_loss, first = as_numpy(step(*inputs))
        second_loss, second = as_numpy(step(*inputs))
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    assert first_loss == second_loss
    for name, a, b, ref in zip([p.name for p in net.trainable_params()], first, second, grads_py):
        np.testing.assert_array_equal(a, b, err_msg=name)
        np.testing.assert_allclose(a, ref, rtol=1e-3, atol=1e-5 * max(1.0, np.abs(ref).max()), err_msg=name)
    assert first_loss == pytest.approx(loss_py, rel=1e-5)
    encoder_grad = first[0]
    assert np.abs(encoder_grad).max() > 0
