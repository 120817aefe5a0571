"""Time and memory of one training step, the trainer's own (`src.training.step.TrainStep`: forward,
the task's loss, gradients, global-norm clipping, PyTorch's Adam).

    python bench/bench_train_step.py [--config configs/swave_librimix.yaml] [--batch-size 2]
        [--steps 3] [--max-rss-gb 22] [key=value overrides ...]

Defaults to the paper config (N=128 L=8 H=128 R=6, 4 s at 8 kHz) at batch 2. Prints the first
step (compile + run), the median of the following steps and the peak RSS of this process.
Random input: this measures cost, not learning.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import mindspore as ms  # noqa: E402

from bench.harness import current_rss_gb, peak_rss_gb, start_rss_guard  # noqa: E402
from src.config import load_config  # noqa: E402
from src.models import build_model  # noqa: E402
from src.tasks import get_task  # noqa: E402
from src.training.step import TrainStep, build_optimizer  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/swave_librimix.yaml")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="steps after the first (compile) one")
    parser.add_argument("--max-rss-gb", type=float, default=22.0)
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. model.recompute=false")
    args = parser.parse_args()

    cfg = load_config(args.config, args.overrides)
    ms.set_context(mode=ms.GRAPH_MODE if cfg.mode == "graph" else ms.PYNATIVE_MODE, device_target="CPU")
    ms.set_seed(cfg.seed)
    start_rss_guard(args.max_rss_gb)

    net = build_model(cfg)
    net.set_train(True)

    train_step = TrainStep(net, get_task(cfg.task).build_loss(cfg), build_optimizer(net, cfg.train),
                           cfg.train.clip_grad_norm)

    samples = int(cfg.segment * cfg.sample_rate)
    rng = np.random.default_rng(0)
    src = ms.Tensor(rng.standard_normal((args.batch_size, cfg.model.C, samples)).astype(np.float32) * 0.1)
    mix = ms.Tensor(src.asnumpy().sum(axis=1))
    lengths = ms.Tensor(np.full((args.batch_size,), samples, np.int32))

    m = cfg.model
    print(f"config {args.config} {' '.join(args.overrides)}")
    print(f"model N={m.N} L={m.L} H={m.H} R={m.R} C={m.C} K={net.chunk_size} recompute={m.get('recompute', False)}"
          f" params={sum(int(np.prod(p.shape)) for p in net.trainable_params()):,}")
    print(f"batch {args.batch_size} x {samples} samples ({cfg.segment} s), mode {cfg.mode}, "
          f"RSS before first step {current_rss_gb():.2f} GB", flush=True)
    times = []
    for step in range(args.steps + 1):
        start = time.perf_counter()
        loss = float(train_step(mix, src, lengths)[0].asnumpy())
        times.append(time.perf_counter() - start)
        print(f"step {step}: {times[-1]:.2f} s  loss {loss:.3f}  peak RSS {peak_rss_gb():.2f} GB", flush=True)
    if args.steps:
        print(f"median step after compile: {statistics.median(times[1:]):.2f} s")
    print(f"first step (compile + run): {times[0]:.1f} s; peak RSS {peak_rss_gb():.2f} GB")


if __name__ == "__main__":
    main()
