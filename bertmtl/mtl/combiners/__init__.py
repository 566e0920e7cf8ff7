"""Gradient combiners: how the tasks' gradients become one update (`--combine NAME`).

Each method is one small module and one class (base.Combiner): the tasks' Gram matrix in, T
weights out; REGISTRY maps `--combine` names to them. Adding a method: a module here and a line
in REGISTRY; its hyperparameters are fields of TrainConfig named in its `options`.
"""

from __future__ import annotations

from .aligned_mtl import AlignedMTL
from .base import Combiner, combine_into, gram_matrix
from .cagrad import CAGrad
from .dualproj import DualProj
from .fairgrad import FairGrad
from .imtl_g import IMTLG
from .mean import Mean
from .mgda import MGDA
from .nash_mtl import NashMTL
from .pcgrad import PCGrad, pcgrad, pcgrad_weights
from .rlw import RandomWeights
from .sum import Sum
from .upgrad import UPGrad

REGISTRY: dict[str, type[Combiner]] = {c.name: c for c in (
    Sum, Mean, PCGrad, MGDA, CAGrad, NashMTL, IMTLG, AlignedMTL, UPGrad, DualProj, FairGrad, RandomWeights)}


def make_combiner(cfg, seed: int) -> Combiner:
    return REGISTRY[cfg.combine](cfg, seed)


__all__ = ["Combiner", "REGISTRY", "combine_into", "gram_matrix", "make_combiner", "pcgrad", "pcgrad_weights"]
