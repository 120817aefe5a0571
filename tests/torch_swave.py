"""A compact PyTorch SWave with svoice's module and parameter names, and svoice's loss.

Reference for the import tests (`tests/test_svoice_import.py`) and the speed comparison
(`bench/compare_torch.py`). Written from the maths of facebookresearch/svoice
(svoice/models/swave.py, svoice/models/sisnr_loss.py, svoice/solver.py), so that a
`state_dict()` of this model has exactly svoice's names and shapes, and
`serialize_package` writes what svoice's solver writes. PyTorch is an optional dependency:
only tests and the bench import this file.
"""
import collections
import contextlib
import itertools
import math
import sys
import types
import typing

import torch
from torch import nn
import torch.nn.functional as F

EPS = 1e-8


def chunk_size(sample_rate, segment, L):
    """svoice's chunk length K = int(sqrt(2 * sample_rate * segment / (L / 2)))."""
    return int(math.sqrt(2 * sample_rate * segment / (L / 2)))


class MulCatBlock(nn.Module):
    """Two BiLSTMs, one gating the other, then a projection of [gated, input]: (n, steps, N)."""

    def __init__(self, N, H):
        super().__init__()
        self.rnn = nn.LSTM(N, H, 1, batch_first=True, bidirectional=True)
        self.rnn_proj = nn.Linear(2 * H, N)
        self.gate_rnn = nn.LSTM(N, H, 1, batch_first=True, bidirectional=True)
        self.gate_rnn_proj = nn.Linear(2 * H, N)
        self.block_projection = nn.Linear(2 * N, N)

    def forward(self, x):
        gated = self.rnn_proj(self.rnn(x)[0]) * self.gate_rnn_proj(self.gate_rnn(x)[0])
        return self.block_projection(torch.cat([gated, x], dim=2))


class DPMulCat(nn.Module):
    """R dual-path layers (rows = within a chunk, cols = across chunks) and a shared output
    head. (batch, N, K, S) -> list of (batch, N*C, K, S), one per layer in training, the
    last one only in eval mode."""

    def __init__(self, N, H, C, R, input_normalize):
        super().__init__()
        self.rows_grnn = nn.ModuleList([MulCatBlock(N, H) for _ in range(R)])
        self.cols_grnn = nn.ModuleList([MulCatBlock(N, H) for _ in range(R)])

        def norm():
            return nn.GroupNorm(1, N, eps=1e-8) if input_normalize else nn.Identity()
        self.rows_normalization = nn.ModuleList([norm() for _ in range(R)])
        self.cols_normalization = nn.ModuleList([norm() for _ in range(R)])
        self.output = nn.Sequential(nn.PReLU(), nn.Conv2d(N, N * C, 1))

    def forward(self, x):
        batch, N, K, S = x.shape
        outputs = []
        for i in range(len(self.rows_grnn)):
            rows = x.permute(0, 3, 2, 1).reshape(batch * S, K, N)
            rows = self.rows_grnn[i](rows).reshape(batch, S, K, N).permute(0, 3, 2, 1)
            x = x + self.rows_normalization[i](rows)
            cols = x.permute(0, 2, 3, 1).reshape(batch * K, S, N)
            cols = self.cols_grnn[i](cols).reshape(batch, K, S, N).permute(0, 3, 1, 2)
            x = x + self.cols_normalization[i](cols)
            if self.training or i == len(self.rows_grnn) - 1:
                outputs.append(self.output(x))
        return outputs


def split_chunks(x, K):
    """(batch, N, T) -> (batch, N, K, S) chunks of K frames (svoice's create_chuncks: pad the
    end so that T + rest + K//2 is a multiple of K, pad K//2 zeros on both sides, chunks start
    alternately in the two half-shifted grids), and `rest`."""
    batch, N, T = x.shape
    P = K // 2
    rest = K - (P + T % K) % K
    x = torch.cat([x.new_zeros(batch, N, P), x, x.new_zeros(batch, N, rest + P)], dim=2)
    first = x[:, :, :-P].reshape(batch, N, -1, K)
    second = x[:, :, P:].reshape(batch, N, -1, K)
    chunks = torch.stack([first, second], dim=3).reshape(batch, N, -1, K)
    return chunks.transpose(2, 3), rest


