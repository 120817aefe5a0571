"""Checkpoints: weights + optimizer state + training metadata, written atomically, loaded strictly.

A training checkpoint `<exp>/checkpoints/epoch_0007.ckpt` holds the network parameters, the
optimizer's state (Adam moments, beta powers, global step, learning rate) and one string
`meta`: JSON with epoch, step, best score, lr-schedule state, history and the resolved config
(yaml). `best.ckpt` is a copy of the best epoch's checkpoint.
"""
import glob
import json
import os
import re
import shutil

import mindspore as ms
import numpy as np
import yaml

from src.config import Config, apply_overrides, check_config, load_config, yaml_load
from src.errors import UserError
from src.models import build_model

CHECKPOINT_DIR = "checkpoints"
# names of optimizer state in training checkpoints (ours, and nn.Adam's in older ones)
OPTIMIZER_STATE = ("moment1.", "moment2.", "adam_step", "beta1_power", "beta2_power", "global_step", "learning_rate")
PRETRAINED_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                              "pretrained")
PRETRAINED_SEPARATION = ("swave_2spk.ckpt", "swave_3spk.ckpt")   # pretrained/MODEL_CARD.md
PRETRAINED_COUNTER = "counter_2_3spk.ckpt"
_EPOCH_RE = re.compile(r"epoch_(\d+)\.ckpt$")


class CheckpointError(UserError):
    """A checkpoint that cannot be used; the message names the file and the problem."""


def checkpoint_dir(exp_dir):
    return os.path.join(exp_dir, CHECKPOINT_DIR)


def epoch_checkpoints(exp_dir):
    """[(epoch, path)] of the experiment's epoch checkpoints, oldest first."""
    return _epoch_files(checkpoint_dir(exp_dir))


def _epoch_files(folder):
    found = []
    for path in glob.glob(os.path.join(folder, "epoch_*.ckpt")):
        match = _EPOCH_RE.search(os.path.basename(path))
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(exp_dir):
    found = epoch_checkpoints(exp_dir)
    return found[-1][1] if found else None


