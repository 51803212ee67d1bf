"""Hydra-style ``key=value`` configuration: parsing, validation, serialisation and help text.

``gym-qwen train task=dog-run model_size=5 steps=100000 config=configs/x.yaml`` is parsed by
``parse_config(TrainConfig, argv)``: the YAML preset named by ``config=`` is applied first, then
the command-line overrides (whatever their order), then every field's choices/range are checked
and the schema's ``validate()`` hook runs. Every user error is a one-line :class:`ConfigError`.
The schemas themselves live in :mod:`gym_qwen.platform.config_schema` and are re-exported here.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

from gym_qwen.platform.config_schema import (  # noqa: F401  (re-exported)
    ARCH_KEYS, MODEL_SIZES, CollectConfig, ConfigError, CurvesConfig, DemoConfig, DistillConfig, EvaluateConfig, InfoConfig,
    TDMPC2Config, TeacherConfig, TrainConfig, check_task, option,
)
from gym_qwen.platform.files import atomic_write_bytes

__all__ = ["CollectConfig", "ConfigError", "option", "check_task", "MODEL_SIZES", "ARCH_KEYS", "TDMPC2Config", "TrainConfig",
           "EvaluateConfig", "InfoConfig", "DemoConfig", "TeacherConfig", "CurvesConfig", "DistillConfig", "parse_config", "config_to_dict", "config_from_dict",
           "load_config", "save_config", "validate_config", "describe", "format_value", "command_line"]
from gym_qwen.platform.config_schema import (  # noqa: F401,E402  (re-exported: offline RL, issue 13)
    BehaviourPolicyConfig, DatasetInfoConfig, DTPlotConfig, DTTestConfig, DTTrainConfig, MakeDatasetConfig,
)
__all__ += ["MakeDatasetConfig", "DatasetInfoConfig", "BehaviourPolicyConfig", "DTTrainConfig", "DTTestConfig",
            "DTPlotConfig"]
from gym_qwen.platform.config_schema import CompareConfig, SweepConfig  # noqa: F401,E402  (re-exported: issue 14)
__all__ += ["SweepConfig", "CompareConfig"]

T = TypeVar("T")
PRESET_KEY = "config"
_TRUE = ("true", "yes", "1")
_FALSE = ("false", "no", "0")
_NONE = ("none", "null", "~", "")


# --- field types and value coercion --------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _fields(schema: type) -> dict[str, tuple[dataclasses.Field, Any]]:
    """``name -> (field, resolved type)`` for a dataclass schema, in declaration order."""
    if not (isinstance(schema, type) and dataclasses.is_dataclass(schema)):
        raise TypeError(f"{schema!r} is not a dataclass schema")
    hints = typing.get_type_hints(schema)
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(schema)}


def _optional_inner(tp: Any) -> Any | None:
    """``X`` for ``Optional[X]`` / ``X | None``, else None."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0]
    return None


def _type_name(tp: Any) -> str:
    """Short type name for help text: int, float, bool, str, ints, int|none, ..."""
    inner = _optional_inner(tp)
    if inner is not None:
        return f"{_type_name(inner)}|none"
    if typing.get_origin(tp) in (tuple, list):
        return _type_name(_item_type(tp)) + "s"
    return getattr(tp, "__name__", str(tp))


def _item_type(tp: Any) -> Any:
    """Element type of a list/tuple field (int when unannotated)."""
    args = [a for a in typing.get_args(tp) if a is not Ellipsis]
    return args[0] if args else int


_ARTICLES = {"int": "an int", "float": "a float", "bool": "a bool", "str": "a str", "ints": "a list of ints",
             "strs": "a list of strs"}


def _to_float(value: Any) -> float | None:
    try:
        return float(value.strip()) if isinstance(value, str) else None
    except ValueError:
        return None


