"""Tasks people declare: `--task NAME:KIND:TRAIN[:DEV]` (or `NAME:KIND:hf:DATASET[:CONFIG]`, a
Hugging Face dataset) flags and a tasks file (YAML or JSON).

A declaration becomes a `TaskSpec` like the built-in ones: the columns are guessed from the
train file's header unless named (in the tasks file, or by --text-column, --text-pair-column and
--label-column for --task flags), the label names are read from the train file unless given
(sorted: numerically when every label is a number; a dataset's class label column gives its
class names in order), and a regression task's value range is the smallest and largest value of
its train and dev files unless given. From then on the rest of the code sees only the spec,
which checkpoints carry (tasks.json).

Parsing the flags imports no torch (the CLI validates them); resolving reads the files.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..configuration.file import read_file
from ..errors import ConfigError, UserError
from .files import open_rows, parse_tasks
from .builtin import TASK_ALIASES, TASKS
from .kinds import DECLARABLE, TARGETS
from .spec import NAME_PATTERN, TaskSpec

# Header names that hold what a task needs, most telling first (matched case-insensitively).
TEXT_COLUMNS = ("sentence", "text", "review", "content", "document", "utterance", "query", "question",
                "comment", "message", "tweet", "body", "input")
PAIR_COLUMNS = (("sentence1", "sentence2"), ("sentence_1", "sentence_2"), ("sentence_a", "sentence_b"),
                ("text1", "text2"), ("text_1", "text_2"), ("text_a", "text_b"), ("question1", "question2"),
                ("q1", "q2"), ("premise", "hypothesis"), ("query", "document"), ("s1", "s2"), ("a", "b"))
LABEL_COLUMNS = ("label", "labels", "gold_label", "sentiment", "similarity", "score", "is_duplicate", "target",
                 "class", "category", "intent", "rating", "stars", "relevance", "y")
ID_COLUMNS = ("id", "guid", "uid", "example_id")
# Curve colours of declared tasks in the TUI, in declaration order (the built-ins use others).
PALETTE = ("#c061cb", "#f5c211", "#1c71d8", "#e01b24", "#865e3c", "#2ec27e", "#613583", "#ff7800")
# What a tasks-file entry may say (key -> what it sets).
FILE_KEYS = {
    "name": "identifier (lower-case letters, digits, _)", "kind": ", ".join(DECLARABLE), "train": "train file",
    "dev": "dev file", "format": "auto, csv, tsv or jsonl",
    "dataset": "a Hugging Face dataset instead of files: a save_to_disk directory, a directory of data files, "
               "or a Hub name (from the local cache)",
    "config": "the dataset's config", "train_split": "the dataset's split to train on (default train)",
    "dev_split": "its dev split (default validation, dev, valid or val, the first it has; null: none)",
    "text": "text column, or a list of two",
    "label": "label column", "id": "id column (none: examples are numbered by line)",
    "labels": "label names in index order", "range": "[low, high] of a regression target",
    "loss_weight": "multiplies the task's loss", "metrics": "list, the first counts toward overall",
    "title": "name in tables", "smart_weight": "SMART weight",
}
_RANGE = re.compile(r"\[\s*(-?[0-9.]+(?:e-?\d+)?)\s*[-,]\s*(-?[0-9.]+(?:e-?\d+)?)\s*\]\Z")


def parse_kind(text: str) -> tuple[str, tuple[float, float] | None]:
    """'pair-regression[0,5]' (or [0-5]) -> ('pair-regression', (0.0, 5.0)); a bare kind -> (kind, None)."""
    text = text.strip()
    kind, bracket, rest = text.partition("[")
    if kind not in DECLARABLE:
        raise ValueError(f"kind {kind!r}: choose from {', '.join(DECLARABLE)}")
    if not bracket:
        return kind, None
    m = _RANGE.match("[" + rest)
    if not m or not TARGETS[kind].number:
        raise ValueError(f"{text!r}: only regression kinds take a range, written like {kind}[0,5]")
    low, high = float(m.group(1)), float(m.group(2))
    if not low < high:
        raise ValueError(f"{text!r}: the range needs low < high")
    return kind, (low, high)


def parse_task_flag(text: str) -> dict:
    """'NAME:KIND:TRAIN[:DEV]' or 'NAME:KIND:hf:DATASET[:CONFIG]' -> a declaration (the same keys as a
    tasks-file entry); ValueError if malformed."""
    parts = text.split(":")
    dataset = len(parts) > 2 and parts[2].strip() == "hf"
    if not (len(parts) in ((4, 5) if dataset else (3, 4)) and all(p.strip() for p in parts)):
        raise ValueError(f"{text!r}: expected NAME:KIND:TRAIN[:DEV] or NAME:KIND:hf:DATASET[:CONFIG], e.g. "
                         f"intents:classification:train.csv:dev.csv or nli:pair-classification:hf:my-data")
    kind, value_range = parse_kind(parts[1])
    entry = {"name": parts[0].strip(), "kind": kind}
    if dataset:
        entry["dataset"] = parts[3].strip()
        if len(parts) == 5:
            entry["config"] = parts[4].strip()
    else:
        entry["train"] = parts[2]
        if len(parts) == 4:
            entry["dev"] = parts[3]
    if value_range is not None:
        entry["range"] = list(value_range)
    check_name(entry["name"])
    return entry


def parse_task_flags(values) -> list[str]:
    """Validate every --task value (ValueError names the bad one); the strings are kept as given."""
    values = [values] if isinstance(values, str) else list(values)
    for v in values:
        parse_task_flag(v)
    return values


def check_name(name: str) -> None:
    if name in TASKS or name in TASK_ALIASES:
        raise ValueError(f"task name {name!r} is a built-in task's; train it with --tasks {TASK_ALIASES.get(name, name)}"
                         f", or give yours another name")
    if name in ("embedding", "id", "error", "truncated"):  # the ONNX export's and predict's own output keys
        raise ValueError(f"task name {name!r} is taken by bertmtl's own outputs; give your task another name")
    if not NAME_PATTERN.match(name):
        raise ValueError(f"task name {name!r}: use lower-case letters, digits and _ (starting with a letter)")


def read_tasks_file(path: str | Path) -> list[dict]:
    """The entries of a tasks file: JSON (.json) or YAML (any other name); a list, or {"tasks": [...]}.

    Relative file paths in it are relative to the tasks file.
    """
    path = Path(path)
    data = read_file(path, f"--tasks-file {path}")
    if isinstance(data, dict) and "tasks" in data:
        data = data["tasks"]
    if not isinstance(data, list) or not data or not all(isinstance(e, dict) for e in data):
        raise UserError(f"{path}: expected a list of tasks (or tasks: [...]), each a mapping with name, kind, train")
    entries = []
    for i, e in enumerate(data, 1):
        where = f"{path}: task {i} ({e.get('name', '?')})"
        if bad := sorted(set(e) - set(FILE_KEYS)):
            raise UserError(f"{where}: unknown key(s) {', '.join(map(str, bad))}; a task may say: "
                            + "; ".join(f"{k} ({v})" for k, v in FILE_KEYS.items()))
        if missing := [k for k in ("name", "kind", "train" if not e.get("dataset") else "") if k and not e.get(k)]:
            raise UserError(f"{where}: missing {', '.join(missing)}")
        if e.get("dataset") and (both := [k for k in ("train", "dev", "format") if k in e]):
            raise UserError(f"{where}: a dataset task names its splits (train_split, dev_split), not "
                            f"{', '.join(both)}")
        if not e.get("dataset") and (stray := [k for k in ("config", "train_split", "dev_split") if k in e]):
            raise UserError(f"{where}: {', '.join(stray)} belong(s) to a dataset task (dataset: ...)")
        try:
            check_name(str(e["name"]))
            kind, value_range = parse_kind(str(e["kind"]))
        except ValueError as err:
            raise UserError(f"{where}: {err}") from None
        e = {**e, "kind": kind}
        if value_range is not None:
            e.setdefault("range", list(value_range))
        for k in ("train", "dev"):
            if e.get(k):
                e[k] = str(path.parent / str(e[k]))
        if e.get("dataset") and (path.parent / str(e["dataset"])).is_dir():  # a local dataset, as files are
            e["dataset"] = str(path.parent / str(e["dataset"]))
        entries.append(e)
    return entries


# --text-column, --text-pair-column, --label-column -> what a declaration names (for --task flags).
COLUMN_FLAGS = {"text_column": "--text-column", "text_pair_column": "--text-pair-column",
                "label_column": "--label-column"}


def column_flags(cfg) -> dict:
    """The column flags a command was given ({"text_column": "review", ...}: only those given)."""
    return {k: v for k in COLUMN_FLAGS if (v := getattr(cfg, k, None))}


def check_column_flags(cfg) -> None:
    """ConfigError when column flags come without a --task declaration to apply to."""
    if (given := column_flags(cfg)) and not cfg.task:
        first = next(iter(given))
        raise ConfigError(first, "names a column of the tasks declared with --task (a tasks file names each task's "
                                 "columns itself: text:, label:)", COLUMN_FLAGS[first])


def _with_columns(entry: dict, columns: dict) -> dict:
    """A --task declaration with the column flags' names (they apply to every --task flag)."""
    pair = entry["kind"].startswith("pair-")
    first, second = columns.get("text_column"), columns.get("text_pair_column")
    if second and not pair:
        raise UserError(f"--text-pair-column: task {entry['name']} is a {entry['kind']} task, which reads one text "
                        f"column (--text-column)")
    if pair and bool(first) != bool(second):
        raise UserError(f"task {entry['name']} reads a pair of texts: give both --text-column and "
                        f"--text-pair-column, or neither (then they are guessed)")
    entry = dict(entry)
    if first:
        entry["text"] = [first, second] if pair else first
    if columns.get("label_column"):
        entry["label"] = columns["label_column"]
    return entry


