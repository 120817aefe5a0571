"""Offline inference files: the model inputs of every test mixture (or enhancement pair) as raw .bin
files with an index, and the replay of the stored results as a separator (or masker), so that the
results are scored exactly as evaluate.py scores a checkpoint. The runners that produce the
results are in src/inference/runners.py; what each task records, checks and scores is its
`write_offline_inputs`, `check_offline_inputs` / `check_offline_output` and `score_offline`
(src/tasks/).

Pipeline (scripts/run_infer_310.sh):
1. `preprocess.py --infer-bins DIR` -> `write_input_bins`: every input a separator would get from
   evaluate.py for each test mixture, one raw float32 file each, plus `DIR/index.json`.
2. `infer.py` -> src/inference/runners.py (`open_runner` + `run_bins`): each .bin through the
   model (MindSpore Lite when installed, else MindSpore's GraphCell), one result file per input.
3. `postprocess.py` -> `ReplaySeparator` + src/evaluation: evaluate.py's own separation and
   scoring run again, with the stored results standing in for the model.

The inputs of step 1 are recorded by running the same call evaluate.py makes
(src.inference.windows.separate) with a recording stand-in for the model; step 3 replays the
results through the same calls. So the window layout,
the speaker alignment across windows, the cross-fades and the scores are the code of
src/inference/ and src/evaluation/, not a copy of it.

- Dynamic-length graph (`export.py --length 0`): the windows of evaluate.py (its
  --window-seconds / --overlap-seconds defaults); shorter mixtures are one input of their own length. Same numbers as evaluate.py.
- Fixed-length graph of N samples: windows of N samples; mixtures shorter than N and the last
  window are zero-padded to N (the estimate is cropped). Not the same numbers as evaluate.py:
  the network sees shorter context and the windows are stitched (see the README's tolerance).

Enhancement (the mask network, export.py of an enhancement checkpoint): `write_enhancement_bins`
records the network inputs of every fixed test pair of the config
(src.data.enhancement.enhancement_pairs) by running the Enhancer of src/inference/enhancement.py
with a recording masker (STFT and features on the host); postprocess.py replays the stored masks
through the same Enhancer (`ReplayMasker`: mask x noisy spectrum, inverse STFT) and scores the
pairs with evaluate.py's code. A dynamic frame axis only: every pair is one input of its own
length, so the numbers are evaluate.py's.

Counting (a speaker-counting network, export.py of a counting checkpoint): `write_counting_bins`
records the log-mel features of every window the counter (src.inference.speaker_count.
ClassifierCounter) scores, for the mixtures of every speaker count (by running it with a recording
network); postprocess.py runs the same counter with the stored logits (`ReplayClassifier`) and
reports evaluate.py's counting accuracy and confusion matrix.

Files:
  DIR/index.json      {"version", "id", "task" (separation | enhancement | counting), "sample_rate",
                       "num_speakers", "fixed_length" (0: dynamic), "window", "overlap" (samples;
                       null: whole inputs), "data" (separation: {path, split, mix_type, resample,
                       downmix}; counting the same with a list of paths; enhancement:
                       src.data.enhancement.enhancement_pairs' description),
                       "utterances": [{key, length, sha1, bins: [names]}] (counting: also num_speakers),
                       "bins": {name: {"inputs": [{file, shape, dtype}], sha1, samples | frames}}
                       enhancement and counting also: "config" (the model's config);
                       enhancement: "stft" {n_fft, hop, win}}
  DIR/<name>.bin      separation: the k-th input of an utterance (`<key>_<k>.bin`), float32 (1, samples);
                      enhancement: features of a pair (`<key>_<snr>dB.bin`), float32 (1, frames, bins),
                      and its frame_lengths (`<key>_<snr>dB_lengths.bin`), int32 (1,);
                      counting: features of the k-th window of an utterance (`<key>_<k>.bin`),
                      float32 (1, frames, n_mels)
                      (all raw little-endian; an entry's inputs in the graph's input order)
  RESULT/<name>.bin   the model's output for an entry: raw little-endian float32, separation
                      (1, C, samples), enhancement the mask (1, frames, bins), counting the logits
                      (1, counts)
  RESULT/run.json     what wrote the results: model, backend, device, index id, timing
"""
import glob
import hashlib
import json
import os
import uuid

import numpy as np

