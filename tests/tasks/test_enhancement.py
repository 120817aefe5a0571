"""Speech enhancement recipe: STFT/ISTFT, IRM targets, the R-Transformer mask network (shapes,
LocalRNN windows, padding), the masked losses, on-the-fly noisy mixing (looping, SNR, determinism,
sharding, bad input) and a short GRAPH_MODE training run that must improve validation SI-SNR on
the bundled demo data (assets/mini_enhancement), run by the trainer itself."""
import os

import mindspore as ms
import numpy as np
import pytest
import soundfile as sf
from mindspore import nn

from src.config import ConfigError, load_config
from src.data.enhancement import NoisyMixer, Pair, collate, example_arrays, loop_noise, scale_to_snr
from src.data.layout import DataError, list_audio_files
from src.features import (StftConfig, ideal_ratio_mask, istft, magnitude_ratio_mask, mask_target,
                          stft)
from src.losses.mask_loss import MagnitudeMSELoss, MaskMSELoss
from src.models.rtransformer import LocalRNN, RTransformer, build_rtransformer
from src.tasks.enhancement import EnhancementTask

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(ROOT, "configs", "rt_demo.yaml")
SR = 16000


@pytest.fixture(autouse=True)
def pynative():
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield


def demo_config(*overrides):
    """rt_demo.yaml with the asset paths made absolute (tests may run from any folder)."""
    cfg = load_config(DEMO, list(overrides))
    for key, value in cfg.data.items():
        if isinstance(value, str) and value.startswith("assets/"):
            cfg.data[key] = os.path.join(ROOT, value)
    return cfg


def tiny_net(causal=True, rnn_type="LSTM", layer_norm=True, ksize=3, n=1):
    ms.set_seed(7)
    return RTransformer(input_size=9, d_model=16, output_size=9, h=2, rnn_type=rnn_type, ksize=ksize, n=n,
                        n_level=2, dropout=0.0, emb_dropout=0.0, layer_norm=layer_norm, causal=causal)


def run(net, x, lengths=None):
    net.set_train(False)
    args = (ms.Tensor(x.astype(np.float32)),) + (() if lengths is None else (ms.Tensor(np.int32(lengths)),))
    return net(*args).asnumpy()


def write_wav(path, signal, rate=SR, channels=1):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data = np.asarray(signal, np.float32)
    sf.write(path, np.stack([data] * channels, axis=1) if channels > 1 else data, rate, subtype="FLOAT")
    return path


