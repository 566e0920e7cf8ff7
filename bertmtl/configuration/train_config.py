"""Every training option, once: a dataclass field per option (no torch import).

A field's metadata is its help text, its choices or numeric range, and whether it may change
when a run is resumed (configuration/options.py). From it come the `bertmtl train` options (cli/options.py),
the validation (`TrainConfig.validate`), the resume check (`TrainConfig.check_resume`, run by
training itself), what `--config FILE` may hold and what `--print-config` prints. Adding an
option is adding a field here and reading it where it acts.

The defaults were chosen by dev measurements (docs/results.md): batch 64 per task and lr 1e-4
for two epochs, with SMART (extra forward and backward passes per step) one flag away.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .options import DEVICES, PRECISIONS, SEED_MAX, Options, documented, option
from ..errors import UserError
from ..data.mlm_text import BUILTIN_SOURCES, OPTIONAL, parse_amounts, parse_sources
from ..tasks.files import parse_tasks, task_files
from ..model.head_config import DEFAULT_HEADS, HEAD_RANGES, PAIR_FEATURES, PAIR_MODES, POOLINGS, STS_LOSSES
from ..mtl.combiners import REGISTRY as COMBINER_REGISTRY
from ..mtl.smart_config import DEFAULT_SMART, paper_weights
from ..mtl.weightings import REGISTRY as WEIGHTING_REGISTRY
from ..tasks import TASKS
from ..tasks.declared import builtin_names, parse_task_flags

REPORT_TO = ("tensorboard", "csv", "mlflow", "wandb")
# --combine and --loss-weighting: their registries' names (one module per method; no torch to list them).
COMBINERS = tuple(COMBINER_REGISTRY)
LOSS_WEIGHTINGS = tuple(WEIGHTING_REGISTRY)
ALIGNED_SCALES = ("min", "median", "mean")
TELEMETRY = ("auto", "on", "off")
OPTIMIZERS = ("adamw", "adamaxw")
# --sst-train FILE and friends: (field key in TrainConfig.files, help), one pair per task.
FILE_OPTIONS = tuple((f"{t.name}_{split}", f"Override the {t.title} {split} file.")
                     for t in TASKS.values() for split in ("train", "dev"))


# Keys of older train_args.json files -> today's field names.
RENAMED = {"pretrained": "encoder"}
# In bertmtl 0.1, max_steps stopped a run early and the schedule still spanned --epochs; that is now
# stop_at_step, and max_steps sets the schedule's length (as in Hugging Face's Trainer). A complete
# configuration saved before (a run's train_args.json, --print-config output: every one holds
# these keys, and none holds stop_at_step) keeps its meaning, so such runs resume and repeat as they ran.
_SAVED_BEFORE_STOP_AT = ("data_dir", "epochs", "batch_size", "lr", "seed", "max_steps")


def upgrade_config(d: dict) -> dict:
    """A saved configuration with today's field names: renamed keys moved, and a renamed key
    saved as null (it meant the default then) left out so today's default applies; an older
    complete configuration's max_steps becomes stop_at_step (see _SAVED_BEFORE_STOP_AT)."""
    out = {k: v for k, v in d.items() if k not in RENAMED}
    out.update({RENAMED[k]: v for k, v in d.items() if k in RENAMED and v is not None})
    if all(k in out for k in _SAVED_BEFORE_STOP_AT) and "stop_at_step" not in out:
        out["stop_at_step"], out["max_steps"] = out["max_steps"], None
    return out


def parse_task_weights(spec: str) -> dict[str, float]:
    """'sst=0.5,sts=1' -> {'sst': 0.5, 'sts': 1.0}; ValueError on a malformed pair or a task given twice.

    Names may be declared tasks' (--task), so they are checked once the run's tasks are known."""
    out, given = {}, {}
    for part in spec.split(","):
        try:
            k, v = part.split("=")
            weight = float(v)
        except ValueError:
            raise ValueError(f"expected task=weight pairs like sst=0.5,para=0,sts=0.5, got {part!r}") from None
        task = k.strip()
        if task in given:  # the last would silently win
            raise ValueError(f"{task} is given twice ({given[task]} and {part.strip()}): give each task one weight")
        out[task], given[task] = weight, part.strip()
    return out