def _coerce(key: str, tp: Any, value: Any) -> Any:
    """Convert a command-line string or a YAML/JSON value to ``tp``; raise ConfigError if impossible."""
    def bad(hint: str = "") -> ConfigError:
        return ConfigError(f"{key}={value!r} is not {_ARTICLES.get(_type_name(tp), _type_name(tp))}{hint}")

    inner = _optional_inner(tp)
    if inner is not None:
        if value is None or (isinstance(value, str) and value.strip().lower() in _NONE):
            return None
        return _coerce(key, inner, value)
    if value is None:
        raise bad(" (none is not allowed here)")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        text = value.strip().lower() if isinstance(value, str) else None
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise bad(" (use true/false, yes/no or 1/0)")
    if tp is int:  # "100000", "100_000", "1e5" (only if integral), YAML ints and integral floats
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip(), 10)
            except ValueError:
                value_f = _to_float(value)
        else:
            value_f = value if isinstance(value, float) else None
        if value_f is not None and value_f.is_integer():
            return int(value_f)
        raise bad()
    if tp is float:
        if isinstance(value, bool):
            raise bad()
        number = float(value) if isinstance(value, (int, float)) else _to_float(value)
        if number is None:
            raise bad()
        if not math.isfinite(number):
            raise bad(" (must be finite)")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad()
    origin = typing.get_origin(tp)
    if origin in (tuple, list):
        if isinstance(value, str):
            text = value.strip().strip("[]()").strip()
            items: list[Any] = [s for s in (p.strip() for p in text.split(",")) if s] if text else []
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            raise bad()
        try:
            parsed = [_coerce(key, _item_type(tp), item) for item in items]
        except ConfigError:
            raise bad() from None
        return tuple(parsed) if origin is tuple else parsed
    raise TypeError(f"unsupported config field type {tp!r} for {key!r}")


def _check_field(key: str, field: dataclasses.Field, value: Any) -> None:
    """Raise ConfigError if ``value`` is outside the field's choices or range (None is exempt)."""
    if value is None:
        return
    meta = field.metadata
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{key}={value!r} is not one of the valid choices: {', '.join(map(str, choices))}")
    lo, hi = meta.get("min"), meta.get("max")
    numbers = value if isinstance(value, (tuple, list)) else (value,)
    for number in numbers:
        if (lo is not None and number < lo) or (hi is not None and number > hi):
            raise ConfigError(f"{key}={value!r} is out of range: {_range_text(lo, hi)}")


def _range_text(lo: Any, hi: Any) -> str:
    if lo is not None and hi is not None:
        return f"must be in [{lo}, {hi}]"
    return f"must be >= {lo}" if lo is not None else f"must be <= {hi}"


def _unknown_key(schema: type, key: str, where: str) -> ConfigError:
    names = list(_fields(schema))
    close = difflib.get_close_matches(key, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    command = getattr(schema, "command", schema.__name__)
    return ConfigError(f"unknown key {key!r}{where} for {command}{hint}; valid keys: {', '.join(names)}")


def validate_config(cfg: Any) -> Any:
    """Check every field's choices/range, then run ``cfg.validate()`` if present; return ``cfg``."""
    for key, (field, _) in _fields(type(cfg)).items():
        _check_field(key, field, getattr(cfg, key))
    hook = getattr(cfg, "validate", None)
    if callable(hook):
        hook()
    return cfg


def _build(schema: type[T], values: dict[str, Any]) -> T:
    fields = _fields(schema)
    typed = {key: _coerce(key, fields[key][1], value) for key, value in values.items()}
    return validate_config(schema(**typed))


# --- command line and presets --------------------------------------------------------------------
class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys instead of silently keeping the last one."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(f"duplicate key {key!r} at line {key_node.start_mark.line + 1}")
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _load_preset(path: str) -> dict[str, Any]:
    """Read a YAML preset: a flat mapping of the schema's keys."""
    if not path:
        raise ConfigError("config= needs the path of a YAML preset")
    try:
        with open(path, encoding="utf-8") as handle:
            loader = _StrictLoader(handle)  # what yaml.safe_load does, plus the duplicate-key check
            try:
                data = loader.get_single_data()
            finally:
                loader.dispose()
    except FileNotFoundError:
        raise ConfigError(f"config file {path!r} not found") from None
    except ConfigError as exc:
        raise ConfigError(f"config file {path!r}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(f"config file {path!r} is not valid YAML{where}: {problem}") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(f"cannot read config file {path!r}: {reason}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path!r} must contain a mapping of key: value, "
                          f"not {type(data).__name__}")
    return {str(key): value for key, value in data.items()}


def read_preset(path: str) -> dict[str, Any]:
    """The key: value mapping of a YAML preset (ConfigError, one line, if it cannot be read)."""
    return _load_preset(path)


def parse_config(schema: type[T], argv: list[str]) -> T:
    """Build a validated ``schema`` instance from ``["key=value", ...]`` (plus ``config=preset.yaml``).

    Precedence: schema defaults < preset keys < command-line keys. Raises :class:`ConfigError`.
    """
    fields = _fields(schema)
    overrides: dict[str, str] = {}
    for arg in argv:
        if "=" not in arg:
            raise ConfigError(f"argument {arg!r} is not of the form key=value "
                              f"(valid keys: {', '.join(fields)}; or config=preset.yaml)")
        key, value = arg.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"argument {arg!r} has an empty key")
        if key in overrides:
            raise ConfigError(f"duplicate key {key!r} on the command line "
                              f"({key}={overrides[key]!r} and {key}={value!r})")
        if key != PRESET_KEY and key not in fields:
            raise _unknown_key(schema, key, "")
        overrides[key] = value
    values: dict[str, Any] = {}
    if PRESET_KEY in overrides:
        path = overrides.pop(PRESET_KEY)
        for key, value in _load_preset(path).items():
            if key not in fields:
                raise _unknown_key(schema, key, f" in config file {path!r}")
            values[key] = value
    values.update(overrides)
    return _build(schema, values)


