"""Speech enhancement (R-Transformer mask on STFT magnitudes): the task interface
(src/tasks/base.py) for every stage.

Training items and the fixed validation/test pairs come from src/data/enhancement.py; the
Enhancer (src/inference/enhancement.py) runs the mask network with the STFT on the host; pairs
are scored by src/evaluation/enhancement.py (validation, evaluate.py, postprocess.py alike);
separate.py writes `<name>_enhanced.wav`; export.py writes the mask network only (MaskGraph);
offline inputs are each pair's features and frame lengths (src/inference/offline.py).

Config keys used (see configs/rt.yaml): `sample_rate`, `segment` (training crop, seconds),
`seed`, `stft.{n_fft,hop,win}`, `model.*`, `data.{train,valid,test}_{clean,noise,snrs}`,
`data.target` (irm | mag_ratio), `data.resample`, `data.downmix`, `train.batch_size` (global),
`train.loss` (mask_mse | magnitude_mse), `train.valid_max_utterances` (0 = all),
`train.valid_pesq_stoi`.
"""
import os

import numpy as np

from src.config import ConfigError
from src.data.enhancement import enhancement_pairs, noisy_mixer, train_batches
from src.data.layout import DataError
from src.evaluation.enhancement import (BASIC_SCORES, PESQ_STOI_SCORES, evaluate_enhancement, noisy_scores,
                                        print_enhancement_summary, score_pair, summarize_enhancement)
from src.evaluation.report import EvaluationError, Report
from src.export import MaskGraph
from src.features import StftConfig
from src.inference.enhancement import Enhancer
from src.inference.network import MinLengthSeparator
from src.inference.offline import (OfflineInferenceError, ReplayMasker, check_frames_graph, indexed_pairs, run_meta,
                                   stft_config_of, write_enhancement_bins)
from src.losses.mask_loss import build_mask_loss
from src.metrics import MetricError
from src.models import build_model
from src.runtime.checkpoint import load_model
from src.runtime.device import combine_means, init_context
from src.tasks.base import Task, check_offline_request


