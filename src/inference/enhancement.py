"""Running a mask network as a numpy enhancer: STFT, features and inverse STFT on the host.

`Enhancer(masker, stft_config)(noisy (time,)) -> enhanced (time,)`; the masker is a mask network
(nn.Cell or loaded MindIR GraphCell, wrapped in NetworkMasker) or any numpy callable with
NetworkMasker's contract (offline inference replays stored masks through it).
"""
import mindspore as ms
import numpy as np

from src.features import features, istft, stft


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

