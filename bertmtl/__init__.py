"""bertmtl: one BERT encoder trained on sentiment, paraphrase and similarity at once."""

__version__ = "0.2.0"