def parse_report_to(values) -> list[str]:
    """'tensorboard,csv' or the values of a repeated option -> ['tensorboard', 'csv'] (each once)."""
    parts = [values] if isinstance(values, str) else list(values)
    names = list(dict.fromkeys(p.strip() for v in parts for p in v.split(",") if p.strip()))
    bad = [n for n in names if n not in REPORT_TO]
    if bad:
        raise ValueError(f"unknown destination(s) {', '.join(bad)}; choose from {', '.join(REPORT_TO)}")
    return names


@documented
@dataclass
class TrainConfig(Options):
    """Every option of a training run (saved as train_args.json)."""

    file_options = FILE_OPTIONS  # --sst-train FILE and friends, into `files`

    # -- data
    data_dir: str = option("data", "Directory with the CS224N task CSVs.", path="dir")
    out: str | None = option(None, "Run directory [default: a new DATE-TIME directory under --runs-dir].", type=str,
                             path="dir")
    encoder: str = option("minilm", "Encoder to start from: a built-in name (minilm, mpnet; fetched on first use), "
                                    "a Hugging Face Hub name (ORG/NAME[@REVISION], into the Hugging Face cache), "
                                    "a Hugging Face encoder directory (BERT, RoBERTa, XLM-R, ELECTRA, DistilBERT, DeBERTa-v2/v3, "
                                    "MPNet), or a bertmtl run or checkpoint (its "
                                    "encoder).", aliases=("pretrained",), resume=False, nonempty=True)
    init_heads_from: str | None = option(None, "Start the task heads from this checkpoint's (a run's best/) instead "
                                               "of fresh ones; the head options must match its.", type=str,
                                         path="existing_dir", resume=False)
    tasks: list | None = option(None, "Built-in tasks to train, any of sst, para, sts [default: all three; none when "
                                      "--task or --tasks-file declare tasks].", type=list, parse=parse_tasks)
    task: list = option(help="Declare a task of your own: NAME:KIND:TRAIN[:DEV], KIND one of classification, "
                             "regression, pair-classification, pair-regression (a regression kind written "
                             "KIND[LOW,HIGH] fixes its range). "
                             "CSV, TSV or JSONL; columns guessed from the header unless named (--text-column ...). "
                             "NAME:KIND:hf:DATASET[:CONFIG] reads a Hugging Face dataset (a save_to_disk "
                             "directory, a directory of data files, or a Hub name from the local cache; needs "
                             "the datasets extra): its train and validation splits. Repeatable.",
                        factory=list, metavar="NAME:KIND:TRAIN[:DEV]", parse=parse_task_flags, multiple=True,
                        resume=False)
    text_column: str | None = option(None, "The column holding the text (a pair task: the first text) of the "
                                           "--task files or datasets [default: guessed from the header].", type=str,
                                     resume=False)
    text_pair_column: str | None = option(None, "The column holding a pair task's second text (with "
                                                "--text-column).", type=str, resume=False)
    label_column: str | None = option(None, "The column holding the label of the --task files or datasets "
                                            "[default: guessed from the header].", type=str, resume=False)
    tasks_file: str | None = option(None, "A YAML or JSON file declaring tasks (columns, labels, id, loss weight, "
                                          "metrics; docs: Your own tasks).", type=str, resume=False)
    files: dict = option(help="Per-task file overrides, e.g. {'sst_train': path} (--sst-train FILE ...).",
                         factory=dict, cli=False, text_items=True)
    augment: str | None = option(None, "Also train on the augmented copies in this directory (from `bertmtl "
                                       "augment`; their text joins masked LM's too).", type=str, path="dir",
                                 aliases=("augmented",))
    # -- length of the run
    epochs: float = option(2.0, "Epochs (one epoch = one pass over the largest task).", min=0, min_open=True)
    steps_per_epoch: int | None = option(None, "Override the epoch length in steps.", type=int, min=1)
    max_steps: int | None = option(None, "Train for this many steps: the learning-rate schedule spans them "
                                         "(overrides --epochs).", type=int, min=1, aliases=("steps",))
    stop_at_step: int | None = option(None, "Stop at this step, keeping the schedule of --epochs / --max-steps "
                                            "(a budgeted part of a longer run; --resume with a larger value goes "
                                            "on).", type=int, min=1)
    batch_size: int = option(64, "Examples per task per step (per process under torchrun; per micro-batch with "
                                 "--grad-accum).", min=1)
    grad_accum: int = option(1, "Gradient accumulation: K micro-batches of --batch-size per task per optimizer step "
                                "(the update of a batch K times larger, in the memory of one).", min=1,
                             resume=False)
    eval_batch_size: int = option(128, "Examples per forward pass when evaluating on dev.", min=1)
    dev_limit: int | None = option(None, "Evaluate during training on a fixed subset of N dev examples per task "
                                         "(the same subset in every run; a dev evaluation takes about a minute on "
                                         "a CPU) [default: all; `bertmtl evaluate --dev-limit N` scores the same subset].",
                                   type=int, min=1)
    # -- optimisation
    lr: float = option(1e-4, "Peak learning rate.", min=0, min_open=True)
    layer_decay: float = option(1.0, "Layer-wise learning-rate decay: the heads train at --lr, the top "
                                     "transformer layer at --lr x DECAY, each layer below at another factor DECAY, "
                                     "the embeddings lowest (1 = off).",
                                min=0, max=1, min_open=True, resume=False)
    weight_decay: float = option(0.01, "Decoupled weight decay (not applied to biases and LayerNorm).", min=0,
                                 resume=False)
    warmup: float = option(0.06, "Fraction of the steps with linear warm-up.", min=0, max=1, max_open=True)
    schedule: str = option("linear", "Learning rate after warm-up: linear decay to 0, or constant.",
                           choices=("linear", "constant"))
    clip: float = option(1.0, "Gradient norm clipping (0 = off).", min=0)
    dropout: float = option(DEFAULT_HEADS.dropout, "Dropout in the encoder and heads.", **HEAD_RANGES["dropout"])
    ema: float = option(0.0, "Evaluate and save an exponential moving average of the weights with this decay "
                             "(e.g. 0.99; 0 = off).", min=0, max=1, max_open=True)
    combine: str = option("pcgrad", "How per-task gradients become one update: sum, mean, pcgrad (Yu et al.), mgda "
                                    "(min-norm), cagrad, nash-mtl, imtl-g, aligned-mtl, upgrad, dualproj (Quinton & "
                                    "Rey), fairgrad, random (RLW); docs: Gradient combiners.", choices=COMBINERS)
    cagrad_c: float = option(0.4, "CAGrad: radius of the ball around the mean gradient, relative to its norm.",
                             min=0, only_for=("combine", "cagrad"))
    nash_update_every: int = option(1, "Nash-MTL: solve for new weights every N steps (the paper's speed-up).",
                                    min=1, only_for=("combine", "nash-mtl"))
    nash_max_norm: float = option(1.0, "Nash-MTL: cap on the update's norm (0 = none), as in the paper.", min=0,
                                  only_for=("combine", "nash-mtl"))
    fairgrad_alpha: float = option(1.0, "FairGrad: the fairness alpha (1 = proportional fairness; larger favours "
                                        "the worst task).", min=0, only_for=("combine", "fairgrad"))
    aligned_scale: str = option("min", "Aligned-MTL: eigenvalue the aligned gradients are scaled to.",
                                choices=ALIGNED_SCALES, only_for=("combine", "aligned-mtl"))
    loss_weighting: str = option("none", "How much each task's loss counts, learned or adapted as training goes: "
                                         "none, uncertainty (Kendall et al., learned log-variances), dwa (Liu et "
                                         "al.), gradnorm (Chen et al.); with any --combine. docs: Gradient combiners and loss weighting.",
                                 choices=LOSS_WEIGHTINGS, resume=False)
    weighting_lr: float = option(1e-2, "Peak learning rate of the learned loss weights (uncertainty, gradnorm), "
                                       "on the schedule of --lr.", min=0, min_open=True,
                                 only_for=("loss_weighting", ("uncertainty", "gradnorm")))
    dwa_temperature: float = option(2.0, "DWA: the softmax temperature (larger: more uniform weights).", min=0,
                                    min_open=True, only_for=("loss_weighting", "dwa"))
    dwa_window: int = option(0, "DWA: steps per period whose mean losses set the weights (0 = one epoch, the "
                                "paper's).", min=0, only_for=("loss_weighting", "dwa"))
    gradnorm_alpha: float = option(1.5, "GradNorm: the asymmetry alpha (0 = equal gradient norms; larger pulls "
                                        "harder on the tasks that train slowest).", min=0,
                                   only_for=("loss_weighting", "gradnorm"))
    telemetry: str = option("auto", "Task-conflict statistics (gradient cosines, norms, the combiner's weights) "
                                    "in each log record: auto = with every combiner but sum (which adds all "
                                    "tasks into one buffer; on gives it one per task).", choices=TELEMETRY)
    sampling: str = option("round-robin", "Each step takes a batch of every task (round-robin), or of each task with "
                                          "probability its size / the largest task's (proportional).",
                           choices=("round-robin", "proportional"), resume=False)
    loss_weights: dict = option(help="Per-task loss weights [default: 1, or a tasks file's loss_weight].",
                                factory=dict, metavar="TASK=W,...", parse=parse_task_weights)
    optimizer: str = option("adamw", "Optimizer (ours).", choices=OPTIMIZERS, resume=False)
    # -- SMART adversarial regularisation
    smart: bool = option(False, "SMART adversarial regularisation.", flag="on/off")
    smart_weights: dict = option(help="Per-task SMART weights [default: sst=0.5,para=0,sts=0.5, as in the paper].",
                                 factory=paper_weights, metavar="TASK=W,...",
                                 parse=parse_task_weights)
    smart_noise: float = option(DEFAULT_SMART.noise, "SMART: standard deviation of the initial embedding noise.", min=0)
    smart_step: float = option(DEFAULT_SMART.step, "SMART: step size of each ascent step on the noise.", min=0)
    smart_epsilon: float = option(DEFAULT_SMART.epsilon, "SMART: keeps the normalisation of the ascent direction finite.",
                                  min=0, min_open=True)
    smart_steps: int = option(DEFAULT_SMART.steps, "SMART ascent steps K.", min=1, max=100)
    # -- hardware
    encoder_revision: str | None = option(None, "The Hub commit --encoder ORG/NAME resolved to (recorded at the "
                                                "start of a run).", type=str, cli=False)
    sweep: str | None = option(None, "The sweep and configuration this run is a trial of (bertmtl sweep sets it).",
                               type=str, cli=False)
    seed: int = option(42, "Random seed, 0 to 2^63-1 (same seed, same result; CPU runs repeat exactly).",
                       min=0, max=SEED_MAX)
    init_seed: int | None = option(None, "Seed of the task heads' initialisation alone [default: --seed]. Runs "
                                         "that share it and vary --seed (data order, dropout) can be averaged "
                                         "into a soup (`bertmtl soup`).", type=int, min=0, max=SEED_MAX)
    device: str = option("auto", "auto = CUDA when available.", choices=DEVICES)
    precision: str = option("auto", "Autocast precision of training steps: auto = bf16 on CPUs that multiply it "
                                    "natively (AVX512-BF16, AMX), fp32 elsewhere; fp16 adds a gradient scaler. "
                                    "Evaluation is fp32.", choices=PRECISIONS)
    compile: bool = option(False, "torch.compile the encoder's layer stack as one graph, without graph breaks (falls "
                                  "back when unsupported). Off by default: on CPUs it compiles for minutes and was not "
                                  "faster per step (docs: Benchmarks).", flag="on/off")
    threads: int | None = option(None, "CPU threads of the model's kernels [default: $OMP_NUM_THREADS, else one per "
                                       "core]. Waiting threads sleep, so other work on the machine costs only the "
                                       "cores it takes.", type=int, min=1, max=1024)
    # -- evaluation, checkpoints, logs
    eval_every: int | None = option(None, "Evaluate on dev every N steps [default: every epoch].", type=int, min=1)
    save_every: int | None = option(None, "Also save RUN/last every N steps [default: at each evaluation].",
                                    type=int, min=1)
    log_every: int = option(10, "Write a metrics.jsonl record every N steps.", min=1)
    patience: int | None = option(None, "Early stopping: end the run after N evaluations in a row without a better "
                                        "overall dev score (status early-stopped) [default: off].", type=int, min=1)
    report_to: list = option(help="Also send the metrics to: tensorboard (event files in RUN/tensorboard; needs "
                                  "`pip install -e \".[tensorboard]\"`), csv (RUN/train.csv, RUN/eval.csv), mlflow "
                                  "($MLFLOW_TRACKING_URI, else RUNS_ROOT/mlflow.db; needs `pip install -e "
                                  "\".[mlflow]\"`), wandb (online with $WANDB_API_KEY, else offline in RUN/wandb; "
                                  "needs `pip install -e \".[wandb]\"`). Repeat or give a comma list; metrics.jsonl "
                                  "is always written.",
                             factory=list, choices=REPORT_TO, metavar="tensorboard,csv,mlflow,wandb", parse=parse_report_to,
                             multiple=True)
    runs_dir: str | None = option(None, "Where runs are made and found [default: $BERTMTL_RUNS, else ./checkpoints].",
                                  type=str, path="dir")
    # -- model
    pooling: str = option(DEFAULT_HEADS.pooling, "Sentence embedding: mean of tokens, [CLS] state, or the tanh pooler.",
                          choices=POOLINGS, resume=False)
    pair_mode: str = option(DEFAULT_HEADS.pair_mode, "Pairs as two embeddings (cosine + MLP) or one [CLS] a [SEP] b [SEP] input.",
                            choices=PAIR_MODES, resume=False)
    pair_features: str = option(DEFAULT_HEADS.pair_features, "Bi-encoder MLP input: [u, v, |u-v|, u*v], or [u+v, |u-v|, u*v], which "
                                          "scores (a, b) and (b, a) alike.",
                                choices=PAIR_FEATURES, resume=False)
    sts_loss: str = option(DEFAULT_HEADS.sts_loss, "STS loss: 1 - Pearson r over the batch, or squared error on the 0-5 scale.",
                           choices=STS_LOSSES)
    mlp_hidden: int = option(DEFAULT_HEADS.mlp_hidden, "Hidden units of the bi-encoder pair heads' MLP (paraphrase, similarity).",
                             **HEAD_RANGES["mlp_hidden"], resume=False)
    max_length: int = option(128, "Maximum tokens per input (capped by the model's positions).", min=8)
    # -- data handling
    bucket: bool = option(True, "Length-bucketed batches (less padding).", flag="on/off")
    strict: bool = option(False, "Stop at the first unusable data row instead of skipping it.", flag="on")
    max_nonfinite: int = option(5, "Stop after this many consecutive steps with a non-finite loss.", min=1)
    # -- masked-LM further pretraining (one more task: `bertmtl pretrain`, or beside the others)
    mlm_text: list = option(help="Also train masked LM on the train-file text of these: sst, quora, sts, imdb "
                                 "(ids-cfimdb-train.csv, used when present) or a declared task's name.", factory=list, parse=parse_sources,
                            metavar="DATASET,...", aliases=("datasets",), resume=False)
    mlm_caps: dict = option(help="At most N training texts of a masked-LM source (e.g. quora=5000).", factory=dict,
                            metavar="DATASET=N,...", parse=lambda v: parse_amounts(v, "--mlm-caps", True),
                            multiple=True, aliases=("cap",), resume=False)
    mlm_upsample: dict = option(help="Repeat a masked-LM source's texts by a factor (e.g. sts=2).", factory=dict,
                                metavar="DATASET=FACTOR,...", min=1,
                                parse=lambda v: parse_amounts(v, "--mlm-upsample", False), multiple=True,
                                aliases=("upsample",), resume=False)
    mlm_heldout: float = option(0.05, "Fraction of each masked-LM source held out for its dev scores.", min=0, max=1,
                                min_open=True, max_open=True, aliases=("heldout",), resume=False)
    mlm_heldout_max: int = option(500, "At most this many held-out examples per masked-LM source.", min=1,
                                  aliases=("heldout-max",), resume=False)
    mask_prob: float = option(0.15, "Masked LM: fraction of tokens chosen for prediction (80% masked, 10% random, "
                                    "10% kept).", min=0, max=1, min_open=True, max_open=True)
    head_steps: int | None = option(None, "Train the heads alone for the first N steps, the encoder frozen, at "
                                          "--head-lr (decaying to 0), before the --lr schedule [default: 20% of the "
                                          "steps when a masked-LM head is new, else 0].", type=int, min=0)
    head_lr: float | None = option(None, "Learning rate of the head-only steps [default: --lr].", type=float, min=0,
                                   min_open=True)
    mlm_only: bool = option(False, "Train masked LM alone: declared tasks give their text, their heads do not "
                                   "train (what `bertmtl pretrain` runs).", flag="on", resume=False)

    @classmethod
    def upgrade(cls, d: dict) -> dict:
        return upgrade_config(d)

    @property
    def command(self) -> str:
        """The command that runs (and resumes) this configuration: masked LM alone is `bertmtl pretrain`."""
        return "pretrain" if self.mlm_only else "train"

    def resume_command(self, run_dir) -> str:
        return f"bertmtl {self.command} --resume {run_dir}"

    @property
    def declares_tasks(self) -> bool:
        """Whether --task, --tasks-file or --mlm-text add tasks of their own (then the built-in tasks
        train only when named)."""
        return bool(self.task or self.tasks_file or self.mlm_text)

    def new_run_specs(self, declared) -> list:
        """The heads (one per task) of a new run of this configuration, given its `declared` tasks'
        specs: without declared tasks the three built-in heads, whichever train (as always); with
        them, the chosen built-in tasks and the declared ones, and masked LM with --mlm-text (alone
        with --mlm-only, where declared tasks only give their text)."""
        from ..tasks import BUILTIN, MLM

        if self.mlm_only:
            return [MLM]
        if self.declares_tasks:
            return [TASKS[n] for n in self.tasks] + list(declared) + ([MLM] if self.mlm_text else [])
        return list(BUILTIN)

    def builtin_tasks(self) -> list[str]:
        """The built-in tasks trained: --tasks, or by default all three (none beside declared tasks)."""
        return builtin_names(self.tasks, self.declares_tasks)

    def normalise(self) -> None:
        """The task list in canonical order (default: every built-in task, none beside declared tasks);
        masked LM alone reads, unless told, the declared tasks' text, else every built-in source's."""
        from ..tasks.declared import check_column_flags

        check_column_flags(self)
        if self.mlm_only and not self.mlm_text:
            from ..data.mlm_text import BUILTIN_SOURCES
            from ..tasks.declared import declared_entries

            declared = [str(e["name"]) for e in declared_entries(self.task, self.tasks_file)]
            self.mlm_text = declared or list(BUILTIN_SOURCES)
        self.tasks = self.builtin_tasks()


