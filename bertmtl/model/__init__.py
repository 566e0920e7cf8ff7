"""Models: the encoder (every family, one implementation) and the multi-task heads.

`BertModel` and `EncoderOutput` are imported on first use, so the torch-free head_config.py can be
read (by the train options) without importing torch.
"""

__all__ = ["BertModel", "EncoderOutput"]


def __getattr__(name: str):
    if name in __all__:
        from . import bert

        return getattr(bert, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
