"""Speech separation (SWave): the task interface (src/tasks/base.py) for every stage.

Training reads MindRecord splits or mixes single-speaker speech on the fly; validation, evaluate.py
and postprocess.py score full utterances (src/evaluation/separation.py); separate.py writes
`<name>_s<k>.wav`; export.py writes SeparationGraph; offline inputs are the windows evaluate.py
would feed the model (src/inference/offline.py).
"""
import logging
import os

import numpy as np

from src.data.dataset import chain_utterances, create_train_dataset, iterate_utterances, open_utterances
from src.data.mixing import SpeechMixer, load_speakers
from src.evaluation.report import EvaluationError, Report
from src.evaluation.separation import (evaluate_counting, evaluate_utterances, print_counting_summary, print_summary,
                                       summarize, summarize_counting)
from src.export import SeparationGraph
from src.inference.network import MinLengthSeparator, NetworkSeparator
from src.inference.offline import (OfflineInferenceError, ReplaySeparator, indexed_utterances, run_meta,
                                  write_input_bins)
from src.inference.separation import at_mixture_level
from src.inference.speaker_count import OutputCounter, model_threshold, model_thresholds
from src.inference.windows import plan_windows, window_samples
from src.losses import SeparationLoss
from src.metrics import MetricError, score_utterance
from src.models import build_model
from src.runtime.checkpoint import config_for, network_from, read_checkpoint
from src.runtime.device import combine_means, init_context
from src.tasks.base import Task, check_same_rate

log = logging.getLogger("gdprnn")


