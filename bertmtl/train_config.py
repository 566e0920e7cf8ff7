"""Every training option, once: a dataclass field per option (no torch import).

A field's metadata is its help text, its choices or numeric range, and whether it may change
when a run is resumed. From it come the `bertmtl train` options (cli/options.py), the
validation (`TrainConfig.validate`) and the resume check (`TrainConfig.check_resume`, run by
training itself), and what `--config FILE` may hold and `--print-config` prints (config_file.py).
Adding an option is adding a field here and reading it where it acts.

The defaults were chosen by dev measurements (README, Results): batch 64 per task and lr 1e-4
for two epochs, with SMART (extra forward and backward passes per step) one flag away.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .errors import UserError
from .numbers import number_problem
from .tasks import TASKS

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
REPORT_TO = ("tensorboard", "csv")
DEVICES = ("auto", "cpu", "cuda")
ALL_TASKS = tuple(TASKS)
# --sst-train FILE and friends: (field key in TrainConfig.files, help), one pair per task.
FILE_OPTIONS = tuple((f"{t.name}_{split}", f"Override the {t.title} {split} file.")
                     for t in TASKS.values() for split in ("train", "dev"))

# Seeds are 0 .. 2**63-1: what torch.manual_seed takes as a signed 64-bit number, and what our
# generators take after mixing a seed with a task, pass or step (data.py, mtl/ reduce modulo 2**63).
SEED_MAX = 2**63 - 1
# Widths beyond this are typos (10^11 units would ask for terabytes), refused before allocating.
MLP_HIDDEN_MAX = 65_536

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


def parse_tasks(spec: str) -> list[str]:
    """'sst,para' -> ['sst', 'para'] in canonical order (also accepts full names); ValueError if unknown."""
    from .data import parse_tasks as parse

    return parse(spec)


def parse_task_weights(spec: str) -> dict[str, float]:
    """'sst=0.5,sts=1' -> {'sst': 0.5, 'sts': 1.0}; ValueError on a malformed pair.

    Names may be declared tasks' (--task), so they are checked once the run's tasks are known."""
    out = {}
    for part in spec.split(","):
        try:
            k, v = part.split("=")
            out[k.strip()] = float(v)
        except ValueError:
            raise ValueError(f"expected task=weight pairs like sst=0.5,para=0,sts=0.5, got {part!r}") from None
    return out


def parse_report_to(values) -> list[str]:
    """'tensorboard,csv' or the values of a repeated option -> ['tensorboard', 'csv'] (each once)."""
    parts = [values] if isinstance(values, str) else list(values)
    names = list(dict.fromkeys(p.strip() for v in parts for p in v.split(",") if p.strip()))
    bad = [n for n in names if n not in REPORT_TO]
    if bad:
        raise ValueError(f"unknown destination(s) {', '.join(bad)}; choose from {', '.join(REPORT_TO)}")
    return names

def parse_task_flags(values) -> list[str]:
    """--task values, each checked for the NAME:KIND:TRAIN[:DEV] form."""
    from .user_tasks import parse_task_flags as parse

    return parse(values)


def option(default=None, help: str = "", *, factory=None, type=None, choices=None, min=None, max=None,
           min_open=False, max_open=False, resume=True, flag=None, path=None, metavar=None, parse=None, cli=True,
           aliases=(), multiple=False):
    """A TrainConfig field with the metadata that generates its option, validation and resume check.

    type: the value type when the default is None. choices / min, max (+ min_open, max_open):
    the allowed values. resume=False: fixed once a run exists (it shapes the saved weights or the
    optimizer's parameter groups). flag: "on/off" for --x/--no-x, "on" for a bare --x.
    path: "dir" or "existing_dir". parse: turns the option's text into the value (lists, dicts);
    a dict-valued option updates the default's keys. multiple: the option may be repeated (`parse`
    gets the list of its values). cli=False: no generated option. aliases: other flag names
    accepted for the same option (kept for old command lines).
    """
    if type is None and (default is not None or factory is not None):
        type = (factory() if factory else default).__class__
    meta = {"help": help, "type": type, "choices": tuple(choices) if choices else None, "min": min, "max": max,
            "min_open": min_open, "max_open": max_open, "resume": resume, "flag": flag, "path": path,
            "metavar": metavar, "parse": parse, "cli": cli, "aliases": tuple(aliases), "multiple": multiple}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """Every option of a training run (saved as train_args.json)."""

    # -- data
    data_dir: str = option("data", "Directory with the CS224N task CSVs.", path="dir")
    out: str | None = option(None, "Run directory [default: a new DATE-TIME directory under --runs-dir].", type=str,
                             path="dir")
    encoder: str = option("minilm", "Encoder to start from: a built-in name (minilm, mpnet; fetched on first use), "
                                    "a Hugging Face BERT / MPNet directory, or a bertmtl run or checkpoint (its "
                                    "encoder).", aliases=("pretrained",), resume=False)
    init_heads_from: str | None = option(None, "Start the task heads from this checkpoint's (a run's best/) instead "
                                               "of fresh ones; the head options must match its.", type=str,
                                         path="existing_dir", resume=False)
    tasks: list | None = option(None, "Built-in tasks to train, any of sst, para, sts [default: all three; none when "
                                      "--task or --tasks-file declare tasks].", type=list, parse=parse_tasks)
    task: list = option(help="Declare a task of your own: NAME:KIND:TRAIN[:DEV], KIND one of classification, "
                             "regression, pair-classification, pair-regression (a regression kind written "
                             "KIND[LOW,HIGH] fixes its range). "
                             "CSV, TSV or JSONL; columns guessed from the header. Repeatable.",
                        factory=list, metavar="NAME:KIND:TRAIN[:DEV]", parse=parse_task_flags, multiple=True,
                        resume=False)
    tasks_file: str | None = option(None, "A YAML or JSON file declaring tasks (columns, labels, id, loss weight, "
                                          "metrics; README, Your own tasks).", type=str, resume=False)
    files: dict = option(help="Per-task file overrides, e.g. {'sst_train': path} (--sst-train FILE ...).",
                         factory=dict, cli=False)
    augment: str | None = option(None, "Also train on the augmented copies in this directory "
                                       "(from `bertmtl augment`).", type=str, path="dir")
    # -- length of the run
    epochs: float = option(2.0, "Epochs (one epoch = one pass over the largest task).", min=0, min_open=True)
    steps_per_epoch: int | None = option(None, "Override the epoch length in steps.", type=int, min=1)
    max_steps: int | None = option(None, "Train for this many steps: the learning-rate schedule spans them "
                                         "(overrides --epochs).", type=int, min=1)
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
                                         "a CPU) [default: all; `bertmtl evaluate` always scores all].",
                                   type=int, min=1)
    # -- optimisation
    lr: float = option(1e-4, "Peak learning rate.", min=0, min_open=True)
    layer_decay: float = option(1.0, "Layer-wise learning-rate decay: the heads train at --lr, transformer layer i "
                                     "of L at --lr x DECAY^(L-i), the embeddings lowest (1 = off).",
                                min=0, max=1, min_open=True, resume=False)
    weight_decay: float = option(0.01, "Decoupled weight decay (not applied to biases and LayerNorm).", min=0,
                                 resume=False)
    warmup: float = option(0.06, "Fraction of the steps with linear warm-up.", min=0, max=1, max_open=True)
    schedule: str = option("linear", "Learning rate after warm-up: linear decay to 0, or constant.",
                           choices=("linear", "constant"))
    clip: float = option(1.0, "Gradient norm clipping (0 = off).", min=0)
    dropout: float = option(0.1, "Dropout in the encoder and heads.", min=0, max=1, max_open=True)
    ema: float = option(0.0, "Evaluate and save an exponential moving average of the weights with this decay "
                             "(e.g. 0.99; 0 = off).", min=0, max=1, max_open=True)
    combine: str = option("pcgrad", "How per-task gradients become one update.", choices=("sum", "pcgrad"))
    sampling: str = option("round-robin", "Each step takes a batch of every task (round-robin), or of each task with "
                                          "probability its size / the largest task's (proportional).",
                           choices=("round-robin", "proportional"), resume=False)
    loss_weights: dict = option(help="Per-task loss weights [default: 1, or a tasks file's loss_weight].",
                                factory=dict, metavar="TASK=W,...", parse=parse_task_weights)
    optimizer: str = option("adamw", "Optimizer (ours).", choices=("adamw", "adamaxw"), resume=False)
    # -- SMART adversarial regularisation
    smart: bool = option(False, "SMART adversarial regularisation.", flag="on/off")
    smart_weights: dict = option(help="Per-task SMART weights [default: sst=0.5,para=0,sts=0.5, as in the paper].",
                                 factory=lambda: {t.name: t.smart_weight for t in TASKS.values()}, metavar="TASK=W,...",
                                 parse=parse_task_weights)
    smart_noise: float = option(1e-5, "SMART: standard deviation of the initial embedding noise.", min=0)
    smart_step: float = option(1e-3, "SMART: step size of each ascent step on the noise.", min=0)
    smart_epsilon: float = option(1e-6, "SMART: keeps the normalisation of the ascent direction finite.",
                                  min=0, min_open=True)
    smart_steps: int = option(1, "SMART ascent steps K.", min=1, max=100)
    # -- hardware
    seed: int = option(42, "Random seed, 0 to 2^63-1 (same seed, same result; CPU runs repeat exactly).",
                       min=0, max=SEED_MAX)
    device: str = option("auto", "auto = CUDA when available.", choices=DEVICES)
    precision: str = option("auto", "Autocast precision of training steps: auto = bf16 on CPUs that multiply it "
                                    "natively (AVX512-BF16, AMX), fp32 elsewhere; fp16 adds a gradient scaler. "
                                    "Evaluation is fp32.", choices=PRECISIONS)
    compile: bool = option(False, "torch.compile the encoder (falls back when unsupported).", flag="on/off")
    # -- evaluation, checkpoints, logs
    eval_every: int | None = option(None, "Evaluate on dev every N steps [default: every epoch].", type=int, min=1)
    save_every: int | None = option(None, "Also save RUN/last every N steps [default: at each evaluation].",
                                    type=int, min=1)
    log_every: int = option(10, "Write a metrics.jsonl record every N steps.", min=1)
    patience: int | None = option(None, "Early stopping: end the run after N evaluations in a row without a better "
                                        "overall dev score (status early-stopped) [default: off].", type=int, min=1)
    report_to: list = option(help="Also send the metrics to: tensorboard (event files in RUN/tensorboard; needs "
                                  "`pip install -e \".[tensorboard]\"`), csv (RUN/train.csv, RUN/eval.csv). "
                                  "Repeat or give a comma list; metrics.jsonl is always written.",
                             factory=list, choices=REPORT_TO, metavar="tensorboard,csv", parse=parse_report_to,
                             multiple=True)
    runs_dir: str | None = option(None, "Where runs are made and found [default: $BERTMTL_RUNS, else ./checkpoints].",
                                  type=str, path="dir")
    # -- model
    pooling: str = option("mean", "Sentence embedding: mean of tokens, [CLS] state, or the tanh pooler.",
                          choices=("mean", "cls", "pooler"), resume=False)
    pair_mode: str = option("bi", "Pairs as two embeddings (cosine + MLP) or one [CLS] a [SEP] b [SEP] input.",
                            choices=("bi", "cross"), resume=False)
    pair_features: str = option("concat", "Bi-encoder MLP input: [u, v, |u-v|, u*v], or [u+v, |u-v|, u*v], which "
                                          "scores (a, b) and (b, a) alike.",
                                choices=("concat", "symmetric"), resume=False)
    sts_loss: str = option("pearson", "STS loss: 1 - Pearson r over the batch, or squared error on the 0-5 scale.",
                           choices=("pearson", "mse"))
    mlp_hidden: int = option(256, "Hidden units of the bi-encoder pair heads' MLP (paraphrase, similarity).",
                             min=1, max=MLP_HIDDEN_MAX, resume=False)
    max_length: int = option(128, "Maximum tokens per input (capped by the model's positions).", min=8)
    # -- data handling
    bucket: bool = option(True, "Length-bucketed batches (less padding).", flag="on/off")
    strict: bool = option(False, "Stop at the first unusable data row instead of skipping it.", flag="on")
    max_nonfinite: int = option(5, "Stop after this many consecutive steps with a non-finite loss.", min=1)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = upgrade_config(d)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def head_config(self):
        from .model.heads import HeadConfig

        return HeadConfig(pooling=self.pooling, pair_mode=self.pair_mode, pair_features=self.pair_features,
                          mlp_hidden=self.mlp_hidden, dropout=self.dropout, sts_loss=self.sts_loss)

    def smart_config(self):
        from .mtl import SmartConfig

        return SmartConfig(weights=dict(self.smart_weights), noise=self.smart_noise, step=self.smart_step,
                           epsilon=self.smart_epsilon, steps=self.smart_steps)

    @property
    def declares_tasks(self) -> bool:
        """Whether --task or --tasks-file declare tasks of the user's own."""
        return bool(self.task or self.tasks_file)

    def builtin_tasks(self) -> list[str]:
        """The built-in tasks trained: --tasks, or by default all three (none beside declared tasks)."""
        if self.tasks is None:
            return [] if self.declares_tasks else list(ALL_TASKS)
        return list(self.tasks)

    def validate(self) -> None:
        """Normalise the task list and check every field against its metadata (UserError if not)."""
        for f in dataclasses.fields(self):  # a config file can put anything in a list: names and paths are text
            value = getattr(self, f.name)
            items = value if isinstance(value, (list, tuple)) else \
                value.values() if isinstance(value, dict) and f.metadata["parse"] is not parse_task_weights else ()
            if bad := [v for v in items if not isinstance(v, str)]:
                raise UserError(f"--{flag_name(f)}: every item must be text, not {bad[0]!r}")
        if self.tasks is None:
            self.tasks = self.builtin_tasks()
        elif self.tasks or not self.declares_tasks:
            try:
                self.tasks = parse_tasks(self.tasks if isinstance(self.tasks, str) else ",".join(self.tasks))
            except ValueError as e:
                raise UserError(f"--tasks: {e}") from None
        for f in dataclasses.fields(self):
            problem = check_value(f, getattr(self, f.name))
            if problem:
                raise UserError(f"--{flag_name(f)} {problem}")

    def check_resume(self, saved: dict) -> None:
        """Refuse options that may not change on resume (resume=False) and differ from the saved run's."""
        saved = {**TrainConfig().to_dict(), **upgrade_config(saved)}  # keys an older run did not save: defaults
        for f in dataclasses.fields(self):
            if not f.metadata["resume"] and f.name in saved and getattr(self, f.name) != saved[f.name]:
                raise UserError(f"--{flag_name(f)} cannot change when resuming: the run was trained with "
                                f"{saved[f.name]!r} (its weights or optimizer state depend on it)")


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def flag_name(f: dataclasses.Field) -> str:
    """The option's name without dashes: data_dir -> data-dir."""
    return f.name.replace("_", "-")


