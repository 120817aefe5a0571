"""Speech enhancement (R-Transformer mask on STFT magnitudes): wiring for the shared trainer.

Config keys used (see configs/rt.yaml): `sample_rate`, `segment` (training crop, seconds),
`seed`, `stft.{n_fft,hop,win}`, `model.*`, `data.{train,valid,test}_{clean,noise,snrs}`,
`data.target` (irm | mag_ratio), `data.resample`, `data.downmix`, `train.batch_size` (global),
`train.loss` (mask_mse | magnitude_mse), `train.valid_max_utterances` (0 = all),
`train.valid_pesq_stoi`.
"""
import mindspore as ms
import numpy as np

from src.config import ConfigError
from src.data.enhancement import NoisyMixer, list_audio_files, train_batches
from src.data.layout import DataError
from src.features import StftConfig, features, istft, stft
from src.losses.mask_loss import build_mask_loss
from src.metrics import MetricError, pesq_score, si_snr, stoi_score
from src.tasks.separation import combine_means

SPLITS = ("train", "valid", "test")


class Enhancer:
    """`enhancer(noisy (time,)) -> enhanced (time,)`, numpy in and out: the network's mask times
    the noisy spectrum (noisy magnitude, noisy phase), then the inverse STFT; any length.

    The network is put in inference mode and declared with dynamic (batch, frames) inputs, so
    GRAPH_MODE compiles it once for all lengths.
    """

    def __init__(self, net, stft_config):
        self.net, self.stft_config = net, stft_config
        net.set_train(False)
        if isinstance(net, ms.nn.Cell) and not isinstance(net, ms.nn.GraphCell):
            net.set_inputs(ms.Tensor(shape=[None, None, stft_config.bins], dtype=ms.float32),
                           ms.Tensor(shape=[None], dtype=ms.int32))

    def mask(self, noisy_spectrum):
        """`(frames, bins)` complex noisy spectrum -> `(frames, bins)` float32 mask."""
        net_input = features(np.abs(noisy_spectrum))[None]
        lengths = np.array([noisy_spectrum.shape[0]], dtype=np.int32)
        return self.net(ms.Tensor(net_input), ms.Tensor(lengths)).asnumpy()[0]

    def __call__(self, noisy):
        noisy = np.asarray(noisy, dtype=np.float32)
        if noisy.ndim != 1 or noisy.size == 0:
            raise ValueError(f"enhancement expects a non-empty (time,) signal, got shape {noisy.shape}")
        if not np.all(np.isfinite(noisy)):
            raise ValueError("the noisy signal contains NaN or Inf samples")
        spectrum = stft(noisy, self.stft_config)
        return istft(self.mask(spectrum) * spectrum, self.stft_config, len(noisy))


class EnhancementTask:
    name = "enhancement"
    network_takes_lengths = True   # attention masks the padding frames of a batch

    def __init__(self):
        self._mixers = {}

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
        `si_snr@<snr>dB` and `si_snri@<snr>dB`, and with `train.valid_pesq_stoi` also
        `stoi@<snr>dB` and `pesq@<snr>dB` (PESQ wide band at 16 kHz, narrow band at 8 kHz).
        Utterances are split over data-parallel workers (`info`)."""
        enhancer = Enhancer(net, self.stft_config(cfg))
        mixer = self.mixer(cfg, split)
        snrs = mixer.snrs_db
        limit = int(cfg.train.get("valid_max_utterances", 0) or 0)
        names = ["si_snr", "si_snri"] + (["stoi", "pesq"] if cfg.train.get("valid_pesq_stoi", False) else [])
        rank, size = (info.rank, info.group_size) if info is not None else (0, 1)
        sums = np.zeros((len(snrs), len(names)))
        count = 0
        for i, pair in enumerate(mixer.fixed_pairs(limit)):
            utterance, snr_index = divmod(i, len(snrs))
            if utterance % size != rank:
                continue
            noisy = pair.noisy
            enhanced = enhancer(noisy)
            est_si_snr = si_snr(enhanced, pair.clean)
            scores = [est_si_snr, est_si_snr - si_snr(noisy, pair.clean)]
            if len(names) > 2:
                try:
                    scores += [stoi_score(enhanced, pair.clean, cfg.sample_rate),
                               pesq_score(enhanced, pair.clean, cfg.sample_rate)]
                except MetricError as err:
                    raise DataError(f"{pair.clean_path}: cannot be used for validation: {err}") from None
            sums[snr_index] += scores
            count += snr_index == 0
        if not count and size == 1:
            raise DataError(f"data.{split}_clean gave no validation pairs")
        means = combine_means(sums.ravel(), count, info).reshape(len(snrs), len(names))
        metrics = {"score": float(means[:, 1].mean())}
        for snr, row in zip(snrs, means):
            for name, value in zip(names, row):
                metrics[f"{name}@{snr:g}dB"] = float(value)
        return metrics
