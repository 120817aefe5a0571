"""Layers shared by the models."""
import zlib

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

_GOLDEN = 0x9E3779B9


def _hash_uint32(x):
    """lowbias32 integer hash (Wellons) on uint32 tensors; multiplication wraps modulo 2**32."""
    x = ops.bitwise_xor(x, x // Tensor(1 << 16, ms.uint32))
    x = x * Tensor(0x7FEB352D, ms.uint32)
    x = ops.bitwise_xor(x, x // Tensor(1 << 15, ms.uint32))
    x = x * Tensor(0x846CA68B, ms.uint32)
    return ops.bitwise_xor(x, x // Tensor(1 << 16, ms.uint32))


class ReproducibleDropout(nn.Cell):
    """Dropout whose mask is a hash of (salt, call count, element index).

    MindSpore's dropout kernels keep their random state inside the compiled graph, so a run
    resumed in a new process would draw other masks than an uninterrupted one. Here the call
    count is a non-trainable Parameter that goes into checkpoints, which makes resumed training
    bit-identical. `salt` tells the instances of a model apart (see `salt_dropouts`).
    `(any shape)` -> same shape; identity in inference or with p = 0.
    """

    def __init__(self, p):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = float(p)
        self.salt = 0
        self.calls = Parameter(Tensor(0, ms.int32), name="calls", requires_grad=False)
        self.threshold = Tensor(min(int(self.p * 2 ** 32), 2 ** 32 - 1), ms.uint32)

    def construct(self, x):
        if not self.training or self.p == 0.0:
            return x
        count = self.calls + 0
        count = ops.depend(count, ops.assign_add(self.calls, Tensor(1, ms.int32)))
        key = count.astype(ms.uint32) * Tensor(_GOLDEN, ms.uint32) + Tensor(self.salt, ms.uint32)
        index = ops.arange(0, x.size, dtype=ms.int32).astype(ms.uint32).reshape(x.shape)
        keep = ops.stop_gradient((_hash_uint32(_hash_uint32(index + key)) >= self.threshold).astype(x.dtype))
        return x * keep / (1.0 - self.p)


def salt_dropouts(net, seed=0):
    """Give every ReproducibleDropout of `net` a salt from its name in the model and `seed`."""
    for name, cell in net.cells_and_names():
        if isinstance(cell, ReproducibleDropout):
            cell.salt = zlib.crc32(f"{seed}:{name}".encode()) & 0xFFFFFFFF
