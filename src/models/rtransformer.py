"""R-Transformer mask estimator for speech enhancement.

R-Transformer (Wang et al., "R-Transformer: Recurrent Neural Network Enhanced Transformer",
2019): every block runs `n` LocalRNN layers (an RNN over the `ksize` most recent frames of
each frame, so local order is modelled without position embeddings), then multi-head
self-attention over all frames, then a position-wise feed-forward layer. As in the authors'
code (github DSE-MSU/R-transformer) each sub-layer is a pre-norm residual
`x + dropout(sublayer(norm(x)))`; `layer_norm=False` (the ZRT variant) drops the norm. The
authors' LayerNorm divides by `std + eps`; this uses the standard `nn.LayerNorm`.

The enhancement network maps (batch, frames, input_size) features to a (batch, frames,
output_size) mask in [0, 1]: Linear -> embedding dropout -> blocks -> Linear -> sigmoid.
"""
import math

import mindspore as ms
from mindspore import nn, ops

from src.models.layers import ReproducibleDropout, salt_dropouts

RNN_TYPES = ("LSTM", "GRU")


class LocalRNN(nn.Cell):
    """RNN over the window of the `ksize` most recent frames of every frame (zeros before
    the first frame); returns the last hidden state of each window.

    `construct(x (batch, frames, d))` -> (batch, frames, d). Causal: frame t sees t-ksize+1..t.
    """

    def __init__(self, d_model, rnn_type, ksize):
        super().__init__()
        if rnn_type not in RNN_TYPES:
            raise ValueError(f"rnn_type must be one of {RNN_TYPES}, got '{rnn_type}'")
        if ksize < 1:
            raise ValueError(f"ksize must be >= 1, got {ksize}")
        self.ksize = ksize
        rnn_class = nn.LSTM if rnn_type == "LSTM" else nn.GRU
        self.rnn = rnn_class(d_model, d_model, batch_first=True)

    def construct(self, x):
        batch, frames, d_model = x.shape
        if self.ksize > 1:
            # left padding with ops.cat of zeros (ops.pad has wrong gradients in GRAPH_MODE)
            zeros = ops.zeros((batch, self.ksize - 1, d_model), x.dtype)
            padded = ops.cat((zeros, x), axis=1)
        else:
            padded = x
        # window of frame t = padded[t : t + ksize]: one shifted copy per window position, joined
        # with ops.cat (ops.stack of these slices fails shape inference in a dynamic-length MindIR)
        shifted = [padded[:, k:k + frames, :].expand_dims(2) for k in range(self.ksize)]
        windows = ops.cat(shifted, axis=2)                        # (batch, frames, ksize, d)
        windows = windows.reshape(batch * frames, self.ksize, d_model)
        out = self.rnn(windows)[0]                                 # (batch*frames, ksize, d)
        return out[:, -1, :].reshape(batch, frames, d_model)


class MultiHeadAttention(nn.Cell):
    """Scaled dot-product self-attention with `h` heads.

    `construct(x (batch, frames, d), allowed (batch, 1, frames or 1, frames) bool)` where
    `allowed[b, 0, i, j]` says whether frame i may attend to frame j (row broadcast if 1).
    """

    def __init__(self, d_model, h, dropout):
        super().__init__()
        if d_model % h:
            raise ValueError(f"d_model ({d_model}) must be divisible by the head count h ({h})")
        self.h = h
        self.d_k = d_model // h
        self.query = nn.Dense(d_model, d_model)
        self.key = nn.Dense(d_model, d_model)
        self.value = nn.Dense(d_model, d_model)
        self.output = nn.Dense(d_model, d_model)
        self.dropout = ReproducibleDropout(dropout)
        self.scale = 1.0 / math.sqrt(self.d_k)

    def _heads(self, x, batch, frames):
        return x.reshape(batch, frames, self.h, self.d_k).transpose(0, 2, 1, 3)

    def construct(self, x, allowed):
        batch, frames, d_model = x.shape
        q = self._heads(self.query(x), batch, frames)              # (batch, h, frames, d_k)
        k = self._heads(self.key(x), batch, frames)
        v = self._heads(self.value(x), batch, frames)
        scores = ops.matmul(q, k.transpose(0, 1, 3, 2)) * self.scale
        scores = ops.masked_fill(scores, ops.logical_not(allowed), ms.Tensor(-1e9, scores.dtype))
        weights = self.dropout(ops.softmax(scores, axis=-1))
        out = ops.matmul(weights, v).transpose(0, 2, 1, 3).reshape(batch, frames, d_model)
        return self.output(out)


