"""SWave: gated dual-path MulCat RNNs (Nachmani et al., ICML 2020), after svoice's models/swave.py.

Parameter names and shapes are the same as in svoice's PyTorch state dict, so a svoice
checkpoint maps key by key (`encoder.conv.weight`,
`separator.rnn_model.rows_grnn.<i>.rnn.weight_ih_l0`, ..., `separator.rnn_model.output.1.bias`;
MindSpore's LSTM uses PyTorch's gate order i, f, g, o and both bias vectors). Internally the
dual-path tensors are kept channel-last `(batch, chunks, chunk_size, N)`; the arithmetic is the
same as svoice's.

Export: every zero block has a constant size (or is `zeros_like` of a tensor), and everything
that depends on the input length is a slice or a reshape, so a graph exported with a dynamic
time axis (`Tensor(shape=[batch, None])`) runs at any length >= L.
"""
import math
import warnings

import mindspore as ms
import numpy as np
from mindspore import Parameter, nn, ops
from mindspore.common.initializer import Constant, Uniform, XavierNormal, initializer

from src.errors import UserError
from src.models.lstm import FusedBiLSTMs, fused_bilstms, fused_lstm_available, static_shape

LSTM_IMPLEMENTATIONS = ("auto", "native", "fused")


class SWaveConfigError(UserError):
    """Hyper-parameters SWave cannot be built with."""


class Conv1dWeight(nn.Cell):
    """Bias-free 1-D convolution with one input channel; weight `(out, 1, kernel)` as in PyTorch.

    When the kernel is two strides long (SWave's even L) it is computed as a matmul over frames
    made of two consecutive blocks of `stride` samples (same result; MindSpore's CPU Conv2D takes
    ~20x longer for one input channel)."""

    def __init__(self, out_channels, kernel_size, stride):
        super().__init__()
        self.stride = stride
        self.two_blocks = kernel_size == 2 * stride
        self.weight = Parameter(initializer(XavierNormal(), (out_channels, 1, kernel_size)), name="weight")

    def construct(self, x):
        """`(batch, 1, time)` -> `(batch, out, frames)`."""
        if not self.two_blocks:
            return ops.conv1d(x, self.weight, stride=self.stride)
        batch, _, time = x.shape
        frames = (time - 2 * self.stride) // self.stride + 1
        blocks = x.reshape(batch, time)[:, :(frames + 1) * self.stride].reshape(batch, -1, self.stride)
        windows = ops.cat((blocks[:, :-1], blocks[:, 1:]), axis=2)  # (batch, frames, kernel)
        weight = self.weight.reshape(self.weight.shape[0], -1)
        out = ops.matmul(windows.reshape(-1, windows.shape[2]), weight.T)  # 2-D: no broadcast copies
        return out.reshape(batch, -1, weight.shape[0]).transpose(0, 2, 1)


def input_gain(mixture, rms):
    """The gain `(batch, 1)` that brings each mixture of `(batch, time)` (numpy or Tensor) to RMS `rms`."""
    return rms / ((mixture * mixture).mean(1).reshape(-1, 1) ** 0.5 + 1e-8)


def at_input_rms(separate, mixture, rms):
    """`separate(mixture)` -> `(..., batch, C, time)` with each mixture of `(batch, time)` (numpy or
    Tensor) brought to RMS `rms` first and the estimates scaled back; rms None: as given."""
    if rms is None:
        return separate(mixture)
    gain = input_gain(mixture, rms)
    return separate(mixture * gain) / gain.reshape(-1, 1, 1)


def encoder_frames(num_samples, L):
    """Frames the Encoder makes of `num_samples` samples (window L, hop L/2)."""
    return (num_samples - L) // (L // 2) + 1


