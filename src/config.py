"""One yaml config for every stage, with `key.sub=value` command-line overrides.

A config is a nested `Config` (a dict whose keys are also attributes). Values of
overrides are parsed as yaml, so `train.lr=1e-3`, `model.C=3`, `data.train=[a,b]`
and `train.resume=false` all get the right type.
"""
import copy
import os
import re

import yaml


class _Loader(yaml.SafeLoader):
    """yaml SafeLoader that also reads `1e-3` (no dot, YAML 1.2 style) as a float."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def yaml_load(stream):
    return yaml.load(stream, Loader=_Loader)


class ConfigError(ValueError):
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
    """Apply `a.b.c=value` strings to `cfg` in place. Unknown top-level sections are refused,
    unknown leaf keys inside a known section are added (so optional keys can be set)."""
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value (e.g. train.lr=1e-3)")
        path, value = item.split("=", 1)
        keys = path.strip().split(".")
        node = cfg
        for depth, key in enumerate(keys[:-1]):
            if key not in node:
                if depth == 0:
                    raise ConfigError(f"override '{item}': the config has no section '{key}' "
                                      f"(sections: {', '.join(sorted(cfg))})")
                node[key] = Config()
            node = node[key]
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': '{key}' is a value, not a section")
        node[keys[-1]] = _parse_value(value)
        if isinstance(node[keys[-1]], dict):
            node[keys[-1]] = Config(node[keys[-1]])
    return cfg


def load_config(path, overrides=None):
    """Read a yaml config (following `base: other.yaml`, relative to it) and apply overrides."""
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
        cfg = load_config(os.path.join(os.path.dirname(path), base))
        _merge(cfg, data)
    else:
        cfg = Config(data)
    return apply_overrides(cfg, overrides)


def _merge(dst, src):
    for key, value in src.items():
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            _merge(dst[key], value)
        else:
            dst[key] = Config(value) if isinstance(value, dict) else value


def save_config(cfg, path):
    """Write the resolved config as yaml (atomically)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        yaml.safe_dump(cfg.to_dict(), f, sort_keys=False)
    os.replace(tmp, path)