class SeparationTask(Task):
    name = "separation"
    output_pattern = r"s\d+"

    def build_network(self, cfg):
        return build_model(cfg)

    def build_loss(self, cfg):
        return SeparationLoss(cfg.train.level_weight)

    def train_batches(self, cfg, epoch, num_shards=1, shard_id=0):
        """Numpy batches `(mix (B,T), src (B,C,T), lengths (B,))` of this worker for `epoch`: mixed on
        the fly from `data.train_speech` (`data.steps_per_epoch` batches) when it is set, otherwise
        from the MindRecord split `data.train`."""
        segment = int(round(cfg.segment * cfg.sample_rate))
        if cfg.data.train_speech:
            speech = str(cfg.data.train_speech)
            mixer = SpeechMixer(load_speakers(speech, cfg.sample_rate), cfg.model.C, segment,
                                cfg.data.dm_gain_db, cfg.seed, where=speech, speaker_counts=cfg.data.speaker_counts,
                                speed=cfg.data.speed_perturb)
            return mixer.epoch_batches(epoch, cfg.data.steps_per_epoch, cfg.train.batch_size, num_shards, shard_id)
        dataset = create_train_dataset(
            cfg.data.train, segment_samples=segment,
            batch_size=cfg.train.batch_size // num_shards, seed=cfg.seed, epoch=epoch,
            num_speakers=cfg.model.C, num_shards=num_shards, shard_id=shard_id,
            dynamic_mixing=cfg.data.dynamic_mixing, dm_gain_db=cfg.data.dm_gain_db,
            num_workers=cfg.data.num_workers, sample_rate=cfg.sample_rate)
        return dataset.create_tuple_iterator(output_numpy=True, num_epochs=1)

    def validate(self, net, cfg, info=None):
        """Mean SI-SNRi and SDRi (dB) over full validation utterances; score = SI-SNRi. Utterances that
        cannot be scored (e.g. a silent source) are skipped and named in the log, as evaluate.py does."""
        separator = NetworkSeparator(net)
        limit = cfg.train.valid_max_utterances
        rank, size = (info.rank, info.group_size) if info is not None else (0, 1)
        sums, count = np.zeros(2), 0
        for i, utt in enumerate(iterate_utterances(cfg.data.valid, cfg.sample_rate, cfg.model.C)):
            if limit and i >= limit:
                break
            if i % size != rank:
                continue
            est = separator(utt["mix"][None])[0]
            try:
                scores = score_utterance(est, utt["src"], utt["mix"], cfg.sample_rate)
            except MetricError as err:
                log.warning(f"validation: {utt['key']} skipped ({err})")
                continue
            sums += (scores["si_snri"], scores["sdri"])
            count += 1
        (si_snri, sdri), scored = combine_means(sums, count, info)
        if not scored:
            raise MetricError(f"{cfg.data.valid}: no validation utterance could be scored")
        return {"score": float(si_snri), "si_snri": float(si_snri), "sdri": float(sdri)}

    # ---------------------------------------------------------------- inference
    def load_separators(self, checkpoints, cfg, config_path=None):
        """One model per speaker count -> ({C: separate_fn}, {C: config}), MindSpore context set up
        from the first model's config (device, mode). The separators refuse inputs shorter than the
        model's encoder window (model.L samples) with a SeparationError.

        config_path: a yaml used instead of the config stored in the checkpoint; only with a single
        checkpoint (each checkpoint written by train.py or tools/import_svoice.py carries its own).
        Raises CheckpointError / EvaluationError naming the file and the problem."""
        if config_path and len(checkpoints) > 1:
            raise EvaluationError("-c/--config works with a single checkpoint; with several, each uses the config "
                                  "stored in it")
        separators, configs, paths = {}, {}, {}
        for index, path in enumerate(checkpoints):
            separate_fn, cfg = self._load_separator(path, config_path, init=index == 0)
            num_speakers = int(cfg.model.C)
            if num_speakers in separators:
                raise EvaluationError(f"{path} and {paths[num_speakers]} both separate {num_speakers} speakers; "
                                      "give one checkpoint per speaker count")
            if configs:
                first = next(iter(configs))
                check_same_rate(path, cfg, paths[first], configs[first])
            separators[num_speakers], configs[num_speakers], paths[num_speakers] = separate_fn, cfg, path
        return separators, configs

    def load_counter(self, path, configs, threshold_db=None):
        """The model of `path` as a speaker counter (src/inference/speaker_count.py) for separators
        of `configs` ({C: config}, from load_separators: same sample rate). threshold_db: None = the
        model's own (counting.threshold_db)."""
        separate_fn, cfg = self._load_separator(path)
        check_same_rate(path, cfg, "the separators", next(iter(configs.values())))
        return OutputCounter(separate_fn, int(cfg.model.C), model_threshold(cfg, threshold_db))

    def _load_separator(self, path, config_path=None, init=False):
        """(separate_fn, config) of one checkpoint; init: set up the MindSpore context from its config."""
        params, meta = read_checkpoint(path)
        cfg = config_for(meta, path, config_path)
        if cfg.get("task", self.name) != self.name:
            raise EvaluationError(f"{path}: is a '{cfg.task}' model, not a speech separation model")
        if init:
            init_context(cfg)
        net = network_from(params, cfg, path)
        return MinLengthSeparator(NetworkSeparator(net), self.min_input_samples(cfg)), cfg

    def min_input_samples(self, cfg):
        """SWave's encoder window, model.L samples."""
        return int(cfg.model.L)

    def output_name(self, stem, index):
        return f"{stem}_s{index + 1}.wav"

    def output_level(self, mixture, estimates):
        """Together as loud as the mixture (at_mixture_level)."""
        return at_mixture_level(estimates, mixture)

    def plot_labels(self, count):
        return ["mixture"] + [f"speaker {i + 1}" for i in range(count)]

    # ---------------------------------------------------------------- evaluation
    def evaluate(self, args, cfg, command, load_counter):
        """evaluate.py on separation checkpoints: one model scores every utterance (best permutation);
        several (one per speaker count) run the speaker-counting procedure."""
        if not args.data_dir:
            raise EvaluationError("--data-dir is required for a separation model (the test mixtures and "
                                  "their sources)")
        separators, configs = self.load_separators(args.model_path, cfg, args.config)
        counter = args.count_model and load_counter(args.count_model, configs, args.threshold_db)
        counting = len(separators) > 1 or counter is not None
        thresholds = model_thresholds(configs, args.threshold_db)
        sample_rate = next(iter(configs.values())).sample_rate
        window, overlap = window_samples(args.window_seconds, args.overlap_seconds, sample_rate)
        num_speakers = None if counting else next(iter(configs))
        utterances = chain_utterances([(path, open_utterances(path, sample_rate, num_speakers, args.split,
                                                              args.mix_type, args.resample, args.downmix))
                                       for path in args.data_dir])
        meta = {      # before the run: nothing after it may fail
            "checkpoint": [os.path.abspath(p) for p in args.model_path] if counting
            else os.path.abspath(args.model_path[0]),
            "config": {str(c): cfg.to_dict() for c, cfg in configs.items()} if counting
            else next(iter(configs.values())).to_dict(),
            "data": [os.path.abspath(p) for p in args.data_dir],
            "split": args.split, "mix_type": args.mix_type, "sample_rate": sample_rate,
            "window_seconds": args.window_seconds if window else None,
            "overlap_seconds": args.overlap_seconds if window else None,
            "batch_size": args.batch_size,
            "command": command,
        }
        if counting:
            meta["threshold_db"] = {str(c): t for c, t in thresholds.items()}
            meta["count_model"] = args.count_model and os.path.abspath(args.count_model)
            meta["unmatched_outputs"] = ("a true source without an output is scored with the mixture as its "
                                         "estimate (0 dB improvement); outputs beyond the true count are not scored")
            rows = evaluate_counting(separators, utterances, sample_rate, thresholds, window, overlap,
                                     args.batch_size, counter=counter)
        else:
            (separate_fn,) = separators.values()
            rows = evaluate_utterances(separate_fn, utterances, sample_rate, window, overlap, args.pesq, args.stoi,
                                       batch_size=args.batch_size)
        if not rows:
            raise EvaluationError(f"no utterances in {', '.join(args.data_dir)}")
        if counting:
            return Report(rows, summarize_counting(rows), meta, print_counting_summary, "utterance")
        return Report(rows, summarize(rows), meta, print_summary, "utterance")

    # ---------------------------------------------------------------- export
    def export_graph(self, cfg):
        return SeparationGraph(cfg)

    # ---------------------------------------------------------------- offline inference
    def write_offline_inputs(self, args, cfg):
        """Every model input of the test mixtures of `args.data_dir` as a .bin file + index."""
        if cfg is not None:
            raise OfflineInferenceError(f"{args.config}: is a '{self.name}' config; -c is for enhancement and counting "
                                        "models (for separation give --data-dir TEST_PATH)")
        window, overlap = plan_windows(args.sample_rate, args.fixed_length, args.window_seconds, args.overlap_seconds)
        split = args.split or "test"
        utterances = open_utterances(args.data_dir, args.sample_rate, args.num_speakers, split, args.mix_type,
                                     args.resample, args.downmix)
        data = {"path": os.path.abspath(args.data_dir), "split": split, "mix_type": args.mix_type,
                "resample": args.resample, "downmix": args.downmix}
        write_input_bins(utterances, args.infer_bins, args.sample_rate, args.fixed_length, window, overlap, data,
                         args.max_utterances)

    def check_offline_inputs(self, input_shape, index, model_path, bin_dir):
        """A (batch, time) input with batch 1, and for a fixed-length graph every bin of exactly that length."""
        if len(input_shape) != 2 or input_shape[0] not in (1, -1):
            raise OfflineInferenceError(f"{model_path}: takes inputs of shape {input_shape}, not (1, time); "
                                        "export the separation network with export.py")
        length = input_shape[1]
        if length == -1:
            return
        wrong = [(n, b["samples"]) for n, b in index["bins"].items() if b["samples"] != length]
        if wrong:
            name, samples = wrong[0]
            written_for = (f"a fixed-length graph of {index['fixed_length']} samples" if index["fixed_length"]
                           else "a dynamic-length graph")
            raise OfflineInferenceError(
                f"{model_path}: a fixed-length graph of {length} samples, but {len(wrong)} of the "
                f"{len(index['bins'])} inputs in {bin_dir} have another length (e.g. {name}: {samples} samples; "
                f"they were written for {written_for}). Preprocess again with --fixed-length {length} "
                "(run_infer_310.sh does so with NEED_PREPROCESS=y)")

    def check_offline_output(self, output, inputs, index, model_path, name):
        """`(1, C, samples)` for an input `(1, samples)`."""
        samples = inputs[0].shape[1]
        if output.ndim != 3 or output.shape[0] != 1 or output.shape[2] != samples:
            raise OfflineInferenceError(f"{model_path}: returned shape {output.shape} for input {inputs[0].shape} "
                                        f"({name}); a separation graph returns (1, C, {samples})")

    def offline_num_outputs(self, output):
        return int(output.shape[1])

    def score_offline(self, index, run, args, command):
        """evaluate.py's separation and scoring with the stored results in place of the model."""
        rows = evaluate_utterances(ReplaySeparator(index, args.result_dir), indexed_utterances(index, args.data_dir),
                                   index["sample_rate"], index["window"], index["overlap"], args.pesq, args.stoi)
        sample_rate = index["sample_rate"]
        meta = {
            **run_meta(run),
            "data": args.data_dir and os.path.abspath(args.data_dir) or index["data"].get("path"),
            "split": index["data"].get("split"), "mix_type": index["data"].get("mix_type"),
            "sample_rate": sample_rate, "fixed_length": index["fixed_length"] or None,
            "window_seconds": index["window"] / sample_rate if index["window"] else None,
            "overlap_seconds": index["overlap"] / sample_rate if index["overlap"] else None,
            "bins": os.path.abspath(args.bin_dir), "results": os.path.abspath(args.result_dir),
            "command": command,
        }
        return Report(rows, summarize(rows), meta, print_summary, "utterance")

