"""Time and peak memory of SWave's LSTM implementations (`model.lstm: native | fused`) on CPU.

    python bench/bench_lstm.py                       # everything below, native then fused
    python bench/bench_lstm.py --only bilstm mulcat  # the LSTM alone (seconds), not SWave
    python bench/bench_lstm.py --only train --R 2    # a cheaper SWave while iterating

Measurements, each in its own subprocess (so each peak RSS is its own), GRAPH_MODE:
- bilstm: one nn.LSTM(N, H, bidirectional=True, batch_first=True) over (sequences, steps, N)
  (default 128 x 126, N = H = 128: SWave's row LSTM), forward alone and forward + backward;
- mulcat: the two BiLSTMs of a MulCat block over the same input (fused: one FusedBiLSTMs);
- train: one SWave training step (paper config N=128 L=8 H=128 R=6 C=2, batch 2 x 4 s at 8 kHz:
  multi-scale PIT SI-SNR loss, Adam, global-norm clipping at 5; src.training.step.TrainStep);
- infer: SWave in eval mode on one 10 s mixture (static shape).
Every line shows how many cores other processes kept busy just before the run ("busy"): the
machine is shared, so compare native and fused from the same call and repeat when that changed.
The full paper-config training step takes minutes and ~10-15 GB: use --R 1 or 2 while iterating,
and --max-rss-gb to stay safe.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.harness import add_swave_arguments, busy_cores, peak_rss_gb, start_rss_guard  # noqa: E402

IMPLEMENTATIONS = ("native", "fused")
TASKS = ("bilstm", "mulcat", "train", "infer")
LR, CLIP = 5e-4, 5.0


def _cpu_seconds():
    t = os.times()
    return t.user + t.system


def _timed(fn, runs):
    """(first call seconds, median of `runs` further calls, all further calls, median CPU seconds of
    this process per call: less sensitive to other load than wall time); `fn` must synchronise."""
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    times, cpu = [], []
    for _ in range(runs):
        start, cpu_start = time.perf_counter(), _cpu_seconds()
        fn()
        times.append(time.perf_counter() - start)
        cpu.append(_cpu_seconds() - cpu_start)
    return first, statistics.median(times), times, statistics.median(cpu)


def _lstm_worker(args, implementation, pair):
    import numpy as np
    import mindspore as ms
    from mindspore import nn
    from src.models.lstm import FusedBiLSTMs, fused_bilstms

    def bilstm():
        return nn.LSTM(args.N, args.H, 1, has_bias=True, batch_first=True, bidirectional=True)

    class Block(nn.Cell):
        """One BiLSTM, or two over the same `(sequences, steps, N)` input (outputs summed)."""

        def __init__(self):
            super().__init__()
            self.first = bilstm()
            self.second = bilstm() if pair else None
            lstms = 2 if pair else 1
            self.fused = FusedBiLSTMs(lstms) if implementation == "fused" else None

        def construct(self, x):
            if self.fused is not None:
                if self.second is None:
                    return fused_bilstms(self.fused, (self.first,), x)[0]
                first, second = fused_bilstms(self.fused, (self.first, self.second), x)
                return first + second
            if self.second is None:
                return self.first(x)[0]
            return self.first(x)[0] + self.second(x)[0]

    ms.set_seed(0)
    block = Block()
    rng = np.random.default_rng(0)
    x = ms.Tensor(rng.standard_normal((args.sequences, args.steps, args.N)).astype(np.float32))
    weight = ms.Tensor(rng.standard_normal((args.sequences, args.steps, 2 * args.H)).astype(np.float32))

    def loss(x):
        return (block(x) * weight).sum()

    block.set_train(False)
    forward = ms.jit(block)
    result = {}
    result["forward_first_s"], result["forward_s"], _, result["forward_cpu_s"] = _timed(
        lambda: forward(x).asnumpy(), args.runs)
    block.set_train(True)
    grad = ms.jit(ms.value_and_grad(loss, 0, block.trainable_params()))
    result["grad_first_s"], result["grad_s"], _, result["grad_cpu_s"] = _timed(
        lambda: grad(x)[0].asnumpy(), args.runs)
    return result


def _swave(args, implementation):
    from src.models.swave import SWave
    return SWave(args.N, args.L, args.H, args.R, args.C, args.sample_rate, args.segment,
                 recompute=args.recompute, lstm=implementation)


def _train_worker(args, implementation):
    import numpy as np
    import mindspore as ms
    from src.config import Config
    from src.losses import SeparationLoss
    from src.training.step import TrainStep, build_optimizer

    ms.set_seed(0)
    net = _swave(args, implementation)
    net.set_train(True)
    step = TrainStep(net, SeparationLoss(), build_optimizer(net, Config({"lr": LR, "weight_decay": 0.0})),
                     clip_grad_norm=CLIP)
    rng = np.random.default_rng(0)
    samples = int(args.segment * args.sample_rate)
    src = (0.1 * rng.standard_normal((args.batch, args.C, samples))).astype(np.float32)
    mix, src, lengths = ms.Tensor(src.sum(axis=1)), ms.Tensor(src), ms.Tensor(np.full((args.batch,), samples, np.int32))
    losses = []

    def run():
        loss, _ = step(mix, src, lengths)
        losses.append(float(loss.asnumpy()))
    first, median, times, cpu = _timed(run, args.train_steps)
    return {"first_s": first, "median_s": median, "times_s": times, "cpu_s": cpu, "losses": losses}


def _infer_worker(args, implementation):
    import numpy as np
    import mindspore as ms

    net = _swave(args, implementation)
    net.set_train(False)
    mix = ms.Tensor(np.random.default_rng(1).standard_normal((1, int(args.infer_seconds * args.sample_rate)))
                    .astype(np.float32) * 0.1)
    first, median, times, cpu = _timed(lambda: net(mix).asnumpy(), args.runs)
    return {"first_s": first, "median_s": median, "times_s": times, "cpu_s": cpu}


def _worker(args):
    import mindspore as ms
    task, implementation = args.worker.split(":")
    start_rss_guard(args.max_rss_gb)
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_device("CPU")
    if args.threads:
        ms.set_context(runtime_num_threads=args.threads)
    if task in ("bilstm", "mulcat"):
        result = _lstm_worker(args, implementation, pair=task == "mulcat")
    elif task == "train":
        result = _train_worker(args, implementation)
    else:
        result = _infer_worker(args, implementation)
    result["peak_rss_gb"] = peak_rss_gb()
    print("RESULT " + json.dumps(result), flush=True)


def _run_worker(argv, task, implementation):
    cmd = [sys.executable, os.path.abspath(__file__), *argv, "--worker", f"{task}:{implementation}"]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               GLOG_v=os.environ.get("GLOG_v", "3"))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        tail = "\n".join(done.stderr.strip().splitlines()[-12:])
        return {"error": f"exit {done.returncode}: {tail}"}
    return json.loads(lines[-1][len("RESULT "):])


def _describe(task, r):
    if "error" in r:
        return "FAILED " + r["error"].splitlines()[-1][:150]
    if task in ("bilstm", "mulcat"):
        return (f"forward {1000 * r['forward_s']:6.0f} ms (cpu {1000 * r['forward_cpu_s']:6.0f})  "
                f"fwd+bwd {1000 * r['grad_s']:6.0f} ms (cpu {1000 * r['grad_cpu_s']:6.0f})  "
                f"peak {r['peak_rss_gb']:5.2f} GB  (compile+first: fwd {r['forward_first_s']:.1f} s, "
                f"fwd+bwd {r['grad_first_s']:.1f} s)")
    line = (f"{r['median_s']:6.2f} s (cpu {r['cpu_s']:6.2f})  peak {r['peak_rss_gb']:5.2f} GB  "
            f"(compile+first {r['first_s']:.1f} s; runs {', '.join(f'{t:.2f}' for t in r['times_s'])})")
    if "losses" in r:
        line += f"  losses {', '.join(f'{v:.4f}' for v in r['losses'])}"
    return line


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--lstm", nargs="+", choices=IMPLEMENTATIONS, default=list(IMPLEMENTATIONS))
    parser.add_argument("--sequences", type=int, default=128, help="bilstm/mulcat: sequences (batch)")
    parser.add_argument("--steps", type=int, default=126, help="bilstm/mulcat: time steps")
    parser.add_argument("--runs", type=int, default=3, help="timed runs after the first call")
    add_swave_arguments(parser)
    parser.add_argument("--train-steps", type=int, default=2, help="timed training steps after the first")
    parser.add_argument("--recompute", action="store_true", help="SWave recompute=True")
    parser.add_argument("--infer-seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=0, help="runtime_num_threads (0: MindSpore's default)")
    parser.add_argument("--max-rss-gb", type=float, default=18.0)
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return _worker(args)

    argv = [a for a in (argv if argv is not None else sys.argv[1:])]
    print(f"N={args.N} H={args.H}; bilstm/mulcat {args.sequences} x {args.steps} steps; SWave L={args.L} R={args.R} "
          f"C={args.C} batch {args.batch} x {args.segment:g} s, infer {args.infer_seconds:g} s; "
          f"threads={args.threads or 'default'} recompute={args.recompute}", flush=True)
    results = {}
    for task in args.only:
        for implementation in args.lstm:
            busy = busy_cores()
            r = _run_worker(argv, task, implementation)
            r["busy_before"] = busy
            results[f"{task}:{implementation}"] = r
            print(f"{task:7} {implementation:7} busy {busy:3.1f}  {_describe(task, r)}", flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"args": {k: v for k, v in vars(args).items() if k != "worker"}, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
