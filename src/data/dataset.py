"""Training batches from a MindRecord split, and full-utterance iteration for validation/evaluation.

Training order (`epoch_rows`): a permutation of all rows from `np.random.default_rng([seed, epoch])`,
padded by repeating its first rows to a multiple of `num_shards`, then `perm[shard_id::num_shards]`.
So every row is used once per epoch across all shards (a few twice when the row count is not
divisible by num_shards) and every shard has the same number of rows. Rows are numbered as the
MindRecord reader returns them (shard after shard). A row's crop offset depends only on (seed,
epoch, the utterance's index in the split's manifest), so batches are the same for any worker
count and a resumed run sees what an uninterrupted one would.
"""
import os

import mindspore.dataset as ds
import numpy as np

from src.data.layout import DataError, check_split, find_splits, load_utterance
from src.data.mindrecord import read_split_info

_CROP_SALT, _MIXING_SALT = 0, 1


def epoch_rows(num_rows, seed, epoch, num_shards=1, shard_id=0):
    """Row indices of shard `shard_id` for `epoch`, in reading order -> int64 `(ceil(num_rows/num_shards),)`."""
    if not 0 <= shard_id < num_shards:
        raise ValueError(f"shard_id {shard_id} is not in 0..{num_shards - 1}")
    perm = np.random.default_rng([seed, epoch]).permutation(num_rows)
    perm = np.resize(perm, num_rows + (-num_rows) % num_shards)   # repeats the first rows
    return perm[shard_id::num_shards]


class _CropRow:
    """Random segment of one row: (key, mix (L,), src (C, L), length) -> (mix (T,), src (C, T), length, row).
    Rows shorter than T are zero-padded and keep their length."""

    def __init__(self, rows_by_key, segment_samples, seed, epoch):
        self.rows_by_key, self.segment, self.seed, self.epoch = rows_by_key, segment_samples, seed, epoch

    def __call__(self, key, mix, src, length):
        row = self.rows_by_key[str(key)]
        length = int(length)
        if length > self.segment:
            rng = np.random.default_rng([self.seed, self.epoch, _CROP_SALT, row])
            start = int(rng.integers(0, length - self.segment + 1))
            mix, src, length = mix[start:start + self.segment], src[:, start:start + self.segment], self.segment
        elif length < self.segment:
            pad = self.segment - length
            mix = np.concatenate([mix, np.zeros(pad, np.float32)])
            src = np.concatenate([src, np.zeros((src.shape[0], pad), np.float32)], axis=1)
        return mix, src, np.int32(length), np.int64(row)


class _DynamicMixing:
    """New mixtures from a batch of sources: source k of item i comes from item (i + shift_k) % B
    (shift_0 = 0, the other shifts distinct and non-zero, so every item mixes sources of C
    different rows), scaled by a gain uniform in +-gain_db dB. The new length is the shortest of the
    rows used; samples past it are zeroed. mix = sum of the new sources. Random state from
    (seed, epoch, rows of the batch).
    (mix (B,T), src (B,C,T), lengths (B,), rows (B,)) -> (mix (B,T), src (B,C,T), lengths (B,))"""

    def __init__(self, gain_db, seed, epoch):
        self.gain_db, self.seed, self.epoch = gain_db, seed, epoch

    def __call__(self, mix, src, lengths, rows):
        batch, speakers, time = src.shape
        rng = np.random.default_rng([self.seed, self.epoch, _MIXING_SALT, *rows.tolist()])
        shifts = np.concatenate([[0], rng.choice(np.arange(1, batch), size=speakers - 1, replace=False)])
        gains = 10.0 ** (rng.uniform(-self.gain_db, self.gain_db, size=(batch, speakers)) / 20.0)
        take = (np.arange(batch)[:, None] + shifts[None, :]) % batch              # (B, C) source rows
        new_src = src[take, np.arange(speakers)[None, :]] * gains[:, :, None].astype(np.float32)
        new_lengths = lengths[take].min(axis=1).astype(np.int32)
        new_src *= (np.arange(time)[None, :] < new_lengths[:, None])[:, None, :]
        return new_src.sum(axis=1).astype(np.float32), new_src.astype(np.float32), new_lengths


