"""Typed configs: nested dataclasses filled from defaults < YAML file < `key.sub=value` overrides.

A job declares its schema as a tree of `@dataclass`es (help text in `field(metadata={"help": ...})`,
checks in an optional `validate(self)` method) and calls `load_config(Schema)`. Values are coerced
against the field annotations; every error is a `ConfigError` naming the dotted key, so a bad config
fails before any actor starts. Strings from the command line and values from YAML go through the
same coercion; list, tuple and dict values given on the command line are parsed as YAML
(`ops=[+,-]`, `weights={acc: 1.0}`). A dotted path walks through dataclass fields only: a dict
field is set as a whole. A plain `str` field keeps "null" as text; `Optional[...]` turns
"null"/"none" into None.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import os
import sys
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
_NULL = {"null", "none", "~"}


class ConfigError(ValueError):
    """A config that cannot be loaded: unknown key, bad value, failed validation, bad file."""


class RecoverableFault(RuntimeError):
    """A runtime fault that ends a run but leaves its checkpoints usable (a dead learner rank):
    `run_job` reports it in one line and, within `run.max_job_restarts`, resumes the run."""


def check(condition: bool, message: str) -> None:
    """Raise ConfigError(message) unless `condition`; for use in `validate` methods."""
    if not condition:
        raise ConfigError(message)


# ----------------------------------------------------------------------------- public API


def load_config(schema: type[T], argv: list[str] | None = None) -> T:
    """Parse `[--config FILE] [key.sub=value ...]` (default: sys.argv[1:]) into a validated `schema`."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if "-h" in argv or "--help" in argv:
        print(format_help(schema))
        raise SystemExit(0)
    path, overrides, tokens = None, [], iter(argv)
    for token in tokens:
        if token == "--config" or token.startswith("--config="):
            if path is not None:
                raise ConfigError("--config given more than once")
            path = token.partition("=")[2] if "=" in token else next(tokens, None)
            if not path:
                raise ConfigError("--config needs a file path")
        elif token.startswith("-"):
            raise ConfigError(f"unknown option {token!r}; overrides are written key.sub=value")
        else:
            overrides.append(_split_override(token))
    cfg = _merge(schema, None, _read_yaml(path) if path else {}, "")
    for parts, value in overrides:
        cfg = _set(cfg, parts, value, "")
    _validate(cfg, "")
    return cfg


def run_job(schema: type[T], prepare: Callable[[T], Any], run: Callable[[T, Any], Any], argv: list[str] | None = None) -> None:
    """A job's `__main__`: load the config, `prepare(config)` (checks and loads everything a run
    needs before any actor starts), then `run(config, prepared)` and print its result as JSON.

    A user error while loading or preparing prints one line to stderr and exits with status 2;
    `--check` prints the resolved config and what `prepare` planned, then exits 0 without
    starting Ray. A `RecoverableFault` during the run prints one line and exits with status 1,
    unless `run.max_job_restarts` allows another try: the run then resumes from its last checkpoint.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    check_only = "--check" in argv
    argv = [a for a in argv if a != "--check"]
    try:
        config = load_config(schema, argv)
        prepared = prepare(config)
    except (ValueError, OSError) as e:  # ConfigError, a loader's row error, a missing file
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2) from None
    if check_only:
        print(yaml.safe_dump(to_dict(config), sort_keys=False).rstrip())
        describe = getattr(prepared, "describe", None)
        print(describe() if callable(describe) else prepared)
        print("check passed: config and data are valid (Ray not started)")
        raise SystemExit(0)
    restarts = getattr(getattr(config, "run", None), "max_job_restarts", 0)
    for attempt in range(restarts + 1):
        try:
            result = run(config, prepared)
            break
        except RecoverableFault as e:
            print(f"error: {e}", file=sys.stderr)  # one line: no traceback for a fault already named
            if attempt == restarts:
                raise SystemExit(1) from None
            print(f"[cdra] run.max_job_restarts: resuming from the last checkpoint (restart {attempt + 1} of {restarts})",
                  file=sys.stderr)
            config = dataclasses.replace(config, run=dataclasses.replace(config.run, resume=True))
    print(json.dumps(result, indent=2, sort_keys=True))


def config_from_dict(schema: type[T], data: Mapping[str, Any]) -> T:
    """Build a validated `schema` from a (possibly partial) nested mapping, e.g. a saved config."""
    cfg = _merge(schema, None, data, "")
    _validate(cfg, "")
    return cfg


def apply_overrides(cfg: T, overrides: list[str]) -> T:
    """Return a validated copy of `cfg` with `key.sub=value` overrides applied; `cfg` is untouched."""
    for parts, value in map(_split_override, overrides):
        cfg = _set(cfg, parts, value, "")
    _validate(cfg, "")
    return cfg


def to_dict(cfg: Any) -> Any:
    """Plain YAML-serializable form: dataclasses -> dicts, tuples -> lists, paths -> str."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg) if f.init}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, Mapping):
        return {k: to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, os.PathLike):
        return os.fspath(cfg)
    return cfg


