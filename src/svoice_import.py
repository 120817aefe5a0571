"""Import svoice (PyTorch) SWave checkpoints into this toolkit, without PyTorch and without
running code from the file.

svoice's solver writes `checkpoint.th` = torch.save({'model': {'class', 'args', 'kwargs',
'state'}, 'optimizer', 'history', 'best_state', 'args'}); its separate/evaluate scripts also
accept the `{'class', 'args', 'kwargs', 'state'}` part alone (a `best.th`-style file).

Reading: `read_torch_file` parses torch.save's zip format (data.pkl + data/<key> storages) and
the pre-1.6 legacy format with a restricted unpickler. Only an allow-list of globals resolves:
tensor rebuilders (turned into read-only numpy views of the file's storages, never with more
elements than their storage), storage types, OrderedDict, a few builtin containers, and
`collections.defaultdict` with a builtin type as its factory. Classes from svoice / omegaconf /
pathlib and `typing.Any` (the model class reference and the hydra config) become inert
placeholders that store their pickled state and run nothing; `plain_config` reads a pickled
omegaconf 1.x / 2.x DictConfig back as plain dicts. Anything else (os.system, builtins.eval,
a defaultdict calling another function, ...) is refused with ImportCheckpointError.

Converting: svoice tensor names map one-to-one onto `src.models.swave.SWave` parameters;
`convert_state` checks that every svoice tensor is used exactly once, that every MindSpore
parameter is filled and that shapes agree.
"""
import _compat_pickle
import collections
import math
import os
import pickle
import re
import zipfile

import numpy as np

from src.config import load_config, save_config
from src.models import build_model
from src.runtime.checkpoint import config_meta, load_into, save_network

SVOICE_CLASS = "svoice.models.swave.SWave"
# svoice's SWave.__init__(self, N, L, H, R, C, sr, segment, input_normalize)
SVOICE_ARG_ORDER = ("N", "L", "H", "R", "C", "sr", "segment", "input_normalize")
BASE_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "configs", "swave_librimix.yaml")


class ImportCheckpointError(ValueError):
    """An svoice checkpoint that cannot be imported; the message names the file and the problem."""


# ---------------------------------------------------------------- restricted unpickling

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
# Modules whose classes only carry data in an svoice package (model class reference, hydra
# config): they are replaced by inert placeholders, and so is typing.Any (omegaconf 2's ref_type).
_INERT_MODULES = ("svoice", "omegaconf", "pathlib")
_INERT_GLOBALS = (("typing", "Any"),)


class Inert:
    """Placeholder for a pickled object of a class we do not import: keeps the constructor
    arguments (`args`) and the pickled state (`state`), runs nothing."""
    qualified_name = "?"

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.args, obj.state = args, None
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.state = state

    def __repr__(self):
        return f"<inert {self.qualified_name}>"


def inert_name(obj):
    """'module.Name' of an inert placeholder class or instance, else None."""
    if isinstance(obj, type) and issubclass(obj, Inert):
        return obj.qualified_name
    return obj.qualified_name if isinstance(obj, Inert) else None


class _StorageRef:
    """A storage named by a persistent id; `data` is its flat numpy array once read."""

    def __init__(self, dtype):
        self.dtype, self.data = dtype, None


def _rebuild_tensor(storage, offset, size, stride, *_ignored):
    """torch._utils._rebuild_tensor(_v2) -> read-only numpy view of the storage (allocates
    nothing). A tensor may not have more elements than its storage: stride 0 would otherwise
    let a few bytes claim gigabytes for whoever copies it."""
    if storage.data is None:      # first pass over a legacy file: data not read yet
        return None
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if len(size) != len(stride) or offset < 0 or any(s < 0 for s in size + stride):
        raise pickle.UnpicklingError(f"malformed tensor (size {size}, stride {stride}, offset {offset})")
    data = storage.data
    numel = math.prod(size)
    if numel > data.size:
        raise pickle.UnpicklingError(f"a tensor of size {size} ({numel} elements) on a storage of "
                                     f"{data.size} elements")
    last = offset + sum((n - 1) * s for n, s in zip(size, stride)) if numel else offset - 1
    if last >= data.size:
        raise pickle.UnpicklingError(f"tensor reaches past its storage ({data.size} elements)")
    return np.lib.stride_tricks.as_strided(data[offset:] if data.size > offset else data[:0],
                                           shape=size, strides=[s * data.itemsize for s in stride],
                                           writeable=False)


