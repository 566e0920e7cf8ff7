"""Task files in, validated examples out (no torch: the CLI, option parsing and the tasks read them).

The CS224N files are tab-separated with a header and CSV quoting, so they are read with the
csv module; declared tasks' files may also be comma-separated or JSON lines (`RowSource`).
Rows that cannot be used are skipped with a warning that names file, line and reason, and
counted; `strict` turns the first such row into an error.

`read_tasks` is the one way every command reads its tasks' files (train, evaluate, pretrain,
augment): which file a task's split is in (`TaskSource`), augmented copies, the dev subset.
data/batching.py turns the examples into tokenised datasets.
"""

from __future__ import annotations

import csv
import json
import random
import re
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import UserError
from . import TASK_ALIASES, TASKS, TaskSpec
from .text import text_problem

# A stray quote can make one field swallow the rest of the file; let it be read (and then
# truncated by the tokenizer) rather than crash the reader.
csv.field_size_limit(64 * 1024 * 1024)

SPLITS = ("train", "dev", "test")


def parse_choices(spec: str, choices, what: str, aliases: dict | None = None) -> list[str]:
    """'b, a' -> ['a', 'b']: a comma/space separated subset of `choices`, in their order."""
    aliases = aliases or {}
    names = [aliases.get(t.strip().lower(), t.strip().lower()) for t in re.split(r"[,\s]+", spec) if t.strip()]
    bad = [n for n in names if n not in choices]
    if bad or not names:
        raise ValueError(f"unknown {what}(s) {', '.join(bad) or repr(spec)}; choose from {', '.join(choices)}")
    return [c for c in choices if c in names]


def parse_tasks(spec: str) -> list[str]:
    """'sst,para' -> ['sst', 'para'] in canonical order (also accepts full names)."""
    return parse_choices(spec, list(TASKS), "task", TASK_ALIASES)


@dataclass
class Example:
    id: str
    text_a: str
    text_b: str | None
    label: float | int | None
    line: int


@dataclass
class SkippedRow:
    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: skipped row ({self.reason})"


@dataclass
class TaskFile:
    """The usable examples of one file and the rows that were skipped."""

    task: TaskSpec
    path: Path
    examples: list[Example]
    skipped: list[SkippedRow] = field(default_factory=list)
    where: str = ""  # what was read, in messages: the file, or a dataset's split


def _bad_text(s: str) -> str | None:
    if problem := text_problem(s):  # an invalid byte, or a lone surrogate from a JSON escape
        return "invalid " + problem.removeprefix("not valid ")
    if "\x00" in s:
        return "a NUL byte (binary data?)"
    return None


FORMAT_NAMES = {"tsv": "tab-separated", "csv": "comma-separated", "jsonl": "JSON lines"}


def file_format(path: Path, declared: str = "auto") -> str:
    """How to read a task file: as declared, else by extension (.tsv, .jsonl), else by its first
    line (a tab in it: tab-separated, as the CS224N ".csv" files are; otherwise comma-separated)."""
    if declared != "auto":
        return declared
    ext = path.suffix.lower()
    if ext in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if ext in (".tsv", ".tab"):
        return "tsv"
    try:
        with open(path, "rb") as fh:
            first = fh.readline(1 << 20)
    except OSError:
        return "csv"
    return "tsv" if b"\t" in first else "csv"


def _json_text(v) -> str | None:
    """A JSON value as the text a delimited file would hold (numbers as written, null as missing)."""
    if v is None or isinstance(v, str):
        return v
    return json.dumps(v, ensure_ascii=False)