def _split_info(files):
    """read_split_info for a path or a list of paths of the same split."""
    if isinstance(files, (list, tuple)):
        infos = [read_split_info(f) for f in files]
        if len({i["manifest_path"] for i in infos}) != 1:
            raise DataError(f"{', '.join(map(str, files))}: files of different splits; pass one split")
        return infos[0]
    return read_split_info(files)


def create_train_dataset(files, segment_samples, batch_size, seed, epoch, num_speakers, num_shards=1,
                         shard_id=0, dynamic_mixing=False, dm_gain_db=2.5, num_workers=1, sample_rate=None):
    """One epoch of training batches of shard `shard_id` from a MindRecord split.

    files: the split (`<name>.mindrecord0`, the prefix, or `<name>.json`; or a list of its shards).
    Yields `mix (batch, T) float32, src (batch, C, T) float32, lengths (batch,) int32` with
    T = segment_samples: a random crop of each row, zero-padded (lengths < T) when the row is shorter.
    Order and crops: see the module docstring. The last incomplete batch is dropped
    (drop_remainder), so an epoch has `len(epoch_rows(...)) // batch_size` batches on every shard.
    dynamic_mixing: remix the sources of each batch (see _DynamicMixing); needs batch_size >= C >= 2.
    sample_rate: if given, the split's sample rate must equal it.
    Raises DataError when the split does not match (speaker count, sample rate) or is too small.
    """
    info = _split_info(files)
    where = info["manifest_path"]
    if info["num_speakers"] != num_speakers:
        raise DataError(f"{where}: the split has {info['num_speakers']} sources per mixture but the model "
                        f"separates {num_speakers} speakers (model.C)")
    if sample_rate is not None and info["sample_rate"] != sample_rate:
        raise DataError(f"{where}: the split is at {info['sample_rate']} Hz but {sample_rate} Hz is configured "
                        "(preprocess again with the right --sample-rate)")
    if segment_samples < 1 or batch_size < 1:
        raise ValueError(f"segment_samples ({segment_samples}) and batch_size ({batch_size}) must be positive")
    if dynamic_mixing and batch_size < max(2, num_speakers):
        raise ValueError(f"dynamic mixing needs batch_size >= {max(2, num_speakers)} (sources are "
                         f"exchanged between the items of a batch); got {batch_size}")
    rows = epoch_rows(info["num_rows"], seed, epoch, num_shards, shard_id)
    if len(rows) < batch_size:
        raise DataError(f"{where}: {info['num_rows']} rows give {len(rows)} per shard ({num_shards} shards), "
                        f"fewer than one batch of {batch_size}")
    rows_by_key = {u["key"]: i for i, u in enumerate(info["utterances"])}
    num_workers = max(1, min(num_workers, os.cpu_count() or 1))   # MindSpore refuses more than the CPUs

    dataset = ds.MindDataset(info["files"][0], columns_list=["key", "mix", "src", "length"],
                             sampler=ds.SubsetSampler(rows.tolist()), num_parallel_workers=num_workers)
    dataset = dataset.map(_CropRow(rows_by_key, segment_samples, seed, epoch),
                          input_columns=["key", "mix", "src", "length"],
                          output_columns=["mix", "src", "lengths", "row"], num_parallel_workers=num_workers)
    dataset = dataset.batch(batch_size, drop_remainder=True)
    if dynamic_mixing:
        dataset = dataset.map(_DynamicMixing(dm_gain_db, seed, epoch),
                              input_columns=["mix", "src", "lengths", "row"],
                              output_columns=["mix", "src", "lengths"], num_parallel_workers=num_workers)
    return dataset.project(["mix", "src", "lengths"])


