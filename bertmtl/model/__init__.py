"""Models: the BERT encoder and the multi-task heads."""

from .bert import BertModel, EncoderOutput

__all__ = ["BertModel", "EncoderOutput"]