def _rebuild_parameter(data, *_ignored):
    return data


def _reconstructor(cls, base, state):
    """copyreg._reconstructor, limited to inert placeholders."""
    if isinstance(cls, type) and issubclass(cls, Inert):
        return cls()
    raise _Refused(f"copyreg._reconstructor for {cls!r} is not allowed")


def _defaultdict(factory=None):
    """collections.defaultdict, only with a builtin type (or None) as its factory, as omegaconf's
    resolver cache (defaultdict(dict)): the factory runs on every missing key."""
    if factory is not None and not any(factory is t for t in _SAFE_TYPES):
        raise _Refused(f"refusing collections.defaultdict with the factory {factory!r}: only "
                       "builtin types are allowed")
    return collections.defaultdict(factory)


_SAFE_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "defaultdict"): _defaultdict,
    ("builtins", "set"): set, ("builtins", "frozenset"): frozenset,
    ("builtins", "dict"): dict, ("builtins", "list"): list, ("builtins", "tuple"): tuple,
    ("builtins", "int"): int, ("builtins", "float"): float, ("builtins", "bool"): bool,
    ("builtins", "str"): str, ("builtins", "complex"): complex,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("torch", "Size"): tuple,
}
_SAFE_TYPES = tuple(t for t in _SAFE_GLOBALS.values() if isinstance(t, type))