class FeedForward(nn.Cell):
    """Position-wise feed-forward layer d -> 4d -> d with ReLU (as in the reference code)."""

    def __init__(self, d_model, dropout):
        super().__init__()
        self.w_1 = nn.Dense(d_model, 4 * d_model)
        self.w_2 = nn.Dense(4 * d_model, d_model)
        self.relu = nn.ReLU()
        self.dropout = ReproducibleDropout(dropout)

    def construct(self, x):
        return self.w_2(self.dropout(self.relu(self.w_1(x))))


def _norm(d_model, layer_norm):
    return nn.LayerNorm((d_model,), epsilon=1e-6) if layer_norm else nn.Identity()


class RTransformerBlock(nn.Cell):
    """`n` LocalRNN layers, multi-head attention, feed-forward; each a pre-norm residual
    sub-layer `x + dropout(sublayer(norm(x)))` (norm = identity when `layer_norm=False`).

    `construct(x (batch, frames, d), allowed (batch, 1, frames or 1, frames))` -> (batch, frames, d).
    """

    def __init__(self, d_model, rnn_type, ksize, n, h, dropout, layer_norm):
        super().__init__()
        self.rnns = nn.CellList([LocalRNN(d_model, rnn_type, ksize) for _ in range(n)])
        self.rnn_norms = nn.CellList([_norm(d_model, layer_norm) for _ in range(n)])
        self.attention = MultiHeadAttention(d_model, h, dropout)
        self.attention_norm = _norm(d_model, layer_norm)
        self.feed_forward = FeedForward(d_model, dropout)
        self.feed_forward_norm = _norm(d_model, layer_norm)
        self.dropout = ReproducibleDropout(dropout)

    def construct(self, x, allowed):
        for rnn, norm in zip(self.rnns, self.rnn_norms):
            x = x + self.dropout(rnn(norm(x)))
        x = x + self.dropout(self.attention(self.attention_norm(x), allowed))
        return x + self.dropout(self.feed_forward(self.feed_forward_norm(x)))


class RTransformer(nn.Cell):
    """R-Transformer mask estimator.

    `construct(features (batch, frames, input_size), frame_lengths (batch,) int32 or None)`
    -> mask (batch, frames, output_size) in [0, 1]. Frames at or past `frame_lengths[b]` are
    padding: no valid frame attends to them, so they do not change valid outputs (their own
    outputs are meaningless). `causal=True` restricts attention to past and current frames;
    LocalRNN is always causal. Dropout masks are reproducible across resume (ReproducibleDropout);
    `seed` varies them between experiments.
    """

    def __init__(self, input_size, d_model, output_size, h, rnn_type, ksize, n, n_level,
                 dropout=0.1, emb_dropout=0.1, layer_norm=True, causal=True, seed=0):
        super().__init__()
        self.causal = causal
        self.encoder = nn.Dense(input_size, d_model)
        self.emb_dropout = ReproducibleDropout(emb_dropout)
        self.blocks = nn.CellList([
            RTransformerBlock(d_model, rnn_type, ksize, n, h, dropout, layer_norm)
            for _ in range(n_level)])
        self.decoder = nn.Dense(d_model, output_size)
        self.sigmoid = nn.Sigmoid()
        salt_dropouts(self, seed)

    def _allowed(self, batch, frames, frame_lengths):
        """(batch, 1, frames or 1, frames) bool: may query frame i attend to key frame j."""
        positions = ops.arange(frames, dtype=ms.int32)
        if frame_lengths is None:
            allowed = ops.ones((batch, 1, 1, frames), ms.bool_)
        else:
            lengths = frame_lengths.astype(ms.int32).reshape(batch, 1, 1, 1)
            allowed = positions.reshape(1, 1, 1, frames) < lengths
        if self.causal:
            earlier = positions.reshape(1, 1, 1, frames) <= positions.reshape(1, 1, frames, 1)
            allowed = ops.logical_and(allowed, earlier)
        return allowed

    def construct(self, features, frame_lengths=None):
        batch, frames, _ = features.shape
        allowed = self._allowed(batch, frames, frame_lengths)
        x = self.emb_dropout(self.encoder(features))
        for block in self.blocks:
            x = block(x, allowed)
        return self.sigmoid(self.decoder(x))


def build_rtransformer(cfg):
    """RTransformer from the `model` section of a config (see configs/rt.yaml); the registry
    builder for `model.name: rtransformer`."""
    m = cfg.model
    return RTransformer(
        input_size=int(m.input_size), d_model=int(m.d_model), output_size=int(m.output_size),
        h=int(m.h), rnn_type=str(m.rnn_type), ksize=int(m.ksize), n=int(m.n), n_level=int(m.n_level),
        dropout=float(m.dropout), emb_dropout=float(m.emb_dropout), layer_norm=bool(m.layer_norm),
        causal=bool(m.causal), seed=int(cfg.get("seed", 0)))
