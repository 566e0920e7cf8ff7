"""The one reader of the YAML and JSON files people write: `--config FILE`, a sweep's spec,
`--tasks-file`. No torch, and YAML is imported only when a file is read.

One rule for the format: a `.json` file is JSON, any other is YAML (JSON is YAML too, so a JSON
text under another name still reads). Every problem is one UserError line that names the file
as the caller calls it (`what`: "--config c.yaml", "sweep spec s.yaml") and, where the parser
knows it, the line: an unreadable file, text that is not UTF-8, a syntax error, and a key given
twice in one mapping (at any depth), which YAML and JSON parsers otherwise settle silently by
keeping the last. A c.yaml holding `lr: 1e-4` and then `lr: 2e-4`:

    read_file("c.yaml", "--config c.yaml")
    UserError: --config c.yaml: duplicate key 'lr' on line 2 (first on line 1); each key may be given once
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from ..errors import UserError

# The byte-order marks of UTF-16 and UTF-32: a file saved that way gets a hint on how to fix it.
_WIDE_BOMS = {b"\xff\xfe\x00\x00": "UTF-32", b"\x00\x00\xfe\xff": "UTF-32", b"\xff\xfe": "UTF-16",
              b"\xfe\xff": "UTF-16"}


def read_file(path: str | Path, what: str) -> object:
    """The data in a YAML or JSON file (None for an empty one); UserError naming what is wrong."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UserError(f"{what}: cannot read it ({e.strerror or e})") from None
    text = _decode(raw, what)
    if not text.strip():
        return None
    if path.suffix.lower() == ".json":
        return _parse_json(text, what)
    return _parse_yaml(text, what)


def _decode(raw: bytes, what: str) -> str:
    try:
        # utf-8-sig: a UTF-8 file that starts with a byte-order mark (as some Windows editors
        # save) is still UTF-8, and neither parser accepts the mark itself.
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        wide = next((name for bom, name in _WIDE_BOMS.items() if raw.startswith(bom)), None)
        hint = f"it looks like {wide}; " if wide else ""
        line = raw.count(b"\n", 0, e.start) + 1
        raise UserError(f"{what}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}, line {line}; "
                        f"{hint}save it as UTF-8)") from None


# -- JSON -------------------------------------------------------------------------------------

class _DuplicateKey(Exception):
    pass


def _refuse_duplicates(pairs: list) -> dict:
    seen = set()
    for key, _ in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen.add(key)
    return dict(pairs)


def _parse_json(text: str, what: str) -> object:
    try:
        return json.loads(text, object_pairs_hook=_refuse_duplicates)
    except json.JSONDecodeError as e:
        raise UserError(f"{what}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except _DuplicateKey as e:
        found = _json_duplicate(text)
        if found is None:
            raise UserError(f"{what}: duplicate key {e.args[0]!r}; each key may be given once") from None
        key, first, again = found
        raise UserError(f"{what}: duplicate key {key!r} on line {again} (first on line {first}); "
                        f"each key may be given once") from None
    except RecursionError:
        raise UserError(f"{what}: not valid JSON (nested too deeply)") from None


def _json_duplicate(text: str) -> tuple[str, int, int] | None:
    """The first key (in reading order) that a JSON object gives twice, the line of its first
    occurrence and that of the second: json's hook sees the keys without their places, so they are
    found again here, in text that parsed up to that object."""
    from json.decoder import scanstring

    stack: list[dict | None] = []  # per open object its keys and their offsets; None for an array
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            value, end = scanstring(text, i + 1)
            rest = end
            while rest < n and text[rest] in " \t\r\n":
                rest += 1
            if stack and stack[-1] is not None and rest < n and text[rest] == ":":
                if value in stack[-1]:
                    return value, text.count("\n", 0, stack[-1][value]) + 1, text.count("\n", 0, i) + 1
                stack[-1][value] = i
            i = end
            continue
        if c == "{":
            stack.append({})
        elif c == "[":
            stack.append(None)
        elif c in "}]" and stack:
            stack.pop()
        i += 1
    return None


# -- YAML -------------------------------------------------------------------------------------

class _DuplicateYamlKey(Exception):
    pass


@functools.cache
def _loader():
    """yaml.SafeLoader refusing a mapping that gives a key twice (merge keys, `<<: *base`, may
    still be overridden: that is what they are for)."""
    import yaml

    class Loader(yaml.SafeLoader):
        def flatten_mapping(self, node):
            # Checked here, on a mapping's first flattening: flattening puts the merged keys into
            # node.value, where an overridden one would look like a key given twice.
            if not getattr(node, "keys_checked", False):
                node.keys_checked = True
                seen = {}
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue
                    key = self.construct_object(key_node, deep=True)
                    try:
                        first = seen.setdefault(key, key_node)
                    except TypeError:  # an unhashable key: SafeLoader refuses it with its place
                        continue
                    if first is not key_node:
                        raise _DuplicateYamlKey(key, first.start_mark.line + 1, key_node.start_mark.line + 1)
            super().flatten_mapping(node)

    return Loader


def _parse_yaml(text: str, what: str) -> object:
    import yaml

    try:
        return yaml.load(text, Loader=_loader())  # noqa: S506 (a SafeLoader)
    except _DuplicateYamlKey as e:
        key, first, again = e.args
        raise UserError(f"{what}: duplicate key {key!r} on line {again} (first on line {first}); "
                        f"each key may be given once") from None
    except yaml.MarkedYAMLError as e:
        raise UserError(f"{what}: not valid YAML ({_yaml_problem(e)})") from None
    except yaml.YAMLError as e:
        raise UserError(f"{what}: not valid YAML ({' '.join(str(e).split())})") from None
    except RecursionError:
        raise UserError(f"{what}: not valid YAML (nested too deeply)") from None


def _yaml_problem(e) -> str:
    """A parser's error on one line: where it says, what it was reading, and what it found."""
    mark = e.problem_mark or e.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    said = ": ".join(s for s in (e.context, e.problem) if s)
    return f"{where}{' '.join(said.split()) or 'unreadable'}"