def write_checkpoint(path, params, meta):
    """Write `params` ({name: Parameter or Tensor}) and `meta` (a JSON-able dict) to `path` atomically
    (what read_checkpoint reads)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path[:-len(".ckpt")] + ".tmp.ckpt"
    ms.save_checkpoint([{"name": name, "data": p} for name, p in params.items()], tmp,
                       append_dict={"meta": json.dumps(meta)})
    _publish(tmp, path)


def save_training_checkpoint(path, optimizer, meta, network=None):
    """Write the optimizer (its state and the trainable parameters), the network's other
    parameters (e.g. dropout counters) when `network` is given, and meta to `path` atomically."""
    params = {p.name: p for p in optimizer.get_parameters()}
    if network is not None:
        params.update((p.name, p) for p in network.get_parameters())
    write_checkpoint(path, params, meta)


def save_weights_only(src, dst, overrides=None, average_with=()):
    """Write training checkpoint `src` without its optimizer state to `dst` (a released model:
    the network's parameters and the meta, config included), atomically. `overrides`
    (`key=value` strings) change the stored config, e.g. `model.input_rms=0.072`.
    `average_with` (checkpoints of the same network): the floating-point parameters written are
    the mean over `src` and these (weight averaging over the last epochs); the meta and any other
    parameter are `src`'s, and the meta lists the files averaged under "averaged"."""
    params, meta = read_checkpoint(src)
    params = _network_params(params)
    if average_with:
        params = _average_weights(params, src, average_with)
        meta = {**meta, "averaged": [os.path.basename(path) for path in (src, *average_with)]}
    if overrides:
        cfg = stored_config(meta)
        if cfg is None:
            raise CheckpointError(f"{src}: holds no config to change")
        meta = {**meta, **config_meta(check_config(apply_overrides(cfg, overrides)))}
    write_checkpoint(dst, params, meta)


def _network_params(params):
    """`params` (as read_checkpoint returns them) without the optimizer state."""
    return {n: p for n, p in params.items() if not n.startswith(OPTIMIZER_STATE)}


def _average_weights(params, src, others):
    """{name: Tensor} with the floating-point parameters of `params` (read from `src`) averaged
    with those of the checkpoints `others`, which must hold the same names and shapes."""
    arrays = {n: p.asnumpy() for n, p in params.items()}
    floats = {n: value for n, value in arrays.items() if np.issubdtype(value.dtype, np.floating)}
    sums = {n: value.astype(np.float64) for n, value in floats.items()}
    for path in others:
        other = _network_params(read_checkpoint(path)[0])
        if set(other) != set(params):
            raise CheckpointError(f"{path}: not the same network as {src} (parameters only in one of them: "
                                  f"{_preview(sorted(set(other) ^ set(params)))})")
        for name in sums:
            value = other[name].asnumpy()
            if value.shape != sums[name].shape:
                raise CheckpointError(f"{path}: parameter {name} has shape {value.shape}, "
                                      f"{tuple(sums[name].shape)} in {src}")
            sums[name] += value
    count = 1 + len(others)
    return {**params, **{n: ms.Tensor((sums[n] / count).astype(floats[n].dtype)) for n in sums}}


def preceding_epoch_checkpoints(path, count):
    """The `count` epoch checkpoints before epoch checkpoint `path` in its folder, newest first
    (what --average in tools/release_model.py averages `path` with)."""
    match = _EPOCH_RE.search(os.path.basename(path))
    if not match:
        raise CheckpointError(f"{path}: not an epoch checkpoint (epoch_NNNN.ckpt), so there are no epochs before it")
    epoch = int(match.group(1))
    earlier = [p for e, p in _epoch_files(os.path.dirname(os.path.abspath(path))) if e < epoch]
    if len(earlier) < count:
        raise CheckpointError(f"{path}: {count} earlier epoch checkpoints wanted beside it, {len(earlier)} found "
                              f"(train.keep_checkpoints sets how many a run keeps)")
    return earlier[::-1][:count]


def save_network(path, net, meta):
    """Write the parameters of `net` and `meta` (JSON: at least the config as yaml, under "config")
    to `path` atomically: a model checkpoint that load_model reads (e.g. an imported one)."""
    write_checkpoint(path, {p.name: p for p in net.get_parameters()}, meta)


def prune_checkpoints(exp_dir, keep):
    """Delete all but the newest `keep` epoch checkpoints (best.ckpt is a separate file)."""
    for _, path in epoch_checkpoints(exp_dir)[:-keep] if keep > 0 else []:
        os.remove(path)


def copy_atomic(src, dst):
    tmp = dst + ".tmp"
    shutil.copyfile(src, tmp)
    _publish(tmp, dst)


def _publish(tmp, path):
    """Rename the finished file `tmp` to `path`, durably: its data is synced first and the folder
    after; it gets the usual file mode (MindSpore writes checkpoints read-only, 0400)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    folder = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def read_checkpoint(path):
    """(parameter dict, meta dict) of a checkpoint; CheckpointError if unreadable."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        params = ms.load_checkpoint(path)
    except Exception as err:  # MindSpore raises ValueError/RuntimeError for corrupt files
        raise CheckpointError(f"{path}: cannot be read as a MindSpore checkpoint ({err})") from None
    meta = params.pop("meta", None)
    return params, (json.loads(meta) if isinstance(meta, str) else {})


def load_into(cell, params, path, what="network"):
    """Load `params` (name -> Parameter or array) into `cell`, refusing missing or misshapen ones."""
    expected = {p.name: p for p in cell.get_parameters()}
    missing = sorted(set(expected) - set(params))
    wrong_shape = sorted(n for n in expected if n in params
                         and tuple(params[n].shape) != tuple(expected[n].shape))
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} parameter(s) the {what} needs: {_preview(missing)}")
    if wrong_shape:
        problems.append("wrong shape for " + _preview(
            [f"{n} {tuple(params[n].shape)} != {tuple(expected[n].shape)}" for n in wrong_shape]))
    if problems:
        raise CheckpointError(f"{path}: does not match the {what} ({'; '.join(problems)}). "
                              "Was it trained with another config?")
    values = {n: params[n] if isinstance(params[n], ms.Parameter) else ms.Parameter(ms.Tensor(params[n]), name=n)
              for n in expected}
    not_loaded, _ = ms.load_param_into_net(cell, values, strict_load=True)
    if not_loaded:
        raise CheckpointError(f"{path}: MindSpore did not load {_preview(not_loaded)}")