def merge_chunks(chunks, rest):
    """Inverse of `split_chunks` with overlap-add: (batch, N, K, S) -> (batch, N, T)."""
    batch, N, K, _ = chunks.shape
    P = K // 2
    pairs = chunks.transpose(2, 3).reshape(batch, N, -1, 2, K)
    first = pairs[:, :, :, 0].reshape(batch, N, -1)[:, :, P:]
    second = pairs[:, :, :, 1].reshape(batch, N, -1)[:, :, :-P]
    merged = first + second
    return merged[:, :, :merged.shape[2] - rest]


def overlap_add(frames, step):
    """(..., frames, frame_length) -> (..., step * (frames - 1) + frame_length)."""
    *outer, count, length = frames.shape
    out = frames.new_zeros(*outer, step * (count - 1) + length)
    for j in range(length):
        out[..., j:j + step * (count - 1) + 1:step] += frames[..., j]
    return out


class Encoder(nn.Module):
    def __init__(self, L, N):
        super().__init__()
        self.conv = nn.Conv1d(1, N, kernel_size=L, stride=L // 2, bias=False)

    def forward(self, mixture):
        return F.relu(self.conv(mixture.unsqueeze(1)))


class Separator(nn.Module):
    def __init__(self, N, H, C, R, K, input_normalize):
        super().__init__()
        self.K = K
        self.rnn_model = DPMulCat(N, H, C, R, input_normalize)

    def forward(self, features):
        chunks, rest = split_chunks(features, self.K)
        return [merge_chunks(out, rest) for out in self.rnn_model(chunks)]


class SWave(nn.Module):
    """svoice's SWave. forward: (batch, time) -> (layers, batch, C, time), layers = R in
    training mode and 1 (the last) in eval mode, as in svoice's current swave.py."""

    def __init__(self, N, L, H, R, C, sr, segment, input_normalize=False):
        super().__init__()
        self.init_kwargs = dict(N=N, L=L, H=H, R=R, C=C, sr=sr, segment=segment,
                                input_normalize=input_normalize)
        self.N, self.L, self.C = N, L, C
        self.encoder = Encoder(L, N)
        self.separator = Separator(N, H, C, R, chunk_size(sr, segment, L), input_normalize)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_normal_(p)

    def forward(self, mixture):
        batch, T = mixture.shape
        features = self.encoder(mixture)
        estimates = []
        for out in self.separator(features):
            out = out.reshape(batch, self.C, self.N, -1).transpose(2, 3)
            out = F.avg_pool2d(out, (1, self.L))          # (batch, C, frames, N // L)
            wav = overlap_add(out, self.L // 2)
            if wav.shape[-1] >= T:
                wav = wav[..., :T]
            else:
                wav = torch.cat([wav, wav.new_zeros(batch, self.C, T - wav.shape[-1])], dim=-1)
            estimates.append(wav)
        return torch.stack(estimates)


# ---- svoice's loss (sisnr_loss.cal_loss and the solver's multi-scale weighting) ----

def pit_si_snr(source, estimate, lengths):
    """Best-permutation SI-SNR per utterance, averaged over speakers: (batch,).
    source, estimate: (batch, C, time); lengths: (batch,) samples that are real."""
    batch, C, T = source.shape
    mask = (torch.arange(T)[None, :] < lengths[:, None]).to(source.dtype)[:, None, :]
    estimate = estimate * mask
    count = lengths.to(source.dtype).view(-1, 1, 1)
    target = (source - source.sum(2, keepdim=True) / count) * mask
    estimate = (estimate - estimate.sum(2, keepdim=True) / count) * mask
    s_target = target.unsqueeze(1)              # (batch, 1, C, T)
    s_estimate = estimate.unsqueeze(2)          # (batch, C, 1, T)
    dot = (s_estimate * s_target).sum(3, keepdim=True)
    projection = dot * s_target / ((s_target ** 2).sum(3, keepdim=True) + EPS)
    noise = s_estimate - projection
    ratio = (projection ** 2).sum(3) / ((noise ** 2).sum(3) + EPS)
    pair = (10 * torch.log10(ratio + EPS)).transpose(1, 2)  # (batch, target, estimate)
    perms = torch.tensor(list(itertools.permutations(range(C))))
    one_hot = F.one_hot(perms, C).to(source.dtype)          # (C!, C, C)
    per_perm = torch.einsum("bij,pij->bp", pair, one_hot)
    return per_perm.max(dim=1).values / C


def cal_loss(source, estimate, lengths):
    """svoice's loss for one estimate: -mean over the batch of the PIT SI-SNR."""
    return -pit_si_snr(source, estimate, lengths).mean()


def multi_scale_loss(estimates, source, lengths):
    """svoice's training loss over the R layer estimates (R, batch, C, time): layer r (0-based)
    weighted (r + 1) / R, the sum divided by R."""
    count = len(estimates)
    total = 0
    for r, estimate in enumerate(estimates):
        total = total + (r + 1) / count * cal_loss(source, estimate, lengths)
    return total / count


# ---- svoice's checkpoint files ----

@contextlib.contextmanager
def _stand_ins():
    """Lets svoice's and omegaconf's classes be pickled by reference without those packages:
    yields `make(module, name)` -> a class that pickles as `module.name`; the fake modules are
    removed from sys.modules afterwards."""
    added = []

    def make(module, name):
        parts = module.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if prefix not in sys.modules:
                sys.modules[prefix] = types.ModuleType(prefix)
                added.append(prefix)
        cls = type(name, (), {"__module__": module, "__qualname__": name})
        setattr(sys.modules[module], name, cls)
        return cls
    try:
        yield make
    finally:
        for prefix in added:
            del sys.modules[prefix]


def _hydra_args(make, model):
    """Stands in for the hydra DictConfig svoice stores as package['args']: an object of
    omegaconf's class holding nested content and a `typing.Any` reference, like the real one."""
    args, metadata = make("omegaconf.dictconfig", "DictConfig")(), make("omegaconf.base", "ContainerMetadata")()
    metadata.__dict__.update(ref_type=typing.Any, object_type=dict, key_type=typing.Any, optional=True)
    args.__dict__.update(_metadata=metadata, _content={
        "model": "swave", "sample_rate": model.init_kwargs["sr"], "lr": 5e-4,
        "swave": {k: model.init_kwargs[k] for k in ("N", "L", "H", "R", "C", "input_normalize")}})
    return args


def _model_package(make, model, state):
    state = collections.OrderedDict((k, v.detach().clone()) for k, v in state.items())
    return {"class": make("svoice.models.swave", "SWave"), "args": (),
            "kwargs": dict(model.init_kwargs), "state": state}


def serialize_package(model, path, best_state=None, legacy_format=False):
    """Write `path` as svoice's solver writes `checkpoint.th`: {'model': {'class', 'args',
    'kwargs', 'state'}, 'optimizer', 'history', 'best_state', 'args'} (`legacy_format`: torch's
    pre-1.6 file format)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)
    with _stand_ins() as make:
        package = {"model": _model_package(make, model, model.state_dict()),
                   "optimizer": optimizer.state_dict(),
                   "history": [{"train": -1.5, "valid": -2.0, "best": -2.0}],
                   "best_state": None if best_state is None else
                   collections.OrderedDict((k, v.detach().clone()) for k, v in best_state.items()),
                   "args": _hydra_args(make, model)}
        torch.save(package, path, _use_new_zipfile_serialization=not legacy_format)


def serialize_best(model, path):
    """Write `path` holding the {'class', 'args', 'kwargs', 'state'} part alone, which svoice's
    separate.py / evaluate.py also accept (a `best.th`-style file)."""
    with _stand_ins() as make:
        torch.save(_model_package(make, model, model.state_dict()), path)