def check_value(f: dataclasses.Field, value) -> str | None:
    """Why `value` is not allowed for field `f` (None when it is)."""
    m = f.metadata
    if value is None:
        return None if f.default is None else "must be given"
    if m["choices"] and isinstance(value, (list, tuple)):
        bad = [v for v in value if v not in m["choices"]]
        return f"has unknown value(s) {', '.join(map(str, bad))}; choose from {', '.join(m['choices'])}" \
            if bad else None
    if m["choices"] and value not in m["choices"]:
        return f"must be one of {', '.join(m['choices'])}"
    if m["parse"] is parse_task_weights:  # per-task weights (--loss-weights, --smart-weights): numbers >= 0
        for task, w in value.items():
            if isinstance(w, bool) or not isinstance(w, (int, float)):
                return f"{task}: must be a number, not {w!r}"
            if problem := number_problem(w, min=0):
                return f"{task}: {problem}"
        return None
    if m["type"] in (int, float) and not isinstance(value, bool) and isinstance(value, (int, float)):
        return number_problem(value, m["min"], m["max"], m["min_open"], m["max_open"])
    return None


def check_numbers(checks) -> None:
    """UserError for the first (name, value, range keywords) whose value `number_problem` refuses
    (None values, options not given, pass)."""
    for name, value, bounds in checks:
        if value is not None and (problem := number_problem(value, **bounds)):
            raise UserError(f"{name} {problem}")
