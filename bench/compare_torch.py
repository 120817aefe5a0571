"""Speed and memory of our MindSpore SWave against svoice's PyTorch SWave on this machine.

    python bench/compare_torch.py                       # paper config N=128 L=8 H=128 R=6 C=2
    python bench/compare_torch.py --N 32 --H 32 --R 2 --steps 2 --infer-seconds 2   # smoke test

Four measurements, each in its own subprocess (so each peak RSS is its own), one after the other:
training step (batch x seconds of 8 kHz audio, multi-scale PIT SI-SNR loss, Adam, global-norm
clipping at 5; median over --steps steps after --warmup steps) and inference on one
--infer-seconds long mixture (eval mode, median over --infer-runs runs after one warm-up run),
in MindSpore (GRAPH_MODE, src.models.swave.SWave + src.losses + src.training.step.TrainStep)
and PyTorch (tests/torch_swave.py, svoice's model and cal_loss). Prints one table with the
MindSpore / PyTorch ratio of every figure. Needs torch installed (requirements-test.txt).
The machine is shared: run it when nothing else is busy, and treat ratios below ~10 % as noise.
With --lstm native (nn.LSTM), the paper config trains within 24 GB only with --recompute.
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

from bench.harness import add_swave_arguments, busy_cores, cpu_description, peak_rss_gb, start_rss_guard  # noqa: E402

LR, CLIP = 5e-4, 5.0
FRAMEWORKS = ("mindspore", "pytorch")
TASKS = ("train", "infer")


def _data(args, seconds, batch, seed):
    """Random mixture (batch, time), sources (batch, C, time), lengths (batch,) as numpy."""
    import numpy as np
    rng = np.random.default_rng(seed)
    samples = int(seconds * args.sample_rate)
    src = (0.1 * rng.standard_normal((batch, args.C, samples))).astype(np.float32)
    return src.sum(axis=1), src, np.full((batch,), samples, np.int32)


def _timed(fn, warmup, runs):
    """(median seconds, all seconds, first-call seconds) of `fn()` (which must synchronise)."""
    times = []
    for _ in range(warmup + runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times[warmup:]), times[warmup:], times[0]


def _mindspore(args, task):
    import mindspore as ms
    from src.config import Config
    from src.losses import SeparationLoss
    from src.models.swave import SWave
    from src.training.step import TrainStep, build_optimizer

    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_device("CPU")
    if args.threads:
        ms.set_context(runtime_num_threads=args.threads)
    ms.set_seed(0)
    net = SWave(args.N, args.L, args.H, args.R, args.C, args.sample_rate, args.segment,
                recompute=args.recompute, lstm=args.lstm)
    if task == "train":
        net.set_train(True)
        optimizer = build_optimizer(net, Config({"lr": LR, "weight_decay": 0.0}))
        step = TrainStep(net, SeparationLoss(), optimizer, clip_grad_norm=CLIP)
        mix, src, lengths = (ms.Tensor(a) for a in _data(args, args.segment, args.batch, 0))
        losses = []

        def run():
            loss, _ = step(mix, src, lengths)
            losses.append(float(loss.asnumpy()))
        median, times, first = _timed(run, args.warmup, args.steps)
        return {"median_s": median, "times_s": times, "first_s": first, "losses": losses}
    net.set_train(False)
    mix = _data(args, args.infer_seconds, 1, 1)[0]
    if args.dynamic:  # as evaluate.py and separate.py run it
        from src.inference.network import NetworkSeparator
        separator = NetworkSeparator(net)
        median, times, first = _timed(lambda: separator(mix), 1, args.infer_runs)
    else:
        mix = ms.Tensor(mix)
        median, times, first = _timed(lambda: net(mix).asnumpy(), 1, args.infer_runs)
    return {"median_s": median, "times_s": times, "first_s": first}


def _pytorch(args, task):
    import torch
    from tests.torch_swave import SWave, multi_scale_loss

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = SWave(args.N, args.L, args.H, args.R, args.C, args.sample_rate, args.segment)
    if task == "train":
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=LR)
        mix, src, lengths = (torch.from_numpy(a) for a in _data(args, args.segment, args.batch, 0))
        losses = []

        def run():
            loss = multi_scale_loss(model(mix), src, lengths)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
            optimizer.step()
            losses.append(float(loss.item()))
        median, times, first = _timed(run, args.warmup, args.steps)
        return {"median_s": median, "times_s": times, "first_s": first, "losses": losses,
                "threads": torch.get_num_threads()}
    model.eval()
    mix = torch.from_numpy(_data(args, args.infer_seconds, 1, 1)[0])

    def infer():
        with torch.no_grad():
            model(mix)
    median, times, first = _timed(infer, 1, args.infer_runs)
    return {"median_s": median, "times_s": times, "first_s": first, "threads": torch.get_num_threads()}


def _worker(args):
    framework, task = args.worker.split(":")
    start_rss_guard(args.max_rss_gb)
    result = (_mindspore if framework == "mindspore" else _pytorch)(args, task)
    result["peak_rss_mb"] = peak_rss_gb() * 1024
    print("RESULT " + json.dumps(result), flush=True)


def _run_worker(argv, framework, task):
    cmd = [sys.executable, os.path.abspath(__file__), *argv, "--worker", f"{framework}:{task}"]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               GLOG_v=os.environ.get("GLOG_v", "3"))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise SystemExit(f"{framework} {task} failed (exit {done.returncode}):\n{tail}")
    return json.loads(lines[-1][len("RESULT "):])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_swave_arguments(parser)
    parser.add_argument("--steps", type=int, default=3, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed training steps first")
    parser.add_argument("--infer-seconds", type=float, default=10.0)
    parser.add_argument("--infer-runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0,
                        help="intra-op threads for both frameworks (0: each framework's default)")
    parser.add_argument("--recompute", action="store_true",
                        help="MindSpore: recompute the MulCat blocks in backward (the training "
                             "config's memory setting); svoice has no such option")
    parser.add_argument("--lstm", default="fused", choices=("native", "fused"),
                        help="MindSpore: SWave's model.lstm (default fused)")
    parser.add_argument("--dynamic", action="store_true",
                        help="MindSpore inference as evaluate.py/separate.py run it (NetworkSeparator: graphs "
                             "for any length, a step at a time; default: one graph compiled for the input's length)")
    parser.add_argument("--max-rss-gb", type=float, default=20.0,
                        help="stop a measurement whose memory passes this (the machine has 24 GB)")
    parser.add_argument("--only", choices=FRAMEWORKS, help="run one framework only")
    parser.add_argument("--json", help="also write all results to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return _worker(args)

    argv = [a for a in (argv if argv is not None else sys.argv[1:])]
    results = {}
    for framework in ([args.only] if args.only else FRAMEWORKS):
        for task in TASKS:
            busy = busy_cores()
            print(f"running {framework} {task} (other processes busy on {busy:.1f} cores) ...", file=sys.stderr,
                  flush=True)
            results[f"{framework}:{task}"] = _run_worker(argv, framework, task)
            results[f"{framework}:{task}"]["busy_before"] = busy
    _report(args, results)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"args": {k: v for k, v in vars(args).items() if k != "worker"},
                       "results": results}, f, indent=2)


def _report(args, results):
    print(cpu_description())
    print(f"SWave N={args.N} L={args.L} H={args.H} R={args.R} C={args.C}, {args.sample_rate} Hz, "
          f"threads={'default' if not args.threads else args.threads}, recompute={args.recompute}, lstm={args.lstm}, "
          f"inference graph {'dynamic' if args.dynamic else 'static'}")
    rows = [("train step", "train", f"batch {args.batch} x {args.segment:g} s, median of {args.steps}"),
            ("inference", "infer", f"1 x {args.infer_seconds:g} s, median of {args.infer_runs}")]
    print(f"{'':12} {'MindSpore':>22} {'PyTorch':>22} {'MS / PT':>14}   ({'time s, peak RSS MB'})")
    for label, task, note in rows:
        ms_r, pt_r = results.get(f"mindspore:{task}"), results.get(f"pytorch:{task}")
        cells = [f"{r['median_s']:8.3f} s {r['peak_rss_mb']:7.0f} MB" if r else f"{'-':>22}"
                 for r in (ms_r, pt_r)]
        ratio = (f"{ms_r['median_s'] / pt_r['median_s']:5.2f}x {ms_r['peak_rss_mb'] / pt_r['peak_rss_mb']:5.2f}x"
                 if ms_r and pt_r else "-")
        print(f"{label:12} {cells[0]:>22} {cells[1]:>22} {ratio:>14}   {note}")
    for key, r in results.items():
        extra = f", losses {', '.join(f'{v:.3f}' for v in r['losses'])}" if "losses" in r else ""
        print(f"  {key}: first call {r['first_s']:.2f} s, timed {', '.join(f'{t:.3f}' for t in r['times_s'])}"
              f"{extra}; busy cores before {r['busy_before']:.1f}")
    if max(r["busy_before"] for r in results.values()) > 0.5:
        print(f"warning: the machine was busy (other processes used more than half a core of {os.cpu_count()}): "
              "the times are not comparable; PyTorch's OpenMP threads suffer most from a busy machine")


if __name__ == "__main__":
    main()
