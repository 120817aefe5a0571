"""Speaker counting (CountNet on log-mel frames): the task interface (src/tasks/base.py).

A counting model only tells how many speakers a mixture holds (one of model.speaker_counts);
separate.py and evaluate.py use it with `--count-model`, and the separation models for that count
separate (src/inference/speaker_count.py). Training mixes single-speaker speech on the fly
(src/data/mixing.py, as for separation): every item draws its count from model.speaker_counts,
the loss is the cross-entropy of the count. Validation: the accuracy on the dev mixtures of
every count (data.valid/Libri<n>Mix, split `valid`). It has no outputs of its own to write,
score, export or run offline: those stages refuse it with one message.

Config keys used (see configs/counter_2_3spk.yaml): `sample_rate`, `segment` (training crop,
seconds), `seed`, `model.{speaker_counts,n_fft,hop,n_mels,channels,dropout}`, `data.{train_speech,
valid,steps_per_epoch,dm_gain_db,speed_perturb,mask_bands,mask_frames}`, `train.batch_size`.
"""
import os

import numpy as np
from mindspore import nn

from src.data.dataset import open_utterances
from src.data.mixing import SpeechMixer, load_speakers
from src.errors import UserError
from src.features import StftConfig, log_mel
from src.inference.speaker_count import ClassifierCounter
from src.models import build_model
from src.runtime.checkpoint import load_model
from src.runtime.device import combine_means
from src.tasks.base import Task, check_same_rate


class CountingModelError(UserError):
    """A counting model given where separation or enhancement models are expected."""


def features_of(mixtures, cfg):
    """`(B, T)` mixtures -> `(B, frames, n_mels)` float32 network input (src/features.py log_mel)."""
    stft = StftConfig(cfg.model.n_fft, cfg.model.hop, cfg.model.n_fft)
    return np.stack([log_mel(m, cfg.sample_rate, stft, cfg.model.n_mels) for m in mixtures])


def _masked(features, max_bands, max_frames, rng):
    """`features (B, frames, bands)` with one random run of up to `max_bands` bands and one of up to
    `max_frames` frames set to 0 (the mean, after log_mel) in each item (SpecAugment)."""
    for item in features:
        for axis, most in ((1, max_bands), (0, max_frames)):
            width = int(rng.integers(0, most + 1)) if most else 0
            start = int(rng.integers(0, item.shape[axis] - width + 1))
            index = [slice(None), slice(None)]
            index[axis] = slice(start, start + width)
            item[tuple(index)] = 0.0
    return features


def classifier_counter(net, cfg):
    """The counting network `net` of `cfg` as a counter (src/inference/speaker_count.py)."""
    return ClassifierCounter(net, lambda mixtures: features_of(mixtures, cfg), cfg.model.speaker_counts,
                             int(round(cfg.segment * cfg.sample_rate)))


class CountLoss(nn.Cell):
    """`(logits (B, counts), count index (B,), lengths)` -> mean cross-entropy (lengths unused:
    the crops of long training utterances are full)."""

    def __init__(self):
        super().__init__()
        self.cross_entropy = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")

    def construct(self, logits, labels, lengths):
        return self.cross_entropy(logits, labels)


class CountingTask(Task):
    name = "counting"

    def build_network(self, cfg):
        return build_model(cfg)

    def build_loss(self, cfg):
        return CountLoss()

    def train_batches(self, cfg, epoch, num_shards=1, shard_id=0):
        """`(features (B, frames, n_mels), count index (B,) int32, lengths (B,))` of this worker, mixed
        on the fly from data.train_speech, deterministic in (seed, epoch, step)."""
        counts = list(cfg.model.speaker_counts)
        speech = str(cfg.data.train_speech)
        mixer = SpeechMixer(load_speakers(speech, cfg.sample_rate), max(counts), int(round(cfg.segment * cfg.sample_rate)),
                            cfg.data.dm_gain_db, cfg.seed, where=speech, speaker_counts=counts,
                            speed=cfg.data.speed_perturb)
        batches = mixer.epoch_batches(epoch, cfg.data.steps_per_epoch, cfg.train.batch_size, num_shards, shard_id)
        for step, (mix, sources, lengths) in enumerate(batches):
            active = np.sum(np.any(sources != 0, axis=-1), axis=-1)
            features = _masked(features_of(mix, cfg), cfg.data.mask_bands, cfg.data.mask_frames,
                               np.random.default_rng([cfg.seed, epoch, step, shard_id, 1]))
            yield features, np.asarray([counts.index(n) for n in active], np.int32), lengths

    def validation_mixtures(self, cfg):
        """[(true count, mixture (T,))] of the dev split of every count (data.valid/Libri<n>Mix)."""
        mixtures = []
        for count in cfg.model.speaker_counts:
            path = os.path.join(str(cfg.data.valid), f"Libri{count}Mix")
            for utt in open_utterances(path, cfg.sample_rate, count, split="valid"):
                mixtures.append((count, utt["mix"]))
        return mixtures

    def validate(self, net, cfg, info=None):
        """Share of the dev mixtures counted right; score = that accuracy."""
        counter = classifier_counter(net, cfg)
        rank, size = (info.rank, info.group_size) if info is not None else (0, 1)
        right = [counter(mix) == count for i, (count, mix) in enumerate(self.validation_mixtures(cfg)) if i % size == rank]
        (accuracy,), _ = combine_means([sum(right)], len(right), info)
        return {"score": float(accuracy), "accuracy": float(accuracy)}

    # ---------------------------------------------------------------- inference
    def load_counter(self, path, configs, threshold_db=None):
        """The counting model of `path` (threshold_db does not apply); its sample rate must be the
        separators' (`configs`)."""
        net, cfg = load_model(path)
        check_same_rate(path, cfg, "the separators", next(iter(configs.values())))
        return classifier_counter(net, cfg)

    def _refuse(self, what, path=None):
        raise CountingModelError(f"{path + ': ' if path else ''}a speaker-counting model cannot {what}; give it as "
                                 "--count-model beside separation models (separate.py, evaluate.py)")

    def load_separators(self, checkpoints, cfg, config_path=None):
        self._refuse("separate", checkpoints[0])

    def min_input_samples(self, cfg):
        return int(cfg.model.n_fft)

    def output_name(self, stem, index):
        self._refuse("write outputs")

    def plot_labels(self, count):
        self._refuse("plot outputs")

    def evaluate(self, args, cfg, command, load_counter):
        self._refuse("be scored alone", args.model_path[0])

    def export_graph(self, cfg):
        self._refuse("be exported (yet)")

    def write_offline_inputs(self, args, cfg):
        self._refuse("run offline (yet)")

    def check_offline_inputs(self, input_shape, index, model_path, bin_dir):
        self._refuse("run offline (yet)", model_path)

    def check_offline_output(self, output, inputs, index, model_path, name):
        self._refuse("run offline (yet)", model_path)

    def score_offline(self, index, run, args, command):
        self._refuse("run offline (yet)")
