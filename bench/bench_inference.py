"""Inference speed and memory: real-time factor on a 10 s input, peak RSS for a long recording.

    python bench/bench_inference.py [--config configs/swave_librimix.yaml] [--seconds 10]
        [--long-minutes 10] [--window-seconds 30] [--overlap-seconds 2] [key=value overrides ...]

Each figure runs in its own process (peak RSS is per process): (1) one-shot separation of
`--seconds` of audio, timed after a warm-up call (which compiles the graph for any length, as
evaluate.py and separate.py do); (2) `--long-minutes` of audio through `separate_long`
(overlapping windows of separate.py's default length, speaker alignment, overlap-add), whose
memory is bounded by the window, not the length. Random weights and noise
input: this measures cost, not quality. For reference, svoice's PyTorch code separates 10 s in
2.25 s (RTF 0.225) on this kind of machine and holds the whole file in memory (~18 GB for 10 min).
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.harness import peak_rss_gb  # noqa: E402
from src.inference.windows import DEFAULT_OVERLAP_SECONDS, DEFAULT_WINDOW_SECONDS  # noqa: E402  (separate.py's)


def measure(args):
    """Runs in a child process; prints one json line."""
    import mindspore as ms
    from src.config import load_config
    from src.inference.network import NetworkSeparator
    from src.inference.separation import separate_long
    from src.models import build_model

    cfg = load_config(os.path.join(ROOT, args.config), args.overrides)
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_device("CPU")
    separator = NetworkSeparator(build_model(cfg))
    sr, C = int(cfg.sample_rate), int(cfg.model.C)
    rng = np.random.default_rng(0)
    if args.measure == "short":
        mixture = rng.standard_normal((1, int(args.seconds * sr))).astype(np.float32) * 0.1
        t0 = time.time()
        separator(mixture)                      # compile + run
        first = time.time() - t0
        t0 = time.time()
        separator(mixture)
        elapsed = time.time() - t0
        result = {"seconds": args.seconds, "first_call_s": first, "time_s": elapsed, "rtf": elapsed / args.seconds}
    else:
        samples = int(args.long_minutes * 60 * sr)
        mixture = np.memmap(os.path.join(args.tmp, "mixture.f32"), np.float32, "w+", shape=(samples,))
        mixture[:] = rng.standard_normal(samples).astype(np.float32) * 0.1
        out = np.memmap(os.path.join(args.tmp, "out.f32"), np.float32, "w+", shape=(C, samples))
        t0 = time.time()
        separate_long(separator, mixture, C, int(args.window_seconds * sr), int(args.overlap_seconds * sr), out=out)
        elapsed = time.time() - t0
        result = {"minutes": args.long_minutes, "time_s": elapsed, "rtf": elapsed / (samples / sr)}
    result["peak_rss_gb"] = peak_rss_gb()
    print("RESULT " + json.dumps(result))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/swave_librimix.yaml")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--long-minutes", type=float, default=10.0)
    parser.add_argument("--window-seconds", type=float, default=DEFAULT_WINDOW_SECONDS)
    parser.add_argument("--overlap-seconds", type=float, default=DEFAULT_OVERLAP_SECONDS)
    parser.add_argument("--measure", choices=["short", "long"], help=argparse.SUPPRESS)
    parser.add_argument("--tmp", default="/tmp", help="folder for the long input/output memmaps")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if args.measure:
        return measure(args)
    print(f"config {args.config} {' '.join(args.overrides)}  load average {os.getloadavg()[0]:.1f}")
    for kind in ("short", "long"):
        child = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--measure", kind],
                               capture_output=True, text=True)
        line = next((l for l in child.stdout.splitlines() if l.startswith("RESULT ")), None)
        if line is None:
            print(f"{kind}: failed\n{child.stderr[-2000:]}")
            continue
        r = json.loads(line[len("RESULT "):])
        if kind == "short":
            print(f"{r['seconds']:.0f} s input, one shot: {r['time_s']:.2f} s (RTF {r['rtf']:.3f}; first call with "
                  f"compile {r['first_call_s']:.1f} s), peak RSS {r['peak_rss_gb']:.2f} GB")
        else:
            print(f"{r['minutes']:g} min input, {args.window_seconds:g} s windows: {r['time_s']:.1f} s "
                  f"(RTF {r['rtf']:.3f}), peak RSS {r['peak_rss_gb']:.2f} GB")


if __name__ == "__main__":
    main()