class _Refused(pickle.UnpicklingError):
    """A global or persistent id outside the allow-list."""


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only allow-listed globals; storages come from `storages(persistent_id)`.
    Our own functions and the placeholder classes are fresh objects for every load, so a
    pickle that sets attributes on what it loaded (BUILD) cannot alter later loads."""

    def __init__(self, file, storages):
        super().__init__(file)
        self._storages = storages
        self._inert = {}

    def find_class(self, module, name):
        # protocol-2 pickles name Python 2 modules (__builtin__, copy_reg): map them first
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in _SAFE_GLOBALS:
            target = _SAFE_GLOBALS[(module, name)]
            if isinstance(target, type):    # builtin types: immutable
                return target
            return lambda *args: target(*args)
        if module == "torch" and name in _STORAGE_DTYPES:
            return ("storage_type", name)
        if module.split(".")[0] in _INERT_MODULES or (module, name) in _INERT_GLOBALS:
            qualified = f"{module}.{name}"
            if qualified not in self._inert:
                self._inert[qualified] = type(name, (Inert,), {"qualified_name": qualified})
            return self._inert[qualified]
        raise _Refused(
            f"refusing to load the global '{module}.{name}': an svoice checkpoint holds only "
            "tensors, containers and svoice/omegaconf objects; this file would run other code")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise _Refused(f"unknown persistent id {pid!r}")
        return self._storages(pid)


def _storage_dtype(storage_type):
    if not (isinstance(storage_type, tuple) and storage_type[0] == "storage_type"):
        raise pickle.UnpicklingError(f"unknown storage type {storage_type!r}")
    return _STORAGE_DTYPES[storage_type[1]]


def _to_array(raw, dtype):
    if dtype == "bfloat16":
        return (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
    return np.frombuffer(raw, dtype)


def _read_zip(path, archive):
    names = archive.namelist()
    pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
    if len(pkl) != 1:
        raise ImportCheckpointError(f"{path}: a zip file but not a torch.save file (no data.pkl)")
    root = pkl[0].split("/")[0]
    byteorder = f"{root}/byteorder"
    if byteorder in names and archive.read(byteorder).decode().strip() != "little":
        raise ImportCheckpointError(f"{path}: big-endian torch files are not supported")
    storages = {}

    def load_storage(pid):
        _, storage_type, key, _location, numel = pid[:5]
        if key not in storages:
            dtype = _storage_dtype(storage_type)
            member = f"{root}/data/{key}"
            if member not in names:
                raise ImportCheckpointError(f"{path}: storage {key} is missing from the archive")
            if archive.getinfo(member).compress_type != zipfile.ZIP_STORED:   # no zip bombs
                raise ImportCheckpointError(f"{path}: storage {key} is compressed (torch.save "
                                            "stores storages uncompressed)")
            ref = _StorageRef(dtype)
            ref.data = _to_array(archive.read(member), dtype)
            if ref.data.size != numel:
                raise pickle.UnpicklingError(f"storage {key} holds {ref.data.size} elements, "
                                             f"{numel} expected")
            storages[key] = ref
        return storages[key]

    with archive.open(pkl[0]) as f:
        return _RestrictedUnpickler(f, load_storage).load()


_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c


def _read_legacy(path, f):
    """torch.save's format before 1.6: magic, protocol, sys_info pickles, the object pickle,
    the list of storage keys, then each storage as int64 element count + raw data."""
    def header():
        f.seek(0)
        try:
            magic = _RestrictedUnpickler(f, _no_storage).load()
        except _Refused:
            raise
        except Exception:
            raise ImportCheckpointError(f"{path}: not a PyTorch checkpoint (neither a torch.save zip "
                                        "archive nor the legacy format)") from None
        if magic != _LEGACY_MAGIC:
            raise ImportCheckpointError(f"{path}: not a PyTorch checkpoint (unknown header)")
        for _ in range(2):      # protocol version, sys_info: plain ints/dicts
            _RestrictedUnpickler(f, _no_storage).load()

    storages = {}

    def load_storage(pid):
        _, storage_type, key = pid[:3]
        if len(pid) > 5 and pid[5] is not None:
            raise ImportCheckpointError(f"{path}: storage views (very old torch files) are not supported")
        if key not in storages:
            storages[key] = _StorageRef(_storage_dtype(storage_type))
        return storages[key]

    header()
    _RestrictedUnpickler(f, load_storage).load()       # pass 1: learn the storages
    keys = _RestrictedUnpickler(f, _no_storage).load()
    for key in keys:
        ref = storages.get(key)
        if ref is None:
            raise ImportCheckpointError(f"{path}: storage {key} is listed but never used")
        count = int(np.frombuffer(f.read(8), "<i8")[0])
        itemsize = 2 if ref.dtype == "bfloat16" else np.dtype(ref.dtype).itemsize
        if not 0 <= count * itemsize <= os.fstat(f.fileno()).st_size - f.tell():
            raise ImportCheckpointError(f"{path}: truncated (storage {key})")
        raw = f.read(count * itemsize)
        ref.data = _to_array(raw, ref.dtype)
    header()
    return _RestrictedUnpickler(f, lambda pid: storages[pid[2]]).load()   # pass 2: with data


def _no_storage(pid):
    raise pickle.UnpicklingError("unexpected tensor data")


def read_torch_file(path):
    """The object saved by torch.save in `path`, with tensors as numpy arrays and classes of
    svoice/omegaconf as `Inert` placeholders. Never imports torch, never runs code from the file.
    Raises ImportCheckpointError (names the file and the problem)."""
    if not os.path.isfile(path):
        raise ImportCheckpointError(f"{path}: file not found")
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return _read_zip(path, archive)
        with open(path, "rb") as f:
            return _read_legacy(path, f)
    except ImportCheckpointError:
        raise
    except _Refused as err:
        raise ImportCheckpointError(f"{path}: {err}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, KeyError, IndexError, TypeError, AttributeError,
            zipfile.BadZipFile, OSError) as err:
        raise ImportCheckpointError(f"{path}: not a readable PyTorch checkpoint "
                                    f"({type(err).__name__}: {err})") from None


# ---------------------------------------------------------------- svoice packages

def load_svoice_package(path, best=False):
    """(model hyper-parameters, state, where the hyper-parameters came from) of an svoice file.

    path: `checkpoint.th` ({'model': {...}, 'best_state', 'args', ...}) or a file holding the
        {'class', 'args', 'kwargs', 'state'} part alone.
    best: take `best_state` (the best validation epoch) from a checkpoint.th instead of the
        last epoch's `model.state`.
    The hyper-parameters are read from the hydra config `args` (sample_rate, segment, swave.*)
    when the file has one, and from the model kwargs; every value is checked against the other
    source and against the tensor shapes (N, L, H, R, C, input_normalize).
    Returns ({'N', 'L', 'H', 'R', 'C', 'sr', 'segment', 'input_normalize'},
             {svoice tensor name: read-only array}, description of the sources).
    """
    package = read_torch_file(path)
    if not isinstance(package, dict):
        raise ImportCheckpointError(f"{path}: expected an svoice package (a dict), found "
                                    f"{type(package).__name__}")
    model = package.get("model", package)
    if not isinstance(model, dict) or not {"class", "kwargs", "state"} <= set(model):
        raise ImportCheckpointError(f"{path}: not an svoice checkpoint (expected 'model' with "
                                    f"'class', 'args', 'kwargs', 'state'; found keys {sorted(package)})")
    cls = inert_name(model["class"])
    if cls != SVOICE_CLASS:
        raise ImportCheckpointError(f"{path}: the checkpoint is for {cls or model['class']!r}, "
                                    f"not {SVOICE_CLASS}")
    if best:
        if "model" not in package:
            raise ImportCheckpointError(f"{path}: --best needs a checkpoint.th with 'best_state'; "
                                        "this file holds one model state only (use it without --best)")
        state = package.get("best_state")
        if state is None:
            raise ImportCheckpointError(f"{path}: 'best_state' is empty (no validation finished yet)")
    else:
        state = model["state"]
    for name, value in state.items():
        if not isinstance(value, np.ndarray):
            raise ImportCheckpointError(f"{path}: state entry '{name}' is not a tensor")
    kwargs = dict(zip(SVOICE_ARG_ORDER, model.get("args") or ()))
    kwargs.update(model["kwargs"])
    sources = {"model kwargs": kwargs, "tensor shapes": shape_hparams(state)}
    if "model" in package:      # a bare package's 'args' are the model's positional arguments
        from_args = _args_hparams(path, package.get("args"))
        if from_args:
            sources = {"args": from_args, **sources}
    hparams = _agreed_hparams(path, sources)
    read = "the hydra args and the model kwargs" if "args" in sources else \
        "the model kwargs (no hydra args in the file)"
    return hparams, dict(state), f"{read}, checked against the tensor shapes"


# svoice's hyper-parameter -> its place in svoice's hydra config (conf/config.yaml)
_ARGS_PATHS = {"sr": ("sample_rate",), "segment": ("segment",),
               **{key: ("swave", key) for key in ("N", "L", "H", "R", "C", "input_normalize")}}
_OMEGACONF_CONTAINERS = ("omegaconf.dictconfig.DictConfig", "omegaconf.listconfig.ListConfig")
_ABSENT = object()


def plain_config(obj):
    """A pickled omegaconf config as `read_torch_file` returns it (inert DictConfig /
    ListConfig / value nodes: omegaconf 1.x keeps their data in `content` / `val`, 2.x in
    `_content` / `_val`) -> plain dicts, lists and values. Other objects are returned as they are."""
    name = inert_name(obj)
    if name is not None and name.startswith("omegaconf."):
        state = obj.state if isinstance(obj.state, dict) else {}
        key = "content" if name in _OMEGACONF_CONTAINERS else "val"
        return plain_config(state.get(f"_{key}", state.get(key)))
    if isinstance(obj, dict):
        return {key: plain_config(value) for key, value in obj.items()}
    if isinstance(obj, list):
        return [plain_config(value) for value in obj]
    return obj


def _args_hparams(path, args):
    """The svoice hyper-parameters that svoice's hydra config `args` holds."""
    try:
        config = plain_config(args)
    except RecursionError:
        raise ImportCheckpointError(f"{path}: 'args' nests too deeply") from None
    found = {}
    for key, parts in _ARGS_PATHS.items():
        node = config
        for part in parts:
            node = node.get(part, _ABSENT) if isinstance(node, dict) else _ABSENT
        if node is not _ABSENT:
            found[key] = node
    return found