def declared_entries(flags, tasks_file: str | None, columns: dict | None = None) -> list[dict]:
    """The declarations of --tasks-file then --task flags, in that order; `columns` (column_flags)
    name the columns of the --task flags' files or datasets."""
    entries = read_tasks_file(tasks_file) if tasks_file else []
    for flag in flags or ():
        try:
            entry = parse_task_flag(flag)
        except ValueError as e:
            raise UserError(f"--task {e}") from None
        entries.append(_with_columns(entry, columns) if columns else entry)
    return entries


# -- from a declaration to a spec ----------------------------------------------------------

def _pick(header: list[str], candidates) -> str | None:
    lower = {h.lower(): h for h in header if h}
    for c in candidates:
        if c in lower:
            return lower[c]
    return None


def guess_columns(header: list[str], pair: bool) -> tuple[tuple[str, ...] | None, str | None, str]:
    """(text columns, label column, id column or "") guessed from a header; None where no name fits."""
    if pair:
        texts = next(((_pick(header, [a]), _pick(header, [b])) for a, b in PAIR_COLUMNS
                      if _pick(header, [a]) and _pick(header, [b])), None)
    else:
        one = _pick(header, TEXT_COLUMNS)
        texts = (one,) if one else None
    label = _pick(header, [c for c in LABEL_COLUMNS if not texts or c not in (t.lower() for t in texts)])
    return texts, label, _pick(header, ID_COLUMNS) or ""