FIELDS = TrainConfig.fields()

# The panels `--help` shows the options in (train, pretrain, tui), in this order; every option of
# TrainConfig (and each --sst-train FILE of FILE_OPTIONS) is in one (tests/test_cli_core.py).
PANELS = {
    "Data": ("data_dir", "tasks", "task", "text_column", "text_pair_column", "label_column", "tasks_file",
             *(name for name, _ in FILE_OPTIONS), "encoder", "init_heads_from", "augment", "out", "strict"),
    "Run length and batches": ("epochs", "steps_per_epoch", "max_steps", "stop_at_step", "batch_size", "grad_accum"),
    "Model": ("pooling", "pair_mode", "pair_features", "sts_loss", "mlp_hidden", "max_length", "dropout"),
    "Optimisation": ("lr", "optimizer", "weight_decay", "layer_decay", "warmup", "schedule", "clip", "ema", "seed",
                     "init_seed", "max_nonfinite"),
    "Multi-task": ("combine", "cagrad_c", "nash_update_every", "nash_max_norm", "fairgrad_alpha", "aligned_scale",
                   "loss_weighting", "loss_weights", "weighting_lr", "dwa_temperature", "dwa_window", "gradnorm_alpha",
                   "sampling", "telemetry"),
    "SMART": ("smart", "smart_weights", "smart_noise", "smart_step", "smart_epsilon", "smart_steps"),
    "Masked-LM pretraining": ("mlm_text", "mlm_only", "mask_prob", "mlm_caps", "mlm_upsample", "mlm_heldout",
                              "mlm_heldout_max", "head_steps", "head_lr"),
    "Evaluation and saving": ("eval_every", "eval_batch_size", "dev_limit", "save_every", "patience", "runs_dir"),
    "Logging": ("log_every", "report_to"),
    "Performance": ("device", "precision", "threads", "compile", "bucket"),
}