def shape_hparams(state):
    """The svoice hyper-parameters that svoice's tensor shapes fix: N, L (encoder), H (LSTM),
    R (MulCat blocks), C (output), input_normalize (GroupNorms present). A size whose tensor
    is missing is left out (convert_state reports the tensor)."""
    prefix = "separator.rnn_model."
    found = {"input_normalize": any(name.startswith(prefix + "rows_normalization.") for name in state)}
    encoder = state.get("encoder.conv.weight")
    if encoder is not None and encoder.ndim == 3:
        found["N"], found["L"] = encoder.shape[0], encoder.shape[2]
    hidden = state.get(prefix + "rows_grnn.0.rnn.weight_hh_l0")
    if hidden is not None and hidden.ndim == 2:
        found["H"] = hidden.shape[1]
    blocks = {name[len(prefix + "rows_grnn."):].split(".")[0] for name in state
              if name.startswith(prefix + "rows_grnn.")}
    if blocks:
        found["R"] = len(blocks)
    output = state.get(prefix + "output.1.weight")
    if output is not None and found.get("N"):
        found["C"] = output.shape[0] // found["N"]
    return found


def _agreed_hparams(path, sources):
    """One value per svoice hyper-parameter from {source: {name: value}}, taken from the first
    source that has it; every source that has it must agree."""
    hparams, conflicts, missing = {}, [], []
    for key in SVOICE_ARG_ORDER:
        values = {source: found[key] for source, found in sources.items() if key in found}
        if not values:
            missing.append(".".join(_ARGS_PATHS[key]))
            continue
        hparams[key] = next(iter(values.values()))
        if any(value != hparams[key] for value in values.values()):
            conflicts.append(f"{'.'.join(_ARGS_PATHS[key])}: " +
                             ", ".join(f"{source} {value!r}" for source, value in values.items()))
    if conflicts:
        raise ImportCheckpointError(f"{path}: the SWave configuration contradicts itself "
                                    f"({'; '.join(conflicts)})")
    if missing:
        raise ImportCheckpointError(f"{path}: no value for {', '.join(missing)} in the model "
                                    "kwargs or the hydra args")
    return hparams


