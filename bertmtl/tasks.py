"""Tasks as data: each task declares what the rest of the code needs to know about it.

A `TaskSpec` says where a task's examples are (files and columns), what it predicts (kind,
labels or value range), how it learns (loss, output activation, SMART weight), how it is scored
(metrics, the CS224N prediction-file header) and how people see it (TUI colour and label, the
JSON keys of `predict`). Heads, losses, SMART, evaluation, prediction, the TUI and augmentation
read these fields; no other module compares a task's name.

The three CS224N tasks are the built-in specs below. Code takes any list of specs (one or
many), so tasks declared by users can go through the same paths.

This module imports no torch: the CLI, the TUI's data layer and option parsing use it.
"""

from __future__ import annotations

import dataclasses
import math
import re
import zlib
from dataclasses import dataclass
from functools import cached_property

from .numbers import FLOAT32_MAX, number_problem

# What a task predicts: one sentence or a pair, a class or a number.
KINDS = ("classification", "regression", "pair-classification", "pair-regression")
LOSSES = ("cross-entropy", "bce", "pearson")
# softmax over classes; sigmoid of one logit (two classes); calibrated score clamped to the range.
ACTIVATIONS = ("softmax", "sigmoid", "clamp")
# f1: F1 of the second label (binary tasks: "paraphrase"); spearman: rank correlation (regression).
METRICS = ("accuracy", "macro_f1", "f1", "pearson", "spearman")
# Metric -> suffix of its key in metrics dicts and metrics.jsonl (`sst_acc`, `sts_corr`).
# macro_f1 and f1 share a suffix: a task reports one of them.
METRIC_SUFFIX = {"accuracy": "acc", "macro_f1": "f1", "f1": "f1", "pearson": "corr", "spearman": "spearman"}
# Metric -> how tables name it after the task's title ("SST macro-F1"), and in short ("SST F1").
METRIC_TITLES = {"accuracy": "accuracy", "macro_f1": "macro-F1", "f1": "F1", "pearson": "Pearson r",
                 "spearman": "Spearman rho"}
METRIC_SHORT = {"accuracy": "acc", "macro_f1": "F1", "f1": "F1", "pearson": "r", "spearman": "rho"}
# How a task's files are read: by extension / first line (auto), or as declared.
FILE_FORMATS = ("auto", "csv", "tsv", "jsonl")
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]*\Z")  # a task name: lower-case letters, digits, _


