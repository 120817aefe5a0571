"""Export a trained network for deployment and check the file against the network.

What the graph takes and returns depends on the task (its `export_graph(cfg)`, src/tasks/):
- separation (SeparationGraph): the network in inference mode, `mixture (1, time)` float32 ->
  `estimate (1, C, time)` (the last layer's estimate only); details below.
- enhancement (MaskGraph): the mask network, `features (1, frames, bins)`
  float32 + `frame_lengths (1,)` int32 -> `mask (1, frames, bins)`, dynamic frames axis; the
  STFT, features and inverse STFT stay on the host.
- counting (CountGraph): the counting network, `features (1, frames, n_mels)` float32 ->
  `logits (1, counts)`, dynamic frames axis; the log-mel features stay on the host.

Separation graphs:
- length 0: a dynamic time axis (`Tensor(shape=[1, None])`), any length >= model.L samples
  (SWave keeps every pad constant and puts the length-dependent arithmetic in slices and
  reshapes, see src/models/swave.py). The batch axis stays 1: SWave's constant zero blocks
  fix it.
- length N: exactly N samples, for devices that need static shapes (Ascend 310 through
  MindSpore Lite). Longer recordings are then cut into windows of N (src/inference/offline.py).

Formats: MINDIR (default; loaded back with `nn.GraphCell(mindspore.load(...))` and compared with
the network), ONNX (static length only, as MindSpore exports it; compared with the network in
onnxruntime, which must be installed), AIR (Ascend only: MindSpore builds AIR with the Ascend
backend and cannot load it back, so AIR is not compared).
"""
import os

import mindspore as ms
import numpy as np

from src.errors import UserError
from src.features import StftConfig, features
from src.inference.enhancement import NetworkMasker
from src.inference.network import NetworkClassifier, NetworkSeparator

FORMATS = ("MINDIR", "ONNX", "AIR")
SUFFIXES = {"MINDIR": ".mindir", "ONNX": ".onnx", "AIR": ".air"}
# largest |exported - network| accepted, relative to max(1, peak |network output|): float32
# rounding of a different kernel order is ~1e-6 of the peak; real export bugs are far above.
RELATIVE_TOLERANCE = 1e-4


class ExportError(UserError):
    """An export that cannot be done or whose file does not compute what the network computes."""


def output_path(file_name, file_format):
    """The file MindSpore writes for `file_name`: the format's suffix is added unless present."""
    suffix = SUFFIXES[file_format]
    return file_name if file_name.endswith(suffix) else file_name + suffix


def check_request(file_format, length, min_length, device_target):
    """Refuse exports that cannot work before anything slow runs (format, length, device)."""
    if file_format not in FORMATS:
        raise ExportError(f"--file-format {file_format}: not one of {', '.join(FORMATS)}")
    if length < 0:
        raise ExportError(f"--length {length}: must be 0 (any length) or a number of samples")
    if 0 < length < min_length:
        raise ExportError(f"--length {length}: the model needs at least {min_length} samples (model.L)")
    if file_format == "AIR" and device_target != "Ascend":
        raise ExportError(f"AIR export needs an Ascend device (MindSpore builds AIR files with the Ascend "
                          f"backend); this MindSpore runs on {device_target}. Export MINDIR instead: MindSpore "
                          "Lite runs MindIR files on Ascend 310/310P")
    if file_format == "ONNX":
        if length == 0:
            raise ExportError("ONNX export needs a fixed length (--length N): MindSpore exports ONNX with "
                              "static shapes only")
        try:
            import onnxruntime  # noqa: F401  (the exported file is checked with it)
        except ImportError:
            raise ExportError("ONNX export is checked with onnxruntime, which is not installed "
                              "(pip install onnxruntime), or export MINDIR") from None