def load_matching(cell, params, path):
    """Initialise `cell` from every parameter of `params` with the same name and shape (e.g. a
    3-speaker model from a 2-speaker one: all but the output layer) -> names left as they were.
    CheckpointError when nothing matches."""
    expected = {p.name: p for p in cell.get_parameters()}
    matching = {n: params[n] for n, p in expected.items() if n in params and tuple(params[n].shape) == tuple(p.shape)}
    if not matching:
        raise CheckpointError(f"{path}: no parameter fits the network (another model?)")
    fresh = sorted(set(expected) - set(matching))
    not_loaded, _ = ms.load_param_into_net(cell, matching)
    if set(not_loaded) != set(fresh):
        raise CheckpointError(f"{path}: MindSpore did not load {_preview(sorted(set(not_loaded) - set(fresh)))}")
    return fresh


def check_no_extra(net, params, path):
    """Refuse checkpoints with network parameters the model does not have (e.g. another R or C)."""
    names = {p.name for p in net.get_parameters()}
    extra = sorted(n for n in params if n not in names and not n.startswith(OPTIMIZER_STATE))
    if extra:
        raise CheckpointError(f"{path}: has {len(extra)} parameter(s) the network does not have: "
                              f"{_preview(extra)}. Was it trained with another config?")


def _preview(names, most=5):
    names = list(names)
    return ", ".join(names[:most]) + (f" ... (+{len(names) - most} more)" if len(names) > most else "")


def config_meta(cfg):
    """The meta entry that stores the resolved config `cfg` in a checkpoint (read by stored_config)."""
    return {"config": yaml.safe_dump(cfg.to_dict(), sort_keys=False)}


def stored_config(meta):
    """The resolved config stored in a checkpoint's meta, checked against the schema, which fills
    in keys added since it was written (None for checkpoints without one)."""
    return check_config(Config(yaml_load(meta["config"]))) if "config" in meta else None


def config_for(meta, path, config_path=None):
    """The config of checkpoint `path` (`meta` as read_checkpoint returns it): the yaml `config_path`
    when given, else the stored one; CheckpointError when there is none."""
    cfg = load_config(config_path) if config_path else stored_config(meta)
    if cfg is None:
        raise CheckpointError(f"{path}: holds no config; pass one with -c CONFIG")
    return cfg


def model_config(checkpoint, config_path=None):
    """The config of a model: `config_path` (a yaml) when given, else the one stored in
    `checkpoint` (None when it holds none)."""
    return load_config(config_path) if config_path else stored_config(read_checkpoint(checkpoint)[1])


def pretrained_separation_models():
    """The shipped separation checkpoints, used when no model is given -> ([one per speaker count],
    the speaker counter)."""
    paths = [os.path.join(PRETRAINED_DIR, name) for name in (*PRETRAINED_SEPARATION, PRETRAINED_COUNTER)]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise CheckpointError(f"{', '.join(missing)}: shipped model missing (is this a complete clone?); "
                              "pass --model-path CKPT [CKPT ...]")
    return paths[:-1], paths[-1]


def load_model(ckpt_path, cfg=None):
    """Network in inference mode from a checkpoint. The config is the one stored in the
    checkpoint unless `cfg` is given (needed for checkpoints written by other tools).
    Returns (net, cfg)."""
    params, meta = read_checkpoint(ckpt_path)
    cfg = cfg or config_for(meta, ckpt_path)
    return network_from(params, cfg, ckpt_path), cfg


def network_from(params, cfg, ckpt_path):
    """The network of `cfg` in inference mode with `params` (as read_checkpoint returns them from
    `ckpt_path`, named in errors) loaded, every parameter checked."""
    net = build_model(cfg)
    check_no_extra(net, params, ckpt_path)
    load_into(net, params, ckpt_path)
    net.set_train(False)
    return net
