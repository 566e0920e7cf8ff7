"""Tasks as data: a `TaskSpec` says what the rest of the code needs to know about a task.

Where its examples are (files and columns), what it predicts (its declared kind, its labels or
value range, and its output kind: tasks/kinds.py), how it is scored (metrics, the CS224N
prediction-file header) and how people see it (TUI colour and label, the JSON keys of `predict`).
Behaviour that depends on what the head outputs (loss, post-processing, SMART's divergence,
answers) belongs to the output kind (`spec.output`); no module compares a task's name.

`TaskSpec(...)` takes a complete spec and only validates it; `TaskSpec.define(...)` fills in what
follows from the rest (the output kind from the declared kind and the labels, default metrics,
JSON keys, column headers, the seed index).

This module imports no torch: the CLI, the TUI's data layer and option parsing use it.
"""

from __future__ import annotations

import math
from pathlib import Path

import dataclasses
import re
import zlib
from dataclasses import dataclass

from ..numbers import number_problem
from .kinds import ACTIVATIONS, KINDS, OUTPUT_KINDS, TARGETS, OutputKind

# f1: F1 of the second label (binary tasks: "paraphrase"); spearman: rank correlation (regression).
# perplexity, loss: of masked-LM (held-out masked tokens).
METRICS = ("accuracy", "macro_f1", "f1", "pearson", "spearman", "perplexity", "loss")
# Metric -> suffix of its key in metrics dicts and metrics.jsonl (`sst_acc`, `sts_corr`).
# macro_f1 and f1 share a suffix: a task reports one of them.
METRIC_SUFFIX = {"accuracy": "acc", "macro_f1": "f1", "f1": "f1", "pearson": "corr", "spearman": "spearman",
                 "perplexity": "perplexity", "loss": "loss"}
# Metric -> how tables name it after the task's title ("SST macro-F1"), and in short ("SST F1").
METRIC_TITLES = {"accuracy": "accuracy", "macro_f1": "macro-F1", "f1": "F1", "pearson": "Pearson r",
                 "spearman": "Spearman rho", "perplexity": "perplexity", "loss": "loss"}
# The values each metric can take: an interval over seeds is cut to them (a t interval of a few
# accuracies near 1 would otherwise reach past 1).
METRIC_RANGE = {"accuracy": (0.0, 1.0), "macro_f1": (0.0, 1.0), "f1": (0.0, 1.0), "pearson": (-1.0, 1.0),
                "spearman": (-1.0, 1.0), "perplexity": (1.0, math.inf), "loss": (0.0, math.inf)}
METRIC_SHORT = {"accuracy": "acc", "macro_f1": "F1", "f1": "F1", "pearson": "r", "spearman": "rho",
                "perplexity": "ppl", "loss": "loss"}
# How a task's files are read: by extension / first line (auto), or as declared; hf: a Hugging Face
# dataset (tasks/hf_datasets.py).
FILE_FORMATS = ("auto", "csv", "tsv", "jsonl", "hf")
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]*\Z")  # a task name: lower-case letters, digits, _


