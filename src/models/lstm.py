"""Bidirectional LSTMs on CPU with a compiled recurrence (`model.lstm: fused`).

MindSpore 2.10's CPU LSTM (nn.LSTM -> oneDNN) spends most of a training step in its backward
kernel. Here the recurrence runs in a small C++ library called through `ops.Custom` ("aot"): for
each step one GEMM of [x_t | h_{t-1}] with [w_ih | w_hh] (oneDNN's `dnnl_sgemm`, the library
MindSpore's own CPU kernels use) and one pass over the gates, forward and backward, the
directions on parallel threads. The forward pass keeps only the activated gates for the
backward pass; the backward pass rebuilds the cell states from them (an elementwise scan).

Several BiLSTMs that read the same input (SWave's MulCat block has two) share the input matmul
and one recurrence call. Their parameters stay those of the nn.LSTM cells they are read from,
so names, shapes and checkpoints are the same as with `model.lstm: native`.

The library (source: `src/models/kernels/lstm.cc`) is compiled with g++ on first use (about a
second) and cached in
`$GDPRNN_CACHE` (default `~/.cache/gdprnn`), keyed by the source, the compiler flags, the CPU and
the MindSpore installation. CPU only; it needs g++ and glibc >= 2.35 for vectorised tanh (older
glibc works, slower).
"""
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import mindspore as ms
from mindspore import nn, ops

from src.config import ConfigError


class FusedLSTMError(ConfigError):
    """The compiled LSTM recurrence cannot be built or used here (entry scripts print it as a
    configuration error: the fix is `model.lstm=native`)."""


# the C++ recurrence (forward, backward, inference with its shape function); its text is part of the cache key
_KERNEL_SOURCE = (Path(__file__).resolve().parent / "kernels" / "lstm.cc").read_text(encoding="utf-8")

_COMPILER_FLAGS = ("-std=c++17", "-O3", "-march=native", "-ffast-math", "-shared", "-fPIC", "-pthread")
_build_lock = threading.Lock()
_library_path = None


def _mindspore_lib_dir():
    return os.path.join(os.path.dirname(os.path.abspath(ms.__file__)), "lib")


def _cpu_signature():
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return platform.processor()


