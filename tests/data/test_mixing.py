"""Training mixtures made on the fly from single-speaker recordings (src/data/mixing.py), the bundled
speaker corpus (src/data/corpus.py), and exact resume of a run trained that way."""
import os

import numpy as np
import pytest

from src.audio import write_audio
from src.data import corpus
from src.data.layout import DataError, find_splits
from src.data.mixing import SOURCE_RMS, SpeechMixer, load_speakers, scale_sources, speaker_of

RATE = 8000
FREQUENCIES = {"11": 200.0, "22": 450.0, "33": 700.0, "44": 950.0}   # one tone per speaker


@pytest.fixture(scope="module")
def tone_speakers(tmp_path_factory):
    """Four "speakers", each a folder of two files with its own tone (one file shorter than a segment)."""
    root = tmp_path_factory.mktemp("speech")
    for speaker, freq in FREQUENCIES.items():
        for k, seconds in enumerate((1.5, 0.3)):
            t = np.arange(int(seconds * RATE)) / RATE
            write_audio(str(root / speaker / f"{speaker}-7-{k:04d}.wav"), 0.3 * np.sin(2 * np.pi * freq * t), RATE)
    return str(root)


def _speaker_of_signal(signal):
    """The speaker whose tone dominates `signal`."""
    spectrum = np.abs(np.fft.rfft(signal))
    peak = np.fft.rfftfreq(len(signal), 1 / RATE)[np.argmax(spectrum)]
    return min(FREQUENCIES, key=lambda s: abs(FREQUENCIES[s] - peak))


def test_speaker_of_names_and_folders(tmp_path):
    assert speaker_of("/x/y/103-1240-0000.flac") == "103"
    assert speaker_of(str(tmp_path / "alice" / "take1.wav")) == "alice"


def test_scale_sources_level_gain_and_sum():
    rng = np.random.default_rng(0)
    signals = rng.standard_normal((3, 1000)) * np.array([[0.01], [0.2], [0.05]])
    sources, mix = scale_sources(signals, [0.0, 6.0, -6.0])
    rms = np.sqrt(np.mean(sources.astype(np.float64) ** 2, axis=1))
    np.testing.assert_allclose(rms, SOURCE_RMS * 10 ** (np.array([0.0, 6.0, -6.0]) / 20), rtol=1e-5)
    np.testing.assert_array_equal(mix, sources[0] + sources[1] + sources[2])
    loud, loud_mix = scale_sources(signals, [30.0, 30.0, 30.0])            # would clip: scaled together
    assert np.abs(loud_mix).max() == pytest.approx(0.9, rel=1e-5)
    rms_in = np.sqrt(np.mean(signals ** 2, axis=1))
    np.testing.assert_allclose(loud[0] / loud[1], signals[0] / signals[1] * rms_in[1] / rms_in[0], rtol=1e-3)


def test_batches_mix_different_speakers_deterministically(tone_speakers):
    speakers = load_speakers(tone_speakers, RATE)
    assert [s for s, _ in speakers] == sorted(FREQUENCIES) and all(len(u) == 2 for _, u in speakers)
    segment = 4000
    mixer = SpeechMixer(speakers, 3, segment, gain_db=3.0, seed=5)
    mix, src, lengths = mixer.batch(epoch=1, step=0, batch_size=8)
    assert mix.shape == (8, segment) and src.shape == (8, 3, segment) and lengths.dtype == np.int32
    np.testing.assert_allclose(mix, src.sum(axis=1), atol=1e-6)
    short = 0
    for item in range(8):
        length = lengths[item]
        assert length in (segment, int(0.3 * RATE))        # a full crop, or the short file's length
        short += length < segment
        assert not np.any(src[item, :, length:])          # zero past the length
        owners = {_speaker_of_signal(s[:length]) for s in src[item]}
        assert len(owners) == 3                            # three different speakers
        rms = np.sqrt(np.mean(src[item, :, :length].astype(np.float64) ** 2, axis=1))
        assert np.all(rms < SOURCE_RMS * 10 ** (3.0 / 20) * 1.01) and np.all(rms > SOURCE_RMS * 10 ** (-3.0 / 20) * 0.99)
    assert 0 < short < 8
    again = mixer.batch(epoch=1, step=0, batch_size=8)
    for a, b in zip((mix, src, lengths), again):
        np.testing.assert_array_equal(a, b)
    other = mixer.batch(epoch=2, step=0, batch_size=8)[0]
    assert not np.array_equal(other, mix)
    # two workers take alternate items of the same global batch
    halves = [mixer.batch(1, 0, 8, num_shards=2, shard_id=k) for k in (0, 1)]
    np.testing.assert_array_equal(halves[0][1], src[0::2])
    np.testing.assert_array_equal(halves[1][1], src[1::2])
    assert len(list(mixer.epoch_batches(3, steps=4, batch_size=2))) == 4


