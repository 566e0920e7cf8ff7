"""The three CS224N tasks (SST-5 sentiment, Quora paraphrase, STS-B similarity) as specs.

Code takes any list of specs (one or many), so tasks declared by users go through the same paths.
"""

from __future__ import annotations

from .spec import TaskSpec

SENTIMENT_LABELS = ("negative", "somewhat negative", "neutral", "somewhat positive", "positive")

# Paraphrase logits start as 10 * cos - 7 (a duplicate around cos > 0.7); similarity as 5 * cos,
# already on the 0-5 scale for the cosines of related sentences. SMART weights are the paper's:
# on for sentiment and similarity, off for paraphrase. The first metric of each counts toward
# `overall` (the paper's score); Quora F1 and STS Spearman are reported beside.
BUILTIN: tuple[TaskSpec, ...] = (
    TaskSpec.define("sst", "SST", "ids-sst", ("sentence",), "sentiment", kind="classification", file_format="tsv",
                    labels=SENTIMENT_LABELS, metric_columns=("SST acc", "F1"),
                    prediction_header="Predicted_Sentiment", smart_weight=0.5, color="#e66100", tui_label="SST",
                    json_keys=("sentiment",), aliases=("sentiment",), seed_index=0),
    TaskSpec.define("para", "Quora", "quora", ("sentence1", "sentence2"), "is_duplicate", kind="pair-classification",
                    file_format="tsv", labels=("not paraphrase", "paraphrase"), metrics=("accuracy", "f1"),
                    metric_columns=("para", "F1"), prediction_header="Predicted_Is_Paraphrase", smart_weight=0.0,
                    color="#3584e4", tui_label="paraphrase", json_keys=("paraphrase_prob", "is_paraphrase"),
                    head_init=(10.0, -7.0), aliases=("paraphrase", "quora"), seed_index=1),
    TaskSpec.define("sts", "STS", "sts", ("sentence1", "sentence2"), "similarity", kind="pair-regression",
                    file_format="tsv", value_range=(0.0, 5.0), metrics=("pearson", "spearman"),
                    metric_columns=("STS r", "rho"), prediction_header="Predicted_Similarity", smart_weight=0.5,
                    color="#26a269", tui_label="STS", json_keys=("similarity",), head_init=(5.0, 0.0),
                    aliases=("similarity",), seed_index=2),
)
TASKS: dict[str, TaskSpec] = {s.name: s for s in BUILTIN}
TASK_ALIASES: dict[str, str] = {a: s.name for s in BUILTIN for a in s.aliases}

# The Hub datasets the built-in tasks come from (SST-5 from the Stanford Sentiment Treebank;
# Quora Question Pairs and STS-B as GLUE has them), and what each task is: a model card's metadata.
HUB_DATASETS: dict[str, tuple[str, str]] = {"sst": ("stanfordnlp/sst", "text-classification"),
                                            "para": ("nyu-mll/glue", "text-classification"),
                                            "sts": ("nyu-mll/glue", "sentence-similarity")}

# The paper's single-task baseline (the ablation's first row) trains sentiment alone.
BASELINE_TASKS: tuple[str, ...] = (BUILTIN[0].name,)

# Extra movie-review text for MLM pretraining (not a training task; binary sentiment).
IMDB = TaskSpec.define("imdb", "IMDB", "ids-cfimdb", ("sentence",), "sentiment", labels=("negative", "positive"),
                       file_format="tsv")


# Masked-LM further pretraining on the tasks' own text (`bertmtl pretrain`, `train --mlm-text`).
MLM = TaskSpec.define("mlm", "MLM", "mlm", ("text",), "", kind="masked-lm", metric_columns=("MLM acc", "ppl", "loss"),
                      tui_label="masked LM", color="#813d9c", seed_index=3)


def spec_of(task: str | TaskSpec, specs: dict[str, TaskSpec] | None = None) -> TaskSpec:
    """A spec given itself or its name (looked up in `specs`, default the built-in tasks)."""
    if isinstance(task, TaskSpec):
        return task
    return (specs or TASKS)[task]

