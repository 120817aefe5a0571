"""The compiled LSTM recurrence (src/models/lstm.py, `model.lstm: fused`) against nn.LSTM with the
same weights: outputs and every gradient, in PyNative and GRAPH_MODE (gradient taken twice: the
pad-bug guard), one and two BiLSTMs per recurrence, saturated inputs, the inference kernel; and
SWave with lstm="fused" against lstm="native" (training outputs at lengths with different chunk
counts, GRAPH_MODE gradients, static-shape inference, dynamic and fixed-length MindIR export)."""
import numpy as np
import pytest
import mindspore as ms
from mindspore import nn

import src.models.lstm as lstm_module
from tests.models.net_with_loss import NetWithLoss
from src.models.lstm import FusedBiLSTMs, FusedLSTMError, fused_bilstms
from src.models.swave import MulCatBlock, SWave, SWaveConfigError, chunk_blocks, encoder_frames

N, H = 6, 5  # BiLSTM input and hidden size
SWAVE = dict(N=16, L=4, H=8, R=2, C=2, sample_rate=8000, segment=0.05)  # chunk size K = 14


class FusedBiLSTM(nn.LSTM):
    """`nn.LSTM(input_size, hidden_size, bidirectional=True, batch_first=True)` computed by
    FusedBiLSTMs, with nn.LSTM's parameters. `construct(x (S, T, N))` -> `(S, T, 2H)` (the output
    only, without the final states)."""

    def __init__(self, input_size, hidden_size):
        super().__init__(input_size, hidden_size, 1, has_bias=True, batch_first=True, bidirectional=True)
        self.fused = FusedBiLSTMs(1)

    def construct(self, x):
        return fused_bilstms(self.fused, (self,), x)[0]


@pytest.fixture(autouse=True)
def pynative():
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield


def assert_close(actual, expected, tol, what):
    """|actual - expected| <= tol * max(1, max |expected|), and `expected` is not all zeros."""
    expected = np.asarray(expected)
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=tol * scale, err_msg=what)
    assert np.abs(expected).max() > 1e-4, f"{what}: comparison between zeros"


def native_copy(lstm):
    """An nn.LSTM with the same parameters as `lstm`."""
    twin = nn.LSTM(N, H, 1, has_bias=True, batch_first=True, bidirectional=True)
    for mine, theirs in zip(lstm.get_parameters(), twin.get_parameters()):
        assert mine.name.split(".")[-1] == theirs.name
        theirs.set_data(mine.data.copy())
    return twin


def bilstm_pair(seed, training):
    """A FusedBiLSTM(N, H) in training (or inference) mode and an nn.LSTM with its parameters."""
    ms.set_seed(seed)
    fused = FusedBiLSTM(N, H)
    fused.set_train(training)
    return fused, native_copy(fused)


def random(shape, seed, scale=1.0):
    return ms.Tensor((scale * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32))


class WeightedSum(nn.Cell):
    """Scalar loss sum(outputs * fixed weights) of one or more BiLSTM outputs `(S, T, 2H)`."""

    def __init__(self, fn, weights):
        super().__init__(auto_prefix=False)
        self.fn, self.weights = fn, weights

    def construct(self, x):
        outputs = self.fn(x)
        total = 0
        for out, weight in zip(outputs, self.weights):
            total = total + (out * weight).sum()
        return total


def gradients(loss_cell, params, x):
    loss, (d_x, d_params) = ms.value_and_grad(loss_cell, 0, params)(x)
    return float(loss.asnumpy()), d_x.asnumpy(), [g.asnumpy() for g in d_params]


def test_fused_bilstm_matches_nn_lstm():
    fused, native = bilstm_pair(0, training=True)
    x = random((3, 7, N), 1)
    assert_close(fused(x).asnumpy(), native(x)[0].asnumpy(), 1e-5, "output")
    weights = (random((3, 7, 2 * H), 2),)
    expected = gradients(WeightedSum(lambda v: (native(v)[0],), weights), native.trainable_params(), x)
    fused_loss = WeightedSum(lambda v: (fused(v),), weights)
    for call in range(2):
        loss, d_x, d_params = gradients(fused_loss, fused.trainable_params(), x)
        assert loss == pytest.approx(expected[0], rel=1e-5)
        assert_close(d_x, expected[1], 1e-5, f"call {call}: d input")
        for param, mine, theirs in zip(fused.trainable_params(), d_params, expected[2]):
            assert_close(mine, theirs, 1e-5, f"call {call}: d {param.name}")


