"""One option system for every command: a dataclass field per option (no torch, no Click).

`option()` makes a field whose metadata is the option's help text, its type, its choices or
numeric range, and whether it may change when a run resumes. A command's options are one
`Options` dataclass (configuration/train_config.py, configuration/configs.py); from its fields come the command's Click
options (cli/options.py), the validation (`Options.validate`: the one number rule and the
choices), `--config FILE` (read_options_file) and `--print-config` (dump_options), and the resume
check. Adding an option to a command is one field there and the line that reads it.

The number rule (numbers.py `number_problem`) is also what sweep specs, task declarations,
checkpoint files, heads.json and the encoder's config.json are checked by.
"""

from __future__ import annotations

import contextvars
import dataclasses
import json
import os
from dataclasses import field
from pathlib import Path

from .file import read_file
from ..errors import ConfigError, UnknownOption, UserError
from ..numbers import number_problem

# Seeds are 0 .. 2**63-1: what torch.manual_seed takes as a signed 64-bit number, and what our
# generators take after mixing a seed with a task, pass or step (data/batching.py, mtl/ reduce modulo 2**63).
SEED_MAX = 2**63 - 1

# Choices that several commands and modules share, named once.
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
PREDICT_PRECISIONS = ("auto", "fp32", "bf16")  # no fp16 outside training (it needs a gradient scaler)


def option(default=None, help: str = "", *, factory=None, type=None, choices=None, min=None, max=None,
           min_open=False, max_open=False, resume=True, flag=None, path=None, metavar=None, parse=None, cli=True,
           aliases=(), multiple=False, text_items=False, required=False, argument=False, only_for=None,
           nonempty=False):
    """A field of an `Options` dataclass with the metadata that generates its option and checks.

    type: the value type when the default is None. choices / min, max (+ min_open, max_open):
    the allowed values. resume=False: fixed once a run exists (it shapes the saved weights or the
    optimizer's parameter groups). flag: "on/off" for --x/--no-x, "on" for a bare --x.
    path: "dir", "existing_dir", "file" or "existing_file". parse: turns the option's text into
    the value (lists, dicts); a dict-valued option updates the default's keys. multiple: the
    option may be repeated (`parse` gets the list of its values). cli=False: no generated option.
    aliases: other flag names accepted for the same option (kept for old command lines).
    text_items: a dict whose values are text too (lists' items always are). required: the command
    line must give it. argument: a positional argument rather than an option.
    only_for: (the option that chooses a method, the method or methods): an option of one method
    (--cagrad-c of --combine cagrad); changed from its default with another method chosen, it is an
    error (`Options.validate`). nonempty: text that may not be "" (which a path would read as ".").
    """
    if type is None and (default is not None or factory is not None):
        type = (factory() if factory else default).__class__
    meta = {"help": help, "type": type, "choices": tuple(choices) if choices else None, "min": min, "max": max,
            "min_open": min_open, "max_open": max_open, "resume": resume, "flag": flag, "path": path,
            "metavar": metavar, "parse": parse, "cli": cli, "aliases": tuple(aliases), "multiple": multiple,
            "text_items": text_items, "required": required, "argument": argument,
            "only_for": (only_for[0], (only_for[1],) if isinstance(only_for[1], str) else tuple(only_for[1]))
            if only_for else None, "nonempty": nonempty}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def documented(cls: type) -> type:
    """`cls` with its fields' help appended to its docstring as an Attributes section, from the
    same metadata the command-line options come from: `help(TrainConfig)` and the API reference
    show each field with its default and range."""
    lines = []
    for f in dataclasses.fields(cls):
        m = f.metadata
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        extra = [f"one of {', '.join(map(str, m['choices']))}" if m.get("choices") else "",
                 number_range(m), "" if "[default" in m.get("help", "") else f"default {default!r}"]
        kind = getattr(m.get("type"), "__name__", "value")
        said = "; ".join(e for e in extra if e)
        lines.append(f"    {f.name} ({kind}): {m.get('help', '').strip() or '(no help)'}" + (f" [{said}]" if said else ""))
    cls.__doc__ = (cls.__doc__ or "").rstrip() + "\n\n    Attributes:\n" + "\n".join("    " + line for line in lines) + "\n"
    return cls


def number_range(m: dict) -> str:
    """An option's range in words (>= 0, > 0 and <= 1), or "" when it has none."""
    lo = "" if m.get("min") is None else f"{'>' if m.get('min_open') else '>='} {m['min']}"
    hi = "" if m.get("max") is None else f"{'<' if m.get('max_open') else '<='} {m['max']}"
    return " and ".join(p for p in (lo, hi) if p)


def same_as(f: dataclasses.Field, default=dataclasses.MISSING, help: str | None = None, **changes):
    """Another command's option `f` (its help, type, choices, range), with this command's default,
    help or metadata where given: a shared option is defined once."""
    meta = {**f.metadata, **changes}
    if help is not None:
        meta["help"] = help
    if default is dataclasses.MISSING and f.default is dataclasses.MISSING:
        return field(default_factory=f.default_factory, metadata=meta)
    return field(default=f.default if default is dataclasses.MISSING else default, metadata=meta)


