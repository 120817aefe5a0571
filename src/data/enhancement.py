"""Noisy/clean pairs mixed on the fly for speech enhancement.

Clean speech comes from a folder (searched recursively) or a list file; noise from a folder
searched recursively (e.g. MUSAN's `musan/noise/{free-sound,sound-bible}/*.wav`, or
`musan/music`) or a list file (`layout.list_audio_files`).

Training item `index` of epoch `epoch`: the clean utterance, randomly cropped to at most
`segment_samples`; a random noise file at a random offset, looped when shorter than the
speech; a random SNR from `snrs_db`. All random choices come from
`np.random.default_rng([seed, epoch, TRAIN_SALT, index])`, so an item is the same whatever
the shard count or order (a resumed run replays an uninterrupted one).

Validation/test pairs are fixed: every clean utterance (full length) with every SNR of
`snrs_db`, noise file and offset from `default_rng([seed, PAIR_SALT, index, snr_index])`,
so the numbers are comparable across epochs.

SNR: 10 log10(sum clean^2 / sum noise^2) over the (cropped) utterance; the noise is scaled,
the speech keeps its level.
"""
import copy
import os
from dataclasses import dataclass

import numpy as np

from src.audio import read_audio
from src.data.dataset import epoch_rows, sized
from src.data.layout import DataError, check_audio_files, list_audio_files
from src.features import features, mask_target, stft

TRAIN_SALT, PAIR_SALT = 0, 1


def loop_noise(noise, offset, length):
    """`length` samples of `noise (N,)` starting at `offset`, wrapping around to its start."""
    return np.take(noise, offset + np.arange(length), mode="wrap")


def scale_to_snr(clean, noise, snr_db):
    """`noise` scaled so that 10 log10(sum clean^2 / sum noise^2) = snr_db (same shape).
    Raises ValueError when either signal is all zeros (the SNR is then undefined)."""
    clean_energy = float(np.sum(np.square(clean, dtype=np.float64)))
    noise_energy = float(np.sum(np.square(noise, dtype=np.float64)))
    if clean_energy == 0.0:
        raise ValueError("the speech is silent (all zeros)")
    if noise_energy == 0.0:
        raise ValueError("the noise segment is silent (all zeros)")
    gain = np.sqrt(clean_energy / (noise_energy * 10.0 ** (snr_db / 10.0)))
    return (noise * gain).astype(np.float32)


@dataclass
class Pair:
    """A clean utterance and the scaled noise added to it: noisy = clean + noise, all `(time,)`."""
    key: str
    clean: np.ndarray
    noise: np.ndarray
    snr_db: float
    clean_path: str
    noise_path: str

    @property
    def noisy(self):
        return self.clean + self.noise


class NoisyMixer:
    """Clean + noise pairs of one split (see the module docstring).

    clean_files, noise_files: lists of audio paths (`list_audio_files`).
    snrs_db: the SNRs drawn from (training) or all used (fixed pairs).
    segment_samples: training crop length (None: full utterances).
    The file headers are checked on construction: DataError lists every unusable file.
    """

    def __init__(self, clean_files, noise_files, sample_rate, snrs_db, seed, segment_samples=None,
                 resample=False, downmix=False):
        if not snrs_db:
            raise DataError("no SNRs configured for mixing")
        self.clean_files, self.noise_files = list(clean_files), list(noise_files)
        self.sample_rate, self.seed = sample_rate, int(seed)
        self.snrs_db = [float(s) for s in snrs_db]
        self.segment_samples = segment_samples
        self.resample, self.downmix = resample, downmix
        problems = check_audio_files(self.clean_files + self.noise_files, sample_rate, resample, downmix)
        if problems:
            raise DataError(problems)

    def _read(self, path):
        return read_audio(path, self.sample_rate, resample_to_rate=self.resample, downmix=self.downmix)[0]

    def _pair(self, index, rng, snr_db, crop):
        clean_path = self.clean_files[index]
        clean = self._read(clean_path)
        if crop and self.segment_samples and len(clean) > self.segment_samples:
            start = int(rng.integers(0, len(clean) - self.segment_samples + 1))
            clean = clean[start:start + self.segment_samples]
        noise_path = self.noise_files[int(rng.integers(len(self.noise_files)))]
        noise = self._read(noise_path)
        noise = loop_noise(noise, int(rng.integers(len(noise))), len(clean))
        try:
            noise = scale_to_snr(clean, noise, snr_db)
        except ValueError as err:
            raise DataError(f"{clean_path} with noise {noise_path}: {err}; cannot mix at {snr_db:g} dB SNR") from None
        key = os.path.splitext(os.path.basename(clean_path))[0]
        return Pair(key, clean, noise, snr_db, clean_path, noise_path)

    def train_pair(self, index, epoch):
        """Random pair for training item `index` of `epoch` (cropped to segment_samples)."""
        rng = np.random.default_rng([self.seed, epoch, TRAIN_SALT, index])
        snr_db = self.snrs_db[int(rng.integers(len(self.snrs_db)))]
        return self._pair(index, rng, snr_db, crop=True)

    def fixed_pairs(self, max_utterances=0):
        """Every clean utterance (full length) with every SNR, same noise every call -> Pair iterator.
        max_utterances: use only the first N clean utterances (0 = all)."""
        count = len(self.clean_files) if not max_utterances else min(max_utterances, len(self.clean_files))
        for index in range(count):
            for snr_index, snr_db in enumerate(self.snrs_db):
                rng = np.random.default_rng([self.seed, PAIR_SALT, index, snr_index])
                yield self._pair(index, rng, snr_db, crop=False)


