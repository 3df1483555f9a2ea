"""Dataclass configs loaded from YAML, with dotted overrides from the command line.

A recipe declares its config as nested dataclasses with typed defaults. `load_config` fills one from a
YAML file and then from `key.sub=value` overrides, checking every key and type. Any user mistake (a
missing file, an unknown key, a value of the wrong type) raises `UserError` with one line that names
the key and where it came from, so the CLI can print it without a traceback.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from muon_ad.errors import UserError

T = TypeVar("T")


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> T:
    """Build `cls` from its defaults, then the YAML file at `path`, then `key.sub=value` overrides."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        path = Path(path)
        if not path.is_file():
            raise UserError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except UnicodeDecodeError:
            raise UserError(f"{path}: not a YAML text file (e.g. an image given as the config)") from None
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark else ""
            raise UserError(f"{path}: not valid YAML{where}") from None
        if not isinstance(data, dict):
            raise UserError(f"{path}: the top level must be a mapping of keys to values")
    config = from_dict(cls, data, source)
    for override in overrides:
        apply_override(config, override)
    if overrides:
        check_config(config)
    return config


def from_dict(cls: type[T], data: dict[str, Any], source: str) -> T:
    """Build `cls` from a plain mapping (e.g. a model folder's config.json) with the same key, type and value
    checks as a YAML file: `source` names where it came from in the one-line error."""
    if not isinstance(data, dict):
        raise UserError(f"{source}: the top level must be a mapping of keys to values")
    return _build(cls, data, prefix="", source=source)


def check_config(config: Any) -> None:
    """Run every nested dataclass's own checks (`__post_init__`) again: overrides, and code that edits a config
    after building it, set fields after those checks ran."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value):
            check_config(value)
    if hasattr(config, "__post_init__"):
        config.__post_init__()


def apply_override(config: Any, override: str) -> None:
    """Set one `a.b.c=value` override in place; the value is parsed as YAML (so `1e-3`, `[1, 2]`, `true`)."""
    key, sep, raw = override.partition("=")
    if not sep or not key:
        raise UserError(f"override '{override}' must look like key.sub=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    *parents, leaf = key.split(".")
    node, prefix = config, ""
    for part in parents:
        field = _field(type(node), part, prefix, "command line")
        node, prefix = getattr(node, field.name), f"{prefix}{part}."
        if not dataclasses.is_dataclass(node):
            raise UserError(f"unknown key '{key}' (command line): '{prefix[:-1]}' has no sub-keys")
    field = _field(type(node), leaf, prefix, "command line")
    hint = typing.get_type_hints(type(node))[field.name]
    setattr(node, field.name, _convert(hint, value, key, "command line"))


def to_dict(config: Any) -> dict[str, Any]:
    """The plain-dict form of a config, for logs, checkpoints and benchmark JSON."""
    return dataclasses.asdict(config)


def save_config(config: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))


def _build(cls: type[T], data: dict[str, Any], prefix: str, source: str) -> T:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        field = _field(cls, key, prefix, source)
        kwargs[field.name] = _convert(hints[field.name], value, f"{prefix}{key}", source)
    return cls(**kwargs)


def _field(cls: type, key: str, prefix: str, source: str) -> dataclasses.Field:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if key not in fields:
        known = ", ".join(fields)
        raise UserError(f"unknown key '{prefix}{key}' ({source}); known keys here: {known}")
    return fields[key]


def _convert(hint: Any, value: Any, key: str, source: str) -> Any:
    """Check `value` against the type hint, converting where it is lossless (int → float, list → tuple)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(arg, value, key, source)
            except UserError as error:
                errors.append(error)
        raise errors[0]
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise UserError(f"'{key}' ({source}) must be a mapping of sub-keys, got {value!r}")
        return _build(hint, value, prefix=f"{key}.", source=source)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise UserError(f"'{key}' ({source}) must be a list, got {value!r}")
        item_hint = args[0] if args else Any
        items = [_convert(item_hint, v, key, source) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is typing.Literal:
        if value not in args:
            raise UserError(f"'{key}' ({source}) must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:  # YAML 1.1 reads "1e-3" as a string
            return float(value)
        except ValueError:
            pass
    if hint is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise UserError(f"'{key}' ({source}) must be {hint.__name__}, got {value!r}")
    return value
