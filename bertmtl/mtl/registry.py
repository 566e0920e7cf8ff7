"""A registry of methods by option name, imported on first use: `--combine` and `--loss-weighting`
take their choices from it without importing torch (the options are read before any training)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping


class Registry(Mapping):
    """name -> class, from `{name: "module:Class"}` (modules relative to `package`). The table is the
    one list of the names: each class gets its `name` from it when first loaded."""

    def __init__(self, package: str, table: dict[str, str]):
        self.package, self.table, self._loaded = package, dict(table), {}

    def __getitem__(self, name: str):
        if name not in self._loaded:
            module, cls = self.table[name].split(":")
            found = getattr(importlib.import_module(f".{module}", self.package), cls)
            found.name = name
            self._loaded[name] = found
        return self._loaded[name]

    def __iter__(self):
        return iter(self.table)

    def __len__(self) -> int:
        return len(self.table)


def checked_hyper(cls, hyper: dict) -> dict:
    """A method's hyperparameters by their option names: all of `cls.options`, nothing more."""
    if set(hyper) != set(cls.options):
        raise TypeError(f"{cls.__name__} takes {', '.join(cls.options) or 'no hyperparameters'}, "
                        f"not {', '.join(sorted(hyper)) or 'none'}")
    return hyper


def hyper_of(cls, options) -> dict:
    """A method's hyperparameters read from a TrainConfig (or anything with those fields)."""
    return {name: getattr(options, name) for name in cls.options}