from src.config import Config
from src.config_schema import TASKS
from src.data.dataset import chain_utterances, open_utterances, sized
from src.data.enhancement import enhancement_pairs
from src.errors import UserError
from src.features import StftConfig
from src.inference.enhancement import Enhancer
from src.inference.windows import separate

INDEX_NAME = "index.json"
RUN_NAME = "run.json"
INDEX_VERSION = 2
BIN_DTYPE = np.dtype("<f4")
INPUT_DTYPES = {"float32": np.dtype("<f4"), "int32": np.dtype("<i4")}


class OfflineInferenceError(UserError):
    """Missing or mismatched offline-inference files; the message names the file and the fix."""


def _sha1(samples):
    return hashlib.sha1(np.ascontiguousarray(samples, dtype=BIN_DTYPE).tobytes()).hexdigest()


def _fit_length(row, fixed_length):
    """A separator input as the graph takes it: zero-padded to `fixed_length` (0: unchanged)."""
    row = np.asarray(row, dtype=np.float32)
    if not fixed_length or len(row) == fixed_length:
        return row
    if len(row) > fixed_length:
        raise OfflineInferenceError(f"an input of {len(row)} samples is longer than the graph's "
                                    f"{fixed_length}: the window must not exceed the fixed length")
    return np.concatenate([row, np.zeros(fixed_length - len(row), np.float32)])


class _InputRecorder:
    """Stand-in separator: keeps every input row (as the graph takes it) and returns zeros."""

    def __init__(self, num_speakers, fixed_length):
        self.num_speakers, self.fixed_length = num_speakers, fixed_length
        self.inputs = []

    def __call__(self, batch):
        self.inputs.extend(_fit_length(row, self.fixed_length) for row in batch)
        return np.zeros((batch.shape[0], self.num_speakers, batch.shape[1]), np.float32)


def write_input_bins(utterances, out_dir, sample_rate, fixed_length=0, window=None, overlap=None, data=None,
                     max_utterances=0, log=print):
    """Write the model inputs for every utterance as .bin files + `out_dir/index.json`.

    utterances: dicts {key, mix (T,), src (C, T)} (src.data.dataset.iterate_utterances).
    fixed_length, window, overlap: see src.inference.windows.plan_windows. data: where the utterances came from
    (path, split, mix_type, resample, downmix), so postprocess.py reads the same references.
    max_utterances: stop after this many (0: all). Returns the index (dict).
    """
    if fixed_length and window != fixed_length:
        raise OfflineInferenceError(f"a fixed-length graph of {fixed_length} samples needs windows of "
                                    f"{fixed_length}, not {window}")
    index = _new_index(out_dir, "separation", sample_rate, data, fixed_length=int(fixed_length), window=window,
                       overlap=overlap)
    total_samples = 0
    for count, utt in enumerate(utterances):
        if max_utterances and count >= max_utterances:
            break
        mixture, num_speakers = np.asarray(utt["mix"], np.float32), int(utt["src"].shape[0])
        if index["num_speakers"] is None:
            index["num_speakers"] = num_speakers
        elif num_speakers != index["num_speakers"]:
            raise OfflineInferenceError(f"{utt['key']}: has {num_speakers} sources, the utterances before it "
                                        f"{index['num_speakers']}; one model separates one speaker count")
        recorder = _InputRecorder(num_speakers, fixed_length)
        separate(recorder, mixture, num_speakers, window, overlap)
        names = []
        for k, row in enumerate(recorder.inputs):
            names.append(_add_entry(index, out_dir, f"{utt['key']}_{k:03d}", [row[None]], samples=int(len(row))))
            total_samples += len(row)
        index["utterances"].append({"key": utt["key"], "length": int(len(mixture)), "sha1": _sha1(mixture),
                                    "bins": names})
    shape = f"windows of {fixed_length} samples" if fixed_length else "any length"
    return _save_index(index, out_dir, f"{(data or {}).get('path', 'the data')}: no utterances to write",
                       f"{len(index['bins'])} inputs ({shape}, {total_samples / sample_rate:.1f} s) of "
                       f"{len(index['utterances'])} mixtures", log)


class _MaskInputRecorder:
    """Stand-in masker for the Enhancer: keeps its inputs (features, frame_lengths), returns zeros."""

    def __init__(self):
        self.inputs = []

    def __call__(self, features, frame_lengths):
        self.inputs.append((np.asarray(features, np.float32), np.asarray(frame_lengths, np.int32)))
        return np.zeros(features.shape, np.float32)


