"""Inference time and memory of gdprnn and of our PyTorch port of svoice, per input length.

    python bench/bench_inference.py [--seconds 10 60 600] [--frameworks gdprnn pytorch]
        [--config configs/swave_librimix.yaml] [--window-seconds W] [--overlap-seconds O]
        [--max-rss-gb 16] [key=value overrides ...]

Every (framework, length) runs in its own process, one after the other, so every peak RSS is
its own. gdprnn separates as separate.py does with its default settings: GRAPH_MODE,
`NetworkSeparator` (the network compiled for any length), inputs longer than the window in
overlapping windows (`separate_long`, output into a memmap). The PyTorch port
(tests/torch_swave.py, svoice's SWave) separates the whole input in one call, as svoice does.
Each process first warms up on 0.1 s of audio (gdprnn compiles its graphs there); `base` is its
RSS after that, and `per s` = (peak - base) / seconds of audio: what the audio itself costs.
Random weights and noise input: this measures cost, not quality. A process that passes
--max-rss-gb is stopped and reported as such (svoice holds a whole file: ~1.8 GB per minute).
The machine line says which CPU (and whether it has avx512); times are only comparable on an
otherwise idle machine, ratios only within one run of this command.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.harness import busy_cores, cpu_description, current_rss_gb, peak_rss_gb, start_rss_guard  # noqa: E402
from src.inference.windows import DEFAULT_OVERLAP_SECONDS, DEFAULT_WINDOW_SECONDS  # noqa: E402  (separate.py's)

FRAMEWORKS = ("gdprnn", "pytorch")
WARMUP_SECONDS = 0.1


def _gdprnn(cfg, args, mixture, tmp):
    """Warm-up, then `separate_long` as separate.py runs it -> (base RSS GB, seconds)."""
    import mindspore as ms
    from src.inference.network import NetworkSeparator
    from src.inference.separation import separate_long
    from src.models import build_model

    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_device("CPU")
    separator = NetworkSeparator(build_model(cfg))
    sr, C = int(cfg.sample_rate), int(cfg.model.C)
    separator(np.zeros((1, int(WARMUP_SECONDS * sr)), np.float32))
    base = current_rss_gb()
    out = np.memmap(os.path.join(tmp, "out.f32"), np.float32, "w+", shape=(C, len(mixture)))
    start = time.perf_counter()
    separate_long(separator, mixture, C, int(round(args.window_seconds * sr)), int(round(args.overlap_seconds * sr)),
                  out=out)
    return base, time.perf_counter() - start


def _pytorch(cfg, args, mixture, tmp):
    """Warm-up, then the whole input in one call, as svoice -> (base RSS GB, seconds)."""
    import torch
    from tests.torch_swave import SWave

    m = cfg.model
    model = SWave(m.N, m.L, m.H, m.R, m.C, cfg.sample_rate, cfg.segment).eval()
    with torch.no_grad():
        model(torch.zeros((1, int(WARMUP_SECONDS * cfg.sample_rate))))
        base = current_rss_gb()
        start = time.perf_counter()
        model(torch.from_numpy(np.asarray(mixture)[None]))
    return base, time.perf_counter() - start


def measure(args):
    """Runs in a child process; prints one json line."""
    from src.config import load_config

    start_rss_guard(args.max_rss_gb)
    framework, seconds = args.measure.split(":")
    cfg = load_config(os.path.join(ROOT, args.config), args.overrides)
    samples = int(float(seconds) * cfg.sample_rate)
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        mixture = np.memmap(os.path.join(tmp, "mixture.f32"), np.float32, "w+", shape=(samples,))
        mixture[:] = np.random.default_rng(0).standard_normal(samples).astype(np.float32) * 0.1
        base, elapsed = (_gdprnn if framework == "gdprnn" else _pytorch)(cfg, args, mixture, tmp)
    print("RESULT " + json.dumps({"base_gb": base, "time_s": elapsed, "peak_rss_gb": peak_rss_gb()}))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/swave_librimix.yaml")
    parser.add_argument("--seconds", type=float, nargs="+", default=[10.0, 60.0, 600.0], help="input lengths")
    parser.add_argument("--frameworks", nargs="+", choices=FRAMEWORKS, default=list(FRAMEWORKS))
    parser.add_argument("--window-seconds", type=float, default=DEFAULT_WINDOW_SECONDS)
    parser.add_argument("--overlap-seconds", type=float, default=DEFAULT_OVERLAP_SECONDS)
    parser.add_argument("--max-rss-gb", type=float, default=16.0, help="stop a measurement past this much memory")
    parser.add_argument("--tmp", default=tempfile.gettempdir(), help="folder for the input/output memmaps")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if args.measure:
        return measure(args)
    print(f"{cpu_description()}; config {args.config} {' '.join(args.overrides)}; gdprnn windows "
          f"{args.window_seconds:g} s, overlap {args.overlap_seconds:g} s; pytorch: whole input")
    print(f"{'input':>8} {'framework':>9} {'time s':>8} {'RTF':>6} {'peak GB':>8} {'base GB':>8} {'per s MB':>9}"
          f" {'busy':>5}")
    results = {}
    env = dict(os.environ, GLOG_v=os.environ.get("GLOG_v", "3"))
    for seconds in args.seconds:
        for framework in args.frameworks:
            busy = busy_cores()
            child = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--measure", f"{framework}:{seconds:g}"],
                                   capture_output=True, text=True, env=env)
            line = next((l for l in child.stdout.splitlines() if l.startswith("RESULT ")), None)
            if line is None:
                why = (f"stopped past --max-rss-gb {args.max_rss_gb:g}" if child.returncode == 3
                       else f"failed: {child.stderr.strip()[-1500:]}")
                print(f"{seconds:7g}s {framework:>9} {why}", flush=True)
                continue
            r = results[framework, seconds] = json.loads(line[len("RESULT "):])
            print(f"{seconds:7g}s {framework:>9} {r['time_s']:8.2f} {r['time_s'] / seconds:6.3f} "
                  f"{r['peak_rss_gb']:8.2f} {r['base_gb']:8.2f} "
                  f"{(r['peak_rss_gb'] - r['base_gb']) * 1024 / seconds:9.1f} {busy:5.1f}", flush=True)
    for seconds in args.seconds:
        ours, theirs = results.get(("gdprnn", seconds)), results.get(("pytorch", seconds))
        if ours and theirs:
            print(f"{seconds:7g}s gdprnn / pytorch: time {ours['time_s'] / theirs['time_s']:.2f}x, "
                  f"peak RSS {ours['peak_rss_gb'] / theirs['peak_rss_gb']:.2f}x")
    print("busy: cores used by other processes just before each measurement (times are comparable only near 0)")


if __name__ == "__main__":
    main()
