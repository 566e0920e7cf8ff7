"""Task files in, validated examples out; tokenised datasets, length buckets, round-robin steps.

The CS224N files are tab-separated with a header and CSV quoting, so they are read with the
csv module; declared tasks' files may also be comma-separated or JSON lines (`RowSource`).
Rows that cannot be used are skipped with a warning that names file, line and reason, and
counted; `strict` turns the first such row into an error.
"""

from __future__ import annotations

import csv
import json
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import UserError
from .tasks import TASK_ALIASES, TASKS, TaskSpec
from .tokenizer import Batch, Encoded, WordPieceTokenizer, text_problem

# A stray quote can make one field swallow the rest of the file; let it be read (and then
# truncated by the tokenizer) rather than crash the reader.
csv.field_size_limit(64 * 1024 * 1024)

SPLITS = ("train", "dev", "test")


# A task's files, columns and label rules are its spec (tasks.py); `Task` is the name this
# module's readers have always used for it.
Task = TaskSpec


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

    task: Task
    path: Path
    examples: list[Example]
    skipped: list[SkippedRow] = field(default_factory=list)


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


def read_task_file(path: str | Path, task: Task, labelled: bool = True, strict: bool = False,
                   warn=None) -> TaskFile:
    """Read one task file (CSV, TSV or JSONL); `warn(SkippedRow)` is called for each skipped row.

    A task without an id column numbers its examples by line.
    """
    path = Path(path)
    required = ((task.id_column,) if task.id_column else ()) + task.text_columns + \
        ((task.label_column,) if labelled else ())
    out = TaskFile(task, path, [])
    with RowSource(path, task.file_format, f"{task.title} {'labelled' if labelled else 'test'} data") as src:
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
                skipped = SkippedRow(path.name, start, reason)
                if strict:
                    raise UserError(f"{path}:{start}: unusable row ({reason}); --strict stops here")
                out.skipped.append(skipped)
                if warn is not None:
                    warn(skipped)
                continue
            out.examples.append(Example(ident.strip(), texts[0].strip(),
                                        texts[1].strip() if task.pair else None, label, start))
    if not out.examples:
        raise UserError(f"{path}: no usable rows" + (f" ({len(out.skipped)} skipped)" if out.skipped else ""))
    return out


def task_path(data_dir: str | Path, task: Task, split: str, overrides: dict[str, Path] | None = None) -> Path | None:
    """Where a task's file for a split is: an explicit override, the file its spec names, else
    DATA_DIR/<CS224N name>; None for a declared task without a file for that split."""
    if overrides and (p := overrides.get(f"{task.name}_{split}")):
        return Path(p)
    if task.train_file:  # a declared task: its files are in its spec
        p = {"train": task.train_file, "dev": task.dev_file}.get(split)
        return Path(p) if p else None
    return Path(data_dir) / task.filename(split)


def task_files(data_dir: str | Path, tasks: dict[str, Task], splits=("train", "dev"),
               overrides: dict[str, Path] | None = None) -> dict[str, Path | None]:
    """The files of these tasks a command reads, by description ("the sst train file"), for
    missing-file and output-overlap checks (outputs.check_output)."""
    return {f"the {name} {split} file": task_path(data_dir, task, split, overrides)
            for name, task in tasks.items() for split in splits}


# ----------------------------------------------------------------------------------------
# Tokenised datasets and batching


@dataclass
class TaskBatch:
    """A batch for one task.

    `inputs` holds one row per sentence: B rows for single sentences and cross-encoded pairs,
    2B rows for bi-encoded pairs (all first sentences, then all second ones), so the encoder
    runs once per task batch with twice the rows instead of twice.
    """

    task: str
    inputs: Batch
    labels: torch.Tensor | None
    index: list[int]
    bi_pair: bool = False

    def to(self, device, non_blocking: bool = False) -> "TaskBatch":
        labels = self.labels.to(device, non_blocking=non_blocking) if self.labels is not None else None
        return TaskBatch(self.task, self.inputs.to(device, non_blocking), labels, self.index, self.bi_pair)

    def pin_memory(self) -> "TaskBatch":
        return TaskBatch(self.task, self.inputs.pin_memory(),
                         self.labels.pin_memory() if self.labels is not None else None, self.index, self.bi_pair)

    def __len__(self) -> int:
        return len(self.index)


class TaskDataset:
    """Examples of one task, tokenised once up front; batches are padded on demand."""

    def __init__(self, task: Task, examples: list[Example], tokenizer: WordPieceTokenizer, pair_mode: str = "bi"):
        self.task = task
        self.examples = examples
        self.tokenizer = tokenizer
        self.cross = task.pair and pair_mode == "cross"
        a = [e.text_a for e in examples]
        if not task.pair:
            self.encoded: list[list[Encoded]] = [tokenizer.encode(a)]
        elif self.cross:
            self.encoded = [tokenizer.encode(a, [e.text_b for e in examples])]
        else:
            self.encoded = [tokenizer.encode(a), tokenizer.encode([e.text_b for e in examples])]
        self.lengths = [max(len(enc[i].ids) for enc in self.encoded) for i in range(len(examples))]
        labelled = all(e.label is not None for e in examples)
        if not labelled:
            self.labels = None
        else:
            dtype = torch.long if task.label_dtype == "int" else torch.float32
            self.labels = torch.tensor([e.label for e in examples], dtype=dtype)

    def __len__(self) -> int:
        return len(self.examples)

    def batch(self, index: list[int]) -> TaskBatch:
        inputs = self.tokenizer.pad([enc[i] for enc in self.encoded for i in index])
        labels = self.labels[index] if self.labels is not None else None
        return TaskBatch(self.task.name, inputs, labels, list(index), bi_pair=len(self.encoded) == 2)

    def truncated(self, i: int) -> bool:
        return any(enc[i].truncated for enc in self.encoded)


