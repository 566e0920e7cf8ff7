"""Multi-task optimisation: gradient combiners (combiners/), task-conflict telemetry and the SMART regulariser.

Imported on first use, so the torch-free smart_config.py can be read (by the train options)
without importing torch.
"""

_API = {"COMBINERS": ("combiners", "REGISTRY"), "pcgrad": ("combiners.pcgrad", "pcgrad"), "SmartConfig": ("smart_config", "SmartConfig"),
        "smart_loss": ("smart", "smart_loss")}
__all__ = list(_API)


def __getattr__(name: str):
    if name in _API:
        import importlib

        module, attr = _API[name]
        return getattr(importlib.import_module(f"{__name__}.{module}"), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
