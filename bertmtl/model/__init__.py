"""Models: the encoder (every family, one implementation) and the multi-task heads."""

from .bert import BertModel, EncoderOutput

__all__ = ["BertModel", "EncoderOutput"]
