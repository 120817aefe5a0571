"""MindSpore execution context: device choice, graph mode, seeds, data parallel."""
import functools
import os
from dataclasses import dataclass

import mindspore as ms
import numpy as np
from mindspore import nn, ops
from mindspore.communication import get_group_size, get_rank, init

from src.config import ConfigError

_DEVICE_PREFERENCE = ("Ascend", "GPU", "CPU")


@dataclass
class RunInfo:
    device_target: str
    rank: int = 0
    group_size: int = 1

    @property
    def distributed(self):
        return self.group_size > 1

    @property
    def is_main(self):
        return self.rank == 0


def best_device(requested="auto"):
    """`auto` -> the first available of Ascend, GPU, CPU; otherwise the requested one if available."""
    if requested and requested != "auto":
        if not ms.hal.is_available(requested):
            raise ConfigError(f"device_target={requested} is not available in this MindSpore installation "
                               f"(available: {', '.join(d for d in _DEVICE_PREFERENCE if ms.hal.is_available(d))})")
        return requested
    return next(d for d in _DEVICE_PREFERENCE if ms.hal.is_available(d))


def _set_device(device, device_id):
    """ms.set_device, except that once kernels have run in this process (a second run in the
    same process, e.g. tests) MindSpore refuses any call: then the device must already match."""
    try:
        if device == "CPU":
            ms.set_device("CPU")
        else:
            ms.set_device(device, device_id)
    except RuntimeError:
        if ms.get_context("device_target") != device:
            raise


def use_device(requested="auto", mode="graph", device_id=None):
    """The one device set-up of every stage: pick the device (best_device), set the execution
    mode (graph | pynative) and the device (`device_id`, default $DEVICE_ID or 0). Returns the device."""
    device = best_device(requested)
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    _set_device(device, int(os.environ.get("DEVICE_ID", 0)) if device_id is None else device_id)
    return device


def init_context(cfg, distributed=False):
    """Set device, execution mode and seeds from the config; with `distributed`, initialise
    collectives (msrun / rank table) and data-parallel mode. Returns RunInfo."""
    info = RunInfo(device_target=use_device(cfg.device_target, cfg.mode))
    ms.set_seed(int(cfg.seed))
    if distributed:
        init()
        info.rank, info.group_size = get_rank(), get_group_size()
        ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True,
                                     device_num=info.group_size)
    return info


class _AllReduceSum(nn.Cell):
    def __init__(self):
        super().__init__()
        self.all_reduce = ops.AllReduce()

    def construct(self, values):
        return self.all_reduce(values)


@functools.lru_cache(maxsize=None)
def _all_reduce_sum_cell():
    return _AllReduceSum()


def all_reduce_sum(values):
    """Element-wise sum over all data-parallel workers: float vector `(n,)` -> float64 numpy `(n,)`
    (summed in float32). Every worker must call it, in the same order. Uses ops.AllReduce in a
    Cell: mindspore.communication.comm_func.all_reduce has no CPU kernel in MindSpore 2.10."""
    values = ms.Tensor(np.asarray(values, np.float32).reshape(-1))
    return _all_reduce_sum_cell()(values).asnumpy().astype(np.float64)


def combine_means(sums, counts, info):
    """Means over the items of all workers -> (float64 `(n,)`: sums `(n,)` summed over workers / counts
    summed over workers, 0 where no worker had an item; that total count). `info`: RunInfo (None = one worker)."""
    totals = np.concatenate([np.asarray(sums, np.float64).reshape(-1), [float(counts)]])
    if info is not None and info.distributed:
        totals = all_reduce_sum(totals)
    return totals[:-1] / max(totals[-1], 1.0), int(totals[-1])

