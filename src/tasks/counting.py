"""Speaker counting (CountNet on log-mel frames): the task interface (src/tasks/base.py).

A counting model only tells how many speakers a mixture holds (one of model.speaker_counts);
separate.py and evaluate.py use it with `--count-model`, and the separation models for that count
separate (src/inference/speaker_count.py). Training mixes single-speaker speech on the fly
(src/data/mixing.py, as for separation): every item draws its count from model.speaker_counts,
the loss is the cross-entropy of the count. Validation: the accuracy on the dev mixtures of
every count (data.valid/Libri<n>Mix, split `valid`). It has no outputs of its own to write,
score, export or run offline: those stages refuse it with one message.

Config keys used (see configs/counter_2_3spk.yaml): `sample_rate`, `segment` (training crop,
seconds), `seed`, `model.{speaker_counts,n_fft,hop,n_mels,channels}`, `data.{train_speech,valid,
steps_per_epoch,dm_gain_db}`, `train.batch_size`.
"""
import os

import mindspore as ms
import numpy as np
from mindspore import nn

from src.data.dataset import open_utterances
from src.data.mixing import SpeechMixer, load_speakers
from src.errors import UserError
from src.features import StftConfig, log_mel
from src.models import build_model
from src.runtime.checkpoint import load_model
from src.runtime.device import combine_means
from src.tasks.base import Task


class CountingModelError(UserError):
    """A counting model given where separation or enhancement models are expected."""


def features_of(mixtures, cfg):
    """`(B, T)` mixtures -> `(B, frames, n_mels)` float32 network input (src/features.py log_mel)."""
    stft = StftConfig(cfg.model.n_fft, cfg.model.hop, cfg.model.n_fft)
    return np.stack([log_mel(m, cfg.sample_rate, stft, cfg.model.n_mels) for m in mixtures])


class CountLoss(nn.Cell):
    """`(logits (B, counts), count index (B,), lengths)` -> mean cross-entropy (lengths unused:
    the crops of long training utterances are full)."""

    def __init__(self):
        super().__init__()
        self.cross_entropy = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")

    def construct(self, logits, labels, lengths):
        return self.cross_entropy(logits, labels)


class ClassifierCounter:
    """A counting network as the counter of count_and_separate: `counter(mixture (T,), window,
    overlap, batch_size) -> count`. A mixture longer than `window` samples is scored in windows of
    that length (hop window - overlap) and the scores averaged, so memory stays bounded."""

    def __init__(self, net, cfg):
        self.net, self.cfg = net, cfg
        self.counts = list(cfg.model.speaker_counts)

    def scores(self, mixture, window=None, overlap=None):
        """Mean logits `(num_counts,)` over the windows of `mixture`."""
        length = len(mixture)
        starts = [0] if window is None or length <= window else range(0, length - overlap, window - overlap)
        total = 0.0
        for start in starts:
            chunk = np.asarray(mixture[start:start + (window or length)], dtype=np.float32)
            total = total + self.net(ms.Tensor(features_of(chunk[None], self.cfg))).asnumpy()[0]
        return total / len(starts)

    def __call__(self, mixture, window=None, overlap=None, batch_size=1):
        return self.counts[int(np.argmax(self.scores(mixture, window, overlap)))]


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
                            cfg.data.dm_gain_db, cfg.seed, where=speech, speaker_counts=counts)
        for mix, sources, lengths in mixer.epoch_batches(epoch, cfg.data.steps_per_epoch, cfg.train.batch_size,
                                                         num_shards, shard_id):
            active = np.sum(np.any(sources != 0, axis=-1), axis=-1)
            yield features_of(mix, cfg), np.asarray([counts.index(n) for n in active], np.int32), lengths

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
        counter = ClassifierCounter(net, cfg)
        rank, size = (info.rank, info.group_size) if info is not None else (0, 1)
        right = [counter(mix) == count for i, (count, mix) in enumerate(self.validation_mixtures(cfg)) if i % size == rank]
        (accuracy,), _ = combine_means([sum(right)], len(right), info)
        return {"score": float(accuracy), "accuracy": float(accuracy)}

    # ---------------------------------------------------------------- inference
    def load_counter(self, path, configs, threshold_db=None):
        """The counting model of `path` (threshold_db does not apply); its sample rate must be the
        separators' (`configs`)."""
        net, cfg = load_model(path)
        rate = next(iter(configs.values())).sample_rate
        if cfg.sample_rate != rate:
            raise UserError(f"{path}: counts at {cfg.sample_rate} Hz but the separators work at {rate} Hz")
        return ClassifierCounter(net, cfg)

    def _refuse(self, what):
        raise CountingModelError(f"a speaker-counting model cannot {what}; give it as --count-model beside "
                                 "separation models (separate.py, evaluate.py)")

    def load_separators(self, checkpoints, cfg, config_path=None):
        self._refuse("separate")

    def min_input_samples(self, cfg):
        return int(cfg.model.n_fft)

    def output_name(self, stem, index):
        self._refuse("write outputs")

    def plot_labels(self, count):
        self._refuse("plot outputs")

    def evaluate(self, args, cfg, command):
        self._refuse("be scored alone")

    def export_graph(self, cfg):
        self._refuse("be exported (yet)")

    def write_offline_inputs(self, args, cfg):
        self._refuse("run offline (yet)")

    def check_offline_inputs(self, input_shape, index, model_path, bin_dir):
        self._refuse("run offline (yet)")

    def check_offline_output(self, output, inputs, index, model_path, name):
        self._refuse("run offline (yet)")

    def score_offline(self, index, run, args, command):
        self._refuse("run offline (yet)")