def test_two_lstms_in_one_recurrence_match_separate_lstms():
    class Pair(nn.Cell):
        def __init__(self):
            super().__init__()
            self.first, self.second = FusedBiLSTM(N, H), FusedBiLSTM(N, H)
            self.fused = FusedBiLSTMs(2)

        def construct(self, x):
            return fused_bilstms(self.fused, (self.first, self.second), x)

    ms.set_seed(3)
    pair = Pair()
    pair.set_train(True)
    natives = native_copy(pair.first), native_copy(pair.second)
    x = random((4, 5, N), 4)
    weights = random((4, 5, 2 * H), 5), random((4, 5, 2 * H), 6)
    outputs = pair(x)
    for out, native in zip(outputs, natives):
        assert_close(out.asnumpy(), native(x)[0].asnumpy(), 1e-5, "output")
    native_params = natives[0].trainable_params() + natives[1].trainable_params()
    expected = gradients(WeightedSum(lambda v: (natives[0](v)[0], natives[1](v)[0]), weights), native_params, x)
    loss, d_x, d_params = gradients(WeightedSum(pair, weights), pair.trainable_params(), x)
    assert_close(d_x, expected[1], 1e-5, "d input")
    assert len(d_params) == len(expected[2]) == 16
    for param, mine, theirs in zip(pair.trainable_params(), d_params, expected[2]):
        assert_close(mine, theirs, 1e-5, f"d {param.name}")


def test_saturated_gates_stay_finite_and_exact():
    fused, native = bilstm_pair(7, training=True)
    x = random((2, 6, N), 8, scale=60.0)  # pre-activations far in the flat parts of sigmoid and tanh
    out = fused(x).asnumpy()
    assert np.isfinite(out).all()
    assert_close(out, native(x)[0].asnumpy(), 1e-5, "output")


def test_inference_kernel_matches_and_refuses_gradients():
    fused, native = bilstm_pair(9, training=False)
    x = random((3, 9, N), 10)
    assert_close(fused(x).asnumpy(), native(x)[0].asnumpy(), 1e-5, "output")
    loss = WeightedSum(lambda v: (fused(v),), (random((3, 9, 2 * H), 11),))
    with pytest.raises(ValueError, match="set_train"):
        ms.value_and_grad(loss, 0, fused.trainable_params())(x)


def test_missing_compiler_is_a_clear_error_or_native_with_auto(monkeypatch):
    monkeypatch.setattr(lstm_module, "_library_path", None)
    monkeypatch.setattr(lstm_module.shutil, "which", lambda name: None)
    with pytest.raises(FusedLSTMError, match="g\\+\\+.*model.lstm=native"):
        lstm_module.kernel_library()
    with pytest.raises(SWaveConfigError, match="lstm='cudnn'"):
        SWave(**SWAVE, lstm="cudnn")
    with pytest.warns(UserWarning, match="model.lstm=auto: using nn.LSTM"):
        net = SWave(**SWAVE, lstm="auto")     # e.g. evaluate.py on a machine without a compiler
    assert not any(isinstance(cell, FusedBiLSTMs) for _, cell in net.cells_and_names())


# ---------------------------------------------------------------- SWave
def swave_pair(recompute=False):
    """SWave with lstm="fused" and one with lstm="native" holding the same parameters."""
    ms.set_seed(0)
    fused = SWave(**SWAVE, recompute=recompute, lstm="fused")
    native = SWave(**SWAVE, recompute=recompute, lstm="native")
    assert [p.name for p in fused.get_parameters()] == [p.name for p in native.get_parameters()]
    for mine, theirs in zip(fused.get_parameters(), native.get_parameters()):
        theirs.set_data(mine.data.copy())
    return fused, native


def chunk_count(net, samples):
    return 2 * chunk_blocks(encoder_frames(samples, net.L), net.chunk_size)


def test_swave_fused_training_outputs_match_native_at_several_lengths():
    fused, native = swave_pair()
    fused.set_train(True)
    native.set_train(True)
    lengths = (203, 399, 811)
    assert len({chunk_count(fused, t) for t in lengths}) == 3  # the column LSTMs' step counts differ
    for samples in lengths:
        mixture = random((2, samples), samples)
        expected = native(mixture).asnumpy()
        assert expected.shape == (SWAVE["R"], 2, SWAVE["C"], samples)
        assert_close(fused(mixture).asnumpy(), expected, 1e-4, f"T={samples}")


def record_shapes(out_shape, calls):
    """`out_shape` (an ops.Custom shape function) that also appends its first input's shape to
    `calls` (MindSpore calls it when it compiles a graph holding the op)."""
    def recording(*shapes):
        calls.append(tuple(shapes[0]))
        return out_shape(*shapes)
    return recording


