"""Typed run configs: dataclasses loaded from YAML, every key one field, unknown keys rejected.

`load_config(MyConfig, "config/x.yaml", ["loss.kl_weight=1e-5", "max_steps=10"])` reads the YAML, applies
command-line overrides (dotted keys, values parsed as YAML scalars), checks every value's type and returns
the dataclass. Errors name the key and the file.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config key is unknown, missing or of the wrong type."""


def _check_value(key: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_value(key, value, arg)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} fits none of {hint}")
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return from_dict(hint, value, prefix=f"{key}.")
    if origin in (list, tuple, Sequence):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        item = args[0] if args else Any
        checked = [_check_value(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
        return tuple(checked) if origin is tuple else checked
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:  # YAML 1.1 reads 1e-4 (no dot) as a string
            return float(value)
        except ValueError:
            raise ConfigError(f"{key}: expected float, got {value!r}") from None
    if hint is int and isinstance(value, bool):
        raise ConfigError(f"{key}: expected int, got {value!r}")
    if not isinstance(value, hint):
        raise ConfigError(f"{key}: expected {hint.__name__}, got {value!r}")
    return value


def check_bounds(obj: Any, **bounds: tuple[float | None, float | None]) -> None:
    """Each named numeric field of `obj` finite and within its inclusive `(low, high)` (None: open); a field set
    to None is left alone. For `__post_init__`: a run is refused before it does any work."""
    for name, (low, high) in bounds.items():
        value = getattr(obj, name)
        if value is None:
            continue
        bad = (low is not None and value < low) or (high is not None and value > high)
        if bad or (isinstance(value, float) and not math.isfinite(value)):
            if low is not None and high is not None:
                rule = f"between {low} and {high}"
            else:
                rule = f">= {low}" if low is not None else f"<= {high}"
            raise ValueError(f"{name} must be a finite number {rule}, got {value}")


def from_dict(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Build dataclass `cls` from a mapping; unknown keys and wrong types raise `ConfigError`."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown config key {prefix}{unknown[0]!s}; valid keys here: {sorted(names)}")
    kwargs = {k: _check_value(f"{prefix}{k}", v, hints[k]) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:  # a required field without a default, or a __post_init__ check
        raise ConfigError(f"{prefix or cls.__name__}: {err}") from err


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted}: {part} is not a section")
    node[parts[-1]] = value


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value")
        key, raw = item.split("=", 1)
        _set_dotted(tree, key.strip(), yaml.safe_load(raw) if raw.strip() else None)
    return tree


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def load_config(cls: type[T], path: str | None = None, overrides: Sequence[str] = ()) -> T:
    data: dict[str, Any] = {}
    if path:
        with open(path) as fh:
            loaded = yaml.safe_load(fh) or {}
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"{path}: the top level must be a mapping of keys")
        data = dict(loaded)
    data = _merge(data, parse_overrides(overrides))
    try:
        return from_dict(cls, data)
    except ConfigError as err:
        raise ConfigError(f"{path or 'config'}: {err}") from err


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def save_config(config: Any, path: str) -> None:
    with open(path, "w") as fh:
        yaml.safe_dump(to_dict(config), fh, sort_keys=False)


def _field_comments(cls: type) -> dict[str, str]:
    """The trailing `# comment` of each field line in a dataclass's source: its meaning, for `--help`."""
    import inspect
    import io
    import tokenize

    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    comments: dict[str, str] = {}
    current = None  # the field whose statement the tokens belong to
    names = {f.name for f in dataclasses.fields(cls)}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.NAME and tok.start[1] == 4:
            current = tok.string if tok.string in names else None
        elif tok.type == tokenize.COMMENT and current and not tok.line.lstrip().startswith("#"):
            comments.setdefault(current, tok.string.lstrip("# ").strip())  # trailing, on its statement
    return comments


def describe_keys(cls: type, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, type, default, meaning) for every key of a config dataclass, sections flattened with dots."""
    hints = typing.get_type_hints(cls)
    comments = _field_comments(cls)
    rows = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            rows.extend(describe_keys(hint, f"{prefix}{f.name}."))
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = "(required)"
        type_name = getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
        rows.append((prefix + f.name, type_name, repr(default), comments.get(f.name, "")))
    return rows


def keys_help(cls: type) -> str:
    """Every key as `key (type, default): meaning`, one a line, for a run script's `--help`."""
    lines = ["config keys (YAML or key=value; dotted for sections):"]
    for key, type_name, default, meaning in describe_keys(cls):
        lines.append(f"  {key} ({type_name}, default {default})" + (f": {meaning}" if meaning else ""))
    return "\n".join(lines)


def config_from_cli(cls: type[T], description: str, argv: Sequence[str] | None = None) -> T | None:
    """`--config YAML` plus `key=value` overrides for a run script; prints a one-line error and returns None
    when the config is bad (the script then exits 2)."""
    import argparse
    import logging
    import sys

    p = argparse.ArgumentParser(
        description=description, epilog=keys_help(cls), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", default=None, help="run YAML")
    p.add_argument("overrides", nargs="*", help="key=value overrides (dotted for sections)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return load_config(cls, args.config, args.overrides)
    except (ConfigError, FileNotFoundError) as err:
        print(f"config error: {err}", file=sys.stderr)
        return None
