"""How sentences become embeddings and embeddings become answers: the head options, their defaults
and allowed values, owned here and read by the train options (configuration/train_config.py)
and by checkpoints' heads.json. No torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..numbers import number_problem

POOLINGS = ("mean", "cls", "pooler")
PAIR_MODES = ("bi", "cross")
PAIR_FEATURES = ("concat", "symmetric")
STS_LOSSES = ("pearson", "mse")
# Widths beyond this are typos (10^11 units would ask for terabytes), refused before allocating.
MLP_HIDDEN_MAX = 65_536


def cross_encodes(pair_mode: str) -> bool:
    """Whether a pair is one `[CLS] a [SEP] b [SEP]` input (a cross-encoder) rather than two sentence
    embeddings: the one place the pair mode is decided (heads, batches, predict and ONNX ask it)."""
    return pair_mode == "cross"


# The head options (heads.json holds them): the train options of the same names.
HEAD_OPTIONS = ("pooling", "pair_mode", "pair_features", "mlp_hidden", "dropout", "sts_loss")
_CHOICES = {"pooling": POOLINGS, "pair_mode": PAIR_MODES, "pair_features": PAIR_FEATURES, "sts_loss": STS_LOSSES}
# The numeric head options' ranges (the train options of the same names take theirs from here).
HEAD_RANGES = {"mlp_hidden": {"min": 1, "max": MLP_HIDDEN_MAX}, "dropout": {"min": 0, "max": 1, "max_open": True}}


@dataclass
class HeadConfig:
    """The head options; checked on construction, so a checkpoint's heads.json is read through here."""

    pooling: str = "mean"  # mean of token states | [CLS] state | tanh pooler over [CLS]
    pair_mode: str = "bi"  # bi-encoder (cosine + MLP) | cross-encoder
    # The bi-encoder MLP's input: the classic [u, v, |u-v|, u*v], or [u+v, |u-v|, u*v], which gives
    # (a, b) and (b, a) the same score. Measured equal within noise (docs/results.md), so the
    # default stays the one the paper's heads use.
    pair_features: str = "concat"
    mlp_hidden: int = 256
    dropout: float = 0.1
    sts_loss: str = "pearson"  # regression tasks' loss: pearson | mse

    def __post_init__(self):
        # A zero or fractional width fails deep in nn.Linear, a NaN dropout silently at the first step.
        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {', '.join(choices)}, not {getattr(self, name)!r}")
        for name, rule in HEAD_RANGES.items():
            whole = isinstance(getattr(HeadConfig, name), int)  # as its default
            if number_problem(getattr(self, name), whole=whole, **rule):
                low, high = f"[{rule['min']}", f"{rule['max']}{')' if rule.get('max_open') else ']'}"
                kind = "a whole number" if whole else "a finite number"
                raise ValueError(f"{name} must be {kind} in {low}, {high}, not {getattr(self, name)!r}")

    @property
    def cross(self) -> bool:
        """Pairs cross-encoded (one input) rather than bi-encoded (two embeddings)."""
        return cross_encodes(self.pair_mode)

    @classmethod
    def of(cls, options) -> "HeadConfig":
        """The head options of a TrainConfig."""
        return cls(**{name: getattr(options, name) for name in HEAD_OPTIONS})

    def to_dict(self) -> dict:
        return asdict(self)


DEFAULT_HEADS = HeadConfig()