def svoice_config(hparams):
    """Our config (configs/swave_librimix.yaml's layout) for svoice's hyper-parameters."""
    cfg = load_config(BASE_CONFIG)
    for key in ("N", "L", "H", "R", "C"):
        cfg.model[key] = int(hparams[key])
    cfg.model.input_normalize = bool(hparams["input_normalize"])
    cfg.sample_rate = int(hparams["sr"])
    cfg.segment = float(hparams["segment"])
    return cfg


# ---------------------------------------------------------------- name mapping

# svoice's state_dict names; src.models.swave.SWave uses the same names and shapes.
_SVOICE_NAMES = re.compile("|".join((
    r"encoder\.conv\.weight",
    r"separator\.rnn_model\.(rows|cols)_grnn\.\d+\.(rnn|gate_rnn)\."
    r"(weight_ih|weight_hh|bias_ih|bias_hh)_l0(_reverse)?",
    r"separator\.rnn_model\.(rows|cols)_grnn\.\d+\.(rnn_proj|gate_rnn_proj|block_projection)\.(weight|bias)",
    r"separator\.rnn_model\.(rows|cols)_normalization\.\d+\.(weight|bias)",
    r"separator\.rnn_model\.output\.0\.weight",
    r"separator\.rnn_model\.output\.1\.(weight|bias)",
)))