@dataclass(frozen=True)
class TaskSpec:
    """One task: its data, its output, its loss and metrics, and how it is shown.

    Only the first five fields and `kind` (plus `labels` or `value_range`) are needed; the
    others have defaults derived from the kind in __post_init__.
    """

    name: str  # identifier: dict keys, metric keys, head parameter names (`sst.weight`)
    title: str  # in messages and tables ("SST", "Quora")
    prefix: str  # file name prefix: <prefix>-train.csv, <prefix>-dev.csv, <prefix>-test-student.csv
    text_columns: tuple[str, ...]  # one column, or two for a pair
    label_column: str
    kind: str = "classification"
    labels: tuple[str, ...] = ()  # class names, index = label value (classification kinds)
    value_range: tuple[float, float] | None = None  # (low, high) of the target (regression kinds)
    id_column: str = "id"
    loss: str = ""  # default: cross-entropy (>2 classes), bce (2 classes), pearson (regression)
    activation: str = ""  # default: softmax, sigmoid or clamp to match the loss
    metrics: tuple[str, ...] = ()  # default: accuracy (+ macro-F1 beyond 2 classes), or Pearson
    metric_columns: tuple[str, ...] = ()  # TUI dev-table headers, one per metric
    prediction_header: str = ""  # second column of the CS224N prediction CSV
    smart_weight: float = 0.0  # default SMART weight (--smart-weights)
    color: str = "#9a9996"  # its curves in the TUI
    tui_label: str = ""  # its name in TUI legends
    json_keys: tuple[str, ...] = ()  # how `predict` names its outputs (see predict.answer)
    head_init: tuple[float, float] = (1.0, 0.0)  # pair heads: initial (scale, bias) of the cosine
    aliases: tuple[str, ...] = ()  # other names accepted by --tasks
    seed_index: int | None = None  # seeds its data order and SMART noise; default from the name
    # Declared tasks (user_tasks.py) name their files; the CS224N ones are <data dir>/<prefix>-<split>.csv.
    train_file: str = ""
    dev_file: str = ""
    file_format: str = "auto"  # one of FILE_FORMATS
    loss_weight: float = 1.0  # its loss is multiplied by this (--loss-weights overrides)

    def __post_init__(self):
        if not NAME_PATTERN.match(self.name):
            raise ValueError(f"task name {self.name!r}: use lower-case letters, digits and _")
        if self.kind not in KINDS:
            raise ValueError(f"task {self.name}: kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if len(self.text_columns) != (2 if self.pair else 1):
            raise ValueError(f"task {self.name}: a {self.kind} task reads {2 if self.pair else 1} text column(s)")
        if self.regression:
            if self.value_range is None or not self.value_range[0] < self.value_range[1]:
                raise ValueError(f"task {self.name}: a regression task needs a value_range (low, high)")
        elif len(self.labels) < 2:
            raise ValueError(f"task {self.name}: a classification task needs at least two label names")
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen: set derived defaults once)
        if not self.loss:
            set_("loss", "pearson" if self.regression else "bce" if len(self.labels) == 2 else "cross-entropy")
        if not self.activation:
            set_("activation", {"pearson": "clamp", "bce": "sigmoid", "cross-entropy": "softmax"}[self.loss])
        if not self.metrics:
            set_("metrics", ("pearson",) if self.regression
                 else ("accuracy",) if len(self.labels) == 2 else ("accuracy", "macro_f1"))
        if bad := [m for m in self.metrics if m not in METRICS]:
            raise ValueError(f"task {self.name}: unknown metric(s) {', '.join(bad)}; choose from {', '.join(METRICS)}")
        if len({METRIC_SUFFIX[m] for m in self.metrics}) != len(self.metrics):
            raise ValueError(f"task {self.name}: metrics {', '.join(self.metrics)} repeat one (f1 and macro_f1?)")
        if self.regression != all(m in ("pearson", "spearman") for m in self.metrics):
            raise ValueError(f"task {self.name}: pearson and spearman are the metrics of regression, and only they")
        if "f1" in self.metrics and len(self.labels) != 2:
            raise ValueError(f"task {self.name}: f1 is for two labels; use macro_f1")
        if self.file_format not in FILE_FORMATS:
            raise ValueError(f"task {self.name}: file_format must be one of {', '.join(FILE_FORMATS)}")
        for key in ("loss_weight", "smart_weight"):  # as --loss-weights / --smart-weights
            if problem := number_problem(getattr(self, key), min=0):
                raise ValueError(f"task {self.name}: {key} {problem}")
        for v in self.value_range or ():
            if problem := number_problem(v):
                raise ValueError(f"task {self.name}: value_range {problem}")
        for label in self.labels:  # answers and error messages carry them: they must be valid text
            try:
                label.encode("utf-8")
            except (AttributeError, UnicodeEncodeError):
                raise ValueError(f"task {self.name}: label {ascii(label)} is not valid Unicode text") from None
        if not self.metric_columns:
            set_("metric_columns", tuple(f"{self.title} {METRIC_SHORT[m]}" for m in self.metrics))
        if not self.prediction_header:
            set_("prediction_header", f"Predicted_{self.label_column}")
        if not self.tui_label:
            set_("tui_label", self.title)
        if not self.json_keys:
            set_("json_keys", (f"{self.name}_prob", f"is_{self.name}") if self.activation == "sigmoid" else (self.name,))
        if self.seed_index is None:
            set_("seed_index", 1000 + zlib.crc32(self.name.encode()) % 1_000_000)
        for field, value, allowed in (("loss", self.loss, LOSSES), ("activation", self.activation, ACTIVATIONS)):
            if value not in allowed:
                raise ValueError(f"task {self.name}: {field} must be one of {', '.join(allowed)}, not {value!r}")
        if len(self.metric_columns) != len(self.metrics):
            raise ValueError(f"task {self.name}: one metric column per metric")
        if (self.activation == "clamp") != self.regression:
            raise ValueError(f"task {self.name}: activation clamp is for regression, and only clamp is")
        if self.activation == "sigmoid" and len(self.labels) != 2:
            raise ValueError(f"task {self.name}: a sigmoid output needs exactly two labels")
        # A sigmoid task answers as a probability and a yes/no under two keys, or, under one key,
        # as a class like softmax tasks do (label, index, probabilities).
        if not 1 <= len(self.json_keys) <= (2 if self.activation == "sigmoid" else 1):
            raise ValueError(f"task {self.name}: json_keys needs {'1 or 2' if self.activation == 'sigmoid' else 1} "
                             f"name(s)")

    # -- derived facts ---------------------------------------------------------------------

    @property
    def pair(self) -> bool:
        """Whether an example is two sentences."""
        return self.kind.startswith("pair-")

    @property
    def regression(self) -> bool:
        return self.kind.endswith("regression")

    @property
    def num_outputs(self) -> int:
        """Width of the head's output: one logit or score, or one logit per class."""
        return len(self.labels) if self.activation == "softmax" else 1

    @property
    def label_dtype(self) -> str:
        """"int" for class indices (cross-entropy targets), "float" for the rest."""
        return "int" if self.loss == "cross-entropy" else "float"

    @property
    def answers_class(self) -> bool:
        """Whether `predict` answers with {label, index, probabilities} (softmax, or sigmoid under one key)."""
        return self.activation == "softmax" or (self.activation == "sigmoid" and len(self.json_keys) == 1)

    @property
    def answer_name(self) -> str:
        """What its answer is called for people: `paraphrase` (of is_paraphrase), `similarity`."""
        return self.json_keys[1].removeprefix("is_") if len(self.json_keys) == 2 else self.json_keys[0]

    def metric_key(self, metric: str) -> str:
        """Key of a metric in metrics dicts and metrics.jsonl, e.g. sst_acc."""
        return f"{self.name}_{METRIC_SUFFIX[metric]}"

    @property
    def metric_keys(self) -> tuple[str, ...]:
        return tuple(self.metric_key(m) for m in self.metrics)

    @property
    def primary_metric(self) -> str:
        """The metric that counts toward `overall` (the first one)."""
        return self.metric_key(self.metrics[0])

    @property
    def count_key(self) -> str:
        """Key of the number of examples scored, e.g. sst_n."""
        return f"{self.name}_n"

    def filename(self, split: str) -> str:
        return f"{self.prefix}-{'test-student' if split == 'test' else split}.csv"

    @cached_property
    def _label_index(self) -> tuple[dict[str, int], dict[float, int]]:
        """Label name -> index, and numeric label name -> index (so "1.0" finds the label "1")."""
        by_name = {n: i for i, n in enumerate(self.labels)}
        by_number = {}
        for i, n in enumerate(self.labels):
            if (v := as_number(n)) is not None:
                by_number[v] = i
        return by_name, by_number

    def parse_label(self, raw: str | None):
        """The label as a number, or raise ValueError with the reason the row is unusable.

        A class is found by its name ("positive", or "1" when the names are numbers), else by
        its index when no name is a number (the CS224N files hold indices).
        """
        if raw is None or not raw.strip():
            raise ValueError(f"{self.label_column} is empty")
        if not self.regression:
            by_name, by_number = self._label_index
            if (i := by_name.get(raw.strip())) is not None:
                return i
            if (v := as_number(raw)) is not None and v in by_number:
                return by_number[v]
            # Numeric names are never indices; a declared task's words are no number to try either.
            if by_number or (self.train_file and v is None):
                shown = ", ".join(self.labels[:12]) + (", ..." if len(self.labels) > 12 else "")
                raise ValueError(f"{self.label_column} {raw.strip()[:40]!r} is not one of {shown}")
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"{self.label_column} {raw.strip()[:40]!r} is not a number") from None
        if not math.isfinite(value) or abs(value) > FLOAT32_MAX:
            raise ValueError(f"{self.label_column} {raw.strip()[:40]!r} is not finite (in float32)")
        if self.regression:
            low, high = self.value_range
            if not low <= value <= high:
                raise ValueError(f"{self.label_column} {value:g} is outside {low:g}-{high:g}")
            return value
        allowed = range(len(self.labels))
        if value != int(value) or int(value) not in allowed:
            raise ValueError(f"{self.label_column} {value:g} is not one of {', '.join(map(str, allowed))}")
        return int(value)

    # -- saved with checkpoints --------------------------------------------------------------

    def to_dict(self) -> dict:
        """Every field, JSON-ready (checkpoints' tasks.json, metrics.jsonl's start record)."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
                for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "TaskSpec":
        """The spec `to_dict` wrote (unknown keys, from a newer bertmtl, are ignored)."""
        kw = {}
        for f in dataclasses.fields(cls):
            if f.name in d:
                v = d[f.name]
                kw[f.name] = tuple(v) if isinstance(v, list) else v
        return cls(**kw)


def as_number(text: str) -> float | None:
    """A label name or value as a number, or None when it is not one."""
    try:
        v = float(text)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and abs(v) <= FLOAT32_MAX else None  # what a float32 tensor holds


SENTIMENT_LABELS = ("negative", "somewhat negative", "neutral", "somewhat positive", "positive")

# The CS224N tasks. Paraphrase logits start as 10 * cos - 7 (a duplicate around cos > 0.7);
# similarity as 5 * cos, already on the 0-5 scale for the cosines of related sentences.
# SMART weights are the paper's: on for sentiment and similarity, off for paraphrase. The first
# metric of each counts toward `overall` (the paper's score); Quora F1 and STS Spearman are reported beside.
BUILTIN: tuple[TaskSpec, ...] = (
    TaskSpec("sst", "SST", "ids-sst", ("sentence",), "sentiment", kind="classification", file_format="tsv",
             labels=SENTIMENT_LABELS, metric_columns=("SST acc", "F1"), prediction_header="Predicted_Sentiment",
             smart_weight=0.5, color="#e66100", tui_label="SST", json_keys=("sentiment",),
             aliases=("sentiment",), seed_index=0),
    TaskSpec("para", "Quora", "quora", ("sentence1", "sentence2"), "is_duplicate", kind="pair-classification",
             file_format="tsv",
             labels=("not paraphrase", "paraphrase"), metrics=("accuracy", "f1"), metric_columns=("para", "F1"),
             prediction_header="Predicted_Is_Paraphrase", smart_weight=0.0, color="#3584e4", tui_label="paraphrase",
             json_keys=("paraphrase_prob", "is_paraphrase"), head_init=(10.0, -7.0),
             aliases=("paraphrase", "quora"), seed_index=1),
    TaskSpec("sts", "STS", "sts", ("sentence1", "sentence2"), "similarity", kind="pair-regression", file_format="tsv",
             value_range=(0.0, 5.0), metrics=("pearson", "spearman"), metric_columns=("STS r", "rho"),
             prediction_header="Predicted_Similarity",
             smart_weight=0.5, color="#26a269", tui_label="STS", json_keys=("similarity",), head_init=(5.0, 0.0),
             aliases=("similarity",), seed_index=2),
)
TASKS: dict[str, TaskSpec] = {s.name: s for s in BUILTIN}
TASK_ALIASES: dict[str, str] = {a: s.name for s in BUILTIN for a in s.aliases}

# The paper's single-task baseline (the ablation's first row) trains sentiment alone.
BASELINE_TASKS: tuple[str, ...] = (BUILTIN[0].name,)

# Extra movie-review text for MLM pretraining (not a training task; binary sentiment).
IMDB = TaskSpec("imdb", "IMDB", "ids-cfimdb", ("sentence",), "sentiment", labels=("negative", "positive"),
                file_format="tsv")


def spec_of(task: str | TaskSpec, specs: dict[str, TaskSpec] | None = None) -> TaskSpec:
    """A spec given itself or its name (looked up in `specs`, default the built-in tasks)."""
    if isinstance(task, TaskSpec):
        return task
    return (specs or TASKS)[task]


def overall_keys(specs) -> list[str]:
    """The metrics averaged into `overall`: each task's primary metric, in spec order."""
    return [s.primary_metric for s in specs]