class EnhancementTask(Task):
    name = "enhancement"
    network_takes_lengths = True   # attention masks the padding frames of a batch
    output_pattern = "enhanced"

    def __init__(self):
        self._mixers = {}
        self._noisy_scores = {}   # scores of the fixed pairs' noisy inputs, per (mixer, pair, pesq/stoi)

    @staticmethod
    def stft_config(cfg):
        return StftConfig.from_cfg(cfg)

    def build_network(self, cfg):
        """The mask network `cfg.model.name` (registry in src/models); its input and output
        sizes must equal the STFT's bin count."""
        bins = self.stft_config(cfg).bins
        for key in ("input_size", "output_size"):
            if int(cfg.model[key]) != bins:
                raise ConfigError(f"model.{key}={cfg.model[key]} but stft.n_fft={cfg.stft.n_fft} gives "
                                  f"{bins} frequency bins; set model.{key}={bins}")
        return build_model(cfg)

    def build_loss(self, cfg):
        return build_mask_loss(cfg.train.loss)

    def mixer(self, cfg, split):
        """NoisyMixer of `split` ('train', 'valid' or 'test'), cached per data settings."""
        data = cfg.data
        key = (split, str(data.get(f"{split}_clean")), str(data.get(f"{split}_noise")),
               tuple(data.get(f"{split}_snrs") or ()), cfg.sample_rate, int(cfg.seed), float(cfg.segment),
               data.resample, data.downmix)
        if key not in self._mixers:
            self._mixers[key] = noisy_mixer(cfg, split)
        return self._mixers[key]

    def train_batches(self, cfg, epoch, num_shards=1, shard_id=0):
        """Numpy batches `(features (B, frames, F), *targets, frame_lengths (B,))` of this worker;
        targets: `irm-or-mag_ratio mask` for train.loss=mask_mse, `|S|, |Y|` for magnitude_mse."""
        batch_size = int(cfg.train.batch_size)
        if batch_size % num_shards:
            raise ConfigError(f"train.batch_size={batch_size} is not divisible by the {num_shards} workers")
        return train_batches(self.mixer(cfg, "train"), self.stft_config(cfg), epoch, batch_size // num_shards,
                             num_shards, shard_id, loss_kind=cfg.train.loss, target=cfg.data.target)

    def enhance(self, net, noisy, cfg):
        """Enhanced `(time,)` signal of a noisy `(time,)` signal (any length)."""
        return Enhancer(net, self.stft_config(cfg))(noisy)

    def validate(self, net, cfg, info=None, split="valid"):
        """Scores on the fixed pairs of `split` (every clean utterance at every SNR of
        `data.<split>_snrs`): `score` = mean SI-SNR improvement (dB) over all pairs; per SNR
        `si_snr@<snr>dB` and `si_snri@<snr>dB`, and with `train.valid_pesq_stoi` also `stoi`,
        `stoii`, `pesq`, `pesqi` `@<snr>dB` (score_pair; the noisy input's scores are computed
        once per pair and kept). Utterances are split over data-parallel workers (`info`)."""
        enhancer = Enhancer(net, self.stft_config(cfg))
        mixer = self.mixer(cfg, split)
        snrs = mixer.snrs_db
        limit = cfg.train.valid_max_utterances
        with_pesq_stoi = cfg.train.valid_pesq_stoi
        names = BASIC_SCORES + (PESQ_STOI_SCORES if with_pesq_stoi else ())
        rank, size = (info.rank, info.group_size) if info is not None else (0, 1)
        sums = np.zeros((len(snrs), len(names)))
        count = 0
        for i, pair in enumerate(mixer.fixed_pairs(limit)):
            utterance, snr_index = divmod(i, len(snrs))
            if utterance % size != rank:
                continue
            cache_key = (id(mixer), i, with_pesq_stoi)
            try:
                if cache_key not in self._noisy_scores:
                    self._noisy_scores[cache_key] = noisy_scores(pair, cfg.sample_rate, with_pesq_stoi)
                scores = score_pair(enhancer(pair.noisy), pair, cfg.sample_rate, with_pesq_stoi,
                                    self._noisy_scores[cache_key])
            except MetricError as err:
                raise DataError(f"{pair.clean_path}: cannot be used for validation: {err}") from None
            sums[snr_index] += [scores[name] for name in names]
            count += snr_index == 0
        if not count and size == 1:
            raise DataError(f"data.{split}_clean gave no validation pairs")
        means = combine_means(sums.ravel(), count, info)[0].reshape(len(snrs), len(names))
        metrics = {"score": float(means[:, 1].mean())}
        for snr, row in zip(snrs, means):
            for name, value in zip(names, row):
                metrics[f"{name}@{snr:g}dB"] = float(value)
        return metrics

    # ---------------------------------------------------------------- inference
    def load_enhancer(self, checkpoints, cfg):
        """An enhancement model -> (Enhancer, cfg), MindSpore context set up from its config.
        checkpoints: a list holding exactly one checkpoint (an enhancement model is used alone)."""
        if len(checkpoints) > 1:
            raise EvaluationError(f"{checkpoints[0]}: is a speech enhancement model; give it alone")
        init_context(cfg)
        net, cfg = load_model(checkpoints[0], cfg)
        return Enhancer(net, self.stft_config(cfg)), cfg

    def load_separators(self, checkpoints, cfg, config_path=None):
        """The enhancer as a one-output separator `(batch, time) -> (batch, 1, time)` ->
        ({1: separate_fn}, {1: cfg}), so that separate.py enhances long files in the same windows."""
        enhancer, cfg = self.load_enhancer(checkpoints, cfg)

        def enhance_batch(mixtures):
            return np.stack([enhancer(mixture)[None] for mixture in mixtures])

        return {1: MinLengthSeparator(enhance_batch, self.min_input_samples(cfg))}, {1: cfg}

    def min_input_samples(self, cfg):
        """One STFT window."""
        return int(self.stft_config(cfg).win)

    def output_name(self, stem, index):
        return f"{stem}_enhanced.wav"

    def plot_labels(self, count):
        return ["noisy"] + ["enhanced"] * count

    # ---------------------------------------------------------------- evaluation
    def evaluate(self, args, cfg, command, load_counter):
        """evaluate.py on an enhancement checkpoint: the config's (or --data-dir's) fixed pairs, scored whole."""
        if args.count_model:
            self.load_counter(args.count_model, None)    # refused: nothing to count
        enhancer, cfg = self.load_enhancer(args.model_path, cfg)
        if args.resample:
            cfg.data.resample = True
        if args.downmix:
            cfg.data.downmix = True
        pairs, data = enhancement_pairs(cfg, args.split, args.data_dir)
        rows = evaluate_enhancement(enhancer, pairs, cfg.sample_rate)
        if not rows:
            raise EvaluationError(f"no pairs in {data['clean']}")
        meta = {"checkpoint": os.path.abspath(args.model_path[0]), "config": cfg.to_dict(), "data": data,
                "sample_rate": cfg.sample_rate, "command": command}
        return Report(rows, summarize_enhancement(rows), meta, print_enhancement_summary, "pair")

    # ---------------------------------------------------------------- export
    def export_graph(self, cfg):
        return MaskGraph(cfg)

    # ---------------------------------------------------------------- offline inference
    def write_offline_inputs(self, args, cfg):
        """The mask network's inputs for the config's test pairs (features + frame lengths)."""
        if args.data_dir:
            raise OfflineInferenceError(f"--data-dir {args.data_dir}: an enhancement model's pairs come from its "
                                        f"config (data.test_clean / test_noise / test_snrs); give -c {args.config} alone")
        check_offline_request(args, cfg, "enhancement graphs")
        if args.resample:
            cfg.data.resample = True
        if args.downmix:
            cfg.data.downmix = True
        write_enhancement_bins(cfg, args.infer_bins, args.split or "test", args.max_utterances)

    def check_offline_inputs(self, input_shape, index, model_path, bin_dir):
        """Features (1, any frames, the index's bins)."""
        check_frames_graph(input_shape, stft_config_of(index).bins, model_path, bin_dir, "an enhancement model",
                           "pairs")

    def check_offline_output(self, output, inputs, index, model_path, name):
        """A mask of the features' shape."""
        if output.shape != inputs[0].shape:
            raise OfflineInferenceError(f"{model_path}: returned shape {output.shape} for features {inputs[0].shape} "
                                        f"({name}); a mask graph returns the features' shape")

    def score_offline(self, index, run, args, command):
        """Replay the stored masks through the Enhancer and score the pairs as evaluate.py does."""
        if args.data_dir:
            raise OfflineInferenceError(f"--data-dir {args.data_dir}: enhancement pairs are rebuilt from the config "
                                        f"and data recorded in {args.bin_dir}/index.json; preprocess again for other "
                                        "data")
        enhancer = Enhancer(ReplayMasker(index, args.result_dir), stft_config_of(index))
        rows = evaluate_enhancement(enhancer, indexed_pairs(index), index["sample_rate"])
        meta = {**run_meta(run), "config": index["config"], "data": index["data"],
                "sample_rate": index["sample_rate"], "bins": os.path.abspath(args.bin_dir),
                "results": os.path.abspath(args.result_dir), "command": command}
        return Report(rows, summarize_enhancement(rows), meta, print_enhancement_summary, "pair")
