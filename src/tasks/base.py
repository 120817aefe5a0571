"""The task interface: everything a stage needs to know about a task (separation, enhancement, ...).

Entry scripts resolve the task once (`src.tasks.task_of(cfg)` for a config, `get_task(name)` for
an offline index) and call it; nothing outside src/tasks/ compares task names. A new task is
one module here (a Task subclass, registered in src/tasks/__init__.py) plus its model
(src/models/) and data (src/data/) code and its keys in src/config_schema.py.
"""
from abc import ABC, abstractmethod

from src.errors import UserError
from src.evaluation.report import EvaluationError
from src.inference.offline import OfflineInferenceError


def check_same_rate(path, cfg, other_path, other_cfg):
    """Refuse the model of `path` (config `cfg`) beside `other_path`'s at another sample rate."""
    if cfg.sample_rate != other_cfg.sample_rate:
        raise EvaluationError(f"{path}: works at {cfg.sample_rate} Hz but {other_path} at {other_cfg.sample_rate} Hz; "
                              "speaker counting needs models at one sample rate")


def check_offline_request(args, cfg, graphs):
    """Refuse preprocess.py options that do not fit a model of `cfg` whose `graphs` take whole
    inputs over frames (the STFT on the host): a fixed length, another sample rate."""
    if args.fixed_length:
        raise OfflineInferenceError(f"--fixed-length {args.fixed_length}: {graphs} take any number of frames "
                                    "(export.py exports them with a dynamic frame axis); leave it at 0")
    if args.sample_rate and args.sample_rate != cfg.sample_rate:
        raise OfflineInferenceError(f"--sample-rate {args.sample_rate}: {args.config} works at {cfg.sample_rate} Hz")


class Task(ABC):
    """One task's wiring of every stage. `name` is its config value (`task: <name>`)."""

    name = None
    network_takes_lengths = False   # train step calls net(net_input, lengths)

    # ---- training (src/training/trainer.py)
    @abstractmethod
    def build_network(self, cfg):
        """The network of `cfg` (an nn.Cell)."""

    @abstractmethod
    def build_loss(self, cfg):
        """Loss Cell: `loss(net_output, *targets) -> scalar`."""

    @abstractmethod
    def train_batches(self, cfg, epoch, num_shards=1, shard_id=0):
        """Numpy tuples `(net_input, *targets, lengths)` of this worker, deterministic for
        `(seed, epoch, shard)`."""

    @abstractmethod
    def validate(self, net, cfg, info=None):
        """Validation scores -> dict with `score` (higher is better); `info`: RunInfo of this worker."""

    # ---- inference (separate.py, evaluate.py)
    @abstractmethod
    def load_separators(self, checkpoints, cfg, config_path=None):
        """Models for inference, MindSpore context set up -> ({outputs C: separate_fn
        `(batch, time) -> (batch, C, time)`}, {C: config}). `cfg`: the first checkpoint's config."""

    def load_counter(self, path, configs, threshold_db=None):
        """The model of `path` as a speaker counter (src.inference.speaker_count.Counter) for the
        separators of `configs`; only tasks that separate speakers have one."""
        raise UserError(f"{path}: --count-model counts speakers, which {self.name} models do not separate")

    @abstractmethod
    def min_input_samples(self, cfg):
        """Shortest input (samples) a model of `cfg` takes."""

    @abstractmethod
    def output_name(self, stem, index):
        """File name of output `index` (0-based) of input `stem` (separate.py)."""

    def output_level(self, mixture, estimates):
        """The outputs `(C, time)` of `mixture (time,)` at the level separate.py writes them."""
        return estimates

    output_pattern = None   # regex of the part after `<stem>_` of output_name (without .wav)

    @abstractmethod
    def plot_labels(self, count):
        """Panel titles of separate.py --plot: the input's, then one per output."""

    # ---- evaluation (evaluate.py)
    @abstractmethod
    def evaluate(self, args, cfg, command, load_counter):
        """Score the checkpoints of evaluate.py's `args` (first config `cfg`) -> src.evaluation.report.Report.
        load_counter: `src.tasks.load_counter`, for `--count-model` (a counter of any task)."""

    # ---- export (export.py)
    @abstractmethod
    def export_graph(self, cfg):
        """The exported graph's contract (src/export.py: SeparationGraph, MaskGraph, CountGraph)."""

    # ---- offline inference (preprocess.py --infer-bins, infer.py, postprocess.py)
    @abstractmethod
    def write_offline_inputs(self, args, cfg):
        """Write preprocess.py's `--infer-bins` folder for `args` (`cfg`: the -c config, or None)."""

    @abstractmethod
    def check_offline_inputs(self, input_shape, index, model_path, bin_dir):
        """Refuse bins the graph (first input of shape `input_shape`) cannot take, before running."""

    @abstractmethod
    def check_offline_output(self, output, inputs, index, model_path, name):
        """Refuse a graph output of the wrong shape for the entry `name`."""

    def offline_num_outputs(self, output):
        """Outputs per input recorded in run.json (None: not a count of sources)."""
        return None

    @abstractmethod
    def score_offline(self, index, run, args, command):
        """Score infer.py's results as evaluate.py scores a checkpoint -> Report (postprocess.py)."""