def example_arrays(pair, stft_config, loss_kind="mask_mse", target="irm"):
    """Network input and targets of one pair (numpy, float32, all `(frames, bins)`).

    loss_kind 'mask_mse': (features, mask target); 'magnitude_mse': (features, |S|, |Y|).
    features = log(1 + |Y|) of the noisy spectrum Y = S + N.
    """
    clean_spec = stft(pair.clean, stft_config)
    noise_spec = stft(pair.noise, stft_config)
    noisy_mag = np.abs(clean_spec + noise_spec)
    net_input = features(noisy_mag)
    if loss_kind == "mask_mse":
        return net_input, mask_target(target, clean_spec, noise_spec)
    if loss_kind == "magnitude_mse":
        return net_input, np.abs(clean_spec).astype(np.float32), noisy_mag.astype(np.float32)
    raise ValueError(f"unknown loss '{loss_kind}' (choose mask_mse or magnitude_mse)")


def collate(examples, frames=None):
    """Stack examples (tuples of `(frames_i, bins)` arrays) zero-padded to `frames` (default:
    the longest) -> (*stacked `(batch, frames, bins)`, frame_lengths `(batch,)` int32)."""
    lengths = np.array([ex[0].shape[0] for ex in examples], dtype=np.int32)
    frames = int(lengths.max()) if frames is None else int(frames)
    if lengths.max() > frames:
        raise ValueError(f"an example has {lengths.max()} frames, more than the batch's {frames}")
    stacked = []
    for field in range(len(examples[0])):
        bins = examples[0][field].shape[1]
        out = np.zeros((len(examples), frames, bins), dtype=np.float32)
        for b, ex in enumerate(examples):
            out[b, :lengths[b]] = ex[field]
        stacked.append(out)
    return (*stacked, lengths)


def train_batches(mixer, stft_config, epoch, batch_size, num_shards=1, shard_id=0,
                  loss_kind="mask_mse", target="irm"):
    """Training batches of shard `shard_id` for `epoch` -> iterator of numpy tuples
    `(features (B, frames, F), *targets (B, frames, F), frame_lengths (B,))`.

    Order: `epoch_rows` (a permutation per (seed, epoch), split over shards; every item once per
    epoch across shards). batch_size is per shard; the last incomplete batch is dropped.
    Every batch has the frame count of a full `segment_samples` crop (shorter items are
    zero-padded, frame_lengths says how many frames are real), so GRAPH_MODE compiles one graph.
    """
    rows = epoch_rows(len(mixer.clean_files), mixer.seed, epoch, num_shards, shard_id)
    if len(rows) < batch_size:
        raise DataError(f"{len(mixer.clean_files)} clean utterances give {len(rows)} per shard "
                        f"({num_shards} shards), fewer than one batch of {batch_size}")
    frames = stft_config.num_frames(mixer.segment_samples) if mixer.segment_samples else None
    for start in range(0, len(rows) - batch_size + 1, batch_size):
        examples = [example_arrays(mixer.train_pair(int(row), epoch), stft_config, loss_kind, target)
                    for row in rows[start:start + batch_size]]
        yield collate(examples, frames)


SPLITS = ("train", "valid", "test")


def noisy_mixer(cfg, split):
    """NoisyMixer of an enhancement config's `split` ('train', 'valid' or 'test'): files of
    `data.<split>_clean` / `_noise`, SNRs `data.<split>_snrs`; training items cropped to `segment`."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got '{split}'")
    data = cfg.data
    segment = int(round(float(cfg.segment) * cfg.sample_rate)) if split == "train" else None
    return NoisyMixer(list_audio_files(data[f"{split}_clean"], f"{split} clean speech"),
                      list_audio_files(data[f"{split}_noise"], f"{split} noise"),
                      cfg.sample_rate, data[f"{split}_snrs"], cfg.seed, segment_samples=segment,
                      resample=data.resample, downmix=data.downmix)


def enhancement_pairs(cfg, split="test", data=None, max_utterances=0):
    """The fixed noisy/clean pairs of an enhancement config's `split` (every clean utterance at
    every SNR of `data.<split>_snrs`, noise as in validation) -> (pairs with len(), data description).

    data: (clean, noise) folders or list files instead of `data.<split>_clean` / `_noise`.
    max_utterances: only the first N clean utterances (0 = all)."""
    if split not in SPLITS[1:]:
        raise DataError(f"--split {split}: enhancement pairs come from the config's "
                        f"{' or '.join(SPLITS[1:])} data (data.<split>_clean, _noise, _snrs)")
    if data is not None:
        if len(data) != 2:
            raise DataError(f"--data-dir {' '.join(data)}: an enhancement model takes two paths, CLEAN NOISE "
                            "(clean speech and noise: folders or list files), or none for the config's "
                            f"data.{split}_clean and data.{split}_noise")
        cfg = copy.deepcopy(cfg)
        cfg.data[f"{split}_clean"], cfg.data[f"{split}_noise"] = data
    mixer = noisy_mixer(cfg, split)
    count = len(mixer.clean_files) if not max_utterances else min(max_utterances, len(mixer.clean_files))
    description = {"clean": os.path.abspath(str(cfg.data[f"{split}_clean"])),
                   "noise": os.path.abspath(str(cfg.data[f"{split}_noise"])),
                   "snrs_db": mixer.snrs_db, "seed": mixer.seed, "split": split,
                   "resample": mixer.resample, "downmix": mixer.downmix, "max_utterances": max_utterances}
    return sized(mixer.fixed_pairs(max_utterances), count * len(mixer.snrs_db)), description