def svoice_to_mindspore_name(name):
    """Our SWave's parameter name for an svoice state_dict name (None if it is not one of
    svoice's SWave tensors). The names are the same on both sides."""
    return name if _SVOICE_NAMES.fullmatch(name) else None


def convert_state(state, net, source="checkpoint"):
    """{our parameter name: float32 array} for `net` from svoice's `state`.

    Every svoice tensor must be used exactly once, every parameter of `net` filled, and the
    shapes equal; otherwise
    ImportCheckpointError lists the offending names.
    """
    targets = {p.name: tuple(p.shape) for p in net.get_parameters()}
    converted, unmapped, unknown, wrong_shape, used_by = {}, [], [], [], {}
    for name, array in state.items():
        target = svoice_to_mindspore_name(name)
        if target is None:
            unmapped.append(name)
            continue
        if target not in targets:
            unknown.append(f"{name} -> {target}")
            continue
        if target in used_by:
            unknown.append(f"{name} and {used_by[target]} both -> {target}")
            continue
        used_by[target] = name
        if array.shape != targets[target]:
            wrong_shape.append(f"{name} {array.shape} -> {target} {targets[target]}")
            continue
        converted[target] = np.ascontiguousarray(array, dtype=np.float32)
    unfilled = sorted(set(targets) - set(used_by))
    problems = []
    if unmapped:
        problems.append(f"svoice tensors with no counterpart: {_preview(unmapped)}")
    if unknown:
        problems.append(f"names our model does not have: {_preview(unknown)}")
    if wrong_shape:
        problems.append(f"shape mismatches: {_preview(wrong_shape)}")
    if unfilled:
        problems.append(f"parameters of our model left unfilled: {_preview(unfilled)}")
    if problems:
        raise ImportCheckpointError(f"{source}: cannot map onto SWave ({'; '.join(problems)})")
    return converted


def _preview(items, most=6):
    items = list(items)
    return ", ".join(items[:most]) + (f" ... (+{len(items) - most} more)" if len(items) > most else "")


# ---------------------------------------------------------------- whole import

def import_checkpoint(checkpoint, out, best=False):
    """Convert svoice's `checkpoint` to a MindSpore checkpoint `out` (.ckpt) and write the
    matching config next to it (`out` with .yaml). The checkpoint also stores the config (as
    the trainer's `meta`), so `src.runtime.checkpoint.load_model(out)` needs nothing else.
    Returns (ckpt path, yaml path, config, where the config came from)."""
    if not out.endswith(".ckpt"):
        raise ImportCheckpointError(f"{out}: the output must end in .ckpt")
    hparams, state, config_from = load_svoice_package(checkpoint, best=best)
    cfg = svoice_config(hparams)
    net = build_model(cfg)
    params = convert_state(state, net, source=checkpoint)
    load_into(net, params, checkpoint)
    yaml_path = out[:-len(".ckpt")] + ".yaml"
    cfg.experiment_dir = os.path.join("exp", os.path.basename(out)[:-len(".ckpt")])
    meta = {**config_meta(cfg), "imported_from": os.path.abspath(checkpoint),
            "state": "best_state" if best else "model.state", "config_from": config_from}
    save_network(out, net, meta)
    save_config(cfg, yaml_path)
    return out, yaml_path, cfg, config_from