def iterate_utterances(path, sample_rate, num_speakers=None, split=None, mix_type="mix_clean",
                       resample=False, downmix=False):
    """Full utterances, never cropped: yields {key, mix (T,), src (C, T), length, sample_rate}.

    path: a MindRecord split (any form read_split_info accepts) or a folder in a layout
    layout.find_splits accepts; for a root with several splits pass `split` ("train", "valid",
    "test"). resample/downmix apply to folders only (a MindRecord split must already be at
    `sample_rate`). num_speakers: required source count (default: whatever the data has).
    Raises DataError before the first utterance when the split's structure or headers are wrong.
    """
    if os.path.isdir(path):
        yield from _folder_utterances(path, sample_rate, num_speakers, split, mix_type, resample, downmix)
        return
    info = read_split_info(path)
    if info["sample_rate"] != sample_rate:
        raise DataError(f"{info['manifest_path']}: the split is at {info['sample_rate']} Hz, not {sample_rate} Hz "
                        "(preprocess again with the right --sample-rate)")
    if num_speakers is not None and info["num_speakers"] != num_speakers:
        raise DataError(f"{info['manifest_path']}: the split has {info['num_speakers']} sources per mixture, "
                        f"not {num_speakers}")
    dataset = ds.MindDataset(info["files"][0], columns_list=["key", "mix", "src", "length", "sample_rate"],
                             shuffle=False, num_parallel_workers=1)
    for row in dataset.create_dict_iterator(num_epochs=1, output_numpy=True):
        yield {"key": str(row["key"]), "mix": row["mix"], "src": row["src"],
               "length": int(row["length"]), "sample_rate": int(row["sample_rate"])}


def _folder_utterances(root, sample_rate, num_speakers, split, mix_type, resample, downmix):
    splits = find_splits(root, mix_type, num_speakers, split)
    if len(splits) > 1:
        raise DataError(f"{root}: has the splits {', '.join(splits)}; choose one (split=...)")
    (chosen,) = splits.values()
    problems = check_split(chosen, sample_rate, resample, downmix)
    if problems:
        raise DataError(problems, context=chosen.folder)
    for utt in chosen.utterances:
        mix, src = load_utterance(utt, sample_rate, resample, downmix)
        yield {"key": utt.key, "mix": mix, "src": src, "length": len(mix), "sample_rate": sample_rate}


class _Sized:
    """An iterable with a known length (tqdm shows a total)."""

    def __init__(self, iterable, length):
        self.iterable, self.length = iterable, length

    def __iter__(self):
        return iter(self.iterable)

    def __len__(self):
        return self.length


def sized(iterable, length):
    """`iterable` with `len() == length`, so progress bars know the total."""
    return _Sized(iterable, length)


def open_utterances(path, sample_rate, num_speakers=None, split="test", mix_type="mix_clean", resample=False,
                    downmix=False):
    """Full utterances of `path` (see iterate_utterances) with a known count (`len()`).

    path: a MindRecord split (`<name>.mindrecord0`, prefix or `<name>.json`), a folder holding the
    MindRecord split `<split>.json` (as written by preprocess.py), or an audio folder in any
    layout iterate_utterances accepts (`split` picks the split of a root with several).
    """
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, f"{split}.json")):
        path = os.path.join(path, f"{split}.json")
    if os.path.isdir(path):
        splits = find_splits(path, mix_type, num_speakers, split)
        count = sum(len(s.utterances) for s in splits.values()) if len(splits) == 1 else None
    else:
        count = read_split_info(path)["num_rows"]
    utterances = iterate_utterances(path, sample_rate, num_speakers, split, mix_type, resample, downmix)
    return utterances if count is None else sized(utterances, count)


def chain_utterances(sources):
    """The utterances of several data folders `[(path, utterances)]` one after the other, each
    tagged with its folder (`utt["data"] = path`); one folder's utterances are returned as they are."""
    if len(sources) == 1:
        return sources[0][1]

    def generate():
        for path, utterances in sources:
            for utt in utterances:
                utt["data"] = path
                yield utt
    lengths = [len(u) if hasattr(u, "__len__") else None for _, u in sources]
    return generate() if None in lengths else sized(generate(), sum(lengths))
