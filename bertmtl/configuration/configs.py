"""The options of `augment`, `ablate`, `evaluate` and `export`: one dataclass field per option
(configuration/options.py), as configuration/train_config.py holds train's and pretrain's. No torch.

Options that several commands share are train's fields (`same_as`), so their help, type and
range are stated once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..errors import ConfigError, UserError
from ..inference.hub_push import parse_branch, parse_repo_id
from .options import PRECISIONS, PREDICT_PRECISIONS, Options, default_of, option, same_as
from .train_config import COMBINERS, FIELDS as TRAIN, LOSS_WEIGHTINGS

# `bertmtl ablate --table`: the paper's Table 1 rows, or one row per gradient combiner or loss
# weighting (sweep/ablate.py).
ABLATION_TABLES = {"paper": ("baseline", "multitask", "pretrain", "final", "adamaxw"), "combiners": COMBINERS,
                   "weightings": LOSS_WEIGHTINGS}
ABLATION_ROWS = tuple(dict.fromkeys(r for rows in ABLATION_TABLES.values() for r in rows))
EXPORT_FORMATS = ("hf", "sentence-transformers", "onnx")
SPLITS = ("dev", "test")
PREDICT_FORMATS = ("jsonl", "tsv")


METHODS = ("swap", "delete", "synonym", "contextual")
METHOD_ALIASES = {"random-swap": "swap", "random_swap": "swap", "deletion": "delete", "random-delete": "delete",
                  "random_deletion": "delete", "synonyms": "synonym", "wordnet": "synonym", "mlm": "contextual",
                  "fill-mask": "contextual"}
BACKTRANSLATION = ("backtranslation", "back-translation", "back_translation", "backtranslate", "translation")
BACKTRANSLATION_HELP = (
    "back-translation is not available: it needs two translation models (e.g. English->German "
    "and back, as nlpaug's BackTranslationAug downloads from the Hugging Face hub), and bertmtl "
    "does not fetch translation models. Use --methods swap,delete,synonym,contextual instead.")


def parse_methods(spec: str) -> list[str]:
    """'swap,delete' -> ['swap', 'delete']; back-translation is a clear UserError."""
    names = [METHOD_ALIASES.get(m.strip().lower(), m.strip().lower()) for m in spec.replace(" ", ",").split(",") if m.strip()]
    if any(n in BACKTRANSLATION for n in names):
        raise UserError(BACKTRANSLATION_HELP)
    bad = [n for n in names if n not in METHODS]
    if bad or not names:
        raise ValueError(f"unknown method(s) {', '.join(bad) or repr(spec)}; choose from {', '.join(METHODS)}")
    return list(dict.fromkeys(names))


def parse_rows(spec: str) -> list[str]:
    from ..tasks.files import parse_choices

    return parse_choices(spec, list(ABLATION_ROWS), "row")


@dataclass
class AugmentConfig(Options):
    """Every option of an augmentation run (saved in augment.json)."""

    data_dir: str = same_as(TRAIN["data_dir"], help="Directory with the CS224N task CSVs; their train files are "
                                                    "augmented.")
    out: str = option("augmented", "Output directory (train files in the same format, plus augment.json).",
                      path="dir")
    tasks: list | None = same_as(TRAIN["tasks"], help="Built-in tasks whose train files to augment [default: all "
                                                      "three; none when --task or --tasks-file declare tasks].")
    task: list = same_as(TRAIN["task"], help="A task of your own to augment: NAME:KIND:TRAIN[:DEV] (as `bertmtl "
                                             "train --task`). Repeatable.")
    text_column: str | None = same_as(TRAIN["text_column"])
    text_pair_column: str | None = same_as(TRAIN["text_pair_column"])
    label_column: str | None = same_as(TRAIN["label_column"])
    tasks_file: str | None = same_as(TRAIN["tasks_file"])
    methods: list = option(help="Any of swap, delete, synonym (WordNet), contextual (our BERT + MLM head; needs "
                                "--mlm). Copies take the methods in turn.", factory=lambda: ["swap", "delete"],
                           parse=parse_methods, aliases=("method",))
    times: int = option(1, "Augmented copies per example.", min=1)
    aug_p: float = option(0.15, "Fraction of the words each method changes (at least one).", min=0, max=1,
                          min_open=True)
    mlm: str | None = option(None, "For contextual: a model with a masked-LM head (a `bertmtl pretrain` run, or "
                                   "an HF BERT directory that has one).", type=str, path="existing_dir")
    top_k: int = option(10, "For contextual: draw each new word from the model's top-k predictions.", min=1)
    limit: int | None = option(None, "Augment only the first N examples of each task [default: all].", type=int,
                               min=1)
    seed: int = same_as(TRAIN["seed"])
    device: str = same_as(TRAIN["device"], help="For the contextual method: auto = CUDA when available.")
    overwrite: bool = option(False, "Replace --out if it already holds files.", flag="on")

    def normalise(self) -> None:
        from ..tasks.declared import builtin_names, check_column_flags

        check_column_flags(self)
        self.tasks = builtin_names(self.tasks, bool(self.task or self.tasks_file))


@dataclass
class SweepConfig(Options):
    """The options of `bertmtl sweep`."""

    spec: str | None = option(None, "The sweep's spec, YAML or JSON (base, grid or search, seeds, baseline, "
                                    "metric; docs: Comparing options over seeds).", type=str, argument=True, metavar="[SPEC]",
                              path="existing_file")
    out: str = option("sweep", "The sweep's directory: its runs (DIR/runs), study (DIR/study.db) and report.",
                      path="dir")
    storage: str | None = option(None, "The Optuna storage: an SQLAlchemy URL (postgresql://..., mysql://...) that "
                                       "workers on several machines share [default: sqlite in --out].", type=str)
    workers: int = option(1, "Trials trained at once on this machine (CPU threads divided between them; one GPU "
                             "each where there are several).", min=1)
    heartbeat: int = option(10, "Seconds between a worker's heartbeats; a trial silent for 3 of them is retried by "
                                "the next worker.", min=1)
    report: str | None = option(None, "Only rebuild the report (report.md, report.json, report.svg) of the sweep in "
                                      "this directory, from its runs.", type=str, path="existing_dir", metavar="DIR")
    bootstrap: int = option(1000, "Paired bootstrap replicates of each comparison with the baseline.", min=100)
    worker: bool = option(False, "Run as one worker of a sweep started elsewhere (no report).", flag="on")
    dry_run: bool = option(False, "List the configurations, seeds and runs the sweep would train (and what an earlier "
                                  "command already did), then exit without training.", flag="on")
    ensemble: bool = option(False, "Also build each configuration's ensemble of its seeds (and of its first 2, 3, ...), "
                                   "score them on dev and add them to the report (with --report too).", flag="on")
    soup: bool = option(False, "Also build each configuration's uniform and greedy soup of its seeds (runs that share "
                               "--init-seed), score them on dev and add them to the report.", flag="on")
    command: str | None = option(None, "The command line, for the message that says how to continue.", type=str,
                                 cli=False)


# sweep's options, by name, for the commands that share them (ablate runs its rows as a sweep)
SWEEP = {f.name: f for f in dataclasses.fields(SweepConfig)}


@dataclass
class AblateConfig(Options):
    """The options of `bertmtl ablate` (its table: the sweep report in --out)."""

    data_dir: str = same_as(TRAIN["data_dir"])
    out: str = option("ablation", "Where the report (report.md, .json, .svg), the study and the runs go.", path="dir")
    table: str = option("paper", "paper: the CS224N report's Table 1 rows; combiners: every --combine on the same "
                                 "budget, data order and seeds (SMART off, so that only the combiner differs); "
                                 "weightings: every --loss-weighting the same way, on the plain sum.",
                        choices=tuple(ABLATION_TABLES))
    rows: list | None = option(None, "Rows to run [default: every row of --table]; paper: "
                                     + ", ".join(ABLATION_TABLES["paper"]) + "; combiners: the --combine names; weightings: the "
                                     "--loss-weighting names.",
                               type=list, choices=ABLATION_ROWS, parse=parse_rows)
    seeds: int = option(1, "Train every row with N seeds (--seed, --seed + 1, ...); the table gives their mean and "
                           "standard deviation.", min=1)
    budget_steps: int | None = option(300, "Training steps per row (one step = a batch of each task); ignored with "
                                           "--epochs.", type=int, min=1)
    epochs: float | None = option(None, "Train each row for full epochs instead of --budget-steps.", type=float,
                                  min=0, min_open=True)
    dev_limit: int | None = same_as(TRAIN["dev_limit"], aliases=("budget-dev",),
                                    help="Score on a fixed subset of N dev examples per task (train's --dev-limit; "
                                         "--budget-dev is the same option) [default: all dev].")
    pretrain_steps: int = option(300, "MLM steps of further pretraining for the 'pretrain' row.", min=1)
    pretrained_mlm: str | None = option(None, "Use this `bertmtl pretrain` output for the 'pretrain' row instead of "
                                              "pretraining.", type=str, path="existing_dir")
    encoder: str = same_as(TRAIN["encoder"], help="Encoder every row starts from: a built-in name (minilm, mpnet), "
                                                  "a Hub name (ORG/NAME), a Hugging Face encoder directory, or a "
                                                  "bertmtl run.")
    batch_size: int = same_as(TRAIN["batch_size"], 16, help="Examples per task per step.")
    eval_batch_size: int = same_as(TRAIN["eval_batch_size"])
    max_length: int = same_as(TRAIN["max_length"])
    lr: float = same_as(TRAIN["lr"], 5e-5)
    seed: int = same_as(TRAIN["seed"], help="Random seed, shared by every row (0 to 2^63-1).")
    device: str = same_as(TRAIN["device"])
    precision: str = same_as(TRAIN["precision"], choices=PRECISIONS)
    bootstrap: int = option(1000, "Paired bootstrap replicates of each row's comparison with its table's baseline "
                                  "row (multitask, sum, none).", min=100)
    workers: int = same_as(SWEEP["workers"], help="Rows (x seeds) trained at once on this machine (CPU threads "
                                                  "divided between them; one GPU each where there are several).")
    storage: str | None = same_as(SWEEP["storage"], help="The Optuna storage of the ablation's study: an SQLAlchemy "
                                                         "URL that workers on several machines share (each runs the "
                                                         "same command) [default: sqlite in --out].")
    heartbeat: int = same_as(SWEEP["heartbeat"])
    keep_checkpoints: bool = option(False, "Keep each row's best/ and last/ weights (large).", flag="on")
    overwrite: bool = option(False, "Replace the runs and study of an earlier ablation in --out [default: the same "
                                    "command continues it; finished rows are not trained again].", flag="on")
    command: str | None = option(None, "The command line, for the report.", type=str, cli=False)


@dataclass
class EvaluateConfig(Options):
    """The options of `bertmtl evaluate`."""

    checkpoint: str | None = option(None, "Checkpoint or run directory (its best/) [default: best/ of the most "
                                          "recent run under --runs-dir that has one].", type=str, path="existing_dir")
    runs_dir: str | None = same_as(TRAIN["runs_dir"])
    data_dir: str = same_as(TRAIN["data_dir"])
    split: str = option("dev", "dev: metrics on labelled data; test: predictions for the unlabelled test files.",
                        choices=SPLITS)
    tasks: str | None = option(None, "Tasks to evaluate [default: every task of the checkpoint; built-in ones read "
                                     "from --data-dir, declared ones from their own files].", type=str)
    write_predictions: str | None = option(None, "Write CS224N-style prediction CSVs (id, prediction) into this "
                                                 "directory.", type=str, path="dir")
    json: bool = option(False, "Print one JSON object instead of a table.", flag="on")
    dev_limit: int | None = same_as(TRAIN["dev_limit"], help="Score a fixed subset of N dev examples per task: the "
                                                            "one `train --dev-limit N` scores [default: all].")
    batch_size: int = same_as(TRAIN["eval_batch_size"], help="Evaluation batch size.")
    device: str = same_as(TRAIN["device"])
    threads: int | None = same_as(TRAIN["threads"])
    strict: bool = same_as(TRAIN["strict"])


@dataclass
class ExportConfig(Options):
    """The options of `bertmtl export`."""

    source: str | None = option(None, "A checkpoint or run directory (its best/) [default: best/ of the most "
                                      "recent run that has one].", type=str, argument=True, metavar="[SOURCE]")
    format: str | None = option(None, "hf: transformers' AutoModel + AutoTokenizer (the encoder); "
                                      "sentence-transformers: SentenceTransformer(DIR).encode gives our sentence "
                                      "embeddings; onnx: encoder and task heads in one graph for ONNX Runtime "
                                      "(needs `pip install -e \".[onnx]\"`).", type=str, choices=EXPORT_FORMATS,
                                required=True)
    out: str | None = option(None, "Directory to write (new or empty) [required unless --push-to-hub, which "
                                   "otherwise exports into a temporary directory and removes it].", type=str, path="dir")
    overwrite: bool = option(False, "Replace --out if it already holds files.", flag="on")
    push_to_hub: str | None = option(None, "Upload the export to this Hugging Face Hub model repository (created if "
                                           "missing) as one commit; the token comes from HF_TOKEN or `hf auth login`.",
                                     type=str, parse=parse_repo_id, metavar="ORG/NAME")
    private: bool = option(False, "With --push-to-hub: create the repository private.", flag="on")
    revision: str | None = option(None, "With --push-to-hub: the branch to commit to, created from main if missing "
                                        "[default: main].", type=str, parse=parse_branch, metavar="BRANCH")

    def validate(self) -> None:
        super().validate()
        if self.out is None and self.push_to_hub is None:
            raise ConfigError("out", "must be given (the directory to write), unless --push-to-hub uploads the export")
        for name in ("private", "revision"):
            if self.push_to_hub is None and getattr(self, name) != default_of(self.fields()[name]):
                raise ConfigError(name, "applies to --push-to-hub only")


@dataclass
class PredictConfig(Options):
    """The options of `bertmtl predict`."""

    texts: list = option(help="One sentence, two (a pair), or - for lines from stdin.", factory=list, argument=True,
                         multiple=True, metavar="[TEXTS]...")
    checkpoint: str | None = same_as(EvaluateConfig.fields()["checkpoint"])
    runs_dir: str | None = same_as(TRAIN["runs_dir"])
    json: bool = option(False, "Print one JSON object instead of a table.", flag="on")
    format: str = option("jsonl", "Output format when reading stdin.", choices=PREDICT_FORMATS)
    batch_size: int = option(64, "Sentences per forward pass.", min=1)
    device: str = same_as(TRAIN["device"], "cpu")
    precision: str = option("auto", "auto = bf16 where the hardware multiplies bf16 natively (CPUs with AVX512-BF16 "
                                    "or AMX, CUDA GPUs), else fp32; the docs' Benchmarks page gives its speed and agreement with fp32.",
                            choices=PREDICT_PRECISIONS)
    threads: int | None = same_as(TRAIN["threads"])


@dataclass
class ServeConfig(Options):
    """The options of `bertmtl serve`."""

    source: str | None = option(None, "A checkpoint or run directory (its best/, else its last/) [default: the most "
                                      "recent run that has one].", type=str, argument=True, metavar="[RUN]")
    follow: str | None = option(None, "Serve this run's best/ and switch to each newer best checkpoint training "
                                      "writes, between batches (no request dropped); ready once it has one (the "
                                      "run may start after the server).", type=str, metavar="RUN", path="dir")
    host: str = option("127.0.0.1", "Address to listen on; one that is not loopback needs --token.")
    port: int = option(8000, "Port to listen on (0: any free port, printed at start).", min=0, max=65535)
    token: str | None = option(None, "Requests must send `Authorization: Bearer TOKEN` (every route but /health) "
                                     "[default: $BERTMTL_SERVE_TOKEN; needed off loopback].", type=str)
    max_batch: int = option(64, "Items answered together in one pass: requests arriving together are merged up "
                                "to this many (1: each request alone).", min=1)
    max_wait_ms: float = option(5.0, "How long the first request of a batch waits for others to join it, in "
                                     "milliseconds.", min=0, max=1000)
    max_body: int = option(1 << 20, "Largest request body in bytes (413 beyond).", min=1)
    max_items: int = option(256, "Most items (sentences or pairs) in one request (413 beyond).", min=1)
    max_chars: int = option(20_000, "Longest text in characters (413 beyond).", min=1)
    max_concurrent: int = option(256, "Most requests in progress at once (429 beyond).", min=1)
    max_queue: int = option(4096, "Most items waiting for the model (503 beyond).", min=1)
    read_timeout: float = option(10.0, "Seconds a request's body may take to arrive (408 beyond: a stalled upload "
                                       "does not keep its place).", min=0, min_open=True)
    drain_timeout: float = option(30.0, "On Ctrl-C or SIGTERM, seconds to let the requests in flight finish before "
                                        "stopping anyway.", min=0)
    poll: float = option(1.0, "With --follow: seconds between looks for a newer best checkpoint.", min=0.05)
    batch_size: int = same_as(PredictConfig.fields()["batch_size"])
    device: str = same_as(TRAIN["device"], "auto")  # a server runs long: the GPU where there is one
    precision: str = same_as(PredictConfig.fields()["precision"])
    threads: int | None = same_as(TRAIN["threads"])
    runs_dir: str | None = same_as(TRAIN["runs_dir"])


@dataclass
class CombineConfig(Options):
    """The options of `bertmtl ensemble` and `bertmtl soup`."""

    sources: list = option(help="Runs (each its best/, else its last/) or checkpoints, at least 2.", factory=list,
                           argument=True, multiple=True, metavar="RUN...")
    out: str | None = option(None, "Directory to write (new or empty).", type=str, path="dir", required=True)
    overwrite: bool = same_as(ExportConfig.fields()["overwrite"])
    data_dir: str | None = option(None, "Score the members and the result on this dev data (the CS224N files, or "
                                        "the declared tasks' own) and save the scores with it [default: not "
                                        "scored].", type=str, path="existing_dir")
    dev_limit: int | None = same_as(EvaluateConfig.fields()["dev_limit"])
    batch_size: int = same_as(TRAIN["eval_batch_size"], help="Evaluation batch size.")
    device: str = same_as(TRAIN["device"])
    threads: int | None = same_as(TRAIN["threads"])
    strict: bool = same_as(TRAIN["strict"])


@dataclass
class SoupConfig(CombineConfig):
    """The options of `bertmtl soup`."""

    greedy: bool = option(False, "The greedy soup: members taken in order of dev score, each kept only if the "
                                 "soup's dev overall does not drop (needs --data-dir) [default: the uniform mean "
                                 "of every member].", flag="on")

    def validate(self) -> None:
        super().validate()
        if self.greedy and self.data_dir is None:
            raise ConfigError("greedy", "needs --data-dir: each member is kept only if the dev score does not drop")


__all__ = ["SweepConfig", "CombineConfig", "SoupConfig", "ABLATION_ROWS", "METHODS", "AblateConfig", "AugmentConfig", "EXPORT_FORMATS", "EvaluateConfig",
           "ExportConfig", "PredictConfig", "ServeConfig"]
