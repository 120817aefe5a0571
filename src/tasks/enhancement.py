"""Speech enhancement (R-Transformer mask on STFT magnitudes): wiring for the shared trainer,
evaluation (score_pair, shared by validation, evaluate.py and postprocess.py) and export (MaskGraph).

Config keys used (see configs/rt.yaml): `sample_rate`, `segment` (training crop, seconds),
`seed`, `stft.{n_fft,hop,win}`, `model.*`, `data.{train,valid,test}_{clean,noise,snrs}`,
`data.target` (irm | mag_ratio), `data.resample`, `data.downmix`, `train.batch_size` (global),
`train.loss` (mask_mse | magnitude_mse), `train.valid_max_utterances` (0 = all),
`train.valid_pesq_stoi`.
"""
import mindspore as ms
import numpy as np

from src.config import ConfigError
from src.data.enhancement import NoisyMixer, train_batches
from src.data.layout import DataError, list_audio_files
from src.features import StftConfig, features, istft, stft
from src.losses.mask_loss import build_mask_loss
from src.metrics import MetricError, pesq_score, si_snr, stoi_score
from src.tasks.separation import combine_means

SPLITS = ("train", "valid", "test")


class NetworkMasker:
    """`masker(features (batch, frames, bins) float32, frame_lengths (batch,) int32) -> mask
    (batch, frames, bins)`, numpy in and out, running a mask network or a loaded MindIR GraphCell.

    The network is put in inference mode and declared with dynamic (batch, frames) inputs, so
    GRAPH_MODE compiles it once for all lengths.
    """

    def __init__(self, net, bins):
        self.net = net
        net.set_train(False)
        if isinstance(net, ms.nn.Cell) and not isinstance(net, ms.nn.GraphCell):
            net.set_inputs(ms.Tensor(shape=[None, None, bins], dtype=ms.float32),
                           ms.Tensor(shape=[None], dtype=ms.int32))

    def __call__(self, features, frame_lengths):
        return self.net(ms.Tensor(np.ascontiguousarray(features, dtype=np.float32)),
                        ms.Tensor(np.ascontiguousarray(frame_lengths, dtype=np.int32))).asnumpy()


class Enhancer:
    """`enhancer(noisy (time,)) -> enhanced (time,)`, numpy in and out: the mask times the noisy
    spectrum (noisy magnitude, noisy phase), then the inverse STFT; any length.

    `masker`: a mask network (nn.Cell, wrapped in NetworkMasker) or any numpy callable with
    NetworkMasker's contract (offline inference replays stored masks through it).
    """

    def __init__(self, masker, stft_config):
        if isinstance(masker, ms.nn.Cell):
            masker = NetworkMasker(masker, stft_config.bins)
        self.masker, self.stft_config = masker, stft_config

    def mask(self, noisy_spectrum):
        """`(frames, bins)` complex noisy spectrum -> `(frames, bins)` float32 mask; the masker gets
        features `(1, frames, bins)` and frame_lengths `(1,)` = [frames]."""
        net_input = features(np.abs(noisy_spectrum))[None]
        lengths = np.array([noisy_spectrum.shape[0]], dtype=np.int32)
        return np.asarray(self.masker(net_input, lengths))[0]

    def __call__(self, noisy):
        noisy = np.asarray(noisy, dtype=np.float32)
        if noisy.ndim != 1 or noisy.size == 0:
            raise ValueError(f"enhancement expects a non-empty (time,) signal, got shape {noisy.shape}")
        if not np.all(np.isfinite(noisy)):
            raise ValueError("the noisy signal contains NaN or Inf samples")
        spectrum = stft(noisy, self.stft_config)
        return istft(self.mask(spectrum) * spectrum, self.stft_config, len(noisy))


# scores of an enhanced signal and of the noisy input against the clean speech (see score_pair)
BASIC_SCORES = ("si_snr", "si_snri")
PESQ_STOI_SCORES = ("stoi", "stoii", "pesq", "pesqi")


def noisy_scores(pair, sample_rate, with_pesq_stoi):
    """Scores of the unprocessed noisy signal of `pair`: {si_snr[, stoi, pesq]} (MetricError when
    PESQ/STOI cannot score it)."""
    scores = {"si_snr": float(si_snr(pair.noisy, pair.clean))}
    if with_pesq_stoi:
        scores["stoi"] = stoi_score(pair.noisy, pair.clean, sample_rate)
        scores["pesq"] = pesq_score(pair.noisy, pair.clean, sample_rate)
    return scores


def score_pair(enhanced, pair, sample_rate, with_pesq_stoi, noisy=None):
    """Scores of `enhanced (time,)` against `pair.clean`, each also as improvement over the noisy
    input: si_snr, si_snri [, stoi, stoii, pesq, pesqi] (PESQ wide band at 16 kHz, narrow band at
    8 kHz). `noisy`: the pair's noisy_scores when already known (they do not change between calls).
    Raises MetricError when PESQ/STOI cannot score the pair."""
    noisy = noisy or noisy_scores(pair, sample_rate, with_pesq_stoi)
    value = float(si_snr(enhanced, pair.clean))
    scores = {"si_snr": value, "si_snri": value - noisy["si_snr"]}
    if with_pesq_stoi:
        for name, metric in (("stoi", stoi_score), ("pesq", pesq_score)):
            value = metric(enhanced, pair.clean, sample_rate)
            scores[name], scores[f"{name}i"] = value, value - noisy[name]
    return scores


