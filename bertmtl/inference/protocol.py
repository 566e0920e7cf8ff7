"""The stdin line protocol of `bertmtl predict -`: lines in (a sentence, two tab-separated sentences,
or a JSON object with "sentence" or "sentence1"/"sentence2" and an optional "id"), one line out
per line in (a JSON object, or a TSV row), in order, streamed as answers come. The Predictor
(inference/predict.py) answers the Items this module reads; it writes the lines. No torch.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from collections.abc import Mapping
from typing import Iterator

from ..errors import UserError
from ..tasks import BUILTIN
from ..tasks.text import text_problem


@dataclass
class Item:
    """One thing to predict: a sentence, or a pair; `id` is echoed back; `error` if unusable."""

    line: int
    text_a: str | None = None
    text_b: str | None = None
    id: object = None
    error: str | None = None


# A stdin line is kept up to this many bytes (the rest is dropped, and the answer says the
# input was truncated).
MAX_LINE_BYTES = 1 << 20


def parse_line(line_no: int, raw: bytes) -> Item:
    """A stdin line -> Item: a sentence, a tab-separated pair, or a JSON object."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        if len(raw) < MAX_LINE_BYTES or e.start < MAX_LINE_BYTES - 4:
            return Item(line_no, error=f"invalid UTF-8 at byte {e.start}")
        text = raw[: e.start].decode("utf-8")  # a character cut in two at the length cap
    text = text.rstrip("\r\n")
    if not text.strip():
        return Item(line_no, error="empty line")
    if text.lstrip().startswith("{"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            return Item(line_no, error=f"invalid JSON ({e.msg} at column {e.colno})")
        except ValueError:  # the only other: an integer past Python's limit on digits
            return Item(line_no, error=f"invalid JSON (a number longer than {sys.get_int_max_str_digits()} digits)")
        except RecursionError:  # [[[[... a megabyte deep
            return Item(line_no, error="invalid JSON (nested too deeply)")
        if not isinstance(obj, dict):
            return Item(line_no, error="a JSON line must be an object")
        return item_of_object(line_no, obj)
    parts = text.split("\t")
    if len(parts) == 1:
        return Item(line_no, parts[0])
    if len(parts) == 2 and parts[0].strip() and parts[1].strip():
        return Item(line_no, parts[0], parts[1])
    return Item(line_no, error=f"expected one sentence or two tab-separated sentences, got {len(parts)} fields")


def item_of_object(line_no: int, obj: Mapping) -> Item:
    """A JSON line's object (or a Python mapping) -> Item: {"sentence": ...} or {"sentence1": ...,
    "sentence2": ...}, with an optional "id" echoed back."""
    ident = obj.get("id")
    if problem := _id_problem(ident):  # an id we could not echo back: the error leaves it out
        return Item(line_no, error=problem)
    keys = set(obj) - {"id"}
    if keys == {"sentence"} and isinstance(obj["sentence"], str) and obj["sentence"].strip():
        return Item(line_no, obj["sentence"], None, ident)
    if keys == {"sentence1", "sentence2"} and all(isinstance(obj[k], str) and obj[k].strip() for k in keys):
        return Item(line_no, obj["sentence1"], obj["sentence2"], ident)
    return Item(line_no, id=ident, error='expected {"sentence": "..."} or {"sentence1": "...", "sentence2": "..."} '
                                         "with non-empty strings (and an optional id)")


def item_of(n: int, x) -> Item:
    """A Python caller's item (Predictor.predict) -> Item: a sentence (str), a pair (two str), or a
    mapping as a JSON line of the protocol. `n` is its position from 1, which errors name."""
    if isinstance(x, str):
        return Item(n, x) if x.strip() else Item(n, error="empty sentence")
    if isinstance(x, Mapping):
        return item_of_object(n, x)
    if isinstance(x, (tuple, list)) and len(x) == 2 and all(isinstance(t, str) and t.strip() for t in x):
        return Item(n, x[0], x[1])
    return Item(n, error="expected a sentence, a pair of non-empty sentences, or a mapping with \"sentence\" or "
                         "\"sentence1\" and \"sentence2\"")


def _id_problem(ident) -> str | None:
    """Why a JSON id cannot be echoed back as standard JSON in UTF-8 (None if it can)."""
    if isinstance(ident, float) and not math.isfinite(ident):  # NaN, Infinity, 1e999
        return "id must be a finite number"
    if isinstance(ident, str) and (problem := text_problem(ident)):
        return f"id is {problem}"
    if ident is not None and not isinstance(ident, (str, int, float)):  # bool is an int
        return "id must be a string or a number"
    return None


def read_lines(fd: int) -> tuple[Iterator[tuple[int, bytes]], callable]:
    """Lines of a file descriptor as they arrive, and a ready() that says if more is waiting.

    Reads with os.read (not a buffered reader) so that select() tells the truth about whether
    input is pending.
    """
    import os
    import select

    state = {"pending": []}

    def ready() -> bool:
        if state["pending"]:
            return True
        try:
            r, _, _ = select.select([fd], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(r)

    def lines() -> Iterator[tuple[int, bytes]]:
        n, rest, overlong = 0, b"", False
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            if overlong:  # drop the rest of an over-long line, up to its newline
                cut = chunk.find(b"\n")
                if cut < 0:
                    continue
                chunk, overlong = chunk[cut + 1:], False
                state["pending"] = []
                n += 1
                yield n, rest
                rest = b""
            rest += chunk
            parts = rest.split(b"\n")
            rest = parts.pop()
            if len(rest) > MAX_LINE_BYTES:  # keep memory bounded whatever one line holds
                rest, overlong = rest[:MAX_LINE_BYTES], True
            state["pending"] = parts
            while state["pending"]:
                n += 1
                yield n, state["pending"].pop(0)
        if rest:
            n += 1
            yield n, rest

    return lines(), ready


def tsv_columns(specs=BUILTIN) -> tuple[str, ...]:
    """Columns of `--format tsv`: sentence tasks once per sentence, pair tasks' keys, errors."""
    cols = []
    for s in specs:
        cols += [k + n for k in s.json_keys for n in ("1", "2")] if not s.pair else list(s.json_keys)
    return ("line", "id", *cols, "error")


def to_tsv(res: dict, line: int, specs=BUILTIN) -> str:
    """One result as a TSV row (columns tsv_columns(specs); empty where not applicable).

    The output kinds write the cells: a class as its label name, a yes/no as true/false."""
    vals = [line, res.get("id", "")]
    for s in specs:
        if s.pair:
            vals += s.output.cells(s, res)
        else:  # a lone sentence answers under the bare keys, a pair's sentences under key1, key2
            one = s.output.cells(s, res, "1" if s.json_keys[0] + "1" in res else "")
            two = s.output.cells(s, res, "2")
            vals += [v for k in range(len(s.json_keys)) for v in (one[k], two[k])]
    vals.append(res.get("error", ""))
    return "\t".join(str(v).replace("\t", " ").replace("\n", " ").replace("\r", " ") for v in vals)


def output_line(res: dict, line: int, fmt: str = "jsonl", specs=BUILTIN) -> tuple[bytes, bool]:
    """One result of `predict -` as one output line in UTF-8, and whether it is an error.

    Never raises, so one result can never stop a stream: the line must be standard JSON (no NaN
    or Infinity), hold no lone surrogate (not even as a \\u escape) and be valid UTF-8; a result
    that cannot be written so becomes an error line.
    """
    def text(r: dict) -> str:
        if fmt == "tsv":
            return to_tsv(r, line, specs)
        json.dumps(r, ensure_ascii=False).encode("utf-8")  # the ASCII escapes below would hide a lone surrogate
        return json.dumps(r, allow_nan=False)

    try:
        return (text(res) + "\n").encode("utf-8"), "error" in res
    except (ValueError, TypeError) as e:  # UnicodeEncodeError is a ValueError
        err = {"line": line, "error": f"the answer could not be written ({type(e).__name__})"}
        return (text(err) + "\n").encode("utf-8"), True


def answer_stream(predictor, fmt: str, fd: int | None = None, out=None, note=None) -> int:
    """Answer stdin (or file descriptor `fd`) line by line, streaming, one output line per input
    line, to stdout's bytes (or binary file `out`); exit status 1 if any line failed. `note(text)`
    hears the count of failed lines."""
    if fd is None and sys.stdin is None:  # started with stdin closed (`<&-`)
        raise UserError("standard input is closed; pipe lines in, or give sentences as arguments")
    lines, ready = read_lines(sys.stdin.fileno() if fd is None else fd)
    items = (parse_line(n, raw) for n, raw in lines)
    # Bytes, encoded by output_line as UTF-8 whatever the locale says stdout's encoding is.
    out = sys.stdout.buffer if out is None else out
    failed = line = 0
    try:
        if fmt == "tsv":
            out.write(("\t".join(tsv_columns(predictor.specs)) + "\n").encode())
        for results in predictor.stream_windows(items, ready=ready):
            for res in results:
                line += 1
                data, is_error = output_line(res, res.get("line", line), fmt, predictor.specs)
                failed += is_error
                out.write(data)
            out.flush()  # a window's answers: what an interactive reader waits for
        out.flush()
    except BrokenPipeError:  # e.g. `| head`: the reader is gone, which is not an error
        sys.stderr.close()
        return 0
    if failed and note is not None:
        note(f"{failed} of {line} input line(s) could not be answered (see the error objects)")
    return 1 if failed else 0