def chunk_blocks(frames, size):
    """K-blocks of padded frames that `Separator.create_chunks` cuts into 2*blocks chunks of K=size:
    svoice's `rest` = blocks * size - size // 2 - frames is in 1..K."""
    return (frames + size // 2) // size + 1


class Encoder(nn.Cell):
    """`Conv1d(1, N, L, stride L/2, no bias)` + ReLU: `(batch, time)` -> `(batch, N, frames)`."""

    def __init__(self, L, N):
        super().__init__()
        self.conv = Conv1dWeight(N, L, L // 2)

    def construct(self, mixture):
        return ops.relu(self.conv(mixture.expand_dims(1)))


class MulCatBlock(nn.Cell):
    """Two BiLSTMs over the same input, each projected back to N, multiplied, concatenated with
    the input and projected 2N -> N: `(sequences, steps, N)` -> `(sequences, steps, N)`.

    lstm="fused": both BiLSTMs are computed by one FusedBiLSTMs (src/models/lstm.py) from the same
    nn.LSTM parameters, in inference at any shape and in training graphs of static shape (all of
    them: the trainer's batches have one shape). Exported graphs (`SWave.for_export`) use nn.LSTM.
    """

    def __init__(self, input_size, hidden_size, lstm="native"):
        super().__init__()
        self.rnn = nn.LSTM(input_size, hidden_size, 1, has_bias=True, batch_first=True, bidirectional=True)
        self.rnn_proj = _dense(2 * hidden_size, input_size)
        self.gate_rnn = nn.LSTM(input_size, hidden_size, 1, has_bias=True, batch_first=True, bidirectional=True)
        self.gate_rnn_proj = _dense(2 * hidden_size, input_size)
        self.block_projection = _dense(2 * input_size, input_size)
        self.fused = FusedBiLSTMs(2) if lstm == "fused" else None

    def construct(self, x):
        if self.fused is not None and (not self.training or static_shape(x)):
            rnn_output, gate_output = fused_bilstms(self.fused, (self.rnn, self.gate_rnn), x)
        else:
            rnn_output, _ = self.rnn(x)
            gate_output, _ = self.gate_rnn(x)
        rnn_output = self.rnn_proj(rnn_output)
        gate_output = self.gate_rnn_proj(gate_output)
        gated = ops.cat((rnn_output * gate_output, x), axis=2)
        return self.block_projection(gated)


class GroupNormOneGroup(nn.Cell):
    """`GroupNorm(1, N, eps=1e-8)` on channel-last `(batch, ..., N)`: statistics over everything
    but the batch axis, per-channel affine (`weight`, `bias` as in PyTorch)."""

    def __init__(self, channels, eps=1e-8):
        super().__init__()
        self.eps = eps
        self.weight = Parameter(initializer("ones", (channels,)), name="weight")
        self.bias = Parameter(initializer("zeros", (channels,)), name="bias")

    def construct(self, x):
        axes = tuple(range(1, x.ndim))
        mean = x.mean(axis=axes, keep_dims=True)
        var = ((x - mean) ** 2).mean(axis=axes, keep_dims=True)
        return (x - mean) / ops.sqrt(var + self.eps) * self.weight + self.bias


class PReLU(nn.Cell):
    """PReLU with one shared slope (`weight`, init 0.25, as `torch.nn.PReLU()`)."""

    def __init__(self):
        super().__init__()
        self.weight = Parameter(initializer(Constant(0.25), (1,)), name="weight")

    def construct(self, x):
        return ops.maximum(x, 0) + self.weight * ops.minimum(x, 0)


class PointwiseConv(nn.Cell):
    """1x1 `Conv2d(in, out)` applied to channel-last `(..., in)`; weight `(out, in, 1, 1)`."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.weight = Parameter(initializer(XavierNormal(), (out_channels, in_channels, 1, 1)), name="weight")
        self.bias = Parameter(initializer(Uniform(1 / math.sqrt(in_channels)), (out_channels,)), name="bias")

    def construct(self, x):
        weight = self.weight.reshape(self.weight.shape[0], self.weight.shape[1])
        # as a 2-D matmul: a (..., in) @ (in, out) matmul copies the weight for every leading index
        out = ops.matmul(x.reshape(-1, x.shape[-1]), weight.T) + self.bias
        return out.reshape(x.shape[:-1] + (-1,))


class DPMulCat(nn.Cell):
    """R dual-path layers (row = intra-chunk, then column = inter-chunk MulCat block, each with a
    residual) and the shared output head (PReLU, 1x1 conv N -> N*C) after every layer.

    `(batch, chunks, chunk_size, N)` -> tuple of `(batch, chunks, chunk_size, C*N)`: one per layer
    in training, only the last one otherwise.
    """

    def __init__(self, N, H, C, R, input_normalize=False, lstm="native"):
        super().__init__()
        self.num_layers = R
        self.input_normalize = input_normalize
        self.rows_grnn = nn.CellList([MulCatBlock(N, H, lstm) for _ in range(R)])
        self.cols_grnn = nn.CellList([MulCatBlock(N, H, lstm) for _ in range(R)])
        if input_normalize:
            self.rows_normalization = nn.CellList([GroupNormOneGroup(N) for _ in range(R)])
            self.cols_normalization = nn.CellList([GroupNormOneGroup(N) for _ in range(R)])
        self.output = nn.SequentialCell([PReLU(), PointwiseConv(N, N * C)])

    def construct(self, chunks):
        batch, _, chunk_size, features = chunks.shape
        x = chunks
        heads = ()
        for i in range(self.num_layers):
            rows = self.rows_grnn[i](x.reshape(-1, chunk_size, features)).reshape(x.shape)
            if self.input_normalize:
                rows = self.rows_normalization[i](rows)
            x = x + rows
            by_column = x.transpose(0, 2, 1, 3)  # (batch, chunk_size, chunks, N)
            cols = self.cols_grnn[i](by_column.reshape(batch * chunk_size, -1, features))
            cols = cols.reshape(by_column.shape).transpose(0, 2, 1, 3)
            if self.input_normalize:
                cols = self.cols_normalization[i](cols)
            x = x + cols
            if self.training or i == self.num_layers - 1:
                heads = heads + (self.output(x),)
        return heads


class Separator(nn.Cell):
    """Chunking (50 % overlap), the dual-path network, and overlap-add of the chunks back.

    `(batch, N, frames)` -> tuple of `(batch, frames, C*N)`.
    """

    def __init__(self, N, H, C, R, chunk_size, input_normalize=False, lstm="native"):
        super().__init__()
        self.chunk_size = chunk_size
        self.rnn_model = DPMulCat(N, H, C, R, input_normalize, lstm)

    def create_chunks(self, features):
        """`(batch, frames, N)` -> `(batch, chunks, K, N)`, as svoice's `create_chuncks`: K/2 zeros
        in front, zeros after the end up to a whole number of K-blocks past the first hop plus K/2
        (at least one), chunks starting every K/2 frames."""
        batch, frames, dim = features.shape
        size, hop = self.chunk_size, self.chunk_size // 2
        blocks = chunk_blocks(frames, size)
        padded = ops.cat((ops.zeros((batch, hop, dim), features.dtype), features,
                          ops.zeros((batch, size + hop, dim), features.dtype)), axis=1)
        first = padded[:, :blocks * size].reshape(batch, -1, 1, size, dim)
        second = padded[:, hop:hop + blocks * size].reshape(batch, -1, 1, size, dim)
        return ops.cat((first, second), axis=2).reshape(batch, -1, size, dim)

    def merge_chunks(self, chunks, frames):
        """Overlap-add `(batch, chunks, K, D)` back to `(batch, frames, D)` (svoice's `merge_chuncks`)."""
        batch, _, size, dim = chunks.shape
        hop = size // 2
        pairs = chunks.reshape(batch, -1, 2, size, dim)
        first, second = ops.unbind(pairs, 2)  # (an integer index is a slow StridedSlice on CPU)
        first = first.reshape(batch, -1, dim)[:, hop:]
        second = second.reshape(batch, -1, dim)[:, :-hop]
        return (first + second)[:, :frames]

    def construct(self, features):
        frames = features.shape[2]
        chunks = self.create_chunks(features.transpose(0, 2, 1))
        return tuple(self.merge_chunks(head, frames) for head in self.rnn_model(chunks))


class Decoder(nn.Cell):
    """Average the N features of every frame in groups of L (svoice's `AvgPool2d((1, L))`) and
    overlap-add the resulting frames of N//L samples with hop L/2.

    `(batch, frames, C*N)` -> `(batch, C, (frames - 1) * L/2 + N//L)`.
    """

    def __init__(self, N, L, C):
        super().__init__()
        self.N, self.L, self.C = N, L, C
        self.frame_length = N // L
        self.hop = L // 2

    def frame_samples(self, estimate):
        """The averaging: `(batch, frames, C*N)` -> `(batch, frames, C, N//L)`."""
        batch = estimate.shape[0]
        per_speaker = estimate.reshape(batch, -1, self.C, self.N)
        if self.N % self.L:  # AvgPool2d drops the last N % L features
            per_speaker = per_speaker[..., :self.frame_length * self.L]
        return per_speaker.reshape(batch, -1, self.C, self.frame_length, self.L).mean(-1)

    def overlap_add(self, frame_samples):
        """`(batch, frames, C, N//L)` -> `(batch, C, (frames - 1) * L/2 + N//L)`."""
        return overlap_and_add(frame_samples.transpose(0, 2, 1, 3), self.hop)

    def construct(self, estimate):
        return self.overlap_add(self.frame_samples(estimate))


def overlap_and_add(frames, hop):
    """`(batch, C, n_frames, frame_length)` -> `(batch, C, (n_frames - 1) * hop + frame_length)`,
    frame f added at offset f * hop. Only constant-size zero blocks, so dynamic lengths export."""
    batch, speakers, _, frame_length = frames.shape
    sub = math.gcd(frame_length, hop)
    sub_per_frame, sub_per_hop = frame_length // sub, hop // sub
    parts = frames.reshape(batch, speakers, -1, sub_per_frame, sub)
    total = None
    parts = ops.unbind(parts, 3)
    for j in range(sub_per_frame):
        part = parts[j]  # (batch, C, n_frames, sub): lands at f * hop + j * sub
        if sub_per_hop > 1:
            gap = ops.zeros_like(part)
            part = ops.cat((part,) + (gap,) * (sub_per_hop - 1), axis=3)
        part = part.reshape(batch, speakers, -1)  # n_frames * hop
        pieces = (part,)
        if j > 0:
            pieces = (ops.zeros((batch, speakers, j * sub), part.dtype),) + pieces
        tail = (sub_per_frame - 1 - j) * sub
        if tail > 0:
            pieces = pieces + (ops.zeros((batch, speakers, tail), part.dtype),)
        part = ops.cat(pieces, axis=2) if len(pieces) > 1 else part
        total = part if total is None else total + part
    if hop > sub:  # each frame carried hop - sub trailing zeros past its end
        total = total[:, :, :sub - hop]
    return total


class SWave(nn.Cell):
    """SWave separation network.

    N: encoder filters / feature size, L: encoder window (hop L/2), H: LSTM hidden size,
    R: dual-path layers, C: speakers, sample_rate (Hz) and segment (s) set the chunk size
    K = int(sqrt(2 * sample_rate * segment / (L/2))). recompute: recompute the MulCat blocks in
    the backward pass (GRAPH_MODE; less memory: the paper config at batch 2 x 4 s peaked at 15.3 GB
    on CPU with it, and went past 24 GB without). lstm: "native" (nn.LSTM), "fused" (CPU only: the
    same parameters, LSTM recurrence compiled from C++, src/models/lstm.py; exported graphs run
    nn.LSTM) or "auto" (fused when the device target is CPU and the kernels can be built, see
    `fused_lstm_available`). input_rms: scale every mixture to this RMS before the network and
    the estimates back (`at_input_rms`), so that the result does not depend on the recording's
    level; in training a large one (e.g. 4) also makes the encoder features large enough for the
    LSTMs to use from the start, so it learns faster (pretrained/MODEL_CARD.md, "Training at one
    input level"); None: the network sees the mixture as given (svoice).

    `construct(mixture (batch, time))`, time >= L: in training (`set_train(True)`) the estimate
    after every layer, `(R, batch, C, time)`; otherwise the last one, `(batch, C, time)`.
    """

    def __init__(self, N, L, H, R, C, sample_rate, segment, input_normalize=False, recompute=False,
                 lstm="native", input_rms=None):
        super().__init__()
        _check_hyper_parameters(N, L, H, R, C, sample_rate, segment, input_rms)
        self.input_rms = None if input_rms is None else float(input_rms)
        if lstm not in LSTM_IMPLEMENTATIONS:
            raise SWaveConfigError(f"SWave: lstm={lstm!r} must be one of {', '.join(LSTM_IMPLEMENTATIONS)}")
        if lstm == "auto":
            lstm = "fused" if ms.get_context("device_target") == "CPU" and fused_lstm_available() else "native"
        self.N, self.L, self.H, self.R, self.C = N, L, H, R, C
        self.chunk_size = int(np.sqrt(2 * sample_rate * segment / (L / 2)))
        if self.chunk_size < 2:
            raise SWaveConfigError(f"SWave: chunk size K={self.chunk_size} from sample_rate={sample_rate}, "
                                   f"segment={segment}, L={L} is below 2; use a longer segment")
        self.encoder = Encoder(L, N)
        self.separator = Separator(N, H, C, R, self.chunk_size, input_normalize, lstm)
        self.decoder = Decoder(N, L, C)
        # the decoder output can be up to L + L/2 - 1 - N//L samples short of the input
        self.tail_pad = max(0, L + L // 2 - 1 - N // L)
        _init_like_svoice(self)
        if recompute:
            for block in self._mulcat_blocks():
                block.recompute()

    def _mulcat_blocks(self):
        return list(self.separator.rnn_model.rows_grnn) + list(self.separator.rnn_model.cols_grnn)

    def for_export(self):
        """Use nn.LSTM in every block from now on: an exported graph must hold standard ops only
        (the fused LSTM is a kernel library of this machine). Same parameters and results."""
        for block in self._mulcat_blocks():
            block.fused = None

    def waveforms(self, head, num_samples):
        """Decoded estimate `(batch, frames, C*N)` -> `(batch, C, num_samples)`."""
        return self.waveforms_of_frames(self.decoder.frame_samples(head), num_samples)

    def waveforms_of_frames(self, frame_samples, num_samples):
        """The rest of `waveforms` from the decoder's averaged frames `(batch, frames, C, N//L)`."""
        wave = self.decoder.overlap_add(frame_samples)
        if self.tail_pad > 0:
            wave = ops.cat((wave, ops.zeros((wave.shape[0], self.C, self.tail_pad), wave.dtype)), axis=2)
        return wave[:, :, :num_samples]

    def construct(self, mixture):
        if mixture.ndim != 2:
            raise ValueError("SWave expects a mixture of shape (batch, time)")
        return at_input_rms(self._separate, mixture, self.input_rms)

    def _separate(self, mixture):
        num_samples = mixture.shape[1]
        estimates = tuple(self.waveforms(head, num_samples) for head in self.separator(self.encoder(mixture)))
        if self.training:
            return ops.stack(estimates)
        return estimates[-1]

    def host_inference(self):
        """A `HostInference` of this network when it runs on CPU (None elsewhere: keep the
        tensors on the device and run the whole graph)."""
        if ms.get_context("device_target") != "CPU":
            return None
        return HostInference(self)


# sequence-steps per block call in HostInference. A MulCat block holds ~13 kB per step at N = H = 128
# until its graph ends; measured (bench/bench_inference.py, 10 s, paper config) peak RSS 0.85 /
# 0.74 / 0.69 GB at 2^14 / 2^13 / 2^12 steps, the time growing as pieces shrink (fewer sequences
# per GEMM).
HOST_PIECE_STEPS = 2 ** 13


class _Frames(nn.Cell):
    """SWave's encoder, channel-last: `(batch, time)` -> `(batch, frames, N)`."""

    def __init__(self, net):
        super().__init__(auto_prefix=False)  # the parameters keep their names
        self.net = net

    def construct(self, mixture):
        return self.net.encoder(mixture).transpose(0, 2, 1)


class _FrameSamples(nn.Cell):
    """The output head and the decoder's averaging as one graph:
    `(sequences, K, N)` -> `(sequences, K, C * N//L)`."""

    def __init__(self, net):
        super().__init__(auto_prefix=False)
        self.net = net

    def construct(self, x):
        samples = self.net.decoder.frame_samples(self.net.separator.rnn_model.output(x))
        return samples.reshape(samples.shape[0], samples.shape[1], self.net.C * self.net.decoder.frame_length)


class _Waveforms(nn.Cell):
    """Overlap-add of the chunks and the decoder's overlap-add as one graph:
    `(batch, chunks, K, C * N//L)`, frames, num_samples -> `(batch, C, num_samples)`.
    (Averaging commutes with the chunks' overlap-add: both are sums.)"""

    def __init__(self, net):
        super().__init__(auto_prefix=False)
        self.net = net

    def construct(self, samples, frames, num_samples):
        merged = self.net.separator.merge_chunks(samples, frames)
        merged = merged.reshape(merged.shape[0], merged.shape[1], self.net.C, self.net.decoder.frame_length)
        return self.net.waveforms_of_frames(merged, num_samples)


class HostInference:
    """SWave inference (`set_train(False)`) with the dual-path tensors in host memory:
    `(mixture (batch, time) float32 numpy) -> (batch, C, time)` numpy, the result of
    `SWave.construct` within float rounding.

    MindSpore's CPU runtime keeps every intermediate of a graph for any shape alive until the
    graph ends (the whole SWave: ~90 MB per second of audio). Here each step is its own graph on
    a small piece: the encoder on pieces of frames, written into the chunks array (numpy, as
    `Separator.create_chunks`), then every MulCat block on at most HOST_PIECE_STEPS
    sequence-steps at a time (rows: pieces of chunks; columns: pieces of chunk positions, copied
    out of the transposed view), added in place to the one `(batch, chunks, K, N)` array, the
    output head and the decoder's averaging on pieces (N//L values per speaker and frame are
    kept, not C*N), and the two overlap-adds. The graphs are compiled once for any shape.
    """

    def __init__(self, net, piece_steps=HOST_PIECE_STEPS):
        self.net, self.piece_steps = net, piece_steps
        dp = net.separator.rnn_model
        self.frames, self.frame_samples, self.waveforms = _Frames(net), _FrameSamples(net), _Waveforms(net)
        self.frames.set_inputs(ms.Tensor(shape=[None, None], dtype=ms.float32))
        self.waveforms.set_inputs(ms.Tensor(shape=[None, None, None, None], dtype=ms.float32),
                                  ms.mutable(1), ms.mutable(1))
        for cell in [*dp.rows_grnn, *dp.cols_grnn, self.frame_samples]:
            cell.set_inputs(ms.Tensor(shape=[None, None, None], dtype=ms.float32))
        if dp.input_normalize:
            for cell in [*dp.rows_normalization, *dp.cols_normalization]:
                cell.set_inputs(ms.Tensor(shape=[None, None, None, None], dtype=ms.float32))

    def _pieces(self, cell, sequences):
        """`cell` on pieces of `sequences (batch, S, T, D)` along S (each made contiguous):
        yields (batch index, piece slice, output `(s, T, D')` numpy)."""
        size = max(1, self.piece_steps // sequences.shape[2])
        for b in range(sequences.shape[0]):
            for start in range(0, sequences.shape[1], size):
                piece = np.ascontiguousarray(sequences[b, start:start + size])
                yield b, slice(start, start + len(piece)), cell(ms.Tensor.from_numpy(piece)).asnumpy()

    def _add_block(self, block, norm, sequences):
        """sequences (batch, S, T, N) += norm(block(sequences)) in place: a view of the chunks
        by rows (T = K) or by columns (T = chunks)."""
        if norm is None:
            for b, part, out in self._pieces(block, sequences):
                sequences[b, part] += out
            return
        out = np.empty(sequences.shape, np.float32)  # the normalisation needs the whole block output
        for b, part, piece in self._pieces(block, sequences):
            out[b, part] = piece
        sequences += norm(ms.Tensor.from_numpy(out)).asnumpy()

    def _chunks(self, mixture, frames):
        """The encoder's `frames` frames of `mixture (batch, time)` in svoice's chunks: K/2 zero
        frames, the frames, zeros up to the end of the last chunk; chunks every K/2 frames
        -> `(batch, chunks, K, N)` numpy."""
        net, size = self.net, self.net.chunk_size
        hop, step = size // 2, net.L // 2
        blocks = chunk_blocks(frames, size)
        padded = np.zeros((mixture.shape[0], hop + blocks * size, net.N), np.float32)
        for start in range(0, frames, self.piece_steps):
            count = min(self.piece_steps, frames - start)
            piece = np.ascontiguousarray(mixture[:, start * step:(start + count - 1) * step + net.L])
            padded[:, hop + start:hop + start + count] = self.frames(ms.Tensor.from_numpy(piece)).asnumpy()
        chunks = np.empty((mixture.shape[0], 2 * blocks, size, net.N), np.float32)
        chunks[:, 0::2] = padded[:, :blocks * size].reshape(mixture.shape[0], blocks, size, net.N)
        chunks[:, 1::2] = padded[:, hop:].reshape(mixture.shape[0], blocks, size, net.N)
        return chunks

    def __call__(self, mixture):
        return at_input_rms(self._separate, np.ascontiguousarray(mixture, dtype=np.float32), self.net.input_rms)

    def _separate(self, mixture):
        net, dp = self.net, self.net.separator.rnn_model
        num_samples = mixture.shape[1]
        frames = encoder_frames(num_samples, net.L)
        x = self._chunks(mixture, frames)  # (batch, chunks, K, N)
        for i in range(dp.num_layers):
            norms = (dp.rows_normalization[i], dp.cols_normalization[i]) if dp.input_normalize else (None, None)
            self._add_block(dp.rows_grnn[i], norms[0], x)
            self._add_block(dp.cols_grnn[i], norms[1], x.transpose(0, 2, 1, 3))
        samples = np.empty(x.shape[:3] + (net.C * net.decoder.frame_length,), np.float32)
        for b, part, out in self._pieces(self.frame_samples, x):
            samples[b, part] = out
        del x
        return self.waveforms(ms.Tensor.from_numpy(samples), ms.mutable(frames), ms.mutable(num_samples)).asnumpy()


OUTPUT_HEAD = "separator.rnn_model.output.1."   # 1x1 conv N -> N*C: speaker k owns channels k*N .. (k+1)*N-1


def keep_speaker_outputs(params, N, keep):
    """SWave parameters `{name: array}` of a model with C outputs -> those of a model with the
    outputs `keep` only (speaker indices, in the new order): the output head's blocks of N
    channels. Every other parameter is shared by all speakers and kept as is; the new model
    gives exactly the kept outputs of the old one. SWaveConfigError for a bad `keep`."""
    weight = np.asarray(params[OUTPUT_HEAD + "weight"])
    count = weight.shape[0] // N
    if not keep or len(set(keep)) != len(keep) or any(not 0 <= k < count for k in keep):
        raise SWaveConfigError(f"SWave: outputs to keep {list(keep)} must be distinct speaker indices "
                               f"in 0..{count - 1} (the model has C={count})")
    rows = np.concatenate([np.arange(k * N, (k + 1) * N) for k in keep])
    return {name: np.asarray(value)[rows] if name.startswith(OUTPUT_HEAD) else value
            for name, value in params.items()}


def add_dual_path_layers(params, fresh):
    """SWave parameters `{name: array}` of a trained model -> those of a deeper one (`fresh`: the
    deeper model's own initial parameters): the trained layers first, then the new ones from
    `fresh` with their block projections set to zero. A MulCat block's output is added to its
    input (a residual), so each new layer starts as the identity and the deeper model computes
    what the trained one computes. Every other parameter is the trained one."""
    deeper = {name: np.asarray(params[name]) if name in params else np.asarray(value) for name, value in fresh.items()}
    for name in deeper:
        if name not in params and ".block_projection." in name:
            deeper[name] = np.zeros_like(deeper[name])
    return deeper


def _dense(in_channels, out_channels):
    """nn.Dense with Xavier-normal weight and PyTorch Linear's bias init."""
    return nn.Dense(in_channels, out_channels, weight_init=XavierNormal(),
                    bias_init=Uniform(1 / math.sqrt(in_channels)))


def _init_like_svoice(net):
    """svoice: every parameter with more than one dimension is Xavier-normal initialised."""
    for param in net.get_parameters():
        if param.ndim > 1:
            param.set_data(initializer(XavierNormal(), param.shape, param.dtype))


def _check_hyper_parameters(N, L, H, R, C, sample_rate, segment, input_rms=None):
    problems = []
    for name, value in (("N", N), ("L", L), ("H", H), ("R", R), ("C", C)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            problems.append(f"{name}={value!r} must be a positive integer")
    if not problems and L < 2:
        problems.append(f"L={L} must be >= 2 (the encoder hop is L//2)")
    if not problems and N < L:
        problems.append(f"N={N} must be >= L={L} (the decoder averages the N features in groups of L)")
    if not problems and N // L < L // 2:
        warnings.warn(f"SWave: N={N}, L={L}: the decoder writes frames of N//L={N // L} samples every L//2={L // 2} "
                      f"samples, so {L // 2 - N // L} of every {L // 2} output samples stay zero and the model cannot "
                      f"reconstruct speech; use N >= L*L/2 (here N >= {L * L // 2})", stacklevel=3)
    if not (isinstance(sample_rate, (int, float)) and sample_rate > 0):
        problems.append(f"sample_rate={sample_rate!r} must be a positive number")
    if not (isinstance(segment, (int, float)) and segment > 0):
        problems.append(f"segment={segment!r} must be a positive number of seconds")
    if not (input_rms is None or isinstance(input_rms, (int, float)) and input_rms > 0):
        problems.append(f"input_rms={input_rms!r} must be a positive number or None")
    if problems:
        raise SWaveConfigError("SWave: " + "; ".join(problems))
