"""Data-parallel step time: 1 worker vs N workers at the same global batch, side by side.

    python bench/bench_distributed.py [--config configs/demo.yaml] [--batch-size 4] [--steps 10]
        [--workers 1 2] [key=value overrides ...]

Each worker count is one run of scripts/run_distribute_train.sh (msrun, whatever device is
available) with this file as the entry: every worker builds the model and the data-parallel
TrainStep, then times steps on random data of batch_size / workers rows (this measures cost, not
learning). Prints the first step (compile + run) and the median of the following steps.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

_TAG = "BENCH "


def worker(config, overrides, steps):
    """Inside a launched worker: time `steps` data-parallel steps, worker 0 prints one BENCH line."""
    import mindspore as ms

    from src.config import load_config
    from src.losses import SeparationLoss
    from src.models import build_model
    from src.runtime.device import init_context
    from src.training.step import TrainStep, build_optimizer

    cfg = load_config(config, overrides)
    info = init_context(cfg, distributed=True)
    net = build_model(cfg)
    net.set_train(True)
    step = TrainStep(net, SeparationLoss(), build_optimizer(net, cfg.train), cfg.train.get("clip_grad_norm", 0.0),
                     info.group_size)
    local_batch, time_len = cfg.train.batch_size // info.group_size, int(round(cfg.segment * cfg.sample_rate))
    rng = np.random.default_rng(info.rank)
    src = rng.standard_normal((local_batch, cfg.model.C, time_len)).astype(np.float32)
    batch = (ms.Tensor(src.sum(axis=1)), ms.Tensor(src), ms.Tensor(np.full(local_batch, time_len, np.int32)))
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        loss, _ = step(*batch)
        loss.asnumpy()
        times.append(time.perf_counter() - start)
    if info.is_main:
        print(_TAG + json.dumps({"workers": info.group_size, "local_batch": local_batch, "first_s": times[0],
                                 "median_s": statistics.median(times[1:])}), flush=True)


def launch(workers, config, batch_size, steps, overrides):
    """One launcher run -> the BENCH dict of worker 0 (raises with the output when the run failed)."""
    with tempfile.TemporaryDirectory() as exp_dir:
        env = {**os.environ, "TRAIN_SCRIPT": os.path.abspath(__file__), "BENCH_STEPS": str(steps)}
        args = [str(workers), config, f"train.batch_size={batch_size}", f"experiment_dir={exp_dir}", *overrides]
        run = subprocess.run(["bash", os.path.join(ROOT, "scripts", "run_distribute_train.sh"), *args], env=env,
                             capture_output=True, text=True, check=False)
    lines = [line.split(_TAG, 1)[1] for line in run.stdout.splitlines() if _TAG in line]
    if run.returncode or not lines:
        raise SystemExit(f"the {workers}-worker run failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    return json.loads(lines[-1])


def main():
    if "--distributed" in sys.argv:            # started by the launcher: train.py's arguments
        parser = argparse.ArgumentParser()
        parser.add_argument("-c", "--config", required=True)
        parser.add_argument("--distributed", action="store_true")
        parser.add_argument("overrides", nargs="*")
        args = parser.parse_args()
        worker(args.config, args.overrides, int(os.environ["BENCH_STEPS"]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--batch-size", type=int, default=4, help="global batch")
    parser.add_argument("--steps", type=int, default=10, help="timed steps after the first")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    results = []
    for workers in args.workers:
        started = time.time()
        results.append(launch(workers, args.config, args.batch_size, args.steps, args.overrides))
        results[-1]["wall_s"] = time.time() - started
    print(f"config {args.config} {' '.join(args.overrides)}; global batch {args.batch_size}, "
          f"median of {args.steps} steps")
    print(f"{'workers':>8} {'batch/worker':>13} {'first step s':>13} {'step s':>8} {'samples/s':>10} {'run s':>7}")
    for r in results:
        print(f"{r['workers']:>8} {r['local_batch']:>13} {r['first_s']:>13.2f} {r['median_s']:>8.3f} "
              f"{args.batch_size / r['median_s']:>10.2f} {r['wall_s']:>7.1f}")


if __name__ == "__main__":
    main()