# ---------------------------------------------------------------- STFT / ISTFT / targets
@pytest.mark.parametrize("n_fft,hop,win", [(320, 160, 320), (512, 256, 512), (512, 128, 400)])
def test_istft_inverts_stft_for_odd_lengths(n_fft, hop, win):
    config = StftConfig(n_fft, hop, win)
    rng = np.random.default_rng(0)
    for length in (1, 159, 161, 3333, 16001):
        x = rng.standard_normal(length).astype(np.float32)
        spec = stft(x, config)
        assert spec.shape == (-(-length // hop) + 1, n_fft // 2 + 1)
        np.testing.assert_allclose(istft(spec, config, length), x, atol=1e-5)


def test_stft_matches_librosa_framing():
    import librosa

    config = StftConfig(512, 128, 400)
    x = np.random.default_rng(1).standard_normal(128 * 40).astype(np.float32)
    ref = librosa.stft(x, n_fft=512, hop_length=128, win_length=400, window="hann", center=True,
                       pad_mode="constant").T
    np.testing.assert_allclose(stft(x, config), ref, atol=1e-4)


def test_stft_config_refuses_settings_without_inverse():
    with pytest.raises(ValueError, match="hop"):
        StftConfig(320, 200, 320)
    with pytest.raises(ValueError, match="win"):
        StftConfig(256, 64, 320)


def test_irm_of_disjoint_sinusoids():
    config = StftConfig()          # 50 Hz bins at 16 kHz
    t = np.arange(SR) / SR
    clean, noise = 0.3 * np.sin(2 * np.pi * 1000 * t), 0.3 * np.sin(2 * np.pi * 4000 * t)
    clean_spec, noise_spec = stft(clean, config), stft(noise, config)
    irm = ideal_ratio_mask(clean_spec, noise_spec)
    frames = slice(2, -2)          # away from the zero padding at the edges
    assert np.all(irm[frames, 20] > 0.999) and np.all(irm[frames, 80] < 1e-3)
    ratio = magnitude_ratio_mask(clean_spec, clean_spec + noise_spec)
    assert np.all(ratio[frames, 20] > 0.999) and np.all(ratio[frames, 80] < 1e-3)
    # equal power in a bin -> sqrt(1/2)
    half = ideal_ratio_mask(clean_spec, clean_spec)
    np.testing.assert_allclose(half[frames, 20], np.sqrt(0.5), rtol=1e-5)


def test_targets_are_bounded_and_silence_is_zero():
    rng = np.random.default_rng(2)
    clean, noise = stft(rng.standard_normal(4000), StftConfig()), stft(rng.standard_normal(4000), StftConfig())
    for kind in ("irm", "mag_ratio"):
        mask = mask_target(kind, clean, noise)
        assert mask.dtype == np.float32 and mask.min() >= 0 and mask.max() <= 1
        assert np.all(mask_target(kind, np.zeros_like(clean), np.zeros_like(noise)) == 0)
    with pytest.raises(ValueError, match="unknown mask target"):
        mask_target("ibm", clean, noise)


# ---------------------------------------------------------------- network
@pytest.mark.parametrize("rnn_type,layer_norm,causal", [("LSTM", True, True), ("GRU", False, False)])
def test_network_shapes_for_odd_frame_counts(rnn_type, layer_norm, causal):
    net = tiny_net(causal, rnn_type, layer_norm)
    for frames in (1, 2, 7, 37):
        out = run(net, np.random.default_rng(frames).random((3, frames, 9)))
        assert out.shape == (3, frames, 9)
        assert np.all((out >= 0) & (out <= 1))


def test_local_rnn_runs_over_the_most_recent_frames():
    ms.set_seed(3)
    layer = LocalRNN(d_model=4, rnn_type="GRU", ksize=3)
    x = np.random.default_rng(3).standard_normal((1, 6, 4)).astype(np.float32)
    out = layer(ms.Tensor(x)).asnumpy()
    padded = np.concatenate([np.zeros((1, 2, 4), np.float32), x], axis=1)
    for t in (0, 1, 5):            # window of frame t: frames t-2, t-1, t (zeros before the start)
        window = padded[:, t:t + 3]
        expected = layer.rnn(ms.Tensor(window))[0].asnumpy()[0, -1]
        np.testing.assert_allclose(out[0, t], expected, atol=1e-6)


@pytest.mark.parametrize("causal", [True, False])
def test_padding_frames_do_not_change_valid_outputs(causal):
    net = tiny_net(causal)
    rng = np.random.default_rng(4)
    x = rng.random((2, 23, 9))
    lengths = [23, 11]
    out = run(net, x, lengths)
    garbage = x.copy()
    garbage[1, 11:] = 50 * rng.random((12, 9))
    out_garbage = run(net, garbage, lengths)
    np.testing.assert_allclose(out_garbage[1, :11], out[1, :11], atol=1e-6)
    np.testing.assert_array_equal(out_garbage[0], out[0])
    alone = run(net, x[1:, :11], [11])
    np.testing.assert_allclose(alone[0], out[1, :11], atol=1e-5)
    # without frame lengths only causal attention keeps the padding out of valid frames
    unmasked = run(net, garbage)
    if causal:
        np.testing.assert_allclose(unmasked[1, :11], out[1, :11], atol=1e-6)
    else:
        assert np.abs(unmasked[1, :11] - out[1, :11]).max() > 1e-3


def test_configs_build_rt_and_zrt():
    rt = load_config(os.path.join(ROOT, "configs", "rt.yaml"))
    zrt = load_config(os.path.join(ROOT, "configs", "zrt.yaml"))
    assert (zrt.model.ksize, zrt.model.n, zrt.model.layer_norm) == (5, 2, False)
    assert zrt.model.d_model == rt.model.d_model == 320
    nets = {name: build_rtransformer(cfg) for name, cfg in (("rt", rt), ("zrt", zrt))}
    norms = {name: sum(isinstance(c, nn.LayerNorm) for _, c in net.cells_and_names()) for name, net in nets.items()}
    assert norms == {"rt": 2 * (1 + 2), "zrt": 0}      # per block: one per LocalRNN layer + attention + FFN
    assert [len(b.rnns) for b in nets["zrt"].blocks] == [2, 2]
    assert nets["zrt"].blocks[0].rnns[0].ksize == 5
    out = run(nets["rt"], np.random.default_rng(5).random((1, 5, 161)))
    assert out.shape == (1, 5, 161)


def test_build_network_checks_stft_size():
    cfg = demo_config("stft.n_fft=512", "stft.hop=256", "stft.win=512")
    with pytest.raises(ConfigError, match="257"):
        EnhancementTask().build_network(cfg)


def test_build_network_uses_the_model_registry():
    from src.models import MODELS
    if "rtransformer" not in MODELS:
        pytest.skip("rtransformer is not registered in src/models/__init__.py yet")
    assert isinstance(EnhancementTask().build_network(demo_config()), RTransformer)


# ---------------------------------------------------------------- losses
def test_losses_ignore_padding_frames():
    rng = np.random.default_rng(6)
    est, target = rng.random((2, 10, 5)).astype(np.float32), rng.random((2, 10, 5)).astype(np.float32)
    noisy, clean = 3 * rng.random((2, 10, 5)).astype(np.float32), 2 * rng.random((2, 10, 5)).astype(np.float32)
    lengths = np.array([10, 4], np.int32)
    valid = np.concatenate([est[0] - target[0], est[1, :4] - target[1, :4]])
    loss = float(MaskMSELoss()(*map(ms.Tensor, (est, target, lengths))).asnumpy())
    np.testing.assert_allclose(loss, np.mean(valid ** 2), rtol=1e-5)
    est_garbage = est.copy()
    est_garbage[1, 4:] = 9.0
    assert float(MaskMSELoss()(*map(ms.Tensor, (est_garbage, target, lengths))).asnumpy()) == pytest.approx(loss)
    diff = np.concatenate([(est * noisy - clean)[0], (est * noisy - clean)[1, :4]])
    mag = float(MagnitudeMSELoss()(*map(ms.Tensor, (est_garbage, clean, noisy, lengths))).asnumpy())
    np.testing.assert_allclose(mag, np.mean(diff ** 2), rtol=1e-5)


# ---------------------------------------------------------------- data
def test_noise_is_looped_and_mixed_at_the_requested_snr(tmp_path):
    rng = np.random.default_rng(8)
    speech = write_wav(str(tmp_path / "clean" / "a" / "utt.wav"), 0.1 * rng.standard_normal(SR))
    period = 3001
    write_wav(str(tmp_path / "noise" / "n.wav"), 0.5 * rng.standard_normal(period))
    assert list_audio_files(str(tmp_path / "clean"), "clean") == [speech]
    np.testing.assert_array_equal(loop_noise(np.arange(5), 3, 7), [3, 4, 0, 1, 2, 3, 4])
    for snr in (-5.0, 0.0, 5.0):
        mixer = NoisyMixer([speech], [str(tmp_path / "noise" / "n.wav")], SR, [snr], seed=1)
        pair = mixer.train_pair(0, epoch=1)
        assert pair.noise.shape == pair.clean.shape == (SR,)
        np.testing.assert_allclose(pair.noise[period:], pair.noise[:-period], rtol=1e-6)   # looped
        measured = 10 * np.log10(np.sum(pair.clean.astype(np.float64) ** 2) / np.sum(pair.noise.astype(np.float64) ** 2))
        assert measured == pytest.approx(snr, abs=1e-3)
        np.testing.assert_allclose(pair.noisy, pair.clean + pair.noise)
    with pytest.raises(ValueError, match="silent"):
        scale_to_snr(np.zeros(10), np.ones(10), 0.0)


def test_training_items_are_cropped_and_deterministic_per_seed_and_epoch():
    task = EnhancementTask()
    cfg = demo_config()
    mixer = task.mixer(cfg, "train")
    segment = int(cfg.segment * SR)
    a, b = mixer.train_pair(3, epoch=2), mixer.train_pair(3, epoch=2)
    np.testing.assert_array_equal(a.noisy, b.noisy)
    assert len(a.clean) == segment and a.snr_db in (-5.0, 0.0)
    assert not np.array_equal(mixer.train_pair(3, epoch=3).noisy, a.noisy)
    other_seed = EnhancementTask().mixer(demo_config("seed=1"), "train")
    assert not np.array_equal(other_seed.train_pair(3, epoch=2).noisy, a.noisy)

    def batches(epoch, shards=1, shard=0):
        return list(task.train_batches(cfg, epoch, shards, shard))

    first = batches(5)
    assert len(first) == len(mixer.clean_files) // cfg.train.batch_size
    feats, irm, lengths = first[0]
    frames = StftConfig.from_cfg(cfg).num_frames(segment)
    assert feats.shape == irm.shape == (cfg.train.batch_size, frames, 161) and lengths.dtype == np.int32
    for x, y in zip(first, batches(5)):          # same (seed, epoch) -> same batches (resume)
        for u, v in zip(x, y):
            np.testing.assert_array_equal(u, v)
    assert not np.array_equal(batches(6)[0][0], feats)
    # two shards see every item once, each item exactly as with one shard
    def items(batch_list):
        return sorted(f.tobytes() for batch in batch_list for f in batch[0])
    sharded = batches(5, 2, 0) + batches(5, 2, 1)
    assert items(sharded) == items(first)


def test_validation_pairs_are_fixed():
    task = EnhancementTask()
    cfg = demo_config()
    pairs = list(task.mixer(cfg, "valid").fixed_pairs())
    assert [p.snr_db for p in pairs[:3]] == [-5.0, 0.0, 5.0] and len(pairs) == 3 * 4
    again = list(EnhancementTask().mixer(cfg, "valid").fixed_pairs())
    for p, q in zip(pairs, again):
        np.testing.assert_array_equal(p.noisy, q.noisy)
    assert len(pairs[0].clean) == sf.info(pairs[0].clean_path).frames      # full utterances


def test_collate_pads_to_the_longest_and_keeps_lengths():
    examples = [(np.ones((3, 2)), np.ones((3, 2))), (np.ones((5, 2)), 2 * np.ones((5, 2)))]
    feats, target, lengths = collate(examples)
    assert feats.shape == (2, 5, 2) and list(lengths) == [3, 5]
    assert np.all(feats[0, 3:] == 0) and np.all(target[1] == 2)
    assert collate(examples, frames=8)[0].shape == (2, 8, 2)


def test_example_arrays_magnitude_loss_targets():
    rng = np.random.default_rng(9)
    pair = Pair("k", rng.standard_normal(1600), rng.standard_normal(1600), 0.0, "clean.wav", "noise.wav")
    config = StftConfig()
    feats, clean_mag, noisy_mag = example_arrays(pair, config, "magnitude_mse")
    np.testing.assert_allclose(feats, np.log1p(noisy_mag), rtol=1e-5)
    np.testing.assert_allclose(clean_mag, np.abs(stft(pair.clean, config)), rtol=1e-5)
    np.testing.assert_allclose(noisy_mag, np.abs(stft(pair.noisy, config)), rtol=1e-4, atol=1e-4)


def test_an_enhancement_model_counts_no_speakers():
    from src.errors import UserError
    with pytest.raises(UserError, match="c.ckpt: --count-model counts speakers, which enhancement models"):
        EnhancementTask().load_counter("c.ckpt", {})


def test_bad_inputs_raise_errors_naming_the_file(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=f"{empty}.*no audio files"):
        list_audio_files(str(empty), "noise")
    with pytest.raises(DataError, match="not found"):
        list_audio_files(str(tmp_path / "missing"), "clean speech")
    good = write_wav(str(tmp_path / "a" / "good.wav"), np.full(800, 0.1))
    broken = tmp_path / "a" / "broken.wav"
    broken.write_bytes(b"not audio")
    stereo = write_wav(str(tmp_path / "a" / "stereo.wav"), np.full(800, 0.1), channels=2)
    other_rate = write_wav(str(tmp_path / "a" / "8k.wav"), np.full(800, 0.1), rate=8000)
    with pytest.raises(DataError) as err:
        NoisyMixer([good, str(broken), stereo], [other_rate], SR, [0], seed=0)
    message = str(err.value)
    assert "3 problems" in message and str(broken) in message and f"{stereo}: has 2 channels" in message
    assert f"{other_rate}: sample rate is 8000 Hz" in message
    silent = write_wav(str(tmp_path / "b" / "silent.wav"), np.zeros(800))
    with pytest.raises(DataError, match=f"{silent}.*silent"):
        NoisyMixer([silent], [good], SR, [0], seed=0).train_pair(0, 1)
    listing = tmp_path / "a" / "list.txt"
    listing.write_text("# clean files\ngood.wav\n\n")
    assert list_audio_files(str(listing), "clean") == [os.path.join(str(tmp_path / "a"), "good.wav")]


# ---------------------------------------------------------------- the Enhancer with known masks
@pytest.fixture(scope="module")
def speech_in_noise():
    """A clean validation utterance of the bundled set and the validation noise at 0 dB SNR."""
    clean_files = list_audio_files(os.path.join(ROOT, "assets/mini_enhancement/clean/valid"), "clean")
    noise_files = list_audio_files(os.path.join(ROOT, "assets/mini_enhancement/noise/valid"), "noise")
    clean = sf.read(clean_files[0], dtype="float32")[0]
    noise = loop_noise(sf.read(noise_files[0], dtype="float32")[0], 0, len(clean))
    noise = noise * np.sqrt(np.sum(clean ** 2) / np.sum(noise ** 2))
    return clean, noise.astype(np.float32), (clean + noise).astype(np.float32)


def test_enhancer_with_an_all_ones_mask_returns_the_input(speech_in_noise):
    from src.inference.enhancement import Enhancer
    noisy = speech_in_noise[2][:SR // 2 + 77]
    seen = []

    def ones(features, frame_lengths):
        seen.append((features.shape, frame_lengths.tolist()))
        return np.ones_like(features)
    enhanced = Enhancer(ones, StftConfig(320, 160, 320))(noisy)
    frames = -(-len(noisy) // 160) + 1
    assert seen == [((1, frames, 161), [frames])]
    np.testing.assert_allclose(enhanced, noisy, atol=1e-5)


def test_enhancer_with_the_oracle_mask_scores_far_above_the_noisy_input(speech_in_noise):
    """The mask is applied to the right frames and bins: the ideal ratio mask, computed here from
    the clean and noise spectra, must give far more than the noisy input, and more than the same
    mask one frame late or reversed along either axis."""
    from src.metrics import si_snr
    from src.inference.enhancement import Enhancer
    clean, noise, noisy = speech_in_noise
    config = StftConfig(320, 160, 320)
    clean_power, noise_power = np.abs(stft(clean, config)) ** 2, np.abs(stft(noise, config)) ** 2
    oracle = np.sqrt(clean_power / np.maximum(clean_power + noise_power, 1e-20))

    def scored(mask):
        return float(si_snr(Enhancer(lambda f, n: mask[None], config)(noisy), clean))
    noisy_score, oracle_score = float(si_snr(noisy, clean)), scored(oracle)
    assert abs(noisy_score) < 0.5                                        # 0 dB input
    # this noise (dishes: broadband, impulsive) leaves the magnitude-only oracle at about +5.5 dB
    # (the trained demo network gets about +1 dB)
    assert oracle_score > noisy_score + 5, (noisy_score, oracle_score)
    late = np.concatenate([np.ones((1, oracle.shape[1])), oracle[:-1]])
    assert oracle_score > scored(late) + 1.5                             # one frame late: ~ +3.7 dB
    assert oracle_score > max(scored(oracle[:, ::-1]), scored(oracle[::-1])) + 5   # bins or frames reversed


# ---------------------------------------------------------------- training on the demo data
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny RT trained for 20 epochs of 4 steps by the trainer itself (`train()`: TrainStep with
    its gradient buffers, clipping and finiteness gate, the plateau lr schedule, validation every
    5 epochs, checkpoints), the last checkpoint loaded back; validation of the initial network
    (the seed's) and of the trained one with PESQ/STOI (PyNative)."""
    from src.runtime.checkpoint import checkpoint_dir, load_model
    from src.training.trainer import train
    exp = str(tmp_path_factory.mktemp("rt_train"))
    cfg = demo_config("train.valid_pesq_stoi=false", "train.epochs=20", f"experiment_dir={exp}")
    task = EnhancementTask()
    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_seed(int(cfg.seed))
    before = task.validate(task.build_network(cfg), cfg)      # the network train() starts from
    try:
        state = train(cfg)
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    net, _ = load_model(os.path.join(checkpoint_dir(exp), "epoch_0020.ckpt"))
    cfg.train.valid_pesq_stoi = True
    after = task.validate(net, cfg)
    return task, cfg, net, before, after, state


def test_training_improves_validation_si_snr(trained):
    _, _, _, before, after, state = trained
    history = state["history"]
    assert state["step"] == 80 and [h["epoch"] for h in history] == list(range(1, 21))
    assert all(h["skipped_steps"] == 0 for h in history)
    losses = [h["train_loss"] for h in history]                         # each the mean of an epoch's 4 steps
    assert np.mean(losses[-2:]) < 0.8 * np.mean(losses[:2]), losses
    validated = [h["valid_score"] for h in history if "valid_score" in h]
    assert len(validated) == 4 and validated[-1] > before["score"] + 0.3
    assert after["score"] > before["score"] + 0.3, (before, after)
    assert after["score"] == pytest.approx(validated[-1], abs=1e-4)    # the checkpoint holds the trained weights
    assert after["score"] == pytest.approx(np.mean([after[f"si_snri@{s}dB"] for s in (-5, 0, 5)]))
    for snr in (-5, 0, 5):
        assert 0 < after[f"stoi@{snr}dB"] <= 1 and 1 <= after[f"pesq@{snr}dB"] <= 4.7
    assert "pesq@0dB" not in before


def test_enhance_returns_the_input_length(trained):
    task, cfg, net, *_ = trained
    noisy = np.random.default_rng(10).standard_normal(SR // 3 + 7).astype(np.float32) * 0.1
    enhanced = task.enhance(net, noisy, cfg)
    assert enhanced.shape == noisy.shape and np.all(np.isfinite(enhanced))
    assert np.sum(enhanced ** 2) < np.sum(noisy ** 2)         # a mask in [0, 1] only removes energy
    with pytest.raises(ValueError, match="NaN"):
        task.enhance(net, np.full(100, np.nan, np.float32), cfg)
