"""train.py with a recorder, for tests/training/test_distributed.py (started by scripts/run_distribute_train.sh
with TRAIN_SCRIPT=tests/training/distributed_worker.py): trains exactly like train.py, then writes
`$DIST_TEST_DUMP_DIR/rank_<rank>.npz` holding this worker's final network and optimizer parameters
(`param/<name>`) and the training mixtures it was given (`epoch<e>/mix`, `(steps, batch, time)`).
With DIST_TEST_FAIL_RANK=<rank> that worker exits with an error before init() instead.
"""
import os
import sys

import numpy as np

import train as train_entry
from src.tasks.separation import SeparationTask
from src.training import trainer

_RealTrainStep, _real_train_batches = trainer.TrainStep, SeparationTask.train_batches
_steps, _mixes = [], {}


def _recording_train_step(*args, **kwargs):
    step = _RealTrainStep(*args, **kwargs)
    _steps.append(step)
    return step


def _recording_train_batches(self, cfg, epoch, num_shards=1, shard_id=0):
    for batch in _real_train_batches(self, cfg, epoch, num_shards, shard_id):
        _mixes.setdefault(epoch, []).append(np.array(batch[0]))
        yield batch


def main():
    rank = os.environ.get("RANK_ID")          # set by msrun (also in its scheduler, which must not fail)
    if os.environ.get("MS_ROLE") != "MS_SCHED" and os.environ.get("DIST_TEST_FAIL_RANK") == rank:
        sys.exit(f"error: injected failure of worker {rank}")
    trainer.TrainStep = _recording_train_step
    SeparationTask.train_batches = _recording_train_batches
    train_entry.main()
    from mindspore.communication import get_rank
    arrays = {f"param/{p.name}": p.asnumpy() for p in _steps[-1].optimizer.get_parameters()}
    arrays.update({f"epoch{e}/mix": np.stack(m) for e, m in _mixes.items()})
    np.savez(os.path.join(os.environ["DIST_TEST_DUMP_DIR"], f"rank_{get_rank()}.npz"), **arrays)


if __name__ == "__main__":
    main()
