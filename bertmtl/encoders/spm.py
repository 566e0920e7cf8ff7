"""The vocabulary of a SentencePiece model file (spm.model, as DeBERTa-v3 ships it).

A SentencePiece model is a protocol-buffer message whose field 1 repeats the pieces (field 1:
the piece, 2: its log-probability score, 3: its type). That is all a Unigram tokenizer needs
(transformers' DebertaV2Tokenizer reads no more of it), so it is read here in a few lines
rather than through the `sentencepiece` or `protobuf` packages, neither of which bertmtl
otherwise needs.
"""

from __future__ import annotations

import struct
from pathlib import Path

from ..errors import UserError


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(data):
            raise ValueError("truncated varint")
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def _fields(data: bytes):
    """(field number, wire type, value) of one message's fields; values of length-delimited fields are bytes."""
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(data, i)
        elif wire == 1:
            value, i = data[i:i + 8], i + 8
        elif wire == 2:
            n, i = _varint(data, i)
            value, i = data[i:i + n], i + n
        elif wire == 5:
            value, i = data[i:i + 4], i + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if i > len(data):
            raise ValueError("truncated field")
        yield number, wire, value


def read_pieces(path: str | Path) -> list[tuple[str, float]]:
    """[(piece, score)] in id order; UserError naming the file when it is not a SentencePiece model."""
    path = Path(path)
    try:
        pieces = []
        for number, wire, value in _fields(path.read_bytes()):
            if number != 1 or wire != 2:
                continue
            piece, score = None, 0.0
            for n, w, v in _fields(value):
                if n == 1 and w == 2:
                    piece = v.decode("utf-8")
                elif n == 2 and w == 5:
                    score = struct.unpack("<f", v)[0]
            if piece is None:
                raise ValueError("a piece without its text")
            pieces.append((piece, score))
    except OSError as e:
        raise UserError(f"{path}: cannot read it ({e.strerror or e})") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not a SentencePiece model ({e})") from None
    if not pieces:
        raise UserError(f"{path}: not a SentencePiece model (no pieces)")
    return pieces
