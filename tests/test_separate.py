"""separate.py beyond tests/test_evaluate_separate.py: input expansion, per-file checks, windowed
== one-shot with the real tiny model, speaker counting and stale outputs (in-process, the tiny
random-weight models are loaded and compiled once for the module)."""
import os

import numpy as np
import pytest
import soundfile as sf

import separate
from src.audio import AudioError
from src.data.layout import find_splits
from src.metrics import best_permutation, si_snr
from src.tasks.separation import SeparationTask

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RATE = 8000


def test_expand_inputs_files_folders_globs_and_problems(tmp_path):
    (tmp_path / "a").mkdir()
    for name in ("x.wav", "y.flac", "notes.txt"):
        sf.write(tmp_path / "a" / name, np.zeros(10), RATE) if name != "notes.txt" else (tmp_path / "a" / name).write_text("")
    (tmp_path / "empty").mkdir()
    files, problems = separate.expand_inputs([str(tmp_path / "a"), str(tmp_path / "a" / "*.wav"),
                                              str(tmp_path / "missing.wav"), str(tmp_path / "none*.wav"),
                                              str(tmp_path / "empty")])
    assert files == [str(tmp_path / "a" / "x.wav"), str(tmp_path / "a" / "y.flac")]   # x.wav once
    assert len(problems) == 3
    assert "missing.wav: file not found" in problems[0] and "no file matches" in problems[1]
    assert "holds no audio files" in problems[2]


def test_read_mixture_notes_and_refusals(tmp_path):
    rng = np.random.default_rng(0)
    signal = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    sf.write(tmp_path / "wide.wav", np.stack([signal, 0.5 * signal], 1), 16000, subtype="FLOAT")
    mixture, notes = separate.read_mixture(str(tmp_path / "wide.wav"), RATE, 8)
    assert len(mixture) == 8000 and 0.05 < np.std(mixture) < 0.1
    assert any("2 channels averaged" in n for n in notes) and any("16000 Hz" in n for n in notes)
    sf.write(tmp_path / "cancel.wav", np.stack([signal, -signal], 1), RATE, subtype="FLOAT")
    with pytest.raises(AudioError, match="silence"):     # the channels cancel out when averaged
        separate.read_mixture(str(tmp_path / "cancel.wav"), RATE, 8)
    cases = {"quiet.wav": (np.full(800, 1e-6), "only silence"), "zeros.wav": (np.zeros(800), "all samples are zero"),
             "short.wav": (signal[:5], "too short"), "empty.wav": (np.zeros(0), "empty")}
    for name, (audio, problem) in cases.items():
        sf.write(tmp_path / name, audio, RATE, subtype="FLOAT")
        with pytest.raises(AudioError, match=problem) as err:
            separate.read_mixture(str(tmp_path / name), RATE, 8)
        assert name in str(err.value)
    (tmp_path / "bad.wav").write_bytes(b"RIFF....WAVEjunk")
    with pytest.raises(AudioError, match="cannot be read"):
        separate.read_mixture(str(tmp_path / "bad.wav"), RATE, 8)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """{2: path, 3: path} of tiny random-weight SWaves."""
    from mindspore import nn
    from src.config import load_config
    from src.models import build_model
    from src.runtime.checkpoint import config_meta, save_training_checkpoint
    folder = tmp_path_factory.mktemp("ckpt")
    paths = {}
    for count in (2, 3):
        cfg = load_config(os.path.join(ROOT, "configs/demo.yaml"),
                          ["model.N=16", "model.H=16", "model.R=1", f"model.C={count}", f"experiment_dir={folder}"])
        net = build_model(cfg)
        paths[count] = str(folder / f"c{count}.ckpt")
        save_training_checkpoint(paths[count], nn.Adam(net.trainable_params()), config_meta(cfg), network=net)
    return paths


@pytest.fixture(scope="module")
def separators(checkpoints):
    """{2: separate_fn, 3: separate_fn} of the tiny models."""
    import mindspore as ms
    previous_mode = ms.get_context("mode")
    loaded, _ = SeparationTask().load_separators([checkpoints[2], checkpoints[3]], None)
    yield loaded
    ms.set_context(mode=previous_mode)


@pytest.fixture(scope="module")
def recording(mini_librimix, tmp_path_factory):
    """2.5 s of a bundled 2-speaker test mixture as a wav file."""
    utt = find_splits(os.path.join(mini_librimix, "Libri2Mix"), split="test")["test"].utterances[0]
    audio, rate = sf.read(utt.mix, dtype="float32")
    path = tmp_path_factory.mktemp("rec") / "talk.wav"
    sf.write(path, audio[:int(2.5 * rate)], rate, subtype="FLOAT")
    return str(path)


def _outputs(folder, stem="talk"):
    found = sorted(n for n in os.listdir(folder) if n.startswith(f"{stem}_s") and n.endswith(".wav"))
    return np.stack([sf.read(os.path.join(folder, n), dtype="float32")[0] for n in found]), found


