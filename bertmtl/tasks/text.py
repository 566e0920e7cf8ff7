"""What counts as text: the one rule for every input that reaches the tokenizer (no torch)."""

from __future__ import annotations


def text_problem(text) -> str | None:
    """Why the tokenizer cannot take `text` (None if it can): it must be a str of valid Unicode.

    Python strings can hold lone surrogates, which UTF-8 cannot encode and the tokenizer refuses:
    they come from an invalid byte read with surrogateescape (command-line arguments, file
    names) or from a lone \\uD800-style escape in JSON.
    """
    if not isinstance(text, str):
        return f"not text (got {type(text).__name__})"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        c = ord(text[e.start])
        if 0xDC80 <= c <= 0xDCFF:  # how surrogateescape carries an undecodable byte
            return f"not valid UTF-8 (byte 0x{c - 0xDC00:02X} at character {e.start})"
        return f"not valid Unicode (lone surrogate U+{c:04X} at character {e.start})"
    return None
