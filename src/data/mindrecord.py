"""Write and locate MindRecord splits (schema in docs/architecture.md).

A split `<name>` in `out_dir` is the file group `<name>.mindrecord0..S-1` (each with its `.db`
index) plus the manifest `<name>.json`. Rows: key (string), mix float32 [-1], src float32 [C, -1],
length int32, sample_rate int32. FileWriter spreads the rows over the shards, so a reader
(`MindDataset(shuffle=False)`, shard after shard) sees them in another order than the manifest's
`utterances` list: match rows by `key`.

Writing goes to a hidden folder `out_dir/.<name>.partial` and the files are moved into place only
after the writer committed and no utterance had a problem; the old files of the split (any shard
count) are removed just before. A failure leaves the previous output untouched. The manifest
records every file's size (`file_bytes`), so a truncated or replaced shard is named when the split
is opened, and the sources that are silent (`silent_sources`: nothing to score them against).
"""
import json
import os
import re
import shutil
from collections import Counter

import numpy as np
from mindspore.mindrecord import FileWriter

from src.audio import AudioError, audio_info, is_silent
from src.data.layout import DataError, check_split, find_splits, load_utterance, resampled_length

MANIFEST_VERSION = 1
SILENT_SOURCE = "silent source (peak below one 16-bit step): utterances with it cannot be scored (SI-SNR, SDR)"
_ROWS_PER_WRITE = 16          # rows handed to FileWriter at once (bounds memory)
_MIN_PAGE = 1 << 16           # page sizes are multiples of this (MindRecord's default, 32 MB, pads small splits)
_MAX_PAGE = 1 << 28           # FileWriter's limit (256 MB); a row must fit in one page
_PAGE_ENTRY_BYTES = 256       # header bytes per page (measured ~190)


def schema(num_speakers):
    """The MindRecord schema of a split with `num_speakers` sources per row."""
    return {"key": {"type": "string"},
            "mix": {"type": "float32", "shape": [-1]},
            "src": {"type": "float32", "shape": [num_speakers, -1]},
            "length": {"type": "int32"},
            "sample_rate": {"type": "int32"}}


def _next_pow2(n):
    return 1 << max(int(n) - 1, 1).bit_length()