def _columns(entry: dict, header: list[str], path, pair: bool) -> tuple[tuple[str, ...], str, str]:
    texts, label, ident = guess_columns(header, pair)
    if entry.get("text"):
        given = entry["text"]
        texts = tuple(given) if isinstance(given, list) else (given,)
    if entry.get("label"):
        label = str(entry["label"])
    if "id" in entry:
        ident = str(entry["id"] or "")
    if texts is None or label is None:
        what = " and ".join(w for w, v in (("the text" + (" pair" if pair else ""), texts), ("the label", label))
                            if v is None)
        names = ", ".join(repr(h) for h in header) or "nothing"
        raise UserError(f"{path}: cannot tell which column holds {what} (header: {names}). Name the columns: "
                        f"--text-column{' and --text-pair-column' if pair else ''} and --label-column, or in a "
                        f"tasks file `text: {'[first, second]' if pair else 'review'}` and `label: stars` "
                        f"(docs: Your own tasks)")
    return texts, label, ident


def _label_values(path: Path, fmt: str, columns: tuple[str, ...], label: str, **where) -> list[str]:
    """Every non-empty label of the rows that can be read (bad rows are reported when training reads them);
    `where`: a dataset's config and split."""
    values = []
    with open_rows(path, fmt, **where) as src:
        src.require(columns)
        for _, get, reason in src.rows(columns, labelled=True):
            v = get(label)
            if reason is None and v is not None and v.strip():
                values.append(v.strip())
    return values


