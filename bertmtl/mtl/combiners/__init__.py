"""Gradient combiners: how the tasks' gradients become one update (`--combine NAME`).

Each method is one small module and one class (base.Combiner): the tasks' Gram matrix in, T
weights out; REGISTRY maps `--combine` names to them (and is the option's list of choices).
Adding a method: a module here and a line in REGISTRY; its hyperparameters are TrainConfig
fields named in its `options`, given to its constructor by `from_config`. Nothing here imports
torch until a method is used.
"""

from __future__ import annotations

import importlib

from ..registry import Registry

REGISTRY = Registry(__name__, {
    "sum": "sum:Sum", "mean": "mean:Mean", "pcgrad": "pcgrad:PCGrad", "mgda": "mgda:MGDA", "cagrad": "cagrad:CAGrad",
    "nash-mtl": "nash_mtl:NashMTL", "imtl-g": "imtl_g:IMTLG", "aligned-mtl": "aligned_mtl:AlignedMTL",
    "upgrad": "upgrad:UPGrad", "dualproj": "dualproj:DualProj", "fairgrad": "fairgrad:FairGrad",
    "random": "rlw:RandomWeights"})


def make_combiner(cfg, seed: int):
    """The --combine method of a TrainConfig, with its hyperparameters."""
    return REGISTRY[cfg.combine].from_config(cfg, seed)


# (PCGrad's functions: from .pcgrad, whose module name they share.)
_LAZY = {"Combiner": "base", "combine_into": "base", "gram_matrix": "base", "mean_weights": "base"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Combiner", "REGISTRY", "combine_into", "gram_matrix", "make_combiner", "mean_weights"]