def test_swave_fused_graph_gradients_repeat_and_match_native():
    """The paper config's recompute=True with the fused LSTMs, in GRAPH_MODE (this module's one
    training-graph compile), against native PyNative gradients."""
    fused, native = swave_pair(recompute=True)
    fused.set_train(True)
    native.set_train(True)
    rng = np.random.default_rng(0)
    samples = 251
    sources = rng.standard_normal((2, 2, samples)).astype(np.float32)
    inputs = (ms.Tensor(sources.sum(axis=1)), ms.Tensor(sources), ms.Tensor(np.array([samples, 180], np.int32)))
    reference = ms.value_and_grad(NetWithLoss(native), None, native.trainable_params())(*inputs)
    # the graph must hold the fused kernels (MulCatBlock falls back to nn.LSTM when a shape is not
    # static, and the comparison would then be native against native): record every shape
    # inference of each block's training forward and backward kernels while the graph compiles
    blocks = [cell for _, cell in fused.cells_and_names() if isinstance(cell, MulCatBlock)]
    assert len(blocks) == 2 * SWAVE["R"]
    inferred = {}
    for index, block in enumerate(blocks):
        recurrence = block.fused.recurrence.training_recurrence
        for kind, op in (("forward", recurrence.forward), ("backward", recurrence.backward)):
            inferred[index, kind] = []
            op.out_shape = record_shapes(op.out_shape, inferred[index, kind])
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        step = ms.jit(ms.value_and_grad(NetWithLoss(fused), None, fused.trainable_params()))
        results = [step(*inputs) for _ in range(2)]
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    for (index, kind), shapes in inferred.items():
        assert shapes, f"MulCatBlock {index}: the fused {kind} kernel is not in the training graph"
        assert all(min(shape) > 0 for shape in shapes), (index, kind, shapes)   # compiled for static shapes
    names = [p.name for p in fused.trainable_params()]
    first, second = ([g.asnumpy() for g in result[1]] for result in results)
    assert float(results[0][0].asnumpy()) == float(results[1][0].asnumpy())
    assert float(results[0][0].asnumpy()) == pytest.approx(float(reference[0].asnumpy()), rel=1e-5)
    lstm_grads = 0
    for name, a, b, ref in zip(names, first, second, reference[1]):
        np.testing.assert_array_equal(a, b, err_msg=name)
        assert_close(a, ref.asnumpy(), 1e-4, name)
        lstm_grads += "rnn.weight_hh_l0_reverse" in name
    assert lstm_grads == 2 * 2 * SWAVE["R"]  # rows and columns, rnn and gate_rnn, every layer


def test_swave_fused_inference_and_export(tmp_path):
    """In inference, graphs compiled for one length and for any length (as evaluate.py and
    separate.py compile it) run the fused kernel and match nn.LSTM; exported graphs (dynamic
    length, and fixed length) hold standard ops only and match too."""
    from src.export import export_network
    from src.inference.network import NetworkSeparator

    fused, native = swave_pair()
    fused.set_train(False)
    native.set_train(False)
    mixtures = [random((1, samples), samples) for samples in (160, 333, 1001)]
    expected = [native(mixture).asnumpy() for mixture in mixtures]  # PyNative
    path = str(tmp_path / "swave_fused")
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        static = fused(mixtures[1]).asnumpy()
        assert any(isinstance(cell, FusedBiLSTMs) for _, cell in fused.cells_and_names())
        any_length = NetworkSeparator(fused)
        dynamic = [any_length(mixture.asnumpy()) for mixture in mixtures]
        dynamic_path = export_network(fused, path, "MINDIR")
        fixed_path = export_network(fused, path + "_333", "MINDIR", length=333)
        exported = nn.GraphCell(ms.load(dynamic_path))
        outputs = [exported(mixture).asnumpy() for mixture in mixtures]
        fixed = nn.GraphCell(ms.load(fixed_path))(mixtures[1]).asnumpy()
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    assert_close(static, expected[1], 1e-5, "fused inference, T=333")
    assert_close(fixed, expected[1], 1e-5, "fixed-length export, T=333")
    for out, ref in zip(dynamic, expected):
        assert_close(out, ref, 1e-5, f"fused inference for any length, T={ref.shape[-1]}")
    for mixture, out, ref in zip(mixtures, outputs, expected):
        assert out.shape == (1, SWAVE["C"], mixture.shape[1])
        assert_close(out, ref, 1e-5, f"T={mixture.shape[1]}")
    for exported_file in (dynamic_path, fixed_path):
        with open(exported_file, "rb") as f:
            assert b"LstmInferForward" not in f.read(), f"{exported_file} holds the fused kernel"