def metric_labels(specs, primary_only: bool = False) -> list[tuple[str, str]]:
    """(metric key, short label) of every task's metrics (or primary metric), e.g. ("sst_acc", "SST acc")."""
    return [(s.metric_key(m), f"{s.title} {METRIC_SHORT[m]}") for s in specs
            for m in (s.metrics[:1] if primary_only else s.metrics)]


def dev_table_metrics(specs) -> list[tuple[str, str]]:
    """(metric key, header) of a dev table: every task's primary metric first (they stay in view
    in a narrow pane), then the others, e.g. ("sst_acc", "SST acc") ... ("sts_spearman", "STS rho")."""
    primary = [(s.primary_metric, s.metric_columns[0]) for s in specs]
    return primary + [(k, label) for k, label in metric_labels(specs) if k not in dict(primary)]


# Why a metric can be undefined (the "cause" of an evaluation's "undefined" entry, see
# evaluate.undefined_reason) -> what that does to `overall`.
UNDEFINED_EFFECT = {"data": "left out of overall", "model": "no overall score for this evaluation"}


def undefined_warnings(metrics: dict, specs) -> list[str]:
    """One line per undefined metric of an evaluation (its "undefined" entry), naming the task,
    the metric, why, and what it does to `overall`."""
    titles = {s.metric_key(m): f"{s.title} {METRIC_TITLES[m]}" for s in specs for m in s.metrics}
    return [f"{titles.get(key, key)} is undefined: {u.get('reason')} ({UNDEFINED_EFFECT.get(u.get('cause'), '?')})"
            for key, u in (metrics.get("undefined") or {}).items() if isinstance(u, dict)]


def metric_rows(specs) -> list[tuple[str, str, str]]:
    """(metric key, long title, count key) for every metric of every task, e.g. for `evaluate`."""
    return [(s.metric_key(m), f"{s.title} {METRIC_TITLES[m]}", s.count_key) for s in specs for m in s.metrics]


def pretrain_sources(specs=BUILTIN) -> tuple[dict[str, TaskSpec], dict[str, str]]:
    """MLM text sources named as the options name them (a task's title, lower case) plus IMDB,
    and their aliases (task names and aliases)."""
    sources = {s.title.lower(): s for s in specs} | {IMDB.title.lower(): IMDB}
    aliases = {}
    for s in specs:
        for a in (s.name, *s.aliases):
            if a != s.title.lower():
                aliases[a] = s.title.lower()
    aliases["cfimdb"] = IMDB.title.lower()
    return sources, aliases