def build_spec(entry: dict, index: int = 0) -> TaskSpec:
    """The TaskSpec of one declaration, reading its files for what it leaves out."""
    name, kind = str(entry["name"]), entry["kind"]
    pair = kind.startswith("pair-")
    splits: dict = {}  # a dataset task's config and splits
    if entry.get("dataset"):
        train, dev, fmt, splits = _dataset_source(entry)
    else:
        train = Path(entry["train"]).expanduser().resolve()
        dev = Path(entry["dev"]).expanduser().resolve() if entry.get("dev") else None
        fmt = entry.get("format", "auto")
    reading = {"train": {"config": splits.get("dataset_config", ""), "split": splits.get("train_split", "")},
               "dev": {"config": splits.get("dataset_config", ""), "split": splits.get("dev_split", "")}}
    with open_rows(train, fmt, f"{name} train data", **reading["train"]) as src:
        header, where = src.header, src.location
        classes = getattr(src, "class_names", lambda c: None)  # a dataset's ClassLabel names
    texts, label, ident = _columns(entry, header, where, pair)
    columns = ((ident,) if ident else ()) + texts + (label,)
    if not entry.get("labels") and not TARGETS[kind].number and (names := classes(label)):
        entry = {**entry, "labels": list(names)}
    # The labels (a class target) or the value range (a number) come from the data unless given.
    try:
        target = TARGETS[kind].declare({**entry, "label_column": label}, lambda with_dev: [
            v for p, split in ((train, "train"), (dev, "dev"))[:2 if with_dev else 1] if p
            for v in _label_values(p, fmt, columns, label, **reading[split])], pair, where)
    except ValueError as e:
        raise UserError(str(e)) from None
    if entry.get("metrics"):
        target["metrics"] = tuple(entry["metrics"])
    title = str(entry.get("title") or name)
    try:
        return TaskSpec.define(
            name, title, name, texts, label, kind=kind, id_column=ident, json_keys=(name,),
            color=PALETTE[index % len(PALETTE)], smart_weight=float(entry.get("smart_weight", 0.5)),
            train_file=str(train), dev_file=str(dev) if dev else "", file_format=fmt,
            loss_weight=float(entry.get("loss_weight", 1.0)), **splits, **target)
    except (TypeError, ValueError) as e:
        raise UserError(f"task {name}: {e}") from None


def _dataset_source(entry: dict) -> tuple[str, str | None, str, dict]:
    """(train, dev, format, spec fields) of a dataset declaration: the dataset (a local directory made
    absolute, so a run started elsewhere finds it; a Hub name as given), and its config and splits."""
    from .hf_datasets import dev_split, rows_of, splits

    dataset, config = str(entry["dataset"]), str(entry.get("config") or "")
    local = Path(dataset).expanduser()
    if local.is_dir():
        dataset = str(local.resolve())
    train_split = str(entry.get("train_split") or "train")
    have = splits(dataset, config)
    if train_split not in have:
        raise UserError(f"task {entry['name']}: dataset {dataset} has no split {train_split!r} to train on (it has "
                        f"{', '.join(have)}); name one with train_split in a tasks file")
    if not rows_of(dataset, config, train_split):
        raise UserError(f"task {entry['name']}: the {train_split} split of dataset {dataset} has no rows")
    if "dev_split" in entry:  # named, or null: no dev set
        dev = str(entry["dev_split"] or "")
        if dev and dev not in have:
            raise UserError(f"task {entry['name']}: dataset {dataset} has no split {dev!r} (it has {', '.join(have)})")
    else:
        dev = dev_split(dataset, config)
    return dataset, dataset if dev else None, "hf", {"dataset_config": config, "train_split": train_split,
                                                      "dev_split": dev}


def declared_specs(flags, tasks_file: str | None, taken=(), columns: dict | None = None) -> list[TaskSpec]:
    """The specs of every declared task; UserError on a name used twice (or by a trained built-in task).
    `columns`: the column flags of the --task declarations (column_flags)."""
    entries = declared_entries(flags, tasks_file, columns)
    names = list(taken)
    specs = []
    for i, e in enumerate(entries):
        if e["name"] in names:
            raise UserError(f"task name {e['name']!r} is declared twice")
        names.append(e["name"])
        specs.append(build_spec(e, i))
    return specs


def builtin_names(tasks, declares: bool) -> list[str]:
    """The built-in tasks a command works on, in canonical order: `tasks` (names or aliases, a list or
    'sst,para'), by default all three, and none beside declared tasks unless named."""
    if tasks is None:
        return [] if declares else list(TASKS)
    if not tasks and declares:
        return []
    try:
        return parse_tasks(tasks if isinstance(tasks, str) else ",".join(tasks))
    except ValueError as e:
        raise UserError(f"--tasks: {e}") from None


def chosen_specs(tasks, flags, tasks_file: str | None, columns: dict | None = None) -> list[TaskSpec]:
    """The specs of the tasks a command works on: the built-in ones chosen (builtin_names), then the
    declared ones (--task, --tasks-file, named columns)."""
    names = builtin_names(tasks, bool(flags or tasks_file))
    declared = declared_specs(flags, tasks_file, taken=names, columns=columns) if flags or tasks_file else []
    return [TASKS[n] for n in names] + declared
