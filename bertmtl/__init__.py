"""bertmtl: one BERT encoder trained on sentiment, paraphrase and similarity at once.

The Python API (docs/reference/python.md): `Predictor` answers with a trained run, `TrainConfig` holds a
run's options and `train(cfg)` runs one; `pretrain_config(...)` is `bertmtl pretrain`'s
TrainConfig. They are imported on first use, so `import bertmtl` (and the CLI's start) stays light.
"""

from typing import TYPE_CHECKING

__version__ = "0.2.0"

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ imports on first use
    from .configuration.train_config import TrainConfig
    from .inference.predict import Predictor
    from .runs.status import Status
    from .training.callbacks import Callback
    from .training.loop import TrainResult, train
    from .training.pretrain import pretrain_config

_API = {"Predictor": "inference.predict", "TrainConfig": "configuration.train_config", "train": "training.loop",
        "TrainResult": "training.loop", "Callback": "training.callbacks", "Status": "runs.status",
        "pretrain_config": "training.pretrain"}
__all__ = [*_API, "__version__"]


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_API[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
