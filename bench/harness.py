"""What the bench scripts that run measurements in worker processes share: SWave's paper-config
arguments, a memory guard, peak RSS, how busy the machine is before a measurement, and which CPU it is."""
import os
import resource
import sys
import threading
import time


def add_swave_arguments(parser):
    """--N --L --H --R --C --sample-rate --segment --batch, defaulting to the paper config
    (N=128 L=8 H=128 R=6 C=2, 8 kHz, batch 2 x 4 s)."""
    parser.add_argument("--N", type=int, default=128)
    parser.add_argument("--L", type=int, default=8)
    parser.add_argument("--H", type=int, default=128)
    parser.add_argument("--R", type=int, default=6)
    parser.add_argument("--C", type=int, default=2)
    parser.add_argument("--sample-rate", type=int, default=8000)
    parser.add_argument("--segment", type=float, default=4.0, help="training segment (s); sets K")
    parser.add_argument("--batch", type=int, default=2)


def peak_rss_gb():
    """Peak resident memory of this process so far (GiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB -> GiB


def current_rss_gb():
    """Resident memory of this process now (GiB)."""
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 30


def start_rss_guard(limit_gb):
    """Exit (code 3) as soon as this process holds more than `limit_gb` (the machine is shared)."""
    def watch():
        while True:
            rss_gb = current_rss_gb()
            if rss_gb > limit_gb:
                print(f"RSS {rss_gb:.1f} GB passed --max-rss-gb {limit_gb}: stopped", file=sys.stderr, flush=True)
                os._exit(3)
            time.sleep(0.2)
    threading.Thread(target=watch, daemon=True).start()


def busy_cores(seconds=2.0):
    """Cores kept busy by other processes over the next `seconds` (/proc/stat; the 1-minute load
    average would still count the worker that just finished)."""
    def sample():
        with open("/proc/stat", encoding="ascii") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return sum(values), values[3] + values[4]  # all, idle + iowait
    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return (1 - (idle1 - idle0) / max(total1 - total0, 1)) * os.cpu_count()


def cpu_description():
    """'<CPU model>, avx512 yes|no, <n> cores' from /proc/cpuinfo (what a figure was measured on)."""
    model, flags = "unknown CPU", ""
    with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown CPU":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = value
    return f"{model}, avx512 {'yes' if 'avx512f' in flags.split() else 'no'}, {os.cpu_count()} cores"
