"""The shipped models (pretrained/, pretrained/MODEL_CARD.md): they load strictly, separate and count
speakers they never heard (the bundled test split) about as well as the model card says, and
separate.py uses them, counting the speakers, when no model is given."""
import os

import numpy as np
import pytest
import soundfile as sf

from src.config import load_config
from src.data import corpus
from src.data.layout import find_splits, load_utterance
from src.inference.separation import separate_whole
from src.metrics import score_utterance
from src.runtime.checkpoint import model_config, pretrained_separation_models
from src.tasks import load_counter
from src.tasks.separation import SeparationTask

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIRST = 20     # test mixtures scored here (of 100)
# mean SI-SNRi (dB) of the first FIRST test mixtures, measured when the models were released, less 0.5 dB
# (a loader, an inference graph or a data change that breaks separation falls far below)
MIN_SI_SNRI = {2: 4.32 - 0.5, 3: 3.68 - 0.5}
# the counter's accuracy on the first FIRST test mixtures of each count, measured at release, less 10 %
MIN_COUNTED = 0.80 - 0.10


@pytest.fixture(scope="module")
def test_sets(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus")
    corpus.build_corpus(str(path))
    return {c: find_splits(str(path / f"Libri{c}Mix"), split="test")["test"].utterances[:FIRST] for c in (2, 3)}


@pytest.fixture(scope="module")
def shipped():
    """({C: separate_fn}, {C: config}, the speaker counter)."""
    paths, counter_path = pretrained_separation_models()
    separators, configs = SeparationTask().load_separators(paths, model_config(paths[0]))
    return separators, configs, load_counter(counter_path, configs)


def test_shipped_models_separate_unseen_speakers(test_sets, shipped):
    separators, configs, _ = shipped
    assert sorted(separators) == [2, 3] and all(cfg.sample_rate == 8000 for cfg in configs.values())
    for count, utterances in test_sets.items():
        scores = []
        for utt in utterances:
            mix, src = load_utterance(utt, 8000)
            scores.append(score_utterance(separate_whole(separators[count], mix, count), src, mix, 8000)["si_snri"])
        assert np.mean(scores) >= MIN_SI_SNRI[count], (count, np.mean(scores))


def test_shipped_models_bring_mixtures_to_the_level_they_were_trained_at(shipped):
    """model.input_rms of each shipped model (set when released) is the level its training config
    showed the network: that config's own model.input_rms, or without one the median RMS of the
    mixtures it makes (src/data/mixing.py), within 0.5 dB."""
    _, configs, _ = shipped
    for count, cfg in configs.items():
        train_cfg = load_config(os.path.join(ROOT, "configs", f"swave_{count}spk.yaml"), [
            "data.steps_per_epoch=25", f"data.train_speech={os.path.join(ROOT, 'assets/librispeech_train_8k/train')}"])
        trained_at = train_cfg.model.input_rms
        if trained_at is None:
            levels = [np.sqrt(np.mean(np.square(mix[:n], dtype=np.float64))) for mixes, _, lengths
                      in SeparationTask().train_batches(train_cfg, 1) for mix, n in zip(mixes, lengths)]
            assert len(levels) == 100
            trained_at = np.median(levels)
        assert cfg.model.input_rms is not None
        assert abs(20 * np.log10(cfg.model.input_rms / trained_at)) < 0.5, (count, cfg.model.input_rms, trained_at)


def test_shipped_counter_counts_unseen_mixtures(test_sets, shipped):
    _, _, counter = shipped
    correct = [counter(load_utterance(utt, 8000)[0]) == count for count, utterances in test_sets.items()
               for utt in utterances]
    assert np.mean(correct) >= MIN_COUNTED, np.mean(correct)


def test_separate_without_model_path_uses_the_shipped_models(test_sets, tmp_path, capsys):
    """...and writes the speakers together as loud as the recording (the networks' own outputs are
    about 35 dB louder: each file would be scaled to full scale on its own)."""
    import separate
    mixes = [test_sets[c][0].mix for c in (2, 3)]
    assert separate.main([*mixes, "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for mix in mixes:
        stem = os.path.splitext(os.path.basename(mix))[0]
        written = sorted(n for n in os.listdir(tmp_path) if n.startswith(stem + "_s"))
        assert len(written) in (2, 3) and f"{mix}: {len(written)} speakers found (models run: counter: " in out
        outputs = [sf.read(os.path.join(tmp_path, n), dtype="float64")[0] for n in written]
        energy = sum(np.sum(np.square(o)) for o in outputs)
        assert abs(10 * np.log10(energy / np.sum(np.square(sf.read(mix, dtype="float64")[0])))) < 0.1
        assert max(np.max(np.abs(o)) for o in outputs) < 0.9
