"""Speaker counting (CountNet on log-mel frames): the task interface (src/tasks/base.py).

A counting model only tells how many speakers a mixture holds (one of model.speaker_counts);
separate.py and evaluate.py use it with `--count-model`, and the separation models for that count
separate (src/inference/speaker_count.py). Training mixes single-speaker speech on the fly
(src/data/mixing.py, as for separation): every item draws its count from model.speaker_counts,
the loss is the cross-entropy of the count. Validation: the accuracy on the dev mixtures of
every count (data.valid/Libri<n>Mix, split `valid`). evaluate.py scores a counting model alone
(accuracy, confusion matrix); export.py writes its network (CountGraph: log-mel features in, logits
out) and the offline pipeline counts with the exported file. It has no outputs of its own to write
or plot: separate.py takes it only as `--count-model`.

Config keys used (see configs/counter_2_3spk.yaml): `sample_rate`, `segment` (training crop,
seconds), `seed`, `model.{speaker_counts,n_fft,hop,n_mels,channels,dropout}`, `data.{train_speech,
valid,steps_per_epoch,dm_gain_db,speed_perturb,mask_bands,mask_frames}`, `train.batch_size`.
"""
import os

import numpy as np
from mindspore import nn

from src.config import Config
from src.data.dataset import chain_utterances, open_utterances
from src.data.layout import DataError
from src.data.mixing import SpeechMixer, active_sources, load_speakers
from src.errors import UserError
from src.evaluation.report import EvaluationError, Report
from src.evaluation.separation import evaluate_counter, print_count_summary, summarize_counts
from src.export import CountGraph
from src.features import StftConfig, log_mel
from src.inference.network import NetworkClassifier
from src.inference.offline import (OfflineInferenceError, ReplayClassifier, check_frames_graph, indexed_utterances,
                                   run_meta, write_counting_bins)
from src.inference.speaker_count import ClassifierCounter
from src.models import build_model
from src.runtime.checkpoint import load_model
from src.runtime.device import combine_means, init_context
from src.tasks.base import Task, check_offline_request, check_same_rate


class CountingModelError(UserError):
    """A counting model given where separation or enhancement models are expected."""


def features_of(mixtures, cfg):
    """`(B, T)` mixtures -> `(B, frames, n_mels)` float32 network input (src/features.py log_mel)."""
    stft = StftConfig.of_counting_model(cfg)
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


