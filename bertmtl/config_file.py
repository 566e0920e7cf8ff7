"""`bertmtl train --config FILE` / `--print-config`: a TrainConfig as a YAML or JSON file (no torch).

A file holds any subset of TrainConfig's fields (a run's own train_args.json holds them all);
keys may be spelt as fields (data_dir) or as flags (data-dir). Values are checked against the
fields' types here and against their ranges and choices by TrainConfig.validate.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import UserError
from .train_config import FIELDS, upgrade_config

FORMATS = ("yaml", "json")


def read_config_file(path: str | Path) -> dict:
    """The settings in a YAML or JSON file, keyed by field name; UserError naming what is wrong."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise UserError(f"--config {path}: cannot read it ({e.strerror or e})") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError as e:
            raise UserError(f"--config {path}: not valid JSON ({e})") from None
    else:  # YAML (JSON is YAML too)
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise UserError(f"--config {path}: not valid YAML ({e})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"--config {path}: expected a mapping of option names to values")
    data = upgrade_config({str(k): v for k, v in data.items()})  # an older run's train_args.json
    unknown = [str(k) for k in data if str(k).replace("-", "_") not in FIELDS]
    if unknown:
        raise UserError(f"--config {path}: unknown option(s) {', '.join(unknown)} "
                        f"(`bertmtl train --print-config` shows every option)")
    settings = {str(k).replace("-", "_"): v for k, v in data.items()}
    for name, value in settings.items():
        try:
            settings[name] = coerce(name, value)
        except ValueError as e:
            raise UserError(f"--config {path}: {name}: {e}") from None
    return settings


def coerce(name: str, value):
    """`value` as field `name` holds it (a number from YAML text, a list from 'a,b'); ValueError if it cannot be."""
    f = FIELDS[name]
    m, kind = f.metadata, f.metadata["type"]
    if value is None:
        if f.default is None:
            return None
        raise ValueError("must be given")
    if isinstance(value, str) and m["parse"] is not None:
        return m["parse"](value)
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"must be true or false, not {value!r}")
    elif kind is int:
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


def dump_config(settings: dict, fmt: str = "yaml") -> str:
    """A configuration as YAML or JSON text that read_config_file reads back to the same settings."""
    if fmt == "json":
        return json.dumps(settings, indent=2) + "\n"
    import yaml

    return yaml.safe_dump(settings, sort_keys=False, default_flow_style=False)