def _pitch_ratios(src, lengths):
    """Every source's tone frequency over its speaker's (the nearest tone)."""
    ratios = []
    for item, length in zip(src, lengths):
        for source in item[:, :min(length, 1024)]:
            peak = np.fft.rfftfreq(8192, 1 / RATE)[np.argmax(np.abs(np.fft.rfft(source, 8192)))]
            ratios.append(peak / FREQUENCIES[min(FREQUENCIES, key=lambda s: abs(np.log(FREQUENCIES[s] / peak)))])
    return np.array(ratios)


def test_speed_perturbation_shifts_every_source_within_its_range(tone_speakers):
    speakers = load_speakers(tone_speakers, RATE)
    fast = SpeechMixer(speakers, 2, 4000, gain_db=0.0, seed=5, speed=0.1)
    mix, src, lengths = fast.batch(epoch=0, step=0, batch_size=16)
    np.testing.assert_allclose(mix, src.sum(axis=1), atol=1e-6)
    np.testing.assert_array_equal(mix, fast.batch(epoch=0, step=0, batch_size=16)[0])   # deterministic
    assert np.all(lengths <= 4000) and not any(np.any(item[:, n:]) for item, n in zip(src, lengths))
    ratios = _pitch_ratios(src, lengths)
    assert 0.89 < ratios.min() and ratios.max() < 1.11 and ratios.std() > 0.03        # spread over 1 +- 0.1
    plain = SpeechMixer(speakers, 2, 4000, gain_db=0.0, seed=5).batch(epoch=0, step=0, batch_size=16)
    np.testing.assert_allclose(_pitch_ratios(plain[1], plain[2]), 1.0, atol=0.01)     # off: every tone as recorded


def test_fewer_speakers_than_outputs_leave_silent_sources(tone_speakers):
    mixer = SpeechMixer(load_speakers(tone_speakers, RATE), 3, 4000, gain_db=3.0, seed=5, speaker_counts=[2, 3])
    mix, src, lengths = mixer.batch(epoch=0, step=0, batch_size=16)
    np.testing.assert_allclose(mix, src.sum(axis=1), atol=1e-6)
    active = [int(np.count_nonzero(np.any(item != 0, axis=1))) for item in src]
    assert set(active) == {2, 3}
    for item, count in zip(src, active):
        assert np.all(np.any(item[:count] != 0, axis=1)) and not np.any(item[count:])   # silent ones last
        assert len({_speaker_of_signal(s) for s in item[:count]}) == count
    with pytest.raises(DataError, match=r"speaker counts \[2, 4\] must be between 1 and model.C=3"):
        SpeechMixer(load_speakers(tone_speakers, RATE), 3, 4000, 3.0, 0, speaker_counts=[2, 4])


def test_bad_sources_are_named(tone_speakers, tmp_path):
    with pytest.raises(DataError, match="fewer than the 5"):
        SpeechMixer(load_speakers(tone_speakers, RATE), 5, 4000, 3.0, 0, where=tone_speakers)
    with pytest.raises(DataError, match="sample rate is 8000 Hz, expected 16000"):
        load_speakers(tone_speakers, 16000)
    with pytest.raises(DataError, match="not found"):
        load_speakers(str(tmp_path / "missing"), RATE)


def test_bundled_corpus_splits_speakers(tmp_path):
    train = {s for s, _ in load_speakers(corpus.TRAIN_SPEECH, RATE)}
    dev = set(os.listdir(corpus.DEV_SPEECH))
    test = set(os.listdir(corpus.TEST_SPEECH)) - {"README.md", "LICENSE.TXT", "SPEAKERS.TXT"}
    assert len(train) == 115 and len(dev) == 16 and len(test) == 10
    assert not (train & dev) and not (train & test) and not (dev & test)
    summary = corpus.build_corpus(str(tmp_path))
    assert summary["Libri2Mix"] == {"dev": 48, "test": 100} and summary["Libri3Mix"] == {"dev": 48, "test": 100}
    splits = find_splits(str(tmp_path / "Libri3Mix"))
    assert set(splits) == {"valid", "test"} and splits["test"].num_speakers == 3
    for name, speakers in (("valid", dev), ("test", test)):
        used = {part.split("-")[0] for u in splits[name].utterances for part in u.key.split("_")}
        assert used <= speakers and len(used) == len(speakers)
    larger = corpus.build_corpus(str(tmp_path / "larger"), dev_mixtures=150)     # same test split, more dev
    assert larger["Libri2Mix"] == {"dev": 150, "test": 100}
    for dataset in ("Libri2Mix", "Libri3Mix"):
        names = [set(os.listdir(os.path.join(root, dataset, "dev", "mix_clean"))) for root in (tmp_path, tmp_path / "larger")]
        assert len(names[1]) == 150 and names[0] < names[1]          # the first 48 pairings, other gains
        test = [find_splits(os.path.join(root, dataset))["test"] for root in (tmp_path, tmp_path / "larger")]
        assert [u.key for u in test[0].utterances] == [u.key for u in test[1].utterances]