def write_enhancement_bins(cfg, out_dir, split="test", max_utterances=0, log=print):
    """Write the mask network's inputs for every fixed pair of an enhancement config's `split`
    (src.evaluation.enhancement_pairs, as evaluate.py scores them) + `out_dir/index.json`.
    max_utterances: only the first N clean utterances (each at every SNR; 0 = all).
    Returns the index (dict)."""
    stft_config = StftConfig.from_cfg(cfg)
    pairs, data = enhancement_pairs(cfg, split, max_utterances=max_utterances)
    index = _new_index(out_dir, "enhancement", cfg.sample_rate, data, config=cfg.to_dict(),
                       stft={"n_fft": stft_config.n_fft, "hop": stft_config.hop, "win": stft_config.win})
    total_frames = 0
    for pair in pairs:
        recorder = _MaskInputRecorder()
        noisy = pair.noisy
        Enhancer(recorder, stft_config)(noisy)
        (features, frame_lengths), = recorder.inputs
        key = f"{pair.key}_{pair.snr_db:g}dB"
        name = _add_entry(index, out_dir, key, [features, frame_lengths], suffixes=["lengths"],
                          frames=int(features.shape[1]))
        index["utterances"].append({"key": key, "length": int(len(noisy)), "sha1": _sha1(noisy), "bins": [name]})
        total_frames += features.shape[1]
    return _save_index(index, out_dir, f"{data['clean']}: no pairs to write",
                       f"the network inputs (features + frame lengths, {total_frames} frames) of "
                       f"{len(index['utterances'])} pairs ({len(data['snrs_db'])} SNRs)", log)


class _FeatureRecorder:
    """Stand-in counting network: keeps its inputs (features), returns zero logits."""

    def __init__(self, num_counts):
        self.num_counts, self.inputs = num_counts, []

    def __call__(self, features):
        self.inputs.append(np.asarray(features, np.float32))
        return np.zeros((1, self.num_counts), np.float32)


def write_counting_bins(utterances, out_dir, counter_of, cfg, data, max_utterances=0, log=print):
    """Write a counting network's inputs for every utterance (the features of each window its
    counter scores) + `out_dir/index.json`.

    utterances: dicts {key, mix (T,), src (C, T)} of any speaker counts; counter_of: `scores_fn ->
    counter` (src.inference.speaker_count.ClassifierCounter of the model's config `cfg`, which the
    index records so that postprocess.py builds the same counter); data: where the utterances came
    from (path: a list, split, mix_type, resample, downmix). Returns the index (dict)."""
    index = _new_index(out_dir, "counting", cfg.sample_rate, data, config=cfg.to_dict())
    total_frames = 0
    for count, utt in enumerate(utterances):
        if max_utterances and count >= max_utterances:
            break
        mixture = np.asarray(utt["mix"], np.float32)
        recorder = _FeatureRecorder(len(cfg.model.speaker_counts))
        counter_of(recorder)(mixture)
        names = [_add_entry(index, out_dir, f"{utt['key']}_{k:03d}", [features], frames=int(features.shape[1]))
                 for k, features in enumerate(recorder.inputs)]
        total_frames += sum(features.shape[1] for features in recorder.inputs)
        index["utterances"].append({"key": utt["key"], "num_speakers": int(utt["src"].shape[0]),
                                    "length": int(len(mixture)), "sha1": _sha1(mixture), "bins": names})
    return _save_index(index, out_dir, f"{', '.join(data['path'])}: no utterances to write",
                       f"the counting network's inputs ({len(index['bins'])} windows, {total_frames} frames) of "
                       f"{len(index['utterances'])} mixtures", log)


def write_json(path, obj):
    """Write `obj` as JSON to `path` atomically."""
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1)
    os.replace(path + ".tmp", path)


def _new_index(out_dir, task, sample_rate, data, **fields):
    """An empty index for `out_dir` (created; old .bin files of an earlier index removed)."""
    os.makedirs(out_dir, exist_ok=True)
    if os.path.isfile(os.path.join(out_dir, INDEX_NAME)):  # a bin folder of ours: drop the old inputs
        for old in glob.glob(os.path.join(out_dir, "*.bin")):
            os.remove(old)
    index = {"version": INDEX_VERSION, "id": uuid.uuid4().hex, "task": task, "sample_rate": int(sample_rate),
             "num_speakers": None, "fixed_length": 0, "window": None, "overlap": None, "data": data or {},
             "utterances": [], "bins": {}}
    index.update(fields)
    return index