def flag_name(f: dataclasses.Field) -> str:
    """The option's name without dashes: data_dir -> data-dir."""
    return f.name.replace("_", "-")


def default_of(f: dataclasses.Field):
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def check_value(f: dataclasses.Field, value) -> str | None:
    """Why `value` is not allowed for field `f` (None when it is)."""
    m = f.metadata
    if value is None:
        return None if f.default is None else "must be given"
    if m.get("nonempty") and isinstance(value, str) and not value.strip():
        return "must not be empty (write . to mean the current directory)"
    if m["choices"] and isinstance(value, (list, tuple)):
        bad = [v for v in value if v not in m["choices"]]
        return f"has unknown value(s) {', '.join(map(str, bad))}; choose from {', '.join(m['choices'])}" \
            if bad else None
    if m["choices"] and value not in m["choices"]:
        return f"must be one of {', '.join(m['choices'])}"
    if m["type"] is dict and not m["text_items"] and isinstance(value, dict):  # name=number options: >= 0
        for key, v in value.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                return f"{key}: must be a number, not {v!r}"
            if problem := number_problem(v, min=m["min"] if m["min"] is not None else 0, max=m["max"]):
                return f"{key}: {problem}"
        return None
    if m["type"] in (int, float) and not isinstance(value, bool) and isinstance(value, (int, float)):
        return number_problem(value, m["min"], m["max"], m["min_open"], m["max_open"])
    return None


# Set while from_dict(check=False) builds a layered configuration (contextvars: per thread).
_UNCHECKED = contextvars.ContextVar("bertmtl_options_unchecked", default=False)


class Options:
    """A command's options: subclass as a @dataclass whose fields are `option()`s.

    Made from Python, an instance checks each value as it is made (ConfigError, a ValueError naming
    the field); a keyword no field has is an UnknownOption (a TypeError) suggesting the closest.
    What depends on several options or on files is checked by `validate()`, before a run starts."""

    def __new__(cls, *args, **kwargs):
        names = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
        for key in kwargs:
            if names and key not in names:
                raise UnknownOption(cls.__name__, key, names)
        return super().__new__(cls)

    def __post_init__(self) -> None:
        if not _UNCHECKED.get():
            self.check_values()

    @classmethod
    def fields(cls) -> dict[str, dataclasses.Field]:
        return {f.name: f for f in dataclasses.fields(cls)}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def upgrade(cls, d: dict) -> dict:
        """A saved configuration in today's field names (older versions' keys); none by default."""
        return d

    @classmethod
    def field_name(cls, key) -> str:
        """The field a settings file's key names: spelt as the field (data_dir), as the flag (data-dir),
        or as an older version named it (`upgrade`)."""
        key = str(key).replace("-", "_")
        return next(iter(cls.upgrade({key: True})), key)

    @classmethod
    def check_spellings(cls, keys, where: str) -> None:
        """UserError when two keys name one field (max_steps and max-steps, pretrained and encoder):
        merged, one would silently win over the other."""
        seen = {}
        for key in keys:
            name = cls.field_name(key)
            if name in seen:
                raise UserError(f"{where}: {seen[name]} and {key} are the same option ({name}): give it once")
            seen[name] = key

    @classmethod
    def from_dict(cls, d: dict, check: bool = True):
        """An instance from a saved or written mapping (unknown keys left out). check=False: a base that
        the command line overrides before validate() (a --config file, a resumed run's options), whose
        values are checked then, as the command line leaves them."""
        d = cls.upgrade(d)
        names = cls.fields()
        token = _UNCHECKED.set(not check)
        try:
            return cls(**{k: v for k, v in d.items() if k in names})
        finally:
            _UNCHECKED.reset(token)

    def normalise(self) -> None:
        """Turn given values into their canonical form before they are checked (e.g. task names)."""

    def check_values(self) -> None:
        """Each field's value on its own: its type (as a config file's values are read: `coerce`, so
        "1e-5" is a number, "sst,para" a list and a Path a path's text), its range and choices, finite
        numbers, text items (ConfigError naming it if not)."""
        for f in dataclasses.fields(self):
            try:
                value = coerce(f, getattr(self, f.name))
            except ValueError as e:
                raise ConfigError(f.name, str(e), f"--{flag_name(f)}") from None
            object.__setattr__(self, f.name, value)
        for f in dataclasses.fields(self):  # a config file can put anything in a list: names and paths are text
            value = getattr(self, f.name)
            items = value if isinstance(value, (list, tuple)) else \
                value.values() if isinstance(value, dict) and f.metadata["text_items"] else ()
            if bad := [v for v in items if not isinstance(v, str)]:
                raise ConfigError(f.name, f"every item must be text, not {bad[0]!r}", f"--{flag_name(f)}", ": ")
        for f in dataclasses.fields(self):
            if problem := check_value(f, getattr(self, f.name)):
                raise ConfigError(f.name, problem, f"--{flag_name(f)}")

    def validate(self) -> None:
        """Check every field against its metadata, and the options together (ConfigError naming the
        option if not); what a command does before it starts."""
        self.check_values()
        self.normalise()
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata["required"] and value is None:
                raise ConfigError(f.name, "must be given", f"--{flag_name(f)}")
            if problem := check_value(f, value):
                raise ConfigError(f.name, problem, f"--{flag_name(f)}")
        for f in self._unselected():  # after the choices themselves are checked
            chooser, methods = f.metadata["only_for"]
            which, named = f"--{chooser.replace('_', '-')}", " or ".join(methods)
            raise ConfigError(f.name, f"{getattr(self, f.name)} applies to {which} {named} only; this run's "
                              f"{which} is {getattr(self, chooser)} (drop --{flag_name(f)}, or choose {which} {named})",
                              f"--{flag_name(f)}")

    def _unselected(self, keep=()) -> list[dataclasses.Field]:
        """The options of a method not chosen (option(only_for=...)) that differ from their defaults."""
        return [f for f in dataclasses.fields(self) if f.metadata.get("only_for") and f.name not in keep
                and getattr(self, f.metadata["only_for"][0], None) not in (None, *f.metadata["only_for"][1])
                and getattr(self, f.name) != default_of(f)]

    def reset_unselected(self, keep=()) -> None:
        """Set the options of methods not chosen back to their defaults, except those in `keep`: for a
        configuration merged from layers (a sweep's base under each of its points), where a base's
        --cagrad-c is meant for the points that choose cagrad and means nothing to the others."""
        for f in self._unselected(keep):
            setattr(self, f.name, default_of(f))

    def check_resume(self, saved: dict) -> None:
        """Refuse options that may not change on resume (resume=False) and differ from the saved run's."""
        saved = {**type(self)().to_dict(), **type(self).upgrade(saved)}  # keys an older run did not save: defaults
        for f in dataclasses.fields(self):
            if not f.metadata["resume"] and f.name in saved and getattr(self, f.name) != saved[f.name]:
                raise UserError(f"--{flag_name(f)} cannot change when resuming: the run was trained with "
                                f"{saved[f.name]!r} (its weights or optimizer state depend on it)")


