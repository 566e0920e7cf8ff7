"""Horizontal bars in text, to an eighth of a cell (progress, class probabilities, scores)."""

from __future__ import annotations

import math

PARTIAL_BLOCKS = " ▏▎▍▌▋▊▉"


def text_bar(fraction: float, width: int) -> str:
    """`width` cells filled to `fraction` (clamped to 0..1), padded with spaces."""
    fraction = 0.0 if math.isnan(fraction) else min(max(fraction, 0.0), 1.0)
    full, part = divmod(round(fraction * width * 8), 8)
    bar = "█" * full + (PARTIAL_BLOCKS[part] if part else "")
    return bar.ljust(width)[:width]