def _writer_sizes(lengths, num_speakers, num_shards):
    """(page_size, header_size) for rows of `lengths` samples. A page holds whole rows and the last
    page of a shard is padded, so: pages of about 8 rows (little space lost at page ends), but at
    most 1/8 of a shard (small splits stay small), at least 2 rows (pages at least half full);
    header room for every page of a shard."""
    row_bytes = [(num_speakers + 1) * 4 * n + 256 for n in lengths]
    largest, shard_bytes = max(row_bytes), sum(row_bytes) / num_shards
    page = max(min(8 * largest, shard_bytes / 8), 2 * largest, _MIN_PAGE)
    page = min(-(-int(page) // _MIN_PAGE) * _MIN_PAGE, _MAX_PAGE)      # multiple of 64 KB
    pages = 2 * shard_bytes / page + len(lengths) / num_shards * 256 / page + 8
    header = min(max(_next_pow2(_PAGE_ENTRY_BYTES * pages + (1 << 14)), 1 << 16), 1 << 27)
    return page, header


def _split_files(out_dir, name):
    """Names of existing files of split `name` in out_dir (shards, .db, manifest)."""
    pattern = re.compile(rf"^{re.escape(name)}(\.mindrecord\d*(\.db)?|\.json)$")
    return sorted(f for f in os.listdir(out_dir) if pattern.match(f)) if os.path.isdir(out_dir) else []


class StagedSplit:
    """A split written completely to a hidden folder; `publish()` moves it into place."""

    def __init__(self, tmp_dir, out_dir, name, manifest):
        self.tmp_dir, self.out_dir, self.name, self.manifest = tmp_dir, out_dir, name, manifest

    def publish(self):
        """Replace the split's old files in out_dir by the staged ones -> read_split_info dict."""
        old_files = sorted(_split_files(self.out_dir, self.name), key=lambda f: not f.endswith(".json"))
        for old in old_files:   # manifest first: a half-replaced split never looks valid
            os.remove(os.path.join(self.out_dir, old))
        staged = sorted(os.listdir(self.tmp_dir), key=lambda f: f.endswith(".json"))
        for filename in staged:
            os.replace(os.path.join(self.tmp_dir, filename), os.path.join(self.out_dir, filename))
        os.rmdir(self.tmp_dir)
        return read_split_info(os.path.join(self.out_dir, self.name + ".json"))

    def discard(self):
        shutil.rmtree(self.tmp_dir, ignore_errors=True)


def stage_split(utterances, out_dir, name, num_shards, sample_rate, resample=False, downmix=False,
                refuse_silent=False):
    """Read `utterances` (layout.Utterance list) and write split `name` to a hidden folder in out_dir.

    num_shards is capped at the number of rows (no empty shard). Raises DataError listing every
    unusable utterance (nothing staged then); with `refuse_silent`, silent sources are problems too
    (otherwise they are listed in the manifest's `silent_sources`). Returns a StagedSplit; call
    `publish()` or `discard()`.
    """
    if not name or os.sep in name or name.startswith("."):
        raise DataError(f"split name '{name}' cannot be used as a file name")
    if not utterances:
        raise DataError(f"split '{name}': no utterances to write")
    counts = sorted({len(u.sources) for u in utterances})
    if len(counts) > 1:
        raise DataError(f"split '{name}': utterances have different numbers of sources ({counts})")
    dupes = sorted(k for k, n in Counter(u.key for u in utterances).items() if n > 1)
    if dupes:
        raise DataError([f"split '{name}': utterance name '{k}' occurs more than once" for k in dupes])
    num_speakers = counts[0]
    num_shards = max(1, min(int(num_shards), len(utterances)))

    problems, header_lengths = [], []
    for utt in utterances:
        try:
            rate, frames, _ = audio_info(utt.mix)
            header_lengths.append(resampled_length(frames, rate, sample_rate))
        except AudioError as err:
            problems.append(str(err))
    if problems:
        raise DataError(problems, context=f"split '{name}'")
    page_size, header_size = _writer_sizes(header_lengths, num_speakers, num_shards)
    if max(header_lengths) * (num_speakers + 1) * 4 + 256 > page_size:
        longest = utterances[int(np.argmax(header_lengths))].mix
        raise DataError(f"{longest}: too long for one MindRecord row ({max(header_lengths) / sample_rate:.0f} s)")

    created_out_dir = not os.path.isdir(out_dir)
    tmp_dir = os.path.join(out_dir, f".{name}.partial")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    os.makedirs(tmp_dir)
    try:
        # FileWriter names a single shard exactly as given and S shards `<prefix>0..S-1`
        # (zero-padded: `<prefix>00..10` for 11 shards).
        base = os.path.join(tmp_dir, f"{name}.mindrecord" + ("0" if num_shards == 1 else ""))
        writer = FileWriter(base, shard_num=num_shards, overwrite=True)
        writer.add_schema(schema(num_speakers), "separation utterances")
        writer.add_index(["key"])
        writer.set_page_size(page_size)
        writer.set_header_size(header_size)
        rows, entries, silent = [], [], []
        for utt in utterances:
            try:
                mix, src = load_utterance(utt, sample_rate, resample, downmix)
            except DataError as err:
                problems += err.problems
                continue
            quiet = [path for path, signal in zip(utt.sources, src) if is_silent(signal)]
            silent += quiet
            if refuse_silent:
                problems += [f"{path}: {SILENT_SOURCE}" for path in quiet]
            if problems:   # keep checking the rest, but stop buffering rows
                continue
            rows.append({"key": utt.key, "mix": mix.astype(np.float32), "src": src.astype(np.float32),
                         "length": np.int32(len(mix)), "sample_rate": np.int32(sample_rate)})
            entries.append({"key": utt.key, "mix": os.path.abspath(utt.mix),
                            "sources": [os.path.abspath(s) for s in utt.sources],
                            "length": len(mix), "sample_rate": sample_rate})
            if len(rows) == _ROWS_PER_WRITE:
                writer.write_raw_data(rows)
                rows = []
        if problems:
            raise DataError(problems, context=f"split '{name}'")
        if rows:
            writer.write_raw_data(rows)
        writer.commit()
        manifest = {"version": MANIFEST_VERSION, "name": name, "num_speakers": num_speakers,
                    "sample_rate": sample_rate, "num_rows": len(entries),
                    "total_samples": int(sum(e["length"] for e in entries)),
                    "shards": sorted((f for f in os.listdir(tmp_dir) if not f.endswith(".db")),
                                     key=lambda f: int(f[len(name) + len(".mindrecord"):])),
                    "file_bytes": {f: os.path.getsize(os.path.join(tmp_dir, f)) for f in sorted(os.listdir(tmp_dir))},
                    "silent_sources": [os.path.abspath(p) for p in silent],
                    "utterances": entries}
        with open(os.path.join(tmp_dir, f"{name}.json"), "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        if created_out_dir and os.path.isdir(out_dir) and not os.listdir(out_dir):
            os.rmdir(out_dir)
        raise
    return StagedSplit(tmp_dir, out_dir, name, manifest)


def write_split(utterances, out_dir, name, num_shards, sample_rate, resample=False, downmix=False):
    """Write `utterances` as split `name` in out_dir (replacing an old one) -> read_split_info dict.

    See stage_split for the arguments; raises DataError listing every problem, writing nothing then.
    """
    return stage_split(utterances, out_dir, name, num_shards, sample_rate, resample, downmix).publish()


def read_split_info(path):
    """Manifest of a split -> dict (see stage_split) plus `files` (absolute shard paths) and
    `manifest_path`. `path`: `<name>.mindrecord0` (any shard), the prefix `<dir>/<name>`, or `<name>.json`."""
    if not path:
        raise DataError("no MindRecord split given (empty path; set data.train / data.valid, or --data-dir)")
    path = os.fspath(path)
    if path.endswith(".json"):
        prefix = path[:-len(".json")]
    else:
        prefix = re.sub(r"\.mindrecord\d*$", "", path)
    manifest_path = prefix + ".json"
    if not os.path.isfile(manifest_path):
        if not os.path.exists(path):
            raise DataError(f"{path}: missing (no such file or folder)")
        raise DataError(f"{path}: no MindRecord split here (its manifest {manifest_path} is missing; "
                        "splits are written by preprocess.py)")
    try:
        with open(manifest_path, encoding="utf-8") as f:
            info = json.load(f)
        folder = os.path.dirname(os.path.abspath(manifest_path))
        info["files"] = [os.path.join(folder, shard) for shard in info["shards"]]
        required = ("num_speakers", "sample_rate", "num_rows", "utterances")
        missing_keys = [k for k in required if k not in info]
    except (ValueError, KeyError, TypeError) as err:
        raise DataError(f"{manifest_path}: not a split manifest ({err})") from None
    if missing_keys:
        raise DataError(f"{manifest_path}: not a split manifest (no {', '.join(missing_keys)})")
    missing = [f for shard in info["files"] for f in (shard, shard + ".db") if not os.path.isfile(f)]
    if missing:
        raise DataError([f"{f}: missing (listed by {manifest_path})" for f in missing])
    changed = [f"{os.path.join(folder, f)}: {os.path.getsize(os.path.join(folder, f))} bytes, but preprocess.py wrote "
               f"{size} (truncated or replaced; run preprocess.py again)"
               for f, size in info.get("file_bytes", {}).items() if os.path.getsize(os.path.join(folder, f)) != size]
    if changed:
        raise DataError(changed)
    info["manifest_path"] = os.path.abspath(manifest_path)
    return info


def convert_folder(data_dir, out_dir, sample_rate, num_shards, mix_type="mix_clean", num_speakers=None,
                   split=None, split_names=None, resample=False, downmix=False, refuse_silent=False):
    """Convert every split found in data_dir (layout.find_splits) to MindRecord splits in out_dir.

    split_names: {"train"|"valid"|"test"|<single split name>: output name}; unlisted names are kept.
    All or nothing: every split is checked and written to a hidden folder first; if any file has a
    problem, DataError lists all problems of all splits and out_dir is left as it was.
    Returns the read_split_info dicts of the written splits.
    """
    split_names = split_names or {}
    splits = find_splits(data_dir, mix_type, num_speakers, split)
    out_names = [split_names.get(name, name) for name in splits]
    if len(set(out_names)) != len(out_names):
        raise DataError(f"output names {out_names} of the splits {list(splits)} are not distinct")
    problems = [p for s in splits.values() for p in check_split(s, sample_rate, resample, downmix)]
    if problems:   # read the audio of the files with good headers too, so the report is complete
        problems = [p for s in splits.values()
                    for p in check_split(s, sample_rate, resample, downmix, read_samples=True)]
        raise DataError(problems, context=data_dir)
    staged, created_out_dir = [], not os.path.isdir(out_dir)
    try:
        for name, found in splits.items():
            try:
                staged.append(stage_split(found.utterances, out_dir, split_names.get(name, name), num_shards,
                                          sample_rate, resample, downmix, refuse_silent))
            except DataError as err:
                problems += err.problems
        if problems:
            raise DataError(problems, context=data_dir)
    except BaseException:
        for s in staged:
            s.discard()
        if created_out_dir and os.path.isdir(out_dir) and not os.listdir(out_dir):
            os.rmdir(out_dir)
        raise
    return [s.publish() for s in staged]