class RowSource:
    """The rows of a CSV, TSV or JSONL task file: a header, then (line, get(column), reason) per row.

    `reason` says why a row cannot be read at all (wrong number of fields, invalid JSON); the
    caller validates the rest. One reader for the CS224N files and declared tasks' files, so
    both get the same line numbers, warnings and `--strict`.
    """

    def __init__(self, path: str | Path, fmt: str = "auto", what: str = "task data"):
        self.path = Path(path)
        self.location, self.where = str(self.path), self.path.name  # in errors; in row warnings
        if not self.path.is_file():
            raise UserError(f"{self.path}: no such file (the {what})")
        self.format = file_format(self.path, fmt)
        # surrogateescape keeps undecodable bytes as lone surrogates, so a bad byte costs one row
        # (reported), not the whole file.
        try:
            self._fh = open(self.path, newline="", encoding="utf-8-sig", errors="surrogateescape")
        except OSError as e:
            raise UserError(f"{self.path}: cannot read ({e.strerror})") from None
        self.header: list[str] = []
        if self.format == "jsonl":
            self._first = self._read_json_header()
        else:
            self._reader = csv.reader(self._fh, delimiter="\t" if self.format == "tsv" else ",")
            try:
                header = next(self._reader, None)
            except csv.Error as e:
                self.close()
                raise UserError(f"{self.path}:1: unreadable header ({e})") from None
            self.header = [h.strip() for h in header] if header is not None else []

    def _read_json_header(self):
        """The keys of the first object are the header (later objects may lack some: empty fields)."""
        for n, line in enumerate(self._fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                obj = None
            if isinstance(obj, dict):
                self.header = [str(k) for k in obj]
                return n, obj
            self.close()
            raise UserError(f"{self.path}:{n}: the first line is not a JSON object, so the columns are unknown")
        return None

    def close(self) -> None:
        self._fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def require(self, columns, hint_labelled: bool = True) -> None:
        """UserError naming the missing columns and the header, when any is missing."""
        if not self.header:
            self.close()
            raise UserError(f"{self.path}: empty file (expected a {FORMAT_NAMES[self.format]} header with "
                            f"{', '.join(columns)})")
        missing = [c for c in columns if c not in self.header]
        if missing:
            found = ", ".join(repr(h) for h in self.header[:8] if h) or "nothing"
            hint = " Is it tab-separated?" if len(self.header) == 1 and self.format == "tsv" else ""
            self.close()
            raise UserError(f"{self.path}:1: missing column(s) {', '.join(missing)} (header has {found}).{hint}")

    def rows(self, columns, labelled: bool = True):
        """(first line of the row, get(column) -> text or None, reason or None) for each non-blank row."""
        if self.format == "jsonl":
            yield from self._json_rows()
        else:
            yield from self._delimited_rows(columns, labelled)

    def _json_rows(self):
        if self._first is not None:
            n, obj = self._first
            yield n, lambda c, o=obj: _json_text(o.get(c)), None
            lines = enumerate(self._fh, n + 1)
        else:
            lines = enumerate(self._fh, 1)
        for n, line in lines:
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as e:
                yield n, lambda c: None, f"invalid JSON ({e.args[0].split(':')[0]})"
                continue
            if not isinstance(obj, dict):
                yield n, lambda c: None, "not a JSON object"
                continue
            yield n, lambda c, o=obj: _json_text(o.get(c)), None

    def _delimited_rows(self, columns, labelled: bool):
        reader, path = self._reader, self.path
        col = {c: self.header.index(c) for c in columns}
        width = len(self.header)
        line = reader.line_num
        while True:
            start = line + 1
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                raise UserError(f"{path}:{reader.line_num}: unreadable CSV ({e})") from None
            line = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            reason = None
            if len(row) > width:
                reason = f"{len(row)} fields, the header has {width}"
            elif len(row) < width:
                reason = f"{len(row)} fields, the header has {width}"
                # A short row whose label is simply empty is reported as such by the caller.
                if len(row) > max(col.values()) - (1 if labelled else 0):
                    reason = None
            yield start, lambda c, r=row: r[col[c]] if col[c] < len(r) else None, reason


def open_rows(path: str | Path, fmt: str = "auto", what: str = "task data", *, config: str = "", split: str = ""):
    """The rows of a task file (a RowSource), or of a dataset's split (fmt "hf": hf_datasets.DatasetRows,
    the same interface)."""
    if fmt == "hf":
        from .hf_datasets import DatasetRows

        return DatasetRows(str(path), config, split, what)
    return RowSource(path, fmt, what)


def read_task_file(path: str | Path, task: TaskSpec, labelled: bool = True, strict: bool = False,
                   warn=None, split: str = "train") -> TaskFile:
    """Read one task file (CSV, TSV or JSONL), or the split of a dataset task that holds `split`'s
    examples; `warn(SkippedRow)` is called for each skipped row.

    A task without an id column numbers its examples by line (a dataset's: by row index).
    """
    path = Path(path)
    required = ((task.id_column,) if task.id_column else ()) + task.text_columns + \
        ((task.label_column,) if labelled else ())
    out = TaskFile(task, path, [])
    with open_rows(path, task.file_format, f"{task.title} {'labelled' if labelled else 'test'} data",
                   config=task.dataset_config, split=task.split_of(split)) as src:
        src.require(required)
        for start, get, reason in src.rows(required, labelled):
            texts = [get(c) for c in task.text_columns]
            label = None
            if reason is None:
                for c, t in zip(task.text_columns, texts):
                    if t is None or not t.strip():
                        reason = f"{c} is empty"
                        break
                    if bad := _bad_text(t):
                        reason = f"{c} has {bad}"
                        break
            if reason is None and labelled:
                try:
                    label = task.parse_label(get(task.label_column))
                except ValueError as e:
                    reason = str(e)
            ident = get(task.id_column) if task.id_column else str(start)
            if reason is None and (ident is None or not ident.strip() or _bad_text(ident)):
                reason = f"{task.id_column} is empty or invalid"
            if reason is not None:
                skipped = SkippedRow(src.where, start, reason)
                if strict:
                    raise UserError(f"{src.location}:{start}: unusable row ({reason}); --strict stops here")
                out.skipped.append(skipped)
                if warn is not None:
                    warn(skipped)
                continue
            out.examples.append(Example(ident.strip(), texts[0].strip(),
                                        texts[1].strip() if task.pair else None, label, start))
        location = out.where = src.location
    if not out.examples:
        raise UserError(f"{location}: no usable rows" + (f" ({len(out.skipped)} skipped)" if out.skipped else ""))
    return out


def task_path(data_dir: str | Path, task: TaskSpec, split: str, overrides: dict[str, Path] | None = None) -> Path | None:
    """Where a task's file for a split is: an explicit override, the file its spec names, else
    DATA_DIR/<CS224N name>; None for a declared task without a file for that split."""
    if overrides and (p := overrides.get(f"{task.name}_{split}")):
        return Path(p)
    if task.train_file:  # a declared task: its files (or its dataset) are in its spec
        p = {"train": task.train_file, "dev": task.dev_file}.get(split)
        return Path(p) if p else None
    return Path(data_dir) / task.filename(split)


def task_files(data_dir: str | Path, tasks: dict[str, TaskSpec], splits=("train", "dev"),
               overrides: dict[str, Path] | None = None) -> dict[str, Path | None]:
    """The files of these tasks a command reads, by description ("the sst train file"), for
    missing-file and output-overlap checks (ownership.check_output)."""
    return {f"the {name} {split} file": task_path(data_dir, task, split, overrides)
            for name, task in tasks.items() for split in splits}


def stable_seed(*parts) -> int:
    """A seed from values, the same in every process (Python's hash() of str is salted)."""
    return zlib.crc32("|".join(map(str, parts)).encode())


# ----------------------------------------------------------------------------------------
# The one reader of a command's tasks


@dataclass(frozen=True)
class TaskSource:
    """Where a command's tasks' files are, and how to read them.

    data_dir: the CS224N files (<prefix>-<split>.csv); declared tasks name their own files.
    files: per-file overrides, {"sst_train": path} (--sst-train and friends).
    augment: a `bertmtl augment` output, whose copies of a task's train file join its train split.
    dev_limit: a fixed subset of this many dev examples per task (train's --dev-limit).
    """

    data_dir: str | Path = "data"
    files: dict = field(default_factory=dict)
    augment: str | Path | None = None
    strict: bool = False
    dev_limit: int | None = None

    def path(self, task: TaskSpec, split: str) -> Path | None:
        return task_path(self.data_dir, task, split, self.files)


@dataclass
class TaskExamples:
    """What `read_tasks` read: each task's examples, the rows skipped per file, and the tasks left
    out because their file is not there (None: no file declared for the split)."""

    examples: dict[str, list[Example]] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    absent: dict[str, Path | None] = field(default_factory=dict)


def read_tasks(specs, split: str, source: TaskSource, *, labelled: bool = True, warn=None,
               optional=lambda spec: False) -> TaskExamples:
    """The examples of each task's `split` file, in spec order: train, evaluate, pretrain and augment
    all read their tasks here.

    A missing file is an error (read_task_file's), unless `optional(spec)` says the task may go
    without it: then it is listed in `absent`. A task without a file for the split (a declared task
    without a dev file) is always absent. Train splits gain the augmented copies of `source.augment`;
    dev splits are cut to `source.dev_limit` examples.
    """
    out = TaskExamples()
    for spec in specs:
        path = source.path(spec, split)
        if path is None or (optional(spec) and not path.is_file()):
            out.absent[spec.name] = path
            continue
        files = [(path, spec)]
        if split == "train" and source.augment:
            extra = Path(source.augment) / spec.filename("train")
            if extra.is_file():  # augmented copies, after the originals
                files.append((extra, augmented_spec(spec)))
        examples = []
        for p, s in files:
            f = read_task_file(p, s, labelled=labelled, strict=source.strict, warn=warn, split=split)
            if f.skipped:  # by what was read: a dataset's train and dev splits share its path
                out.skipped[f.where] = len(f.skipped)
            examples += f.examples
        if split == "dev" and source.dev_limit:
            examples = dev_subset(examples, source.dev_limit, spec.name)
        out.examples[spec.name] = examples
    return out


def augmented_spec(spec: TaskSpec) -> TaskSpec:
    """How `bertmtl augment` writes a task's copies, and so how they are read: tab-separated, with
    an id column (the originals' ids, + -augN), whatever the task's own files (or dataset) are."""
    return replace(spec, file_format="tsv", id_column=spec.id_column or "id", dataset_config="", train_split="",
                   dev_split="")


def dev_subset(examples: list, n: int, task: str) -> list:
    """A fixed subset of n examples (in file order), the same for every run of the task: seeded by
    the task's name only, so runs with other seeds or options score the same examples, and the
    subset for a smaller n lies inside the one for a larger."""
    if n >= len(examples):
        return examples
    order = list(range(len(examples)))
    random.Random(stable_seed("dev-limit", task)).shuffle(order)
    return [examples[i] for i in sorted(order[:n])]