@dataclass(frozen=True)
class TaskSpec:
    """One task: its data, its output kind, its metrics, and how it is shown."""

    name: str  # identifier: dict keys, metric keys, head parameter names (`sst.weight`)
    title: str  # in messages and tables ("SST", "Quora")
    prefix: str  # file name prefix: <prefix>-train.csv, <prefix>-dev.csv, <prefix>-test-student.csv
    text_columns: tuple[str, ...]  # one column, or two for a pair
    label_column: str
    kind: str  # declared: classification, regression, pair-classification, pair-regression (kinds.KINDS)
    output: OutputKind  # what the head outputs (kinds.OUTPUT_KINDS)
    metrics: tuple[str, ...]  # the first counts toward `overall`
    metric_columns: tuple[str, ...]  # TUI dev-table headers, one per metric
    prediction_header: str  # second column of the CS224N prediction CSV
    tui_label: str  # its name in TUI legends
    json_keys: tuple[str, ...]  # how `predict` names its outputs (see the output kind's answer())
    seed_index: int  # seeds its data order and SMART noise
    labels: tuple[str, ...] = ()  # class names, index = label value (class outputs)
    value_range: tuple[float, float] | None = None  # (low, high) of the target (a number output)
    id_column: str = "id"
    smart_weight: float = 0.0  # default SMART weight (--smart-weights)
    color: str = "#9a9996"  # its curves in the TUI
    head_init: tuple[float, float] = (1.0, 0.0)  # pair heads: initial (scale, bias) of the cosine
    aliases: tuple[str, ...] = ()  # other names accepted by --tasks
    # Declared tasks (tasks/declared.py) name their files; the CS224N ones are <data dir>/<prefix>-<split>.csv.
    train_file: str = ""
    dev_file: str = ""
    file_format: str = "auto"  # one of FILE_FORMATS
    # A dataset task (file_format "hf") names the dataset in train_file (and dev_file, when it has dev
    # data), its config and the splits that hold train and dev data.
    dataset_config: str = ""
    train_split: str = ""
    dev_split: str = ""
    loss_weight: float = 1.0  # its loss is multiplied by this (--loss-weights overrides)

    def __post_init__(self):
        if problem := self.problem():
            raise ValueError(f"task {self.name}: {problem}")

    def problem(self) -> str | None:
        """Why this spec is not a usable task (None when it is)."""
        if not NAME_PATTERN.match(self.name):
            return "use lower-case letters, digits and _ in its name"
        if self.kind not in KINDS:
            return f"kind must be one of {', '.join(KINDS)}, not {self.kind!r}"
        if len(self.text_columns) != (2 if self.pair else 1):
            return f"a {self.kind} task reads {2 if self.pair else 1} text column(s)"
        if not isinstance(self.output, OutputKind):
            return f"output must be one of {', '.join(OUTPUT_KINDS)}, not {self.output!r}"
        if not self.output.fits(self.kind):
            return f"a {self.kind} task cannot have a {self.output.name} output"
        if bad := [m for m in self.metrics if m not in METRICS]:
            return f"unknown metric(s) {', '.join(bad)}; choose from {', '.join(METRICS)}"
        if not self.metrics or len({METRIC_SUFFIX[m] for m in self.metrics}) != len(self.metrics):
            return f"metrics {', '.join(self.metrics) or '(none)'}: give one or more, each once (f1 and macro_f1?)"
        if len(self.metric_columns) != len(self.metrics):
            return "one metric column per metric"
        if self.file_format not in FILE_FORMATS:
            return f"file_format must be one of {', '.join(FILE_FORMATS)}"
        if (self.file_format == "hf") != bool(self.train_split):
            return "a dataset task (file_format hf) names its train split, and only it does"
        for key in ("loss_weight", "smart_weight"):  # as --loss-weights / --smart-weights
            if problem := number_problem(getattr(self, key), min=0):
                return f"{key} {problem}"
        for v in self.value_range or ():
            if problem := number_problem(v):
                return f"value_range {problem}"
        return self.output.problem(self)

    @classmethod
    def define(cls, name: str, title: str, prefix: str, text_columns: tuple[str, ...], label_column: str, *,
               kind: str = "classification", labels: tuple[str, ...] = (), output: OutputKind | None = None,
               metrics: tuple[str, ...] = (), metric_columns: tuple[str, ...] = (), prediction_header: str = "",
               tui_label: str = "", json_keys: tuple[str, ...] = (), seed_index: int | None = None,
               **rest) -> "TaskSpec":
        """A spec from what defines a task; what it leaves out follows from the rest: the output
        kind from its kind and labels (two labels: a sigmoid), its metrics and JSON keys from the
        output kind, the column headers from the metrics, its seed index from its name."""
        if kind not in TARGETS:
            raise ValueError(f"task {name}: kind must be one of {', '.join(KINDS)}, not {kind!r}")
        labels = tuple(labels)
        output = output or TARGETS[kind].output(labels)
        metrics = tuple(metrics) or output.default_metrics(labels)
        return cls(name, title, prefix, tuple(text_columns), label_column, kind=kind, labels=labels, output=output,
                   metrics=metrics,
                   metric_columns=tuple(metric_columns) or tuple(f"{title} {METRIC_SHORT.get(m, m)}" for m in metrics),
                   prediction_header=prediction_header or f"Predicted_{label_column}",
                   tui_label=tui_label or title, json_keys=tuple(json_keys) or output.default_json_keys(name),
                   seed_index=1000 + zlib.crc32(name.encode()) % 1_000_000 if seed_index is None else seed_index,
                   **rest)

    # -- derived facts ---------------------------------------------------------------------

    @property
    def pair(self) -> bool:
        """Whether an example is two sentences."""
        return self.kind.startswith("pair-")

    @property
    def width(self) -> int:
        """Outputs of the head: one logit or score, or one logit per class."""
        return self.output.width(self)

    @property
    def answer_name(self) -> str:
        """What its answer is called for people: `paraphrase` (of is_paraphrase), `similarity`."""
        return self.json_keys[1].removeprefix("is_") if len(self.json_keys) == 2 else self.json_keys[0]

    def reading(self) -> str:
        """How this task's files are read, in words, for the run's log: which columns hold the
        text, the label and the id, and the labels (or range) taken; guessed ones need saying."""
        texts = " and ".join(self.text_columns)
        what = (f"labels {', '.join(self.labels)}" if self.labels else
                f"values {self.value_range[0]:g} to {self.value_range[1]:g}" if self.value_range else "")
        ident = f"id from {self.id_column}" if self.id_column else "no id column"
        return (f"{self.name} ({self.kind}, {self.source()}): text from {texts}, "
                f"label from {self.label_column}" + (f" ({what})" if what else "") + f", {ident}")

    def source(self) -> str:
        """Where its examples come from, in words: its train file's name, or the dataset and splits."""
        if self.file_format != "hf":
            return Path(self.train_file).name
        config = f" ({self.dataset_config})" if self.dataset_config else ""
        dev = f", dev split {self.dev_split}" if self.dev_split else ", no dev split"
        return f"dataset {self.train_file}{config}, train split {self.train_split}{dev}"

    def split_of(self, split: str) -> str:
        """A dataset task's split that holds the examples of `split` (train, dev): "" when none."""
        return {"train": self.train_split, "dev": self.dev_split}.get(split, "")

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

    def parse_label(self, raw: str | None):
        """The label as a number, or raise ValueError with the reason the row is unusable."""
        if raw is None or not raw.strip():
            raise ValueError(f"{self.label_column} is empty")
        return self.output.parse_label(self, raw)

    # -- saved with checkpoints --------------------------------------------------------------

    def to_dict(self) -> dict:
        """Every field, JSON-ready (checkpoints' tasks.json, metrics.jsonl's start record)."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.name if isinstance(v, OutputKind) else list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "TaskSpec":
        """The spec `to_dict` wrote (unknown keys, from a newer bertmtl, are ignored). Older
        checkpoints name the output by its activation (softmax, sigmoid, clamp)."""
        kw = {}
        for f in dataclasses.fields(cls):
            if f.name in d:
                v = d[f.name]
                kw[f.name] = tuple(v) if isinstance(v, list) else v
        if "output" in kw:
            kw["output"] = OUTPUT_KINDS.get(kw["output"], kw["output"])  # an unknown name fails validation
        elif d.get("activation") in ACTIVATIONS:
            kw["output"] = ACTIVATIONS[d["activation"]]
        first = [kw.pop(n) for n in ("name", "title", "prefix", "text_columns", "label_column")]
        return cls.define(*first, **kw)


def overall_keys(specs) -> list[str]:
    """The metrics averaged into `overall`: each task's primary metric, in spec order; an auxiliary
    task's (masked LM beside other tasks) only when there is no other."""
    specs = list(specs)
    counted = [s for s in specs if not s.output.auxiliary] or specs
    return [s.primary_metric for s in counted]


def metric_range(specs, key: str) -> tuple[float, float]:
    """The values metric `key` (e.g. sst_acc, or overall: the mean of the overall_keys) can take."""
    specs = list(specs)
    ranges = {s.metric_key(m): METRIC_RANGE[m] for s in specs for m in s.metrics}
    if key == "overall":
        parts = [ranges[k] for k in overall_keys(specs)]
        return sum(lo for lo, _ in parts) / len(parts), sum(hi for _, hi in parts) / len(parts)
    return ranges.get(key, (-math.inf, math.inf))


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