def save_config(cfg: Any, path: str | os.PathLike) -> Path:
    """Write `cfg` as YAML (loadable with `--config` or `config_from_dict`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return path


def format_help(schema: type, prog: str | None = None) -> str:
    """Every key of `schema` with its type, default and help text."""
    prog = prog or os.path.basename(sys.argv[0]) or "job"
    lines = [f"usage: {prog} [--config FILE.yaml] [--check] [key.sub=value ...]", "", "--check: validate the config and the data, print the planned actors, exit without starting Ray", "", "keys:"]
    _help_lines(schema, None, "", lines)
    return "\n".join(lines)


# ----------------------------------------------------------------------------- building


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _init_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.init]


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _unknown(name: str, prefix: str, names: list[str]) -> ConfigError:
    message = f"unknown key {_join(prefix, name)!r}"
    close = difflib.get_close_matches(name, names, n=3)
    if close:
        message += "; did you mean " + " or ".join(repr(_join(prefix, c)) for c in close) + "?"
    where = f"under {prefix!r}" if prefix else "at the top level"
    return ConfigError(f"{message} Valid keys {where}: {', '.join(names)}")


def _merge(cls: type[T], base: T | None, data: Any, prefix: str) -> T:
    """`base` (or the class defaults when None) updated with the mapping `data`."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping for {cls.__name__}, got {data!r}")
    fields = {f.name: f for f in _init_fields(cls)}
    changes = {}
    for name, value in data.items():
        if name not in fields:
            raise _unknown(str(name), prefix, list(fields))
        current = getattr(base, name) if base is not None else _default(fields[name])
        changes[name] = _coerce(value, _hints(cls)[name], _join(prefix, name), current)
    if base is None:
        missing = [
            _join(prefix, n) for n, f in fields.items() if n not in changes and _default(f) is dataclasses.MISSING
        ]
        if missing:
            raise ConfigError(f"missing required key(s): {', '.join(missing)}")
    if base is not None:
        changes = {f.name: getattr(base, f.name) for f in dataclasses.fields(cls) if hasattr(base, f.name)} | changes
    return _build(cls, changes)


def _build(cls: type[T], values: dict[str, Any]) -> T:
    """An instance of `cls` with `values`, without running its `__post_init__`: checks there run
    in `_validate`, once every override is applied, so the order of the overrides never matters
    (`format=gsm8k path=F` and `path=F format=gsm8k` are the same config)."""
    obj = object.__new__(cls)
    for f in dataclasses.fields(cls):
        value = values[f.name] if f.name in values else _default(f)
        if value is not dataclasses.MISSING:
            object.__setattr__(obj, f.name, value)  # also fills frozen dataclasses
    return obj


def _set(obj: T, parts: list[str], value: str, prefix: str) -> T:
    """Copy of `obj` with the field at the dotted path `parts` set from the string `value`."""
    name, rest = parts[0], parts[1:]
    names = [f.name for f in _init_fields(type(obj))]
    if name not in names:
        raise _unknown(name, prefix, names)
    key, tp, current = _join(prefix, name), _hints(type(obj))[name], getattr(obj, name)
    if rest:
        section = _section_type(tp)
        if section is None:
            target = _join(key, ".".join(rest))
            raise ConfigError(f"{key!r} is a {_type_name(tp)}, not a section; cannot set {target!r}")
        if not isinstance(current, section):  # e.g. an Optional section that is None so far
            current = _merge(section, None, {}, key)
        return _merge(type(obj), obj, {name: _set(current, rest, value, key)}, prefix)
    return _merge(type(obj), obj, {name: value}, prefix)


def _split_override(token: str) -> tuple[list[str], str]:
    key, sep, value = token.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise ConfigError(f"expected key.sub=value or --config FILE, got {token!r}")
    return parts, value


def _section_type(tp: Any) -> type | None:
    """The dataclass behind `tp` (`Sub` or `Sub | None`), else None."""
    if get_origin(tp) in (Union, types.UnionType):
        options = [a for a in get_args(tp) if a is not type(None)]
        tp = options[0] if len(options) == 1 else None
    return tp if isinstance(tp, type) and dataclasses.is_dataclass(tp) else None


def _read_yaml(path: str) -> Mapping:
    if not Path(path).is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    return data


# ----------------------------------------------------------------------------- coercion


def _bad(key: str, value: Any, tp: Any, note: str = "") -> ConfigError:
    return ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}{note}")