# `bertmtl pretrain`: a training run whose one task is masked LM on the tasks' text (the same loop,
# checkpoints, resume and sinks as train), with these options and defaults (the ones measured in
# docs/results.md: lr 5e-5, batch 32, one epoch, a fresh head fitted alone first at 1e-3).
PRETRAIN_OPTIONS = ("data_dir", "out", "encoder", "mlm_text", "augment", "mlm_caps", "mlm_upsample",
                    "mlm_heldout", "mlm_heldout_max", "mask_prob", "task", "text_column", "text_pair_column", "label_column",
                    "tasks_file", "epochs", "max_steps",
                    "stop_at_step", "batch_size", "grad_accum", "eval_batch_size", "lr", "head_steps", "head_lr",
                    "weight_decay", "warmup", "schedule", "clip", "dropout", "max_length", "seed", "device",
                    "precision", "compile", "threads", "eval_every", "save_every", "log_every", "report_to", "strict",
                    "max_nonfinite", "bucket")
# Where pretrain's meaning of an option differs from train's, its own help text.
PRETRAIN_HELP = {
    "out": "Run directory (best/ and last/ checkpoints, metrics.jsonl); `bertmtl train --encoder OUT` starts "
           "from it.",
    "mlm_text": "Masked LM on the train-file text of these: sst, quora, sts, imdb (ids-cfimdb-train.csv, used when "
                "present) or a declared task's name [default: the declared tasks' text with --task / --tasks-file, "
                "else sst,quora,sts,imdb].",
    "head_lr": "Learning rate of the head-only steps (a new masked-LM head).",
}
PRETRAIN_DEFAULTS = {"out": "pretrained-mlm", "mlm_only": True, "tasks": [], "combine": "sum", "epochs": 1.0,
                     "batch_size": 32, "eval_batch_size": 64, "lr": 5e-5, "head_lr": 1e-3}