def _save_index(index, out_dir, nothing_written, written, log):
    """Write `out_dir/index.json` and log what was `written` -> the index; OfflineInferenceError
    `nothing_written` when it lists no utterance."""
    if not index["utterances"]:
        raise OfflineInferenceError(nothing_written)
    write_json(os.path.join(out_dir, INDEX_NAME), index)
    log(f"wrote {written} to {out_dir} (+ {INDEX_NAME})")
    return index


def _add_entry(index, out_dir, name, arrays, suffixes=(), **info):
    """Write the inputs of one model call (`arrays`, in the graph's input order: the first as
    `<name>.bin`, the others as `<name>_<suffix>.bin`) and register them in the index as entry
    `<name>.bin` with `info` and the sha1 of the first input (the replay finds results by it)."""
    files = [f"{name}.bin"] + [f"{name}_{suffix}.bin" for suffix in suffixes]
    if files[0] in index["bins"]:
        raise OfflineInferenceError(f"two inputs would both be written to {files[0]}: utterance names must be "
                                    "unique")
    inputs = []
    for file, array in zip(files, arrays):
        dtype = str(array.dtype)
        if dtype not in INPUT_DTYPES:
            raise OfflineInferenceError(f"{file}: inputs are float32 or int32, not {dtype}")
        array.astype(INPUT_DTYPES[dtype]).tofile(os.path.join(out_dir, file))
        inputs.append({"file": file, "shape": [int(d) for d in array.shape], "dtype": dtype})
    index["bins"][files[0]] = {"inputs": inputs, "sha1": _sha1(arrays[0]), **info}
    return files[0]


def check_frames_graph(input_shape, width, model_path, bin_dir, model, items):
    """Refuse a graph that does not take `(1, any frames, width)` features, as the bins of `bin_dir`
    (of `model`, e.g. "a counting model"; whole `items` of any length) are."""
    if len(input_shape) != 3 or input_shape[0] not in (1, -1) or input_shape[2] != width:
        raise OfflineInferenceError(
            f"{model_path}: takes inputs of shape {input_shape}, but {bin_dir} holds features (1, frames, {width}) "
            f"of {model}; export that model's checkpoint with export.py")
    if input_shape[1] != -1:
        raise OfflineInferenceError(
            f"{model_path}: a graph of exactly {input_shape[1]} frames, but {bin_dir} holds whole {items} of any "
            "length; export the network with a dynamic frame axis (export.py without --length)")


def read_index(bin_dir):
    """The index of a bin folder; OfflineInferenceError when missing, unreadable or incomplete."""
    path = os.path.join(bin_dir, INDEX_NAME)
    if not os.path.isfile(path):
        found = len(glob.glob(os.path.join(bin_dir, "*.bin"))) if os.path.isdir(bin_dir) else 0
        what = f"{found} .bin files but no {INDEX_NAME}" if found else "no preprocessed .bin files"
        raise OfflineInferenceError(f"{bin_dir}: {what} (write them with preprocess.py --infer-bins {bin_dir}, "
                                    "or run_infer_310.sh with NEED_PREPROCESS=y)")
    try:
        with open(path, encoding="utf-8") as f:
            index = json.load(f)
        keys_missing = [k for k in ("version", "id", "task", "sample_rate", "fixed_length", "window", "overlap",
                                    "utterances", "bins") if k not in index]
    except (ValueError, TypeError) as err:
        raise OfflineInferenceError(f"{path}: not an offline-inference index ({err})") from None
    if keys_missing or index["version"] != INDEX_VERSION:
        raise OfflineInferenceError(f"{path}: not an offline-inference index of version {INDEX_VERSION} "
                                    f"(missing {', '.join(keys_missing) or 'nothing'}, version {index.get('version')}); "
                                    "preprocess again")
    if index["task"] not in TASKS:
        raise OfflineInferenceError(f"{path}: task {index['task']!r} is not one of {', '.join(TASKS)}")
    missing = [spec["file"] for info in index["bins"].values() for spec in info["inputs"]
               if not os.path.isfile(os.path.join(bin_dir, spec["file"]))]
    if missing:
        raise OfflineInferenceError(f"{bin_dir}: {len(missing)} .bin file(s) listed in {INDEX_NAME} are missing "
                                    f"(first: {missing[0]}); preprocess again")
    return index