# --- serialisation -------------------------------------------------------------------------------
def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain ``{key: value}`` of a config (JSON/YAML-serialisable; tuples become lists)."""
    out: dict[str, Any] = {}
    for key in _fields(type(cfg)):
        value = getattr(cfg, key)
        out[key] = list(value) if isinstance(value, (tuple, list)) else value
    return out


def config_from_dict(schema: type[T], d: dict[str, Any]) -> T:
    """Strictly rebuild a validated ``schema`` instance from :func:`config_to_dict` output.

    Unknown keys are rejected; missing keys take their defaults. Raises :class:`ConfigError`.
    """
    if not isinstance(d, dict):
        raise ConfigError(f"a {getattr(schema, 'command', schema.__name__)} config must be a mapping, "
                          f"not {type(d).__name__}")
    unknown = [key for key in d if key not in _fields(schema)]
    if unknown:
        raise _unknown_key(schema, str(unknown[0]), "")
    return _build(schema, dict(d))


def format_value(value: Any) -> str:
    """A config value as the command line writes it: true/false, none, a comma-separated list."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return "none" if value is None else str(value)


def command_line(command: str, cfg: Any, head: tuple[str, ...] = (), leave_out: tuple[str, ...] = ()) -> str:
    """The `gym-qwen <command> key=value ...` line that reproduces ``cfg``: the ``head`` keys, then every other key
    whose value differs from its default, except the ``leave_out`` keys (bookkeeping: where and how verbosely a
    run writes, not what it computes)."""
    given, defaults = config_to_dict(cfg), config_to_dict(type(cfg)())
    keys = list(head) + sorted(k for k in given if k not in head and k not in leave_out and given[k] != defaults[k])
    return " ".join([f"gym-qwen {command}", *(f"{k}={format_value(given[k])}" for k in keys)])


def load_config(schema: type[T], path: str | os.PathLike) -> T:
    """Read a YAML file written by :func:`save_config` back into a validated ``schema`` instance."""
    return config_from_dict(schema, _load_preset(os.fspath(path)))


def save_config(cfg: Any, path: str | os.PathLike) -> Path:
    """Write ``cfg`` as YAML atomically (files.atomic_write_bytes: temp file, fsync, rename, folder fsync)."""
    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=False)
    return atomic_write_bytes(path, lambda f: f.write(text.encode("utf-8")))


# --- help text -----------------------------------------------------------------------------------
def _field_line(key: str, field: dataclasses.Field, tp: Any) -> str:
    meta = field.metadata
    default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
    if default is None or isinstance(default, bool):
        shown = str(default).lower()
    else:
        shown = repr(default) if default == "" else str(default)
    extra = ""
    if meta.get("choices") is not None:
        extra = f" [choices: {', '.join(str(c) for c in meta['choices'])}]"
    elif meta.get("min") is not None or meta.get("max") is not None:
        lo, hi = meta.get("min"), meta.get("max")
        bound = f">= {lo}" if hi is None else (f"<= {hi}" if lo is None else f"{lo}..{hi}")
        extra = f" [{bound}]"
    return f"  {key:<18} {_type_name(tp):<10} {shown:<12} {meta.get('doc', '')}{extra}"


def describe(schema: type) -> str:
    """Multi-line help: every key with its type, default, choices/range and one-line doc."""
    fields = _fields(schema)
    command = getattr(schema, "command", schema.__name__)
    base = next((b for b in schema.__mro__[1:] if dataclasses.is_dataclass(b)), None)
    inherited = set(_fields(base)) if base is not None else set()
    own = [k for k in fields if k not in inherited]
    lines = [f"{command} options (key=value; config=PRESET.yaml applies a YAML preset first, "
             "command-line keys win):", "",
             f"  {'key':<18} {'type':<10} {'default':<12} description"]
    groups = [(f"{command}:", own)]
    if inherited:
        groups.append((f"{getattr(base, 'command', base.__name__)}:", [k for k in fields if k in inherited]))
    for title, keys in groups:
        lines += ["", title] + [_field_line(k, *fields[k]) for k in keys]
    return "\n".join(lines)