# -- the files a training run reads: checked before anything slow ------------------------------------

# Where the CS224N files come from, for messages about a missing data directory.
DATA_SOURCE = ("the Stanford CS224N default final project (\"minbert\") ships them in the data/ folder of its "
               "starter code, the repository gpoesia/minbert-default-final-project linked from the course's "
               "project handout; copy that folder here as ./data or pass --data-dir DIR")


def builtin_files(cfg) -> dict:
    """The CS224N files a run reads: its built-in tasks' train and dev files, and the train files of
    its built-in masked-LM sources (IMDB's is optional)."""
    text = {n: BUILTIN_SOURCES[n] for n in cfg.mlm_text if n in BUILTIN_SOURCES and n not in OPTIONAL}
    return {**task_files(cfg.data_dir, {t: TASKS[t] for t in cfg.tasks}, overrides=cfg.files),
            **task_files(cfg.data_dir, text, ("train",), overrides=cfg.files)}


def check_data_files(cfg) -> None:
    """Fail before anything slow (fetching weights, tokenising) when the training or dev files are missing."""
    missing = [p for p in builtin_files(cfg).values() if not p.is_file()]
    if not missing:
        return
    if not Path(cfg.data_dir).is_dir() and all(p.parent == Path(cfg.data_dir) for p in missing):
        names = ", ".join(p.name for p in builtin_files(cfg).values())
        raise UserError(f"data directory {cfg.data_dir!r} not found (resolved: {Path(cfg.data_dir).resolve()}). "
                        f"Training reads {names}: {DATA_SOURCE}")
    also = f" (also missing: {', '.join(p.name for p in missing[1:])})" if len(missing) > 1 else ""
    raise UserError(f"{missing[0]}: no such file{also}. Where the files come from: {DATA_SOURCE}; single files "
                    f"can be given with --sst-train PATH and friends")