def bucketed_batches(lengths: list[int], batch_size: int, generator: torch.Generator | None,
                     bucket: bool = True, window: int = 50) -> list[list[int]]:
    """Batches of similar length, in random order.

    Examples are shuffled, then sorted by length inside windows of `window` batches and cut
    into batches, and the batches are shuffled again: padding drops while every epoch still
    sees a different random grouping. With generator=None nothing is shuffled (evaluation).
    """
    n = len(lengths)
    order = torch.randperm(n, generator=generator).tolist() if generator is not None else list(range(n))
    if bucket:
        span = batch_size * window
        chunks = [sorted(order[i:i + span], key=lambda j: lengths[j]) for i in range(0, n, span)]
        order = [j for c in chunks for j in c]
    batches = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    if generator is not None:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    return batches


class RoundRobin:
    """Each step takes one batch from every task; shorter datasets cycle.

    With `accum` K > 1 (gradient accumulation) a step's batch per task is K times larger and
    comes as K micro-batches: the same examples as one batch of K x batch_size.
    With `proportional`, a step takes a batch of each task with probability (its batches per
    pass) / (the largest task's): over an epoch every task goes through its data about once, so
    tasks are seen in proportion to their size; the largest is in every step.

    The order of each pass over a task is a pure function of (seed, task, pass number), and the
    tasks of a step a pure function of (seed, step), so the position (pass, batch) is the whole
    state: saved as JSON, it resumes the exact data order.
    """

    def __init__(self, datasets: dict[str, TaskDataset], batch_size: int, seed: int, bucket: bool = True,
                 shard: tuple[int, int] = (0, 1), accum: int = 1, proportional: bool = False):
        self.datasets = datasets
        self.batch_size = batch_size
        self.accum = accum
        self.seed = seed
        self.bucket = bucket
        self.proportional = proportional
        self.rank, self.world = shard
        self.state = {t: {"pass": 0, "pos": 0} for t in datasets}
        self._cache: dict[str, tuple[int, list[list[int]]]] = {}

    def _batches(self, task: str, n_pass: int) -> list[list[int]]:
        cached = self._cache.get(task)
        if cached and cached[0] == n_pass:
            return cached[1]
        # Mixed seeds are reduced modulo 2**63 (what a generator takes): the same value for every seed
        # below ~9e12, so runs repeat as before, and no overflow up to the largest seed (2**63-1).
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.datasets[task].task.seed_index * 7_919
                                           + n_pass) % 2**63)
        # Every rank draws the same global batches (global batch = per-rank batch x world) and
        # takes its own slice, so N ranks see exactly what one process with the global batch sees.
        batches = bucketed_batches(self.datasets[task].lengths, self.batch_size * self.accum * self.world, g,
                                   self.bucket)
        if self.world > 1:
            batches = [b[self.rank::self.world] for b in batches if len(b) >= self.world]
        self._cache[task] = (n_pass, batches)
        return batches

    def batches_per_pass(self, task: str) -> int:
        return len(self._batches(task, 0))

    def steps_per_epoch(self) -> int:
        """One pass over the largest task."""
        return max(self.batches_per_pass(t) for t in self.datasets)

    def tasks_at(self, step: int) -> list[str]:
        """The tasks that give a batch at this step (all of them, unless proportional)."""
        if not self.proportional:
            return list(self.state)
        sizes = {t: self.batches_per_pass(t) for t in self.state}
        most = max(sizes.values())
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + 104_729 + step) % 2**63)
        draws = torch.rand(len(sizes), generator=g).tolist()
        return [t for (t, n), u in zip(sizes.items(), draws) if u < n / most]  # u < 1: the largest always

    def next(self, step: int = 0) -> dict[str, TaskBatch | list[TaskBatch]]:
        """One batch of each task of this step (`step` matters only with proportional sampling);
        with accum > 1, each task's list of micro-batches."""
        out = {}
        chosen = self.tasks_at(step)
        for task, st in self.state.items():
            if task not in chosen:
                continue
            batches = self._batches(task, st["pass"])
            if st["pos"] >= len(batches):
                st["pass"], st["pos"] = st["pass"] + 1, 0
                batches = self._batches(task, st["pass"])
            index = batches[st["pos"]]
            if self.accum == 1:
                out[task] = self.datasets[task].batch(index)
            else:  # parts of ceil(n / accum) examples (a pass's last, short batch may give fewer parts)
                size = -(-len(index) // self.accum)
                out[task] = [self.datasets[task].batch(index[i:i + size]) for i in range(0, len(index), size)]
            st["pos"] += 1
        return out

    def state_dict(self) -> dict:
        return {t: dict(s) for t, s in self.state.items()}

    def load_state_dict(self, state: dict) -> None:
        for t in self.state:
            if t in state:
                self.state[t] = {"pass": int(state[t]["pass"]), "pos": int(state[t]["pos"])}


def n_examples(batches: dict[str, TaskBatch | list[TaskBatch]]) -> int:
    """Examples in a step's batches (micro-batches included)."""
    return sum(sum(map(len, b)) if isinstance(b, list) else len(b) for b in batches.values())


def stable_seed(*parts) -> int:
    """A seed from values, the same in every process (Python's hash() of str is salted)."""
    return zlib.crc32("|".join(map(str, parts)).encode())