class SeparationGraph:
    """Export contract of a separation network: `mixture (1, time)` float32 -> `(1, C, time)`."""

    unit = "samples"

    def __init__(self, cfg=None):
        self.cfg = cfg

    @property
    def min_length(self):
        return int(self.cfg.model.L)

    def check_export(self, file_format, length):
        """Every format and length is possible here (check_request refuses what cannot work)."""

    def describe(self, length=0):
        shape = f"(1, {length})" if length else "(1, any length)"
        return f"input {shape} float32 -> (1, {self.cfg.model.C}, time)"

    def example_inputs(self, length=0):
        if length:
            return (ms.Tensor(np.zeros((1, length), np.float32)),)
        return (ms.Tensor(shape=[1, None], dtype=ms.float32),)

    def check_lengths(self, length=0):
        return check_lengths(length, self.cfg.sample_rate, self.cfg.segment)

    def random_inputs(self, length, rng):
        return ((0.1 * rng.standard_normal((1, length))).astype(np.float32),)

    def runner(self, net):
        return NetworkSeparator(net)


class _FramesGraph:
    """What graphs over STFT frames share (the STFT stays on the host): a dynamic frames axis only
    (the offline pipeline feeds whole inputs), compared at the frame counts of 1 s, of the training
    segment and an odd count between them. Subclasses set `cfg`, `stft_config` and `what`."""

    unit = "frames"
    min_length = 1
    what = None   # the network, in messages

    def check_export(self, file_format, length):
        """Refuse a fixed frame count, and ONNX (MindSpore exports ONNX with static shapes only)."""
        if length:
            raise ExportError(f"--length {length}: {self.what} is exported with a dynamic frame axis only (any "
                              "number of frames); leave --length at 0")
        if file_format == "ONNX":
            raise ExportError(f"{self.what} is exported with a dynamic frame axis, which MindSpore's ONNX export "
                              "cannot do; export MINDIR")

    def check_lengths(self, length=0):
        one_second = self.stft_config.num_frames(int(self.cfg.sample_rate))
        segment = self.stft_config.num_frames(int(round(float(self.cfg.segment) * self.cfg.sample_rate)))
        return sorted({one_second, segment, (one_second + segment) // 2 + 1})


class MaskGraph(_FramesGraph):
    """Export contract of the mask network (STFT stays on the host): inputs features
    `(1, frames, bins)` float32 and frame_lengths `(1,)` int32, output mask `(1, frames, bins)`."""

    what = "an enhancement mask network"

    def __init__(self, cfg):
        self.cfg, self.stft_config = cfg, StftConfig.from_cfg(cfg)

    def describe(self, length=0):
        bins = self.stft_config.bins
        return (f"inputs features (1, frames, {bins}) float32 + frame_lengths (1,) int32 -> mask "
                f"(1, frames, {bins}) float32, any number of frames (STFT n_fft {self.stft_config.n_fft}, "
                f"hop {self.stft_config.hop} on the host)")

    def example_inputs(self, length=0):
        return (ms.Tensor(shape=[1, None, self.stft_config.bins], dtype=ms.float32),
                ms.Tensor(shape=[1], dtype=ms.int32))

    def random_inputs(self, frames, rng):
        """Features like log(1 + |X|) of speech-level spectra, and frame_lengths = [frames]."""
        magnitude = np.abs(rng.standard_normal((1, frames, self.stft_config.bins))) * 3.0
        return features(magnitude), np.array([frames], dtype=np.int32)

    def runner(self, net):
        """numpy callable `(features, frame_lengths) -> mask` of a network or GraphCell."""
        return NetworkMasker(net, self.stft_config.bins)


class CountGraph(_FramesGraph):
    """Export contract of a speaker-counting network (log-mel features on the host): input
    features `(1, frames, n_mels)` float32, output logits `(1, len(model.speaker_counts))`."""

    what = "a speaker-counting network"

    def __init__(self, cfg):
        self.cfg, self.stft_config = cfg, StftConfig.of_counting_model(cfg)

    def describe(self, length=0):
        return (f"input features (1, frames, {self.cfg.model.n_mels}) float32 -> logits (1, "
                f"{len(self.cfg.model.speaker_counts)}) float32 for counts {list(self.cfg.model.speaker_counts)}, "
                f"any number of frames (log-mel: n_fft {self.stft_config.n_fft}, hop {self.stft_config.hop} "
                "on the host)")

    def example_inputs(self, length=0):
        return (ms.Tensor(shape=[1, None, self.cfg.model.n_mels], dtype=ms.float32),)

    def random_inputs(self, frames, rng):
        """Features like log mel energies minus their mean over frames."""
        return ((3.0 * rng.standard_normal((1, frames, self.cfg.model.n_mels))).astype(np.float32),)

    def runner(self, net):
        return NetworkClassifier(net)


def export_network(net, file_name, file_format="MINDIR", length=0, graph=None):
    """Write `net` (in inference mode) as `file_format`; length 0 = dynamic time (or frames) axis.
    graph: the task's export contract (default SeparationGraph). Returns the path written (the
    format's suffix added to `file_name` when missing)."""
    graph = graph or SeparationGraph()
    net.set_train(False)
    if hasattr(net, "for_export"):   # e.g. SWave: standard ops instead of this machine's fused LSTM kernels
        net.for_export()
    path = output_path(file_name, file_format)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    ms.export(net, *graph.example_inputs(length), file_name=path[:-len(SUFFIXES[file_format])],
              file_format=file_format)
    if not os.path.isfile(path):
        raise ExportError(f"{path}: MindSpore reported no error but wrote no file")
    return path


def check_lengths(length, sample_rate, segment):
    """Input lengths to compare on: the fixed length, or for a dynamic graph 1 s, the training
    segment and an odd length between them (every length class SWave's chunking treats differently)."""
    if length:
        return [length]
    one_second, segment_samples = int(sample_rate), int(round(segment * sample_rate))
    return sorted({one_second, segment_samples, (one_second + segment_samples) // 2 + 1})


def _exported_runner(path, file_format, graph):
    """numpy callable `(*inputs) -> output` running the exported file."""
    if file_format == "ONNX":
        import onnxruntime as ort
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        names = [inp.name for inp in session.get_inputs()]
        return lambda *inputs: session.run(None, dict(zip(names, inputs)))[0]
    return graph.runner(ms.nn.GraphCell(ms.load(path)))


def compare_with_network(net, path, file_format, lengths, seed=0, graph=None):
    """Run the exported file and `net` on the same random inputs of each length (samples, or
    frames for an enhancement graph; graph: the task's export contract, default SeparationGraph).

    Returns [(length, max |difference|, peak |network output|)]; raises ExportError naming the
    file when a difference exceeds RELATIVE_TOLERANCE * max(1, peak).
    """
    graph = graph or SeparationGraph()
    exported = _exported_runner(path, file_format, graph)
    reference = graph.runner(net)
    rng = np.random.default_rng(seed)
    results = []
    for length in lengths:
        inputs = graph.random_inputs(length, rng)
        want = reference(*inputs)
        got = np.asarray(exported(*inputs))
        shapes = " + ".join(str(x.shape) for x in inputs)
        if got.shape != want.shape:
            raise ExportError(f"{path}: returns shape {got.shape} for input {shapes}, the network {want.shape}")
        diff = float(np.max(np.abs(got.astype(np.float64) - want)))
        peak = float(np.max(np.abs(want)))
        results.append((length, diff, peak))
        if not diff <= RELATIVE_TOLERANCE * max(1.0, peak):  # also catches NaN
            raise ExportError(f"{path}: differs from the network by up to {diff:.3g} at {length} {graph.unit} "
                              f"(output peak {peak:.3g}, tolerance {RELATIVE_TOLERANCE:g} of max(1, peak)); "
                              "the export is not usable")
    return results