def read_inputs(bin_dir, info):
    """The inputs of one index entry, numpy arrays of their recorded shapes and dtypes."""
    arrays = []
    for spec in info["inputs"]:
        path = os.path.join(bin_dir, spec["file"])
        data = np.fromfile(path, dtype=INPUT_DTYPES[spec["dtype"]])
        if data.size != int(np.prod(spec["shape"])):
            raise OfflineInferenceError(f"{path}: {data.size} {spec['dtype']} values, expected shape {spec['shape']}; "
                                        "preprocess again")
        arrays.append(data.reshape(spec["shape"]).astype(spec["dtype"]))
    return arrays


def read_bin(path, samples, num_channels=None):
    """A raw float32 file -> `(1, samples)`, or `(1, C, samples)` with C = size / samples
    (num_channels: the C it must have, or None to accept any whole number)."""
    data = np.fromfile(path, dtype=BIN_DTYPE)
    if num_channels is None:
        if samples <= 0 or data.size == 0 or data.size % samples:
            raise OfflineInferenceError(f"{path}: {data.size} float32 values are not (1, C, {samples}) for any C")
        return data.reshape(1, data.size // samples, samples)
    if data.size != num_channels * samples:
        raise OfflineInferenceError(f"{path}: {data.size} float32 values, expected {num_channels * samples} "
                                    f"(1 x {samples} samples)")
    return data.reshape(1, samples)


def run_meta(run):
    """What ran the offline results (run.json), for a report's meta."""
    return {"model": run["model"], "backend": run["backend"], "device": run["device"],
            "input_shape": run["input_shape"], "real_time_factor": run["real_time_factor"]}


def read_run(result_dir, index, bin_dir):
    """run.json of a result folder, checked to belong to the index of `bin_dir`."""
    path = os.path.join(result_dir, RUN_NAME)
    if not os.path.isfile(path):
        raise OfflineInferenceError(f"{result_dir}: no {RUN_NAME}, so no complete inference results here "
                                    f"(run infer.py --bin-dir {bin_dir} --result-dir {result_dir})")
    with open(path, encoding="utf-8") as f:
        run = json.load(f)
    if run.get("index_id") != index["id"]:
        raise OfflineInferenceError(f"{result_dir}: the results are of other inputs than those now in {bin_dir} "
                                    "(preprocessed again since); run infer.py again")
    missing = [n for n in index["bins"] if not os.path.isfile(os.path.join(result_dir, n))]
    if missing:
        raise OfflineInferenceError(f"{result_dir}: {len(missing)} result file(s) missing (first: {missing[0]}); "
                                    "run infer.py again")
    if index.get("num_speakers") and run.get("num_outputs") != index["num_speakers"]:
        raise OfflineInferenceError(f"{run.get('model')}: separates {run.get('num_outputs')} speakers but the data "
                                    f"in {bin_dir} has {index['num_speakers']} sources per mixture")
    return run


class ReplaySeparator:
    """Separator `(batch, T) -> (batch, C, T)` that returns the stored model outputs for the inputs
    preprocess.py wrote, found by content (inputs shorter than a fixed-length graph are padded
    first, as when they were written). An input that was not written is an error, not a guess."""

    def __init__(self, index, result_dir):
        self.index, self.result_dir = index, result_dir
        self.fixed_length = index["fixed_length"]
        self.by_content = {info["sha1"]: (name, info["samples"]) for name, info in index["bins"].items()}

    def __call__(self, batch):
        outputs = []
        for row in np.asarray(batch, dtype=np.float32):
            fitted = _fit_length(row, self.fixed_length)
            found = self.by_content.get(_sha1(fitted))
            if found is None:
                raise OfflineInferenceError(
                    f"an input of {len(row)} samples is not among the preprocessed inputs (index {self.index['id']}): "
                    "the data, window or overlap differ from what preprocess.py used; preprocess again")
            name, samples = found
            outputs.append(read_bin(os.path.join(self.result_dir, name), samples)[0, :, :len(row)])
        return np.stack(outputs)


def indexed_utterances(index, data_path=None):
    """The utterances of the index, read again from their data (or `data_path`) with their
    sources, in index order; each mixture must be the one preprocess.py wrote (same SHA-1).
    A counting index may list several data paths (chained, as evaluate.py chains its --data-dir)."""
    data = index.get("data") or {}
    path = data_path or data.get("path")
    if not path:
        raise OfflineInferenceError("the index does not say where the data is; pass the data path")
    wanted = {u["key"]: u for u in index["utterances"]}
    paths = [path] if isinstance(path, str) else list(path)
    utterances = chain_utterances([(p, open_utterances(p, index["sample_rate"], index.get("num_speakers"),
                                                       data.get("split", "test"), data.get("mix_type", "mix_clean"),
                                                       data.get("resample", False), data.get("downmix", False)))
                                   for p in paths])
    where = ", ".join(paths)

    def generate():
        seen = set()
        for utt in utterances:
            entry = wanted.get(utt["key"])
            if entry is None:
                continue
            if _sha1(np.asarray(utt["mix"], np.float32)) != entry["sha1"]:
                raise OfflineInferenceError(f"{where}: the mixture of {utt['key']} differs from the one preprocess.py "
                                            "wrote; preprocess again")
            seen.add(utt["key"])
            yield utt
            if len(seen) == len(wanted):
                return
        missing = [k for k in wanted if k not in seen]
        raise OfflineInferenceError(f"{where}: {len(missing)} preprocessed utterance(s) not found (first: "
                                    f"{missing[0]}); pass the data preprocess.py read")
    return sized(generate(), len(wanted))


def stft_config_of(index):
    """The STFT settings an enhancement index was written with."""
    return StftConfig(**index["stft"])


class _ReplayFeatures:
    """Stand-in for a network over host features, `(features (1, F, D), *other inputs) -> output`,
    that returns the stored output for features preprocess.py wrote, found by content, of the shape
    `output_shape(entry)`. Features that were not written are an error, not a guess."""

    def __init__(self, index, result_dir):
        self.index, self.result_dir = index, result_dir
        self.by_content = {info["sha1"]: (name, self.output_shape(info)) for name, info in index["bins"].items()}

    def output_shape(self, info):
        raise NotImplementedError

    def __call__(self, features, *other_inputs):
        found = self.by_content.get(_sha1(features))
        if found is None:
            raise OfflineInferenceError(
                f"features of {features.shape[1]} frames are not among the preprocessed inputs (index "
                f"{self.index['id']}): the data or the feature settings differ from what preprocess.py used; "
                "preprocess again")
        name, shape = found
        path = os.path.join(self.result_dir, name)
        output = np.fromfile(path, dtype=BIN_DTYPE)
        if output.size != int(np.prod(shape)):
            raise OfflineInferenceError(f"{path}: {output.size} float32 values, expected shape {list(shape)}; "
                                        "run infer.py again")
        return output.reshape(shape)


class ReplayMasker(_ReplayFeatures):
    """Masker `(features (1, F, B), frame_lengths (1,)) -> mask (1, F, B)` for the Enhancer: the
    stored mask of the same features."""

    def output_shape(self, info):
        return info["inputs"][0]["shape"]


class ReplayClassifier(_ReplayFeatures):
    """Counting network `features (1, F, n_mels) -> logits (1, counts)` for the counter: the stored
    logits of the same features."""

    def output_shape(self, info):
        return [1, len(self.index["config"]["model"]["speaker_counts"])]


def indexed_pairs(index):
    """The noisy/clean pairs of an enhancement index, rebuilt from its config and data (the
    SHA-1 of each noisy signal must be the one preprocess.py wrote)."""
    data = index["data"]
    cfg = Config(index["config"])
    cfg.data.resample, cfg.data.downmix = data["resample"], data["downmix"]
    pairs, _ = enhancement_pairs(cfg, data["split"], (data["clean"], data["noise"]), data["max_utterances"])
    wanted = index["utterances"]
    if len(pairs) != len(wanted):
        raise OfflineInferenceError(f"{data['clean']}: gives {len(pairs)} pairs now, {len(wanted)} when preprocess.py "
                                    "ran; preprocess again")

    def generate():
        for pair, entry in zip(pairs, wanted):
            if _sha1(pair.noisy) != entry["sha1"]:
                raise OfflineInferenceError(f"{pair.clean_path}: the noisy signal at {pair.snr_db:g} dB differs from "
                                            "the one preprocess.py wrote (data changed?); preprocess again")
            yield pair
    return sized(generate(), len(wanted))