# -- --config FILE and --print-config ---------------------------------------------------------

FILE_FORMATS = ("yaml", "json")


def read_options_file(cls: type[Options], path: str | Path) -> dict:
    """The settings in a YAML or JSON file, keyed by field name of `cls`; UserError naming what is wrong.

    A file holds any subset of the fields (a run's own train_args.json holds them all); keys may
    be spelt as fields (data_dir) or as flags (data-dir). Values are checked against the fields'
    types here and against their ranges and choices by `Options.validate`.
    """
    path = Path(path)
    data = read_file(path, f"--config {path}")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"--config {path}: expected a mapping of option names to values")
    cls.check_spellings(data, f"--config {path}")
    data = cls.upgrade({str(k): v for k, v in data.items()})  # an older run's saved configuration
    fields = cls.fields()
    unknown = [str(k) for k in data if str(k).replace("-", "_") not in fields]
    if unknown:
        raise UserError(f"--config {path}: unknown option(s) {', '.join(unknown)} "
                        f"(`--print-config` shows every option)")
    settings = {str(k).replace("-", "_"): v for k, v in data.items()}
    for name, value in settings.items():
        try:
            settings[name] = coerce(fields[name], value)
        except ValueError as e:
            raise UserError(f"--config {path}: {name}: {e}") from None
    return settings


def coerce(f: dataclasses.Field, value):
    """`value` as field `f` holds it (a number from YAML text, a list from 'a,b'); ValueError if it cannot be."""
    m, kind = f.metadata, f.metadata["type"]
    if value is None:
        if f.default is None:
            return None
        raise ValueError("must be given")
    if isinstance(value, os.PathLike) and kind is str:  # a path given as a Path, from Python
        return os.fspath(value)
    if isinstance(value, tuple) and kind is list:  # several values of an option, from Click or Python
        return list(value)
    if isinstance(value, str) and m["parse"] is not None:
        return m["parse"](value)
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"must be true or false, not {value!r}")
    elif kind is int:
        if isinstance(value, str) and value.strip().lstrip("+-").isdigit():  # YAML's "8", quoted
            return int(value)
        if isinstance(value, float) and value.is_integer():  # JSON's 8.0
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be a whole number, not {value!r}")
    elif kind is float:
        if isinstance(value, str):  # YAML reads 1e-5 (no dot) as text
            try:
                return float(value)
            except ValueError:
                raise ValueError(f"must be a number, not {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"must be a number, not {value!r}")
        return float(value)
    elif kind is str:
        if not isinstance(value, str):
            raise ValueError(f"must be text, not {value!r}")
    elif kind in (list, dict) and not isinstance(value, kind):
        raise ValueError(f"must be a {'list' if kind is list else 'mapping'}, not {value!r}")
    return value


def dump_options(settings: dict, fmt: str = "yaml") -> str:
    """A configuration as YAML or JSON text that read_options_file reads back to the same settings."""
    if fmt == "json":
        return json.dumps(settings, indent=2) + "\n"
    import yaml

    return yaml.safe_dump(settings, sort_keys=False, default_flow_style=False)