class EnhancementTask:
    name = "enhancement"
    network_takes_lengths = True   # attention masks the padding frames of a batch

    def __init__(self):
        self._mixers = {}
        self._noisy_scores = {}   # scores of the fixed pairs' noisy inputs, per (mixer, pair, pesq/stoi)

    @staticmethod
    def stft_config(cfg):
        return StftConfig.from_cfg(cfg)

    def build_network(self, cfg):
        """The mask network `cfg.model.name` (registry in src/models); its input and output
        sizes must equal the STFT's bin count."""
        from src.models import build_model

        bins = self.stft_config(cfg).bins
        for key in ("input_size", "output_size"):
            if int(cfg.model[key]) != bins:
                raise ConfigError(f"model.{key}={cfg.model[key]} but stft.n_fft={cfg.stft.n_fft} gives "
                                  f"{bins} frequency bins; set model.{key}={bins}")
        return build_model(cfg)

    def build_loss(self, cfg):
        return build_mask_loss(cfg.train.get("loss", "mask_mse"))

    def mixer(self, cfg, split):
        """NoisyMixer of `split` ('train', 'valid' or 'test'), cached per data settings."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got '{split}'")
        data = cfg.data
        segment = int(round(float(cfg.segment) * cfg.sample_rate)) if split == "train" else None
        key = (split, str(data[f"{split}_clean"]), str(data[f"{split}_noise"]), tuple(data[f"{split}_snrs"]),
               cfg.sample_rate, int(cfg.seed), segment, bool(data.get("resample", False)),
               bool(data.get("downmix", False)))
        if key not in self._mixers:
            self._mixers[key] = NoisyMixer(
                list_audio_files(data[f"{split}_clean"], f"{split} clean speech"),
                list_audio_files(data[f"{split}_noise"], f"{split} noise"),
                cfg.sample_rate, data[f"{split}_snrs"], cfg.seed, segment_samples=segment,
                resample=bool(data.get("resample", False)), downmix=bool(data.get("downmix", False)))
        return self._mixers[key]

    def train_batches(self, cfg, epoch, num_shards=1, shard_id=0):
        """Numpy batches `(features (B, frames, F), *targets, frame_lengths (B,))` of this worker;
        targets: `irm-or-mag_ratio mask` for train.loss=mask_mse, `|S|, |Y|` for magnitude_mse."""
        batch_size = int(cfg.train.batch_size)
        if batch_size % num_shards:
            raise ConfigError(f"train.batch_size={batch_size} is not divisible by the {num_shards} workers")
        return train_batches(self.mixer(cfg, "train"), self.stft_config(cfg), epoch, batch_size // num_shards,
                             num_shards, shard_id, loss_kind=cfg.train.get("loss", "mask_mse"),
                             target=cfg.data.get("target", "irm"))

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
        limit = int(cfg.train.get("valid_max_utterances", 0) or 0)
        with_pesq_stoi = bool(cfg.train.get("valid_pesq_stoi", False))
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

    @staticmethod
    def export_graph(cfg):
        """The exported mask network's contract (src/export.py): MaskGraph."""
        return MaskGraph(cfg)


class MaskGraph:
    """Export contract of the mask network (STFT stays on the host): inputs features
    `(1, frames, bins)` float32 and frame_lengths `(1,)` int32, output mask `(1, frames, bins)`;
    the frames axis is dynamic (a fixed frame count is not offered: the offline pipeline feeds
    whole utterances)."""

    unit = "frames"
    min_length = 1

    def __init__(self, cfg):
        self.cfg, self.stft_config = cfg, StftConfig.from_cfg(cfg)

    def check_export(self, file_format, length):
        """Refuse a fixed frame count, and ONNX (MindSpore exports ONNX with static shapes only)."""
        from src.export import ExportError
        if length:
            raise ExportError(f"--length {length}: an enhancement mask network is exported with a dynamic "
                              "frame axis only (any number of frames); leave --length at 0")
        if file_format == "ONNX":
            raise ExportError("an enhancement mask network is exported with a dynamic frame axis, which "
                              "MindSpore's ONNX export cannot do; export MINDIR")

    def describe(self, length=0):
        bins = self.stft_config.bins
        return (f"inputs features (1, frames, {bins}) float32 + frame_lengths (1,) int32 -> mask "
                f"(1, frames, {bins}) float32, any number of frames (STFT n_fft {self.stft_config.n_fft}, "
                f"hop {self.stft_config.hop} on the host)")

    def example_inputs(self, length=0):
        return (ms.Tensor(shape=[1, None, self.stft_config.bins], dtype=ms.float32),
                ms.Tensor(shape=[1], dtype=ms.int32))

    def check_lengths(self, length=0):
        """Frame counts to compare the export on: those of 1 s, of the training segment, and an
        odd count between them."""
        one_second = self.stft_config.num_frames(int(self.cfg.sample_rate))
        segment = self.stft_config.num_frames(int(round(float(self.cfg.segment) * self.cfg.sample_rate)))
        return sorted({one_second, segment, (one_second + segment) // 2 + 1})

    def random_inputs(self, frames, rng):
        """Features like log(1 + |X|) of speech-level spectra, and frame_lengths = [frames]."""
        magnitude = np.abs(rng.standard_normal((1, frames, self.stft_config.bins))) * 3.0
        return features(magnitude), np.array([frames], dtype=np.int32)

    def runner(self, net):
        """numpy callable `(features, frame_lengths) -> mask` of a network or GraphCell."""
        return NetworkMasker(net, self.stft_config.bins)
