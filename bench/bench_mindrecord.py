"""Throughput of the data layer, in seconds of mixture audio per wall-clock second.

Two sets: a synthetic split (`--rows` utterances of `--seconds` s, 2 speakers, 8 kHz float32 WAV)
and the mini LibriMix train split (built from assets/). For each:
  write  - write_split: read + check the WAVs, write the MindRecord shards (`--shards`);
  read   - iterate_utterances over the MindRecord (full utterances, sequential);
  train  - one epoch of create_train_dataset (random order, 4 s crops, batch 4).

    python bench/bench_mindrecord.py [--rows 400] [--seconds 4] [--shards 4] [--workers 1]
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np
import soundfile as sf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from src.data.dataset import create_train_dataset, iterate_utterances  # noqa: E402
from src.data.layout import find_splits  # noqa: E402
from src.data.mindrecord import write_split  # noqa: E402
from src.data.mini_librimix import build_mini_librimix  # noqa: E402

SAMPLE_RATE = 8000


def make_synthetic(folder, rows, seconds, seed=0):
    """Float32 WAV split folder: mix = s1 + s2 of random noise, lengths 0.75-1.0 x seconds."""
    rng = np.random.default_rng(seed)
    for i in range(rows):
        length = int(SAMPLE_RATE * seconds * rng.uniform(0.75, 1.0))
        sources = (0.1 * rng.standard_normal((2, length))).astype(np.float32)
        for sub, signal in (("s1", sources[0]), ("s2", sources[1]), ("mix_clean", sources.sum(axis=0))):
            os.makedirs(os.path.join(folder, sub), exist_ok=True)
            sf.write(os.path.join(folder, sub, f"utt{i:05d}.wav"), signal, SAMPLE_RATE, subtype="FLOAT")


def measure(label, split_folder, out_dir, shards, workers):
    utterances = find_splits(split_folder, split="train")["train"].utterances
    start = time.perf_counter()
    info = write_split(utterances, out_dir, "train", shards, SAMPLE_RATE)
    write_time = time.perf_counter() - start
    audio = info["total_samples"] / SAMPLE_RATE
    size = sum(os.path.getsize(f) for f in info["files"]) / 2 ** 20

    start = time.perf_counter()
    read_samples = sum(row["length"] for row in iterate_utterances(info["manifest_path"], SAMPLE_RATE))
    read_time = time.perf_counter() - start

    dataset = create_train_dataset(info["manifest_path"], 4 * SAMPLE_RATE, 4, seed=0, epoch=0, num_speakers=2,
                                   num_workers=workers)
    start = time.perf_counter()
    batch_samples = sum(int(lengths.sum()) for _, _, lengths in
                        dataset.create_tuple_iterator(num_epochs=1, output_numpy=True))
    train_time = time.perf_counter() - start
    assert read_samples == info["total_samples"]
    print(f"{label:<28} {info['num_rows']:>5} rows {audio:8.1f} s audio {size:7.1f} MB | "
          f"write {audio / write_time:8.0f} s/s | read {audio / read_time:8.0f} s/s | "
          f"train epoch {batch_samples / SAMPLE_RATE / train_time:8.0f} s/s")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    import mindspore.dataset  # noqa: F401  (imported here so that no timing includes the import)
    import mindspore.mindrecord  # noqa: F401
    with tempfile.TemporaryDirectory() as tmp:
        make_synthetic(os.path.join(tmp, "synthetic"), args.rows, args.seconds)
        measure(f"synthetic {args.rows} x <={args.seconds:g} s", os.path.join(tmp, "synthetic"),
                os.path.join(tmp, "synthetic_mr"), args.shards, args.workers)
        start = time.perf_counter()
        build_mini_librimix(os.path.join(tmp, "mini"))
        print(f"(mini LibriMix built in {time.perf_counter() - start:.1f} s)")
        measure("mini Libri2Mix train", os.path.join(tmp, "mini", "Libri2Mix", "train"),
                os.path.join(tmp, "mini_mr"), args.shards, args.workers)


if __name__ == "__main__":
    main()