def test_training_speaker_mixtures_use_only_training_speakers(tmp_path):
    train = {s for s, _ in load_speakers(corpus.TRAIN_SPEECH, RATE)}
    assert corpus.build_train_speaker_mixtures(str(tmp_path), 12)["Libri3Mix"] == {"train": 12}
    corpus.build_corpus(str(tmp_path))       # writing the dev/test splits keeps the train split, and back
    corpus.build_train_speaker_mixtures(str(tmp_path), 12)
    for count in (2, 3):
        splits = find_splits(str(tmp_path / f"Libri{count}Mix"))
        assert set(splits) == {"train", "valid", "test"} and len(splits["train"].utterances) == 12
        assert len(splits["valid"].utterances) == corpus.DEV_MIXTURES
        assert len(splits["test"].utterances) == corpus.TEST_MIXTURES
        groups = [[part.split("-")[0] for part in u.key.split("_")] for u in splits["train"].utterances]
        assert all(len(set(g)) == count and set(g) <= train for g in groups)


def test_impossible_number_of_distinct_mixtures_is_refused():
    from src.data.mini_librimix import _choose_mixtures
    utterances = {"1": ["1-a", "1-b"], "2": ["2-a"], "3": ["3-a"]}
    assert len(_choose_mixtures(utterances, 5, 2, np.random.default_rng(0))) == 5     # all 5 pairs
    with pytest.raises(ValueError, match="cannot draw 6 distinct mixtures of 2 from 3 speakers with 4 utterances"):
        _choose_mixtures(utterances, 6, 2, np.random.default_rng(0))


def test_resume_from_speech_is_bit_identical(tiny_data, tmp_path):
    from src.config import load_config
    from src.runtime import checkpoint as ckpt
    from src.training.trainer import train

    def config(exp, *overrides):
        return load_config(os.path.join(corpus.REPO_ROOT, "configs", "demo.yaml"), [
            f"experiment_dir={exp}", "data.train=null", f"data.train_speech={corpus.TRAIN_SPEECH}",
            "data.steps_per_epoch=2", f"data.valid={tiny_data}/valid.mindrecord0", "model.N=16", "model.H=16",
            "model.R=2", "segment=0.5", "train.batch_size=2", "train.epochs=2", *overrides])

    full, resumed = str(tmp_path / "full"), str(tmp_path / "resumed")
    state_full = train(config(full))
    train(config(resumed, "train.epochs=1"))
    state_resumed = train(config(resumed))
    assert [h["train_loss"] for h in state_resumed["history"]] == [h["train_loss"] for h in state_full["history"]]
    assert state_full["step"] == state_resumed["step"] == 4
    a, _ = ckpt.read_checkpoint(os.path.join(ckpt.checkpoint_dir(full), "epoch_0002.ckpt"))
    b, _ = ckpt.read_checkpoint(os.path.join(ckpt.checkpoint_dir(resumed), "epoch_0002.ckpt"))
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name].asnumpy(), b[name].asnumpy(), err_msg=name)


def test_init_from_copies_every_fitting_parameter(tmp_path):
    import mindspore as ms
    from src.models.swave import SWave
    from src.runtime import checkpoint as ckpt

    two, three = (SWave(16, 4, 8, 2, c, 8000, 0.1, lstm="native") for c in (2, 3))
    path = str(tmp_path / "two.ckpt")
    ms.save_checkpoint(two, path)
    before = {p.name: p.asnumpy().copy() for p in three.trainable_params()}
    fresh = ckpt.load_matching(three, ckpt.read_checkpoint(path)[0], path)
    shapes = {p.name: p.shape for p in two.trainable_params()}
    assert fresh and fresh == sorted(p.name for p in three.trainable_params() if p.shape != shapes[p.name])
    for p in three.trainable_params():
        expected = before[p.name] if p.name in fresh else two.parameters_dict()[p.name].asnumpy()
        np.testing.assert_array_equal(p.asnumpy(), expected, err_msg=p.name)
    with pytest.raises(ckpt.CheckpointError, match="no parameter fits"):
        ckpt.load_matching(three, {"other": ms.Parameter(ms.Tensor(np.zeros(3, np.float32)), name="other")}, path)
