"""One yaml config for every stage, with `key.sub=value` command-line overrides.

A config is a nested `Config` (a dict whose keys are also attributes). Values of
overrides are parsed as yaml, so `train.lr=1e-3`, `model.C=3`, `data.train=[a,b]`
and `train.resume=false` all get the right type. `load_config` checks the result against
the schema (src/config_schema.py): unknown keys, wrong types and out-of-range values are
refused with one ConfigError listing every problem; missing keys get their defaults.
"""
import copy
import difflib
import os
import re

import yaml

from src import config_schema
from src.errors import UserError


class _Loader(yaml.SafeLoader):
    """yaml SafeLoader that also reads `1e-3` (no dot, YAML 1.2 style) as a float."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def yaml_load(stream):
    return yaml.load(stream, Loader=_Loader)


class ConfigError(UserError):
    """A config file or override that cannot be used; the message says which and why."""


class Config(dict):
    """dict with attribute access, recursively (`cfg.model.N`). Keys that are also dict
    methods (`values`, `items`, `keys`, ...) must be read with `cfg["values"]`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for key, value in self.items():
            if isinstance(value, dict) and not isinstance(value, Config):
                self[key] = Config(value)

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"config has no key '{name}'") from None

    def __setattr__(self, name, value):
        self[name] = Config(value) if isinstance(value, dict) else value

    def __deepcopy__(self, memo):
        return Config(copy.deepcopy(dict(self), memo))

    def to_dict(self):
        return {k: v.to_dict() if isinstance(v, Config) else v for k, v in self.items()}


def _parse_value(text):
    try:
        return yaml_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(cfg, overrides):
    """Apply `a.b.c=value` strings to `cfg` in place (missing sections are created; whether the
    keys exist is checked by check_config)."""
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value (e.g. train.lr=1e-3)")
        path, value = item.split("=", 1)
        keys = path.strip().split(".")
        node = cfg
        for key in keys[:-1]:
            if key not in node:
                node[key] = Config()
            node = node[key]
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': '{key}' is a value, not a section")
        node[keys[-1]] = _parse_value(value)
        if isinstance(node[keys[-1]], dict):
            node[keys[-1]] = Config(node[keys[-1]])
    return cfg


def load_config(path, overrides=None):
    """Read a yaml config (following `base: other.yaml`, relative to it), apply overrides and check
    the result against the schema (check_config)."""
    return check_config(apply_overrides(_read(path), overrides))


def _read(path):
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml_load(f) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid yaml: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    base = data.pop("base", None)
    if base:
        cfg = _read(os.path.join(os.path.dirname(path), base))
        _merge(cfg, data)
    else:
        cfg = Config(data)
    return cfg


def _merge(dst, src):
    for key, value in src.items():
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            _merge(dst[key], value)
        else:
            dst[key] = Config(value) if isinstance(value, dict) else value


_KINDS = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
          "ints": "a list of integers", "floats": "a list of numbers"}


def _describe(key):
    """What `key` accepts, for messages: 'an integer >= 1', 'a number >= 0 and < 1',
    'one of graph, pynative', 'a list of numbers (each > 0) or null', ..."""
    if key.choices:
        text = "one of " + ", ".join(map(str, key.choices))
    else:
        bounds = []
        if key.positive:
            bounds.append("> 0")
        elif key.low is not None:
            bounds.append(f">= {key.low:g}")
        if key.high is not None:
            bounds.append(f"{'<' if key.high_open else '<='} {key.high:g}")
        text = _KINDS[key.kind]
        if bounds:
            text += f" (each {' and '.join(bounds)})" if key.kind in ("ints", "floats") else " " + " and ".join(bounds)
    return text + (" or null" if key.null else "")


def _in_range(key, x):
    return not ((key.positive and x <= 0) or (key.low is not None and x < key.low)
                or (key.high is not None and (x >= key.high if key.high_open else x > key.high)))


def _scalar(kind, key, value):
    """`value` as `kind` (int | float | bool | str) within `key`'s range -> (value, ok)."""
    if kind == "bool":
        return value, isinstance(value, bool)
    if kind == "str":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        return value, isinstance(value, str) and (not key.choices or value in key.choices)
    if isinstance(value, bool) or not isinstance(value, int if kind == "int" else (int, float)):
        return value, False
    value = value if kind == "int" else float(value)
    return value, _in_range(key, value)


def _convert(key, value):
    """`value` checked against `key` -> (converted value, ok). Lists keep their items' types."""
    if value is None:
        return value, key.null
    if key.kind in ("ints", "floats"):
        return value, isinstance(value, list) and all(_scalar(key.kind[:-1], key, v)[1] for v in value)
    return _scalar(key.kind, key, value)


def _unknown(path, what):
    """Message for a key the schema of `what` (e.g. "a separation config") does not have."""
    known = config_schema.all_paths()
    if path in known:
        return f"{path}: not a key of {what}"
    close = difflib.get_close_matches(path, known, n=1, cutoff=0.6)
    return f"{path}: unknown key" + (f", did you mean {close[0]}?" if close else "")


def _check_section(node, spec, prefix, problems, what):
    problems += [_unknown(prefix + key, what) for key in node if key not in spec]
    for key, sub in spec.items():
        path = prefix + key
        if isinstance(sub, dict):
            if node.get(key) is None:
                node[key] = Config()
            if isinstance(node[key], dict):
                _check_section(node[key], sub, path + ".", problems, what)
            else:
                problems.append(f"{path}: must be a section (keys {', '.join(sub)}), got {node[key]!r}")
        elif key not in node:
            if sub.default is config_schema.REQUIRED:
                problems.append(f"{path}: missing (required: {_describe(sub)})")
            else:
                node[key] = copy.deepcopy(sub.default)
        else:
            value, ok = _convert(sub, node[key])
            if ok:
                node[key] = value
            else:
                problems.append(f"{path}: must be {_describe(sub)}, got {node[key]!r}")


def check_config(cfg):
    """Check `cfg` against the schema of its task and model (src/config_schema.py) in place:
    fills defaults, makes numbers of float keys floats; ConfigError listing every unknown key
    (with the closest known one), wrong type, out-of-range value and missing required key."""
    task = cfg.get("task", config_schema.TOP_LEVEL["task"].default)
    model = cfg.get("model")
    name = model.get("name") if isinstance(model, dict) else None
    if task not in config_schema.TASKS:
        raise ConfigError(f"task: {task!r} is not a known task (known: {', '.join(config_schema.TASKS)})")
    if name not in config_schema.MODELS:
        raise ConfigError(f"model.name: {name!r} is not a known model (known: {', '.join(config_schema.MODELS)})")
    problems = []
    _check_section(cfg, config_schema.schema(task, name), "", problems, f"a {task} config with model {name}")
    problems = problems or config_schema.relation_problems(cfg)
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        raise ConfigError(f"{len(problems)} problems in the config:\n" + "\n".join(f"  - {p}" for p in problems))
    return cfg


def save_config(cfg, path):
    """Write the resolved config as yaml (atomically)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        yaml.safe_dump(cfg.to_dict(), f, sort_keys=False)
    os.replace(tmp, path)