def test_windowed_matches_one_shot_with_the_real_model(separators, recording, tmp_path):
    only_two = {2: separators[2]}
    run = lambda out, window, overlap: separate.separate_file(  # noqa: E731
        recording, SeparationTask(), only_two, RATE, 8, str(tmp_path / out), window, overlap, -20.0)
    run("whole", None, None)
    run("one_window", 10 * RATE, 2 * RATE)        # longer than the input: one call, the same result
    run("windows", RATE, RATE // 4)                # 1 s windows, 0.25 s overlap: 3 windows
    whole, names = _outputs(tmp_path / "whole")
    assert names == ["talk_s1.wav", "talk_s2.wav"]
    np.testing.assert_array_equal(_outputs(tmp_path / "one_window")[0], whole)
    mixture = sf.read(recording, dtype="float32")[0]
    direct = separators[2](mixture[None])[0]
    assert np.all(si_snr(whole, direct) > 40)      # the files hold the network's output (16-bit)
    windowed = _outputs(tmp_path / "windows")[0]
    perm = best_permutation(windowed, whole)
    # an untrained SWave is nearly local: a misaligned or mis-faded join would fall far below this
    assert np.all(si_snr(windowed[perm], whole) > 15)


def test_counting_writes_as_many_files_as_found_and_force_removes_stale_ones(separators, recording, tmp_path):
    from src.inference.speaker_count import count_and_separate
    out = str(tmp_path / "out")
    written, notes = separate.separate_file(recording, SeparationTask(), separators, RATE, 8, out, None, None, -20.0, plot=True)
    mixture = sf.read(recording, dtype="float32")[0]
    # the count by hand: outputs of the 3-speaker model within 20 dB of its loudest; below 3, the
    # 2-speaker model's (at least 1)
    def active(outputs):
        energy = np.sum(outputs.astype(np.float64) ** 2, axis=-1)
        return int(np.sum(10 * np.log10(energy / energy.max()) >= -20.0)), outputs
    found, outputs = active(separators[3](mixture[None])[0])
    if found < 3:
        found, outputs = active(separators[2](mixture[None])[0])
        found = max(found, 1)
        loudest = np.sort(np.argsort(-np.sum(outputs.astype(np.float64) ** 2, axis=-1))[:found])
        outputs = outputs[loudest]
    count = found
    assert count == count_and_separate(separators, mixture, -20.0)[0]
    wavs = [p for p in written if p.endswith(".wav")]
    assert len(wavs) == count and any(f"{count} speaker" in n for n in notes)
    files = np.stack([sf.read(p, dtype="float32")[0] for p in wavs])
    assert np.all(si_snr(files, outputs) > 40)          # the counted model's outputs (16-bit files)
    assert written[-1].endswith("talk_spectrogram.png") and os.path.getsize(written[-1]) > 1000
    with pytest.raises(separate.InputError, match="talk_s1.wav already exists"):
        separate.separate_file(recording, SeparationTask(), separators, RATE, 8, out, None, None, -20.0)
    # three outputs, then two with --force: the third file of the earlier run goes
    separate.separate_file(recording, SeparationTask(), {3: separators[3]}, RATE, 8, out, None, None, -20.0, force=True)
    assert _outputs(out)[1] == ["talk_s1.wav", "talk_s2.wav", "talk_s3.wav"]
    _, notes = separate.separate_file(recording, SeparationTask(), {2: separators[2]}, RATE, 8, out, None, None, -20.0, force=True)
    assert _outputs(out)[1] == ["talk_s1.wav", "talk_s2.wav"] and any("removed" in n and "talk_s3.wav" in n for n in notes)


def test_count_model_counts_and_the_other_model_separates(checkpoints, separators, recording, tmp_path, capsys):
    """--count-model C3 --model-path C2: the count is C3's active outputs at --threshold-db; C2's
    outputs are written (its loudest one alone when the count is 1)."""
    mixture = sf.read(recording, dtype="float32")[0]
    counted = separators[3](mixture[None])[0].astype(np.float64)
    levels = 10 * np.log10(np.sum(counted ** 2, axis=-1) / np.max(np.sum(counted ** 2, axis=-1)))
    second = np.sort(levels)[-2]
    assert second < -0.01
    threshold = second / 2          # only the loudest output is active
    out = str(tmp_path / "out")
    assert separate.main([recording, "--model-path", checkpoints[2], "--count-model", checkpoints[3],
                          "--threshold-db", f"{threshold:.6f}", "--out-dir", out]) == 0
    assert "1 speaker found (models run: counter: 1 then C=2)" in capsys.readouterr().out
    separated = separators[2](mixture[None])[0]
    files, names = _outputs(out)
    assert names == ["talk_s1.wav"]
    loudest = np.argmax(np.sum(separated.astype(np.float64) ** 2, axis=-1))
    assert si_snr(files[0], separated[loudest]) > 40