def classifier_counter(scores_fn, cfg):
    """A counter of `cfg` (src/inference/speaker_count.py) scoring with `scores_fn` (`features ->
    logits`: NetworkClassifier of its network, or a replay of stored logits)."""
    return ClassifierCounter(scores_fn, lambda mixtures: features_of(mixtures, cfg), cfg.model.speaker_counts,
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
            features = _masked(features_of(mix, cfg), cfg.data.mask_bands, cfg.data.mask_frames,
                               np.random.default_rng([cfg.seed, epoch, step, shard_id, 1]))
            yield features, np.asarray([counts.index(n) for n in active_sources(sources)], np.int32), lengths

    def count_folders(self, cfg, root=None):
        """The Libri<n>Mix folder of every count of model.speaker_counts in `root` (default: data.valid)."""
        root = root or cfg.data.valid
        if not root:
            raise DataError("data.valid is not set: give the folder holding Libri<n>Mix for every speaker count")
        folders = [os.path.join(str(root), f"Libri{count}Mix") for count in cfg.model.speaker_counts]
        for folder in folders:
            if not os.path.isdir(folder):
                raise DataError(f"{folder}: not found; a counting model's data is a folder holding Libri<n>Mix for "
                                f"every count of model.speaker_counts {list(cfg.model.speaker_counts)} (python -m "
                                "src.data.corpus build/corpus writes the bundled ones)")
        return folders

    def mixtures(self, folders, cfg, split, mix_type="mix_clean", resample=False, downmix=False):
        """The utterances of every folder, one after the other (any speaker count)."""
        return chain_utterances([(path, open_utterances(path, cfg.sample_rate, None, split, mix_type, resample,
                                                        downmix)) for path in folders])

    def validation_mixtures(self, cfg):
        """[(true count, mixture (T,))] of the dev split of every count (data.valid/Libri<n>Mix)."""
        return [(int(utt["src"].shape[0]), utt["mix"]) for utt in self.mixtures(self.count_folders(cfg), cfg, "valid")]

    def validate(self, net, cfg, info=None):
        """Share of the dev mixtures counted right; score = that accuracy."""
        counter = classifier_counter(NetworkClassifier(net), cfg)
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
        return classifier_counter(NetworkClassifier(net), cfg)

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

    # ---------------------------------------------------------------- evaluation
    def evaluate(self, args, cfg, command, load_counter):
        """evaluate.py on a counting checkpoint alone: the count found for every mixture of --data-dir
        (default: the Libri<n>Mix folders of the config's data.valid), accuracy and confusion matrix."""
        if args.count_model or len(args.model_path) > 1:
            raise EvaluationError(f"{args.model_path[0]}: is a speaker-counting model; give it alone (its counting "
                                  "is scored), or as --count-model beside separation models")
        init_context(cfg)
        net, cfg = load_model(args.model_path[0], cfg)
        folders = args.data_dir or self.count_folders(cfg)
        utterances = self.mixtures(folders, cfg, args.split, args.mix_type, args.resample, args.downmix)
        meta = {"checkpoint": os.path.abspath(args.model_path[0]), "config": cfg.to_dict(),
                "data": [os.path.abspath(p) for p in folders], "split": args.split, "mix_type": args.mix_type,
                "sample_rate": cfg.sample_rate, "command": command}
        rows = evaluate_counter(classifier_counter(NetworkClassifier(net), cfg), utterances, cfg.sample_rate)
        if not rows:
            raise EvaluationError(f"no utterances in {', '.join(folders)}")
        return Report(rows, summarize_counts(rows), meta, print_count_summary, "utterance")

    # ---------------------------------------------------------------- export
    def export_graph(self, cfg):
        return CountGraph(cfg)

    # ---------------------------------------------------------------- offline inference
    def write_offline_inputs(self, args, cfg):
        """The counting network's inputs (features of every window the counter scores) for the mixtures
        of the Libri<n>Mix folders of --data-dir (a folder holding them; default: the config's data.valid)."""
        check_offline_request(args, cfg, "counting graphs")
        split = args.split or "test"
        folders = self.count_folders(cfg, args.data_dir)
        data = {"path": [os.path.abspath(p) for p in folders], "split": split, "mix_type": args.mix_type,
                "resample": args.resample, "downmix": args.downmix}
        write_counting_bins(self.mixtures(folders, cfg, split, args.mix_type, args.resample, args.downmix),
                            args.infer_bins, lambda scores_fn: classifier_counter(scores_fn, cfg), cfg, data,
                            args.max_utterances)

    def check_offline_inputs(self, input_shape, index, model_path, bin_dir):
        """Features (1, any frames, the index's n_mels)."""
        check_frames_graph(input_shape, index["config"]["model"]["n_mels"], model_path, bin_dir, "a counting model",
                           "mixtures")

    def check_offline_output(self, output, inputs, index, model_path, name):
        """Logits (1, counts)."""
        counts = len(index["config"]["model"]["speaker_counts"])
        if output.shape != (1, counts):
            raise OfflineInferenceError(f"{model_path}: returned shape {output.shape} for features {inputs[0].shape} "
                                        f"({name}); a counting graph of this index returns logits (1, {counts})")

    def score_offline(self, index, run, args, command):
        """evaluate.py's counting with the stored logits in place of the network."""
        if args.data_dir:
            raise OfflineInferenceError(f"--data-dir {args.data_dir}: a counting index reads the mixtures recorded in "
                                        f"{args.bin_dir}/index.json; preprocess again for other data")
        counter = classifier_counter(ReplayClassifier(index, args.result_dir), Config(index["config"]))
        rows = evaluate_counter(counter, indexed_utterances(index), index["sample_rate"])
        meta = {**run_meta(run), "config": index["config"], "data": index["data"]["path"],
                "split": index["data"]["split"], "sample_rate": index["sample_rate"],
                "bins": os.path.abspath(args.bin_dir), "results": os.path.abspath(args.result_dir), "command": command}
        return Report(rows, summarize_counts(rows), meta, print_count_summary, "utterance")