def _parse(text: str, key: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        inner = text.strip()[1:-1]
        if text.strip()[:1] + text.strip()[-1:] == "[]" and not any(c in inner for c in "[]{}'\""):
            return [item.strip() for item in inner.split(",")] if inner.strip() else []  # [+,-,*]: * is YAML syntax
        raise ConfigError(f"{key}: cannot parse {text!r} as YAML: {e}") from e


def _coerce(value: Any, tp: Any, key: str, current: Any = None) -> Any:
    """`value` (a YAML value or a command-line string) as type `tp`; `current` is merged into for sections."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any or tp is object:
        return value
    if origin in (Union, types.UnionType):
        if type(None) in args and (value is None or (isinstance(value, str) and value.strip().lower() in _NULL)):
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _coerce(value, options[0], key, current)
        for option in options:
            try:
                return _coerce(value, option, key, current)
            except ConfigError:
                pass
        raise _bad(key, value, tp)
    if origin is Literal:
        for choice in args:
            candidate = value
            if isinstance(value, str) and not isinstance(choice, str):
                try:
                    candidate = _coerce(value, type(choice), key)
                except ConfigError:
                    continue
            if candidate == choice and type(candidate) is type(choice):
                return choice
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, args))}")
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        value = _parse(value, key) if isinstance(value, str) else value
        return _merge(tp, current if isinstance(current, tp) else None, {} if value is None else value, key)
    if tp in (list, tuple) or origin in (list, tuple):
        items = _parse(value, key) if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise _bad(key, value, tp)
        if (tp is tuple or origin is tuple) and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(items) != len(args):
                raise _bad(key, value, tp, f" ({len(items)} items, expected {len(args)})")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(items, args)))
        coerced = [_coerce(v, args[0] if args else Any, f"{key}[{i}]") for i, v in enumerate(items)]
        return tuple(coerced) if (tp is tuple or origin is tuple) else coerced
    if tp is dict or origin is dict:
        mapping = _parse(value, key) if isinstance(value, str) else value
        if not isinstance(mapping, Mapping):
            raise _bad(key, value, tp)
        key_type, value_type = args or (Any, Any)
        return {
            _coerce(k, key_type, f"{key} (a key)"): _coerce(v, value_type, f"{key}.{k}") for k, v in mapping.items()
        }
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise _bad(key, value, tp, " (use true/false, yes/no, on/off or 1/0)")
    if tp in (int, float):  # an int field takes no floats (1.5) and no bools; a float field takes ints
        number = None
        if isinstance(value, (int, float) if tp is float else int) and not isinstance(value, bool):
            number = tp(value)
        elif isinstance(value, str):
            try:
                number = tp(value.strip())
            except ValueError:
                pass
        if number is None:
            raise _bad(key, value, tp)
        if not math.isfinite(number):  # no knob means anything at nan or inf (lr=inf trains NaN weights)
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        raise _bad(key, value, tp, " (quote it in YAML to keep it text)")
    if tp is Path:
        if isinstance(value, (str, os.PathLike)):
            return Path(value)
        raise _bad(key, value, tp)
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{key}: unsupported field type {_type_name(tp)}")


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "None"
    if tp is Ellipsis:
        return "..."
    if tp is Any:
        return "Any"
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is Literal:
        return f"Literal[{', '.join(map(repr, args))}]"
    if origin is not None:
        return f"{getattr(origin, '__name__', origin)}[{', '.join(_type_name(a) for a in args)}]"
    return getattr(tp, "__name__", str(tp))


# ----------------------------------------------------------------------------- validation and help


def _validate(obj: Any, path: str) -> None:
    """Call `validate()` on every dataclass in the tree, children before their parent."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            _validate(getattr(obj, f.name), _join(path, f.name))
        for name in ("__post_init__", "validate"):
            hook = getattr(obj, name, None)
            if callable(hook):
                try:
                    hook()
                except ValueError as e:
                    raise ConfigError(f"{path or type(obj).__name__}: {e}") from e
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _validate(v, f"{path}[{i}]")
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            _validate(v, _join(path, str(k)))


def _help_lines(cls: type, obj: Any, prefix: str, lines: list[str]) -> None:
    for f in _init_fields(cls):
        key, tp = _join(prefix, f.name), _hints(cls)[f.name]
        default = getattr(obj, f.name) if obj is not None else _default(f)
        help_text = f.metadata.get("help", "")
        section = _section_type(tp)
        if section is not None and (isinstance(default, section) or default is dataclasses.MISSING):
            lines.append(f"  {key}: {section.__name__}" + (f"  -- {help_text}" if help_text else ""))
            _help_lines(section, default if isinstance(default, section) else None, key, lines)
            continue
        shown = "(required)" if default is dataclasses.MISSING else f"= {to_dict(default)!r}"
        lines.append(f"  {key}: {_type_name(tp)} {shown}")
        if help_text:
            lines.append(f"      {help_text}")
        if section is not None:  # an optional section, None by default: its keys can still be set
            _help_lines(section, None, key, lines)