def kernel_library():
    """Path of the compiled recurrence library, built on first use (FusedLSTMError if it cannot be)."""
    global _library_path
    with _build_lock:
        if _library_path is not None:
            return _library_path
        lib_dir = _mindspore_lib_dir()
        dnnl = os.path.join(lib_dir, "libdnnl.so.3")
        if not os.path.isfile(dnnl):
            raise FusedLSTMError(f"model.lstm=fused: {dnnl} not found (this MindSpore build has no oneDNN); "
                                 "use model.lstm=native")
        compiler = shutil.which("g++")
        if compiler is None:
            raise FusedLSTMError("model.lstm=fused needs g++ to build its LSTM kernels (apt-get install g++); "
                                 "or use model.lstm=native")
        key = hashlib.sha256("\n".join((_KERNEL_SOURCE, " ".join(_COMPILER_FLAGS), lib_dir, platform.machine(),
                                        _cpu_signature())).encode()).hexdigest()[:16]
        cache = os.environ.get("GDPRNN_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "gdprnn")
        try:
            os.makedirs(cache, exist_ok=True)
        except OSError:
            cache = tempfile.gettempdir()
        target = os.path.join(cache, f"lstm_kernels_{key}.so")
        if not os.path.isfile(target):
            with tempfile.TemporaryDirectory(dir=cache) as work:
                source = os.path.join(work, "lstm_kernels.cc")
                with open(source, "w", encoding="utf-8") as f:
                    f.write(_KERNEL_SOURCE)
                built = os.path.join(work, "lstm_kernels.so")
                cmd = [compiler, *_COMPILER_FLAGS, "-o", built, source, f"-L{lib_dir}", "-l:libdnnl.so.3",
                       f"-Wl,-rpath,{lib_dir}"]
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode != 0:
                    raise FusedLSTMError("model.lstm=fused: compiling the LSTM kernels failed "
                                         f"({' '.join(cmd)}):\n{done.stderr[-2000:]}\nor use model.lstm=native")
                os.replace(built, target)  # atomic: parallel workers may build at the same time
        _library_path = target
        return target


def fused_lstm_available():
    """Whether the kernels can be built here (they are, on first call); `model.lstm: auto` uses
    nn.LSTM otherwise, with a warning."""
    try:
        kernel_library()
        return True
    except FusedLSTMError as err:
        warnings.warn(f"model.lstm=auto: using nn.LSTM, the fused LSTM is not available ({err})")
        return False


def _hidden_shape(x_shape, w_shape, *_):
    """x `(S, T, N)`, w `(D, 4H, N+H)` -> `(S, T, D, H)`."""
    return (x_shape[0], x_shape[1], w_shape[0], w_shape[1] // 4 if w_shape[1] > 0 else -1)


_INFERENCE_REG_INFO = (ops.CustomRegOp().input(0, "x").input(1, "weights").input(2, "bias").output(0, "h")
                       .dtype_format(*[ops.DataType.F32_Default] * 4).target("CPU").get_op_info())


def _no_gradient_in_inference(x, weights, bias, out, dout):
    raise ValueError("LSTMRecurrence: the inference kernel keeps no state for gradients; "
                     "call set_train(True) on the network before differentiating it")


class _TrainingRecurrence(nn.Cell):
    """Forward that keeps what the backward needs: `(x, weights, bias)` -> `(h, gates)`;
    `bprop` is the C++ back-propagation through time."""

    def __init__(self, library):
        super().__init__()
        self.forward = ops.Custom(
            f"{library}:LstmTrainForward", func_type="aot",
            out_shape=lambda x, w, bias: (_hidden_shape(x, w), (x[0], x[1], w[0], w[1])),
            out_dtype=lambda *_: (ms.float32, ms.float32))
        self.backward = ops.Custom(
            f"{library}:LstmBackward", func_type="aot",
            out_shape=lambda dh, x, h, gates, w: (tuple(x), tuple(w), (w[0], w[1])),
            out_dtype=lambda *_: (ms.float32, ms.float32, ms.float32))

    def construct(self, x, weights, bias):
        return self.forward(x, weights, bias)

    def bprop(self, x, weights, bias, out, dout):
        h, gates = out
        return self.backward(dout[0], x, h, gates, weights)


class LSTMRecurrence(nn.Cell):
    """D LSTM directions over one batch-first input, even ones forward in time and odd ones
    backward, input projections included.

    `construct(x (S, T, N), weights (D, 4H, N+H), bias (D, 4H))` -> `h (S, T, D, H)`, where
    `weights[d]` = [w_ih | w_hh] of direction d and `bias` = bias_ih + bias_hh, gates in PyTorch's
    order i, f, g, o. Differentiable in training mode (`set_train(True)`, static shapes only);
    in inference any dimension may be dynamic. float32 only.
    """

    def __init__(self):
        super().__init__()
        if ms.get_context("device_target") != "CPU":
            raise FusedLSTMError(f"model.lstm=fused runs on CPU only (device_target is "
                                 f"{ms.get_context('device_target')}); use model.lstm=native")
        library = kernel_library()
        self.training_recurrence = _TrainingRecurrence(library)
        # out_shape=None: shapes come from the library's LstmInferForwardInferShape, which (with
        # reg_info) MindSpore 2.10 also calls for dimensions known only at run time
        self.inference = ops.Custom(f"{library}:LstmInferForward", func_type="aot", out_shape=None,
                                    out_dtype=lambda *_: ms.float32, bprop=_no_gradient_in_inference,
                                    reg_info=_INFERENCE_REG_INFO)

    def construct(self, x, weights, bias):
        if self.training:
            return self.training_recurrence(x, weights, bias)[0]
        return self.inference(x, weights, bias)


class FusedBiLSTMs(nn.Cell):
    """K bidirectional one-layer LSTMs over the same batch-first input in one recurrence call.

    `construct(x (S, T, N), weights (2K, 4H, N+H), bias (2K, 4H))` -> tuple of K `(S, T, 2H)`
    outputs (forward then reverse hidden states, as nn.LSTM's output). Direction 2k is LSTM k's
    forward direction, 2k+1 its reverse one (`stacked_weights` builds the arguments from
    nn.LSTM cells).
    """

    def __init__(self, num_lstms):
        super().__init__()
        self.num_lstms = num_lstms
        self.recurrence = LSTMRecurrence()
        self.split = ops.Split(axis=2, output_num=num_lstms)

    def construct(self, x, weights, bias):
        sequences, steps, _ = x.shape
        h = self.recurrence(x, weights, bias).reshape(sequences, steps, self.num_lstms, -1)
        if self.num_lstms == 1:
            return (h.squeeze(2),)
        return tuple(part.squeeze(2) for part in self.split(h))


def static_shape(x):
    """True when every dimension of `x` is known when the graph is compiled (False in graphs
    declared with a dynamic axis, e.g. `set_inputs(Tensor(shape=[None, None]))`)."""
    for dim in x.shape:
        if not ops.isconstant(dim) or dim < 0:
            return False
    return True


def stacked_weights(lstms):
    """`(weights (2K, 4H, N+H), bias (2K, 4H))` of the bidirectional one-layer nn.LSTM cells
    `lstms`, in FusedBiLSTMs' direction order: [w_ih | w_hh] and bias_ih + bias_hh."""
    weights, bias = [], []
    for lstm in lstms:
        for direction in (0, 1):
            weights.append(ops.cat((lstm.w_ih_list[direction], lstm.w_hh_list[direction]), axis=1))
            bias.append(lstm.b_ih_list[direction] + lstm.b_hh_list[direction])
    return ops.stack(weights), ops.stack(bias)


def fused_bilstms(fused, lstms, x):
    """`lstms(x)` for bidirectional one-layer nn.LSTM cells (`batch_first=True`) that read the
    same `x (S, T, N)`, computed by `fused` (a FusedBiLSTMs for len(lstms)): tuple of `(S, T, 2H)`."""
    return fused(x, *stacked_weights(lstms))
