"""Data layer: mini LibriMix generator, layouts and validation, MindRecord splits, training batches."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

import preprocess
from src.audio import read_audio, resample
from src.data.dataset import create_train_dataset, epoch_rows, iterate_utterances
from src.data.layout import DataError, check_split, find_splits, load_utterance
from src.data.mindrecord import read_split_info, write_split
from src.data.mini_librimix import SPEAKERS, build_mini_librimix

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# ---------------------------------------------------------------- helpers
def make_split(folder, num_utts=3, num_speakers=2, rate=8000, length=1600, mix_dir="mix", seed=0):
    """A split folder of float32 WAVs: source k is small noise plus an offset that grows with k
    (so the order s1 < s2 < ... is visible), mix = sum of the sources. Returns the utterance keys."""
    rng = np.random.default_rng(seed)
    keys = [f"utt{i}" for i in range(num_utts)]
    for i, key in enumerate(keys):
        sources = rng.uniform(-0.01, 0.01, (num_speakers, length + 10 * i)).astype(np.float32)
        sources += np.arange(1, num_speakers + 1, dtype=np.float32)[:, None] / (2 * num_speakers ** 2)
        for k, s in enumerate(sources):
            write(os.path.join(folder, f"s{k + 1}", key + ".wav"), s, rate)
        write(os.path.join(folder, mix_dir, key + ".wav"), sources.sum(axis=0), rate)
    return keys


def write(path, signal, rate):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, signal, rate, subtype="FLOAT")


def tree(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, names in os.walk(root) for f in names)


def run_cli(*args):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, os.path.join(REPO, "preprocess.py"), *args],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=120)


def batches(dataset):
    return [tuple(x) for x in dataset.create_tuple_iterator(num_epochs=1, output_numpy=True)]


def rows_of(batch_list, stored):
    """Identify the stored row of every item of uncropped batches (segment longer than every row)."""
    found = []
    for mix, src, lengths in batch_list:
        for b in range(len(mix)):
            n = int(lengths[b])
            assert not mix[b, n:].any() and not src[b, :, n:].any()     # zero padding after the length
            match = [r for r, row in enumerate(stored) if row["length"] == n and np.array_equal(row["mix"], mix[b, :n])]
            assert len(match) == 1
            np.testing.assert_array_equal(src[b, :, :n], stored[match[0]]["src"])
            found.append(match[0])
    return found


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("mini") / "mini_librimix")
    return out, build_mini_librimix(out)


@pytest.fixture(scope="module")
def mini_mr(mini, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("mr") / "mini_mr")
    assert preprocess.main(["--data-dir", os.path.join(mini[0], "Libri2Mix"), "--out-dir", out,
                            "--num-shards", "2"]) == 0
    return out


@pytest.fixture(scope="module")
def stored_train(mini_mr):
    return list(iterate_utterances(os.path.join(mini_mr, "train.mindrecord0"), 8000))


# ---------------------------------------------------------------- mini LibriMix
def test_mini_librimix_is_deterministic_and_consistent(mini, tmp_path):
    root, summary = mini
    assert summary["Libri2Mix"] == {"train": 120, "dev": 20, "test": 20}
    assert summary["Libri3Mix"] == {"train": 60, "dev": 12, "test": 12}
    again = str(tmp_path / "again")
    build_mini_librimix(again)
    files = tree(root)
    assert files == tree(again) and len(files) == 3 * 160 + 4 * 84
    for name in files:   # same samples (the bytes differ: libsndfile stamps float WAVs with the time)
        first, rate = sf.read(os.path.join(root, name), dtype="float32")
        second, rate_again = sf.read(os.path.join(again, name), dtype="float32")
        assert rate == rate_again == 8000 and np.array_equal(first, second)

    for num_speakers in (2, 3):
        for split, speakers in SPEAKERS.items():
            folder = os.path.join(root, f"Libri{num_speakers}Mix", split)
            names = sorted(os.listdir(os.path.join(folder, "mix_clean")))
            for name in names[:5]:
                mix, rate = read_audio(os.path.join(folder, "mix_clean", name))
                sources = [read_audio(os.path.join(folder, f"s{k}", name))[0] for k in range(1, num_speakers + 1)]
                total = sources[0].copy()
                for s in sources[1:]:
                    total += s
                assert rate == 8000 and np.array_equal(mix, total) and np.abs(mix).max() <= 1.0
            # sources come from different speakers of this split only
            for name in names:
                spk = [u.split("-")[0] for u in name[:-4].split("_")]
                assert len(set(spk)) == num_speakers and set(spk) <= set(speakers)


# ---------------------------------------------------------------- layouts
def test_librimix_root_round_trip(mini, mini_mr):
    """Preprocessed mini Libri2Mix reads back equal to the wav files, sample for sample."""
    root = os.path.join(mini[0], "Libri2Mix")
    splits = find_splits(root)
    assert {n: len(s.utterances) for n, s in splits.items()} == {"train": 120, "valid": 20, "test": 20}
    for name in ("train", "valid", "test"):
        info = read_split_info(os.path.join(mini_mr, f"{name}.mindrecord1"))
        assert info["num_rows"] == len(splits[name].utterances) and info["num_speakers"] == 2
        rows = {r["key"]: r for r in iterate_utterances(os.path.join(mini_mr, name), 8000, num_speakers=2)}
        assert sorted(rows) == sorted(u.key for u in splits[name].utterances)
        for utt in splits[name].utterances:
            row = rows[utt.key]
            mix, src = load_utterance(utt, 8000)
            assert row["mix"].dtype == np.float32 and row["src"].shape == (2, len(mix))
            assert np.array_equal(row["mix"], mix) and np.array_equal(row["src"], src)
            assert row["length"] == len(mix) and row["sample_rate"] == 8000
    folder_rows = list(iterate_utterances(root, 8000, split="valid"))
    mr_rows = {r["key"]: r for r in iterate_utterances(os.path.join(mini_mr, "valid.json"), 8000)}
    assert len(folder_rows) == 20 and all(np.array_equal(r["src"], mr_rows[r["key"]]["src"]) for r in folder_rows)


def test_librimix_three_speakers(mini, tmp_path):
    out = str(tmp_path / "mr3")
    assert preprocess.main(["--data-dir", os.path.join(mini[0], "Libri3Mix"), "--out-dir", out,
                            "--split", "test", "--num-shards", "3"]) == 0
    assert sorted(os.listdir(out)) == ["test.json"] + [f"test.mindrecord{k}{e}" for k in range(3) for e in ("", ".db")]
    rows = list(iterate_utterances(os.path.join(out, "test.mindrecord2"), 8000, num_speakers=3))
    assert len(rows) == 12
    for row in rows:
        name = row["key"] + ".wav"
        src = np.stack([read_audio(os.path.join(mini[0], "Libri3Mix", "test", f"s{k}", name))[0] for k in (1, 2, 3)])
        assert np.array_equal(row["src"], src)
    with pytest.raises(DataError, match="3 sources per mixture"):
        create_train_dataset(os.path.join(out, "test.json"), 8000, 2, 0, 0, num_speakers=2)
    mixed = batches(create_train_dataset(os.path.join(out, "test"), 8000, 3, 0, 0, num_speakers=3,
                                         dynamic_mixing=True))
    assert len(mixed) == 4 and mixed[0][1].shape == (3, 3, 8000)
    assert all(np.allclose(mix, src.sum(axis=1), atol=1e-6) for mix, src, _ in mixed)


def test_svoice_and_single_split_layouts(tmp_path):
    root = tmp_path / "svoice"
    for part, n in (("tr", 4), ("cv", 2), ("tt", 3)):
        make_split(str(root / part), num_utts=n, num_speakers=3)
    splits = find_splits(str(root))
    assert {n: (len(s.utterances), s.num_speakers) for n, s in splits.items()} == \
        {"train": (4, 3), "valid": (2, 3), "test": (3, 3)}
    out = str(tmp_path / "out")
    assert preprocess.main(["--data-dir", str(root), "--out-dir", out, "--train-name", "tr_set",
                            "--num-speakers", "3", "--num-shards", "8"]) == 0
    info = read_split_info(os.path.join(out, "tr_set"))
    assert info["num_rows"] == 4 and len(info["files"]) == 4        # shards capped at the row count
    rows = {r["key"]: r for r in iterate_utterances(info["manifest_path"], 8000)}
    mix, _ = read_audio(str(root / "tr" / "mix" / "utt3.wav"))
    assert np.array_equal(rows["utt3"]["mix"], mix)

    single = tmp_path / "my_test"
    make_split(str(single), num_utts=2, mix_dir="mix_clean")
    assert list(find_splits(str(single))) == ["my_test"]
    assert preprocess.main(["--data-dir", str(single), "--out-dir", out, "--split", "test",
                            "--test-name", "eval"]) == 0
    assert read_split_info(os.path.join(out, "eval.json"))["num_rows"] == 2

    # train-360 is preferred over train-100; a split folder called "train" is accepted
    lm = tmp_path / "librimix"
    make_split(str(lm / "train-100"), num_utts=1, mix_dir="mix_clean")
    make_split(str(lm / "train-360"), num_utts=2, mix_dir="mix_clean")
    make_split(str(lm / "dev"), num_utts=1, mix_dir="mix_both")
    splits = find_splits(str(lm))
    assert splits["train"].folder.endswith("train-360") and len(splits["train"].utterances) == 2
    assert "mix_both" in splits["valid"].problems[0]
    assert len(find_splits(str(lm), mix_type="mix_both", split="valid")["valid"].utterances) == 1


def test_ten_speakers_in_numeric_order(tmp_path):
    folder = str(tmp_path / "ten")
    make_split(folder, num_utts=2, num_speakers=10)
    out = str(tmp_path / "out")
    assert preprocess.main(["--data-dir", folder, "--out-dir", out, "--split", "train", "--num-shards", "1"]) == 0
    rows = list(iterate_utterances(os.path.join(out, "train"), 8000, num_speakers=10))
    for row in rows:
        for k in range(10):   # row k is s<k+1>: numeric order, not s1, s10, s2, ...
            expected, _ = read_audio(os.path.join(folder, f"s{k + 1}", row["key"] + ".wav"))
            assert np.array_equal(row["src"][k], expected)
        assert np.all(np.diff(row["src"].mean(axis=1)) > 0)
    problems = find_splits(folder, num_speakers=2)["ten"].problems
    assert len(problems) == 1 and "10 source folders (s1..s10)" in problems[0]


# ---------------------------------------------------------------- bad input
def _missing_partner(folder):
    os.remove(os.path.join(folder, "s2", "utt1.wav"))
    return os.path.join(folder, "mix", "utt1.wav")


def _extra_source(folder):
    write(os.path.join(folder, "s1", "stray.wav"), np.zeros(100, np.float32), 8000)
    return os.path.join(folder, "s1", "stray.wav")


def _length_mismatch(folder):
    write(os.path.join(folder, "s2", "utt1.wav"), np.zeros(100, np.float32), 8000)
    return os.path.join(folder, "s2", "utt1.wav")


def _unreadable(folder):
    with open(os.path.join(folder, "s1", "utt0.wav"), "wb") as f:
        f.write(b"RIFF not really a wave file")
    return os.path.join(folder, "s1", "utt0.wav")


def _empty(folder):
    write(os.path.join(folder, "mix", "utt2.wav"), np.zeros(0, np.float32), 8000)
    return os.path.join(folder, "mix", "utt2.wav")


def _nan(folder):
    path = os.path.join(folder, "s2", "utt2.wav")
    signal, _ = read_audio(path)
    signal[10] = np.nan
    write(path, signal, 8000)
    return path


def _stereo(folder):
    path = os.path.join(folder, "mix", "utt0.wav")
    signal, _ = read_audio(path)
    write(path, np.stack([signal, signal], axis=1), 8000)
    return path


def _wrong_rate(folder):
    path = os.path.join(folder, "s1", "utt2.wav")
    write(path, read_audio(path)[0], 16000)
    return path


@pytest.mark.parametrize("defect, words", [
    (_missing_partner, "no source file"), (_extra_source, "no mixture"), (_length_mismatch, "samples but"),
    (_unreadable, "cannot be read"), (_empty, "empty"), (_nan, "NaN"), (_stereo, "2 channels"),
    (_wrong_rate, "16000 Hz")])
def test_bad_input_is_refused_by_the_cli(tmp_path, defect, words):
    folder = str(tmp_path / "split")
    make_split(folder)
    bad_file = defect(folder)
    out = str(tmp_path / "out")
    result = run_cli("--data-dir", folder, "--out-dir", out, "--split", "test")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert bad_file in result.stderr and words in result.stderr
    assert not os.path.exists(out)


def test_all_problems_reported_at_once_and_old_output_kept(tmp_path):
    folder = str(tmp_path / "split")
    make_split(folder, num_utts=4)
    out = str(tmp_path / "out")
    assert preprocess.main(["--data-dir", folder, "--out-dir", out, "--split", "test", "--num-shards", "2"]) == 0
    before = {f: open(os.path.join(out, f), "rb").read() for f in os.listdir(out)}
    bad = [_nan(folder), _missing_partner(folder), _stereo(folder)]
    result = run_cli("--data-dir", folder, "--out-dir", out, "--split", "test")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert all(path in result.stderr for path in bad) and "3 problems" in result.stderr
    assert {f: open(os.path.join(out, f), "rb").read() for f in os.listdir(out)} == before


def test_nan_found_while_writing_leaves_nothing(tmp_path):
    """NaN is only visible in the samples: found during staging, which is then removed."""
    folder = str(tmp_path / "split")
    make_split(folder)
    nan_file = _nan(folder)
    splits = find_splits(folder)
    assert check_split(splits["split"], 8000) == []                 # headers are fine
    with pytest.raises(DataError, match="NaN") as err:
        write_split(splits["split"].utterances, str(tmp_path / "out"), "test", 2, 8000)
    assert nan_file in str(err.value)
    assert not os.path.exists(tmp_path / "out")


def test_resample_and_downmix(tmp_path):
    folder = str(tmp_path / "split16k")
    make_split(folder, num_utts=2, rate=16000, length=4001)
    path = os.path.join(folder, "mix", "utt0.wav")
    stereo, _ = read_audio(path)
    write(path, np.stack([stereo, 0.5 * stereo], axis=1), 16000)
    out = str(tmp_path / "out")
    result = run_cli("--data-dir", folder, "--out-dir", out, "--split", "test", "--downmix")
    assert result.returncode == 2 and "expected 8000 Hz" in result.stderr and "pass the resample option" in result.stderr
    assert preprocess.main(["--data-dir", folder, "--out-dir", out, "--split", "test",
                            "--resample", "--downmix"]) == 0
    rows = {r["key"]: r for r in iterate_utterances(os.path.join(out, "test.mindrecord0"), 8000)}
    expected_mix = resample(0.75 * stereo, 16000, 8000)
    np.testing.assert_allclose(rows["utt0"]["mix"], expected_mix, atol=1e-7)
    s2, _ = sf.read(os.path.join(folder, "s2", "utt1.wav"), dtype="float32")
    assert np.array_equal(rows["utt1"]["src"][1], resample(s2, 16000, 8000))
    assert rows["utt0"]["length"] == len(expected_mix) == 2001


def test_rewrite_replaces_old_shards_and_path_forms(tmp_path):
    folder = str(tmp_path / "split")
    make_split(folder, num_utts=12, length=200)
    utts = find_splits(folder)["split"].utterances
    out = str(tmp_path / "out")
    info = write_split(utts, out, "train", 11, 8000)     # FileWriter zero-pads: .mindrecord00 .. 10
    assert [os.path.basename(f) for f in info["files"]] == [f"train.mindrecord{k:02d}" for k in range(11)]
    assert len(list(iterate_utterances(os.path.join(out, "train.mindrecord0"), 8000))) == 12
    info = write_split(utts[:3], out, "train", 1, 8000)
    assert sorted(os.listdir(out)) == ["train.json", "train.mindrecord0", "train.mindrecord0.db"]
    for form in ("train", "train.mindrecord0", "train.json", "train.mindrecord"):
        assert read_split_info(os.path.join(out, form))["num_rows"] == 3
    assert len(list(iterate_utterances(info["files"][0], 8000))) == 3
    with open(info["manifest_path"]) as f:
        assert json.load(f)["utterances"][2]["mix"] == os.path.abspath(utts[2].mix)
    with pytest.raises(DataError, match="missing"):
        read_split_info(os.path.join(out, "valid.mindrecord0"))
    with pytest.raises(DataError, match="not 16000 Hz"):
        next(iterate_utterances(os.path.join(out, "train"), 16000))


# ---------------------------------------------------------------- training batches
def sampler_order(num_rows, seed, epoch, num_shards=1, shard_id=0):
    """The documented epoch order, written out: a permutation drawn from default_rng([seed, epoch]),
    extended by its first rows to a multiple of num_shards, dealt to the shards in turn."""
    perm = list(np.random.default_rng([seed, epoch]).permutation(num_rows))
    perm += perm[:(-num_rows) % num_shards]
    return [int(perm[i]) for i in range(shard_id, len(perm), num_shards)]


def test_shards_cover_every_row_once_in_the_sampler_order(mini_mr, stored_train):
    path = os.path.join(mini_mr, "train.mindrecord0")
    seen = []
    for shard in (0, 1):
        ds = create_train_dataset(path, 40000, 1, seed=3, epoch=1, num_speakers=2, num_shards=2, shard_id=shard)
        found = rows_of(batches(ds), stored_train)
        assert found == sampler_order(120, 3, 1, 2, shard)
        assert found == epoch_rows(120, 3, 1, 2, shard).tolist()
        seen += found
    assert sorted(seen) == list(range(120)) and seen != sorted(seen)     # every row once, shuffled
    assert sampler_order(120, 3, 2) != sampler_order(120, 3, 1)         # a new order every epoch
    # uneven: 20 rows on 3 shards -> 7 each, every row at least once, the first row of the order twice
    rows = [epoch_rows(20, 3, 1, 3, s).tolist() for s in range(3)]
    assert rows == [sampler_order(20, 3, 1, 3, s) for s in range(3)]
    assert [len(r) for r in rows] == [7, 7, 7] and set(sum(rows, [])) == set(range(20))


def test_batches_repeat_for_seed_and_epoch_and_pad_short_rows(mini_mr, stored_train):
    path = os.path.join(mini_mr, "train")
    first = batches(create_train_dataset(path, 12000, 4, seed=7, epoch=2, num_speakers=2))
    again = batches(create_train_dataset(path, 12000, 4, seed=7, epoch=2, num_speakers=2, num_workers=2))
    other = batches(create_train_dataset(path, 12000, 4, seed=7, epoch=3, num_speakers=2))
    assert len(first) == 30 and len(first[0]) == 3
    assert first[0][0].shape == (4, 12000) and first[0][1].shape == (4, 2, 12000) and first[0][2].dtype == np.int32
    assert all(np.array_equal(a, b) for x, y in zip(first, again) for a, b in zip(x, y))
    assert not np.array_equal(first[0][0], other[0][0])
    # every item is a contiguous crop of its stored row (rows in the sampler's order)
    order = sampler_order(120, 7, 2)
    for i, (mix, src, lengths) in enumerate(first[:5]):
        for b in range(4):
            row = stored_train[order[4 * i + b]]
            starts = [s for s in np.flatnonzero(row["mix"] == mix[b, 0]) if s + 12000 <= row["length"]]
            assert any(np.array_equal(row["mix"][s:s + 12000], mix[b]) and
                       np.array_equal(row["src"][:, s:s + 12000], src[b]) for s in starts)
            assert lengths[b] == 12000
    # segment longer than every row: nothing dropped, zero-padded, lengths are the real lengths
    long = batches(create_train_dataset(path, 40000, 8, seed=7, epoch=2, num_speakers=2))
    assert len(long) == 15 and all((b[2] < 40000).all() for b in long)
    assert sorted(rows_of(long, stored_train)) == list(range(120))


def test_dynamic_mixing(mini_mr):
    path = os.path.join(mini_mr, "train")
    args = dict(segment_samples=16000, batch_size=4, seed=5, epoch=0, num_speakers=2)
    plain = batches(create_train_dataset(path, **args))
    mixed = batches(create_train_dataset(path, dynamic_mixing=True, dm_gain_db=2.5, **args))
    mixed_again = batches(create_train_dataset(path, dynamic_mixing=True, dm_gain_db=2.5, num_workers=2, **args))
    mixed_next = batches(create_train_dataset(path, dynamic_mixing=True, **dict(args, epoch=1)))
    assert all(np.array_equal(a, b) for x, y in zip(mixed, mixed_again) for a, b in zip(x, y))
    assert not np.array_equal(mixed[0][0], mixed_next[0][0])
    low, high = 10 ** (-2.5 / 20), 10 ** (2.5 / 20)
    for (pmix, psrc, plen), (mix, src, lengths) in zip(plain[:6], mixed[:6]):
        np.testing.assert_allclose(mix, src.sum(axis=1), atol=1e-6)
        for i in range(4):
            n = int(lengths[i])
            origins = []
            for k in range(2):
                # which plain item, scaled by an allowed gain, is this source?
                hits = [j for j in range(4) if psrc[j, k, :n].any() and
                        np.allclose(src[i, k, :n], psrc[j, k, :n] * (src[i, k, :n] @ psrc[j, k, :n] /
                                                                   (psrc[j, k, :n] @ psrc[j, k, :n])), atol=1e-6)]
                assert len(hits) == 1
                gain = np.abs(src[i, k, :n]).max() / np.abs(psrc[hits[0], k, :n]).max()
                assert low - 1e-4 <= gain <= high + 1e-4
                origins.append(hits[0])
            assert origins[0] == i and origins[1] != i        # partner from another row
            assert n == min(plen[j] for j in origins) and not src[i, :, n:].any()
    with pytest.raises(ValueError, match="batch_size"):
        create_train_dataset(path, 16000, 1, 0, 0, 2, dynamic_mixing=True)
