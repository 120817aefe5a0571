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

The library is compiled with g++ on first use (about a second) and cached in
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

import mindspore as ms
from mindspore import nn, ops

from src.config import ConfigError


class FusedLSTMError(ConfigError):
    """The compiled LSTM recurrence cannot be built or used here (entry scripts print it as a
    configuration error: the fix is `model.lstm=native`)."""


_KERNEL_SOURCE = r"""
// LSTM recurrences for MindSpore CPU (ops.Custom "aot"), batch-first layouts, PyTorch gate order
// i, f, g, o:  x (S, T, N); w (D, 4H, N+H) = [w_ih | w_hh] of each direction; bias (D, 4H);
// h (S, T, D, H); gates (S, T, D, 4H) after activation. The cell states are not stored: the
// backward pass rebuilds them from the gates (c_t = f_t c_{t-1} + i_t g_t, no matmul).
// Direction d runs forward in time when d is even, backward in time when d is odd.
// Every step works on contiguous buffers: z = [x_t | h_prev] (S, N+H), one GEMM with w.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

extern "C" int dnnl_sgemm(char transa, char transb, int64_t M, int64_t N, int64_t K, float alpha,
                          const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                          float *C, int64_t ldc);

namespace {

struct Dims {
  int64_t S, T, N, D, H;
  int64_t at(int64_t s, int64_t t, int64_t d, int64_t width) const { return ((s * T + t) * D + d) * width; }
  const float *x_row(const float *x, int64_t s, int64_t t) const { return x + (s * T + t) * N; }
};

// tanh-based: stays finite and exact at the tails under -ffast-math (exp would overflow)
inline float sigmoid(float x) { return 0.5f * std::tanh(0.5f * x) + 0.5f; }

int64_t worker_count(int64_t D) {
  int64_t workers = std::thread::hardware_concurrency();
  if (const char *env = std::getenv("GDPRNN_LSTM_THREADS")) workers = std::atoi(env);
  if (workers < 1) workers = 1;
  return workers > D ? D : workers;
}

// fn(worker, direction) for every direction, directions spread over worker threads
template <typename Fn>
void for_each_direction(int64_t D, int64_t workers, Fn fn) {
  std::vector<std::thread> threads;
  for (int64_t w = 1; w < workers; ++w) {
    threads.emplace_back([=]() {
      for (int64_t d = w; d < D; d += workers) fn(w, d);
    });
  }
  for (int64_t d = 0; d < D; d += workers) fn(0, d);
  for (auto &t : threads) t.join();
}

// One direction forward. gates == nullptr: inference, only h is written out.
void forward_direction(const Dims &n, int64_t d, const float *x, const float *weights, const float *bias,
                       float *h, float *gates) {
  const int64_t N = n.N, H = n.H, G = 4 * H, K = N + H, T = n.T, S = n.S;
  const float *w = weights + d * G * K;
  const float *b = bias + d * G;
  std::vector<float> z(S * K, 0.0f), gate_buf(S * G), c_buf(S * H, 0.0f);
  const bool reverse = d % 2 == 1;
  for (int64_t step = 0; step < T; ++step) {
    const int64_t t = reverse ? T - 1 - step : step;
    for (int64_t s = 0; s < S; ++s) {  // h_prev is already in z[:, N:] (zeros at the first step)
      std::memcpy(z.data() + s * K, n.x_row(x, s, t), sizeof(float) * N);
      std::memcpy(gate_buf.data() + s * G, b, sizeof(float) * G);
    }
    // gates = bias + [x_t | h_prev] (S, N+H) @ w^T (N+H, 4H)
    dnnl_sgemm('N', 'T', S, G, K, 1.0f, z.data(), K, w, K, 1.0f, gate_buf.data(), G);
    for (int64_t s = 0; s < S; ++s) {
      float *g_row = gate_buf.data() + s * G;
      float *h_row = z.data() + s * K + N;  // becomes the next step's h_prev
      float *c_row = c_buf.data() + s * H;  // the previous cell state, updated in place
      for (int64_t j = 0; j < 2 * H; ++j) g_row[j] = sigmoid(g_row[j]);
      for (int64_t j = 2 * H; j < 3 * H; ++j) g_row[j] = std::tanh(g_row[j]);
      for (int64_t j = 3 * H; j < G; ++j) g_row[j] = sigmoid(g_row[j]);
      const float *i = g_row, *f = g_row + H, *g = g_row + 2 * H, *o = g_row + 3 * H;
      for (int64_t j = 0; j < H; ++j) c_row[j] = f[j] * c_row[j] + i[j] * g[j];
      for (int64_t j = 0; j < H; ++j) h_row[j] = o[j] * std::tanh(c_row[j]);
      std::memcpy(h + n.at(s, t, d, H), h_row, sizeof(float) * H);
      if (gates) std::memcpy(gates + n.at(s, t, d, G), g_row, sizeof(float) * G);
    }
  }
}

// One direction backward: adds this direction's input gradient to dx (zeroed by the caller) and
// writes its d_w (4H, N+H) and d_bias (4H).
void backward_direction(const Dims &n, int64_t d, const float *dh, const float *x, const float *h,
                        const float *gates, const float *weights, float *dx, float *d_w, float *d_bias) {
  const int64_t N = n.N, H = n.H, G = 4 * H, K = N + H, T = n.T, S = n.S;
  const float *w = weights + d * G * K;
  float *dw = d_w + d * G * K;
  float *db = d_bias + d * G;
  std::memset(db, 0, sizeof(float) * G);
  std::vector<float> d_pre(S * G), z(S * K), dz(S * K, 0.0f), dc_next(S * H, 0.0f), tanh_c(H), zeros(H, 0.0f);
  std::vector<float> dw_t(K * G, 0.0f);  // d_w transposed: oneDNN accumulates (N+H, 4H) faster
  const bool reverse = d % 2 == 1;
  // this direction's cell states (S, T, H), rebuilt from the stored gates in the forward order
  std::vector<float> cells(S * T * H);
  for (int64_t s = 0; s < S; ++s) {
    for (int64_t step = 0; step < T; ++step) {
      const int64_t t = reverse ? T - 1 - step : step;
      const float *g_row = gates + n.at(s, t, d, G);
      const float *c_prev = step > 0 ? cells.data() + (s * T + (reverse ? t + 1 : t - 1)) * H : zeros.data();
      float *c_row = cells.data() + (s * T + t) * H;
      for (int64_t j = 0; j < H; ++j) c_row[j] = g_row[H + j] * c_prev[j] + g_row[j] * g_row[2 * H + j];
    }
  }
  const float *c = cells.data();
  for (int64_t step = T - 1; step >= 0; --step) {
    const int64_t t = reverse ? T - 1 - step : step;
    const int64_t tp = reverse ? t + 1 : t - 1;
    for (int64_t s = 0; s < S; ++s) {
      const float *g_row = gates + n.at(s, t, d, G);
      const float *i = g_row, *f = g_row + H, *g = g_row + 2 * H, *o = g_row + 3 * H;
      const float *c_row = c + (s * T + t) * H;
      const float *c_prev = step > 0 ? c + (s * T + tp) * H : zeros.data();
      const float *h_prev = step > 0 ? h + n.at(s, tp, d, H) : zeros.data();
      const float *dh_row = dh + n.at(s, t, d, H);
      const float *rec = dz.data() + s * K + N;  // from the later step: d_pre_{t+1} @ w_hh
      float *dp_row = d_pre.data() + s * G;
      float *dcn = dc_next.data() + s * H;  // dc of the later step times its forget gate
      for (int64_t j = 0; j < H; ++j) tanh_c[j] = std::tanh(c_row[j]);
      for (int64_t j = 0; j < H; ++j) {
        const float tc = tanh_c[j];
        const float dht = dh_row[j] + rec[j];
        const float dct = dht * o[j] * (1.0f - tc * tc) + dcn[j];
        dp_row[j] = dct * g[j] * i[j] * (1.0f - i[j]);
        dp_row[H + j] = dct * c_prev[j] * f[j] * (1.0f - f[j]);
        dp_row[2 * H + j] = dct * i[j] * (1.0f - g[j] * g[j]);
        dp_row[3 * H + j] = dht * tc * o[j] * (1.0f - o[j]);
        dcn[j] = dct * f[j];
      }
      for (int64_t j = 0; j < G; ++j) db[j] += dp_row[j];
      std::memcpy(z.data() + s * K, n.x_row(x, s, t), sizeof(float) * N);
      std::memcpy(z.data() + s * K + N, h_prev, sizeof(float) * H);
    }
    // [dx_t | dh_prev] (S, N+H) = d_pre (S, 4H) @ w (4H, N+H);  d_w^T += [x_t | h_prev]^T (N+H, S) @ d_pre
    dnnl_sgemm('N', 'N', S, K, G, 1.0f, d_pre.data(), G, w, K, 0.0f, dz.data(), K);
    dnnl_sgemm('T', 'N', K, G, S, 1.0f, z.data(), K, d_pre.data(), G, 1.0f, dw_t.data(), G);
    for (int64_t s = 0; s < S; ++s) {
      float *dx_row = dx + (s * T + t) * N;
      const float *src = dz.data() + s * K;
      for (int64_t j = 0; j < N; ++j) dx_row[j] += src[j];
    }
  }
  for (int64_t g = 0; g < G; ++g) {
    for (int64_t k = 0; k < K; ++k) dw[g * K + k] = dw_t[k * G + g];
  }
}

bool check(int nparam, int expected, int *ndims, const int *expected_ndims, const char **dtypes) {
  if (nparam != expected) return false;
  for (int k = 0; k < nparam; ++k) {
    if (ndims[k] != expected_ndims[k] || std::strcmp(dtypes[k], "float32") != 0) return false;
  }
  return true;
}

// from x (S, T, N) and w (D, 4H, N+H)
Dims dims_of(int64_t **shapes, int x_index, int w_index) {
  const int64_t H = shapes[w_index][1] / 4;
  return Dims{shapes[x_index][0], shapes[x_index][1], shapes[x_index][2], shapes[w_index][0], H};
}

int forward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, bool training) {
  const int expected[] = {3, 3, 2, 4, 4};
  if (!check(nparam, training ? 5 : 4, ndims, expected, dtypes)) return 1;
  const Dims n = dims_of(shapes, 0, 1);
  if (shapes[1][2] != n.N + n.H) return 1;
  auto x = static_cast<const float *>(params[0]);
  auto w = static_cast<const float *>(params[1]);
  auto bias = static_cast<const float *>(params[2]);
  auto h = static_cast<float *>(params[3]);
  auto gates = training ? static_cast<float *>(params[4]) : nullptr;
  for_each_direction(n.D, worker_count(n.D),
                     [&](int64_t, int64_t d) { forward_direction(n, d, x, w, bias, h, gates); });
  return 0;
}

}  // namespace

// x (S, T, N), w (D, 4H, N+H), bias (D, 4H) -> h (S, T, D, H), gates (S, T, D, 4H)
extern "C" int LstmTrainForward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                void *stream, void *extra) {
  return forward(nparam, params, ndims, shapes, dtypes, true);
}

// x (S, T, N), w (D, 4H, N+H), bias (D, 4H) -> h (S, T, D, H)
extern "C" int LstmInferForward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                void *stream, void *extra) {
  return forward(nparam, params, ndims, shapes, dtypes, false);
}

// MindSpore's shape inference for LstmInferForward (lets graphs with a dynamic length use it):
// x (S, T, N), w (D, 4H, N+H) -> h (S, T, D, H); -1 stays -1 (a dimension known only at run time)
extern "C" std::vector<int64_t> LstmInferForwardInferShape(int *ndims, int64_t **shapes, void *extra) {
  return std::vector<int64_t>{shapes[0][0], shapes[0][1], shapes[1][0], shapes[1][1] < 0 ? -1 : shapes[1][1] / 4};
}

// dh (S, T, D, H), x (S, T, N), h (S, T, D, H), gates (S, T, D, 4H), w (D, 4H, N+H)
//   -> dx (S, T, N), d_w (D, 4H, N+H), d_bias (D, 4H)
extern "C" int LstmBackward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                            void *stream, void *extra) {
  const int expected[] = {4, 3, 4, 4, 3, 3, 3, 2};
  if (!check(nparam, 8, ndims, expected, dtypes)) return 1;
  const Dims n = dims_of(shapes, 1, 4);
  auto dh = static_cast<const float *>(params[0]);
  auto x = static_cast<const float *>(params[1]);
  auto h = static_cast<const float *>(params[2]);
  auto gates = static_cast<const float *>(params[3]);
  auto w = static_cast<const float *>(params[4]);
  auto dx = static_cast<float *>(params[5]);
  auto d_w = static_cast<float *>(params[6]);
  auto d_bias = static_cast<float *>(params[7]);
  const int64_t workers = worker_count(n.D), size = n.S * n.T * n.N;
  // worker 0 accumulates into dx, the others into their own buffers, summed at the end
  std::vector<std::vector<float>> partial(workers - 1, std::vector<float>(size, 0.0f));
  std::memset(dx, 0, sizeof(float) * size);
  for_each_direction(n.D, workers, [&](int64_t worker, int64_t d) {
    float *target = worker == 0 ? dx : partial[worker - 1].data();
    backward_direction(n, d, dh, x, h, gates, w, target, d_w, d_bias);
  });
  for (const auto &p : partial) {
    for (int64_t k = 0; k < size; ++k) dx[k] += p[k];
  }
  return 0;
}
"""

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
