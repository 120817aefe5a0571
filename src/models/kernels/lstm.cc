
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
