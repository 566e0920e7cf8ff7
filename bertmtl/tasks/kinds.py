"""What a task's head puts out, and all that follows from it: one class per output kind.

- `Softmax`: one logit per class; cross-entropy; class probabilities; the most probable class.
- `Sigmoid`: one logit for two labels; binary cross-entropy; the second label's probability;
  a yes above 0.5.
- `BoundedRegression`: one score; 1 - Pearson r (or squared error) plus a calibration fit; the
  calibrated score clamped to the target's range.

Each kind owns what the rest of the code would otherwise branch on: the head's width and its
extra parameters, the loss, the post-processing (what people read) and the decision, SMART's
divergence, how a label is read and written, the default metrics and JSON keys, and how an
answer looks as JSON, as a table row, in a TSV cell and on the TUI's gauge. A task's spec holds
its kind (`TaskSpec.output`); code asks the kind, never which kind it is.

A declared task's target, `TARGETS[kind]` (classes or a number), picks its output kind and reads
what a declaration leaves out: the label names, or the value range (tasks/declared.py).

No torch at import (the CLI and the TUI's data layer read specs); the methods that compute import it.
"""

from __future__ import annotations

import math

from ..numbers import FLOAT32_MAX

CORRELATIONS = ("pearson", "spearman")  # the metrics of a number target: in [-1, 1]


def as_number(text) -> float | None:
    """A label name or value as a number, or None when it is not one (within float32)."""
    try:
        v = float(text)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and abs(v) <= FLOAT32_MAX else None


# The head families: what a head reads and how it is scored. Each layer that treats them differently
# holds one object (or function) per family in a table keyed by these names (model/heads.py HEAD_FAMILIES,
# training/setup.py DATA, inference/evaluate.py SCORES), never a branch.
POOLED = "pooled"  # one embedding per input; outputs collected and scored per example
TOKENS = "tokens"  # the encoder's token states; masked-LM scores summed over tokens
HEAD_FAMILY_NAMES = (POOLED, TOKENS)


class OutputKind:
    """The behaviour shared by every task whose head has this kind of output."""

    name = ""  # how tasks.json names it
    label_dtype = "float"  # "int": class indices (cross-entropy targets)
    number = False  # a score, not a class (what the declared kinds call regression)
    head_family = POOLED  # what the head reads and how it is scored (the families above)
    answers = True  # whether `predict` answers with it and `evaluate` scores it from its split files
    auxiliary = False  # trained beside other tasks for their sake: not in their `overall`

    # -- the spec ---------------------------------------------------------------------------
    def problem(self, spec) -> str | None:
        """Why `spec` cannot have this kind of output (None when it can)."""
        return None

    def fits(self, kind: str) -> bool:
        """Whether a task of this declared kind (classification, pair-regression, ...) can have this output."""
        return TARGETS[kind].number == self.number

    def width(self, spec) -> int:
        """Outputs of the head: one logit or score, or one logit per class."""
        return 1

    def default_metrics(self, labels: tuple) -> tuple[str, ...]:
        raise NotImplementedError

    def default_json_keys(self, name: str) -> tuple[str, ...]:
        return (name,)

    def head_parameters(self, spec) -> dict:
        """Per-task parameters besides the head's layers: name suffix -> initial tensor."""
        return {}

    # -- training ---------------------------------------------------------------------------
    def loss(self, model, spec, raw, labels):
        raise NotImplementedError

    def divergence(self, adv, clean, symmetric: bool, reduction: str = "mean"):
        """SMART's divergence between perturbed and clean raw outputs, mean or sum over the batch."""
        raise NotImplementedError

    # -- outputs ----------------------------------------------------------------------------
    def postprocess(self, model, spec, raw):
        """Raw head output -> what people read (in float32)."""
        raise NotImplementedError

    def decide(self, outputs):
        """Post-processed outputs -> the prediction metrics are computed from."""
        return outputs

    def prediction_value(self, decision):
        """One decision as a CS224N prediction file writes it."""
        return decision

    # -- labels -----------------------------------------------------------------------------
    def parse_label(self, spec, raw: str):
        """A label from a file as a number, or ValueError saying why the row is unusable."""
        raise NotImplementedError

    def format_label(self, spec, label) -> str:
        """A label as a task file writes it (bertmtl augment), so that parse_label reads it back."""
        return repr(float(label))

    def label_name(self, spec, label) -> str:
        """A label as messages name it: the number, or its class's name (and how the file writes it)."""
        return self.format_label(spec, label)

    def constant_labels(self, spec, cfg) -> str | None:
        """Why this kind's loss cannot train on labels that are all one value, under the run's
        options `cfg` (None: the loss is defined, and the head learns to give that one answer)."""
        return None

    # -- answers ----------------------------------------------------------------------------
    def answer(self, spec, output, decision, suffix: str = "") -> dict:
        """One input's answer under the task's JSON keys (+ suffix: sentence 1 or 2)."""
        raise NotImplementedError

    def row(self, spec, res: dict, suffix: str = "") -> tuple[str, str]:
        """(prediction, details) of an answer in a table, e.g. ("positive (4)", "p = 0.01 ...")."""
        raise NotImplementedError

    def typed(self, spec, res: dict, suffix: str = ""):
        """An answer (`answer()`'s JSON) as a typed value of tasks/answers.py."""
        raise NotImplementedError

    def cells(self, spec, res: dict, suffix: str = "") -> list:
        """The TSV cells of an answer, one per JSON key (a class as its label, yes/no as true/false)."""
        return [res.get(k + suffix, "") for k in spec.json_keys]

    def gauge(self, spec, res: dict, suffix: str = "") -> tuple[float, str, str]:
        """(fill of a bar in [0, 1], the number beside it, the word after it, in bold) for the
        TUI's answer bars, e.g. (0.93, "0.93", "yes")."""
        raise NotImplementedError

    def brief(self, spec, res: dict, suffix: str = "") -> str:
        """An answer in a few words: its class and probability, or its score on the range."""
        raise NotImplementedError

    def probabilities(self, spec, res: dict, suffix: str = "") -> tuple[int, list[float]] | None:
        """(the answer's class, every class's probability), for bars per class; None for a score."""
        return None

    def describe(self, spec) -> str:
        """What the exported graph outputs for this task, e.g. "probability of paraphrase (batch)"."""
        raise NotImplementedError


class _Classes(OutputKind):
    """Labels are classes, read by name or by index."""

    def problem(self, spec) -> str | None:
        if len(spec.labels) < 2:
            return "a classification task needs at least two label names"
        if spec.value_range is not None:
            return "a classification task has labels, not a value_range"
        if bad := [m for m in spec.metrics if m in CORRELATIONS]:
            return f"{', '.join(bad)} are metrics of regression"
        if "f1" in spec.metrics and len(spec.labels) != 2:
            return "f1 is for two labels; use macro_f1"
        for label in spec.labels:  # answers and error messages carry them: they must be valid text
            try:
                label.encode("utf-8")
            except (AttributeError, UnicodeEncodeError):
                return f"label {ascii(label)} is not valid Unicode text"
        return None

    def default_metrics(self, labels: tuple) -> tuple[str, ...]:
        return ("accuracy",) if len(labels) == 2 else ("accuracy", "macro_f1")

    def parse_label(self, spec, raw: str):
        """A class by its name ("positive", or "1" when the names are numbers), else by its index
        when no name is a number (the CS224N files hold indices)."""
        by_name = {n: i for i, n in enumerate(spec.labels)}
        by_number = {v: i for i, n in enumerate(spec.labels) if (v := as_number(n)) is not None}
        if (i := by_name.get(raw.strip())) is not None:
            return i
        if (v := as_number(raw)) is not None and v in by_number:
            return by_number[v]
        # Numeric names are never indices; a declared task's words are no number to try either.
        if by_number or (spec.train_file and v is None):
            shown = ", ".join(spec.labels[:12]) + (", ..." if len(spec.labels) > 12 else "")
            raise ValueError(f"{spec.label_column} {raw.strip()[:40]!r} is not one of {shown}")
        value = _finite(spec, raw)
        allowed = range(len(spec.labels))
        if value != int(value) or int(value) not in allowed:
            raise ValueError(f"{spec.label_column} {value:g} is not one of {', '.join(map(str, allowed))}")
        return int(value)

    def format_label(self, spec, label) -> str:
        """The class's name where the names are numbers (a number is then never read as an index),
        else its index, as the CS224N files write classes."""
        i = int(label)
        return spec.labels[i] if any(as_number(n) is not None for n in spec.labels) else self._index_text(label)

    def _index_text(self, label) -> str:
        return str(int(label))

    def label_name(self, spec, label) -> str:
        name, written = spec.labels[int(label)], self.format_label(spec, label)
        return name if name == written else f"{name} ({written})"

    def _class_answer(self, spec, probs, i: int, suffix: str) -> dict:
        return {spec.json_keys[0] + suffix: {"label": spec.labels[i], "index": i,
                                             "probabilities": [round(float(x), 6) for x in probs]}}

    def _class_typed(self, spec, res, suffix):
        from .answers import ClassAnswer

        value = res[spec.json_keys[0] + suffix]
        return ClassAnswer(value["label"], value["index"], tuple(value["probabilities"]))

    def _class_row(self, spec, res, suffix) -> tuple[str, str]:
        value = res[spec.json_keys[0] + suffix]
        probs = "  ".join(f"{p:.2f}" for p in value["probabilities"])
        return f"{value['label']} ({value['index']})", f"p = {probs}"

    def _class_gauge(self, spec, res, suffix) -> tuple[float, str, str]:
        a = res[spec.json_keys[0] + suffix]
        p = a["probabilities"][a["index"]]
        return p, f"{p:.2f}", a["label"]

    def _class_brief(self, spec, res, suffix) -> str:
        a = res[spec.json_keys[0] + suffix]
        return f"{a['label']} p={a['probabilities'][a['index']]:.2f}"

    def _class_probabilities(self, spec, res, suffix) -> tuple[int, list[float]]:
        a = res[spec.json_keys[0] + suffix]
        return a["index"], a["probabilities"]


class Softmax(_Classes):
    name = "softmax"
    label_dtype = "int"

    def width(self, spec) -> int:
        return len(spec.labels)

    def loss(self, model, spec, raw, labels):
        import torch.nn.functional as F

        return F.cross_entropy(raw.float(), labels)

    def divergence(self, adv, clean, symmetric: bool, reduction: str = "mean"):
        return _symmetric_kl(adv.float(), clean.float(), symmetric, reduction)

    def postprocess(self, model, spec, raw):
        return raw.float().softmax(-1)

    def decide(self, outputs):
        return outputs.argmax(-1)

    def answer(self, spec, output, decision, suffix: str = "") -> dict:
        return self._class_answer(spec, output, int(decision), suffix)

    def row(self, spec, res, suffix=""):
        return self._class_row(spec, res, suffix)

    def typed(self, spec, res, suffix=""):
        return self._class_typed(spec, res, suffix)

    def cells(self, spec, res, suffix=""):
        value = res.get(spec.json_keys[0] + suffix)
        return [value["label"] if isinstance(value, dict) else ""]

    def gauge(self, spec, res, suffix=""):
        return self._class_gauge(spec, res, suffix)

    def brief(self, spec, res, suffix=""):
        return self._class_brief(spec, res, suffix)

    def probabilities(self, spec, res, suffix=""):
        return self._class_probabilities(spec, res, suffix)

    def describe(self, spec) -> str:
        return f"probabilities of {', '.join(spec.labels)} (batch x {len(spec.labels)})"


class Sigmoid(_Classes):
    """Two labels as one logit: the probability of the second one.

    It answers as a probability and a yes/no under two JSON keys (the built-in paraphrase task:
    paraphrase_prob, is_paraphrase), or, under one key, as a class like Softmax does.
    """

    name = "sigmoid"

    def problem(self, spec) -> str | None:
        if len(spec.labels) != 2:
            return "a sigmoid output needs exactly two labels"
        if not 1 <= len(spec.json_keys) <= 2:
            return "json_keys needs 1 or 2 name(s)"
        return super().problem(spec)

    def default_json_keys(self, name: str) -> tuple[str, ...]:
        return (f"{name}_prob", f"is_{name}")

    def loss(self, model, spec, raw, labels):
        import torch.nn.functional as F

        return F.binary_cross_entropy_with_logits(raw.float(), labels)

    def divergence(self, adv, clean, symmetric: bool, reduction: str = "mean"):
        import torch

        # A sigmoid logit is a Bernoulli distribution: logits [0, z] over (no, yes).
        as_two = lambda z: torch.stack([torch.zeros_like(z), z], -1)  # noqa: E731
        return _symmetric_kl(as_two(adv.float()), as_two(clean.float()), symmetric, reduction)

    def postprocess(self, model, spec, raw):
        return raw.float().sigmoid()

    def decide(self, outputs):
        return (outputs > 0.5).float()  # the float labels BCE trains on

    def _index_text(self, label) -> str:
        return repr(float(label))  # BCE's float labels, as the CS224N Quora file writes them (0.0, 1.0)

    def _as_class(self, spec) -> bool:
        return len(spec.json_keys) == 1

    def answer(self, spec, output, decision, suffix: str = "") -> dict:
        if self._as_class(spec):
            import torch

            return self._class_answer(spec, torch.stack([1 - output, output]), int(decision), suffix)
        prob, yes = (k + suffix for k in spec.json_keys)
        return {prob: round(float(output), 6), yes: bool(decision)}

    def row(self, spec, res, suffix=""):
        if self._as_class(spec):
            return self._class_row(spec, res, suffix)
        prob, yes = (k + suffix for k in spec.json_keys)
        return ("yes" if res[yes] else "no"), f"p = {res[prob]:.3f}"

    def typed(self, spec, res, suffix=""):
        from .answers import YesNoAnswer

        if self._as_class(spec):
            return self._class_typed(spec, res, suffix)
        prob, yes = (k + suffix for k in spec.json_keys)
        return YesNoAnswer(res[prob], res[yes])

    def cells(self, spec, res, suffix=""):
        if self._as_class(spec):
            value = res.get(spec.json_keys[0] + suffix)
            return [value["label"] if isinstance(value, dict) else ""]
        prob, yes = (k + suffix for k in spec.json_keys)
        return [res.get(prob, ""), str(res[yes]).lower() if yes in res else ""]

    def gauge(self, spec, res, suffix=""):
        if self._as_class(spec):
            return self._class_gauge(spec, res, suffix)
        prob, yes = (k + suffix for k in spec.json_keys)
        return res[prob], f"{res[prob]:.2f}", "yes" if res[yes] else "no"

    def brief(self, spec, res, suffix=""):
        if self._as_class(spec):
            return self._class_brief(spec, res, suffix)
        return f"p={res[spec.json_keys[0] + suffix]:.2f}"

    def probabilities(self, spec, res, suffix=""):
        return self._class_probabilities(spec, res, suffix) if self._as_class(spec) else None

    def describe(self, spec) -> str:
        return f"probability of {spec.labels[1]} (batch)"


class BoundedRegression(OutputKind):
    """A score on the target's range (STS's 0-5).

    The Pearson loss ignores scale and offset, so the raw score is mapped onto the target's scale
    by a per-task calibration (a, b), fitted by a squared-error term on the detached score, which
    touches nothing else; answers are a * raw + b clamped to the range.
    """

    name = "regression"
    number = True

    def problem(self, spec) -> str | None:
        if spec.value_range is None or not spec.value_range[0] < spec.value_range[1]:
            return "a regression task needs a value_range (low, high)"
        if spec.labels:
            return "a regression task has a value_range, not labels"
        if not all(m in CORRELATIONS for m in spec.metrics):
            return "pearson and spearman are the metrics of regression, and only they"
        return None

    def default_metrics(self, labels: tuple) -> tuple[str, ...]:
        return ("pearson",)

    def head_parameters(self, spec) -> dict:
        import torch

        return {"calibration": torch.tensor([1.0, 0.0])}

    def loss(self, model, spec, raw, labels):
        import torch.nn.functional as F

        a, b = model.head_parameter(spec.name, "calibration")
        if model.cfg.sts_loss == "mse":
            return F.mse_loss(a * raw.float() + b, labels)
        calibration = F.mse_loss(a * raw.detach().float() + b, labels)
        if len(labels) < 2:
            return calibration
        return 1.0 - pearson(raw.float(), labels) + calibration

    def divergence(self, adv, clean, symmetric: bool, reduction: str = "mean"):
        import torch.nn.functional as F

        adv, clean = adv.float(), clean.float()
        d = F.mse_loss(adv, clean.detach(), reduction=reduction)
        return d + F.mse_loss(clean, adv.detach(), reduction=reduction) if symmetric else d

    def postprocess(self, model, spec, raw):
        a, b = model.head_parameter(spec.name, "calibration")
        low, high = spec.value_range
        return (a * raw.float() + b).clamp(low, high)

    def prediction_value(self, decision):
        return round(decision, 4)

    def constant_labels(self, spec, cfg) -> str | None:
        # Cross-entropy and squared error are defined for one value; 1 - Pearson r is not (pearson()
        # returns 0 there, a constant loss with no gradient for the encoder).
        if cfg.sts_loss == "pearson":
            return ("the Pearson loss (--sts-loss pearson) divides by the labels' spread, which is 0, so it is "
                    "undefined (and gives no gradient); give the task varied labels, or train it with --sts-loss mse")
        return None

    def parse_label(self, spec, raw: str):
        value = _finite(spec, raw)
        low, high = spec.value_range
        if not low <= value <= high:
            raise ValueError(f"{spec.label_column} {value:g} is outside {low:g}-{high:g}")
        return value

    def answer(self, spec, output, decision, suffix: str = "") -> dict:
        return {spec.json_keys[0] + suffix: round(float(output), 4)}

    def typed(self, spec, res, suffix=""):
        from .answers import ScoreAnswer

        return ScoreAnswer(res[spec.json_keys[0] + suffix])

    def row(self, spec, res, suffix=""):
        return f"{res[spec.json_keys[0] + suffix]:.2f} / {spec.value_range[1]:g}", ""

    def gauge(self, spec, res, suffix=""):
        value = res[spec.json_keys[0] + suffix]
        low, high = spec.value_range
        return (value - low) / (high - low), "", self.brief(spec, res, suffix)

    def brief(self, spec, res, suffix=""):
        return f"{res[spec.json_keys[0] + suffix]:.2f} / {spec.value_range[1]:g}"

    def describe(self, spec) -> str:
        return f"score from {spec.value_range[0]:g} to {spec.value_range[1]:g} (batch)"


def _finite(spec, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{spec.label_column} {raw.strip()[:40]!r} is not a number") from None
    if not math.isfinite(value) or abs(value) > FLOAT32_MAX:
        raise ValueError(f"{spec.label_column} {raw.strip()[:40]!r} is not finite (in float32)")
    return value


def _symmetric_kl(adv, clean, symmetric: bool, reduction: str):
    """KL(clean || adv), plus KL(adv || clean) when symmetric; each direction pulls one side only,
    the other held fixed (as in the reference MT-DNN code)."""
    import torch.nn.functional as F

    def kl(p_logits, q_logits):  # KL(p || q) for categorical logits, summed over classes
        return F.kl_div(F.log_softmax(q_logits, -1), F.log_softmax(p_logits, -1), log_target=True,
                        reduction="batchmean" if reduction == "mean" else "sum")

    if not symmetric:
        return kl(clean.detach(), adv)
    return kl(clean.detach(), adv) + kl(adv.detach(), clean)


def pearson(x, y):
    """Pearson correlation of two 1-D tensors (0 when either is constant)."""
    import torch

    xc, yc = x - x.mean(), y - y.mean()
    denom = xc.norm() * yc.norm()
    # torch.where on a safe denominator: no host sync, and no NaN gradient when it is 0.
    ok = denom > 0
    return torch.where(ok, (xc * yc).sum() / torch.where(ok, denom, torch.ones_like(denom)), torch.zeros_like(denom))


class MaskedLM(OutputKind):
    """Masked-LM further pretraining as one more task (mt-dnn treats masked LM as a task type).

    The head (dense, activation, LayerNorm, then the word-embedding matrix as the decoder, plus a
    bias, as BERT's) reads the encoder's states at the masked positions of its text; labels are
    the original token ids there (-100 elsewhere). Scored on held-out text with fixed masks:
    masked-token accuracy (what counts toward overall: higher is better), perplexity, loss.
    Nothing to answer in `predict`.
    """

    name = "masked-lm"
    label_dtype = "int"
    head_family = TOKENS
    answers = False
    auxiliary = True

    def problem(self, spec) -> str | None:
        if spec.labels or spec.value_range is not None:
            return "a masked-LM task predicts tokens: no labels or value_range"
        if bad := [m for m in spec.metrics if m not in ("accuracy", "perplexity", "loss")]:
            return f"{', '.join(bad)} are not masked-LM metrics (accuracy, perplexity, loss)"
        return None

    def default_metrics(self, labels: tuple) -> tuple[str, ...]:
        return ("accuracy", "perplexity", "loss")

    def loss(self, model, spec, raw, labels):
        import torch.nn.functional as F

        return F.cross_entropy(raw.float(), labels[labels != -100])

    def divergence(self, adv, clean, symmetric: bool, reduction: str = "mean"):
        raise ValueError("SMART does not apply to masked-LM (give it smart weight 0)")

    def describe(self, spec) -> str:
        return "masked-LM logits (not exported)"


SOFTMAX, SIGMOID, REGRESSION, MASKED_LM = Softmax(), Sigmoid(), BoundedRegression(), MaskedLM()
OUTPUT_KINDS = {k.name: k for k in (SOFTMAX, SIGMOID, REGRESSION, MASKED_LM)}
# Older checkpoints' tasks.json name the output by its activation.
ACTIVATIONS = {"softmax": SOFTMAX, "sigmoid": SIGMOID, "clamp": REGRESSION}


# -- declarations: what a declared kind's target is -------------------------------------------

# More distinct labels than this in a classification task is most likely a regression target.
MAX_LABELS = 200


class _Target:
    """What a declared kind predicts (classes or a number): which output kind that gives, and what
    a declaration leaves out, read from the data."""

    number = False
    declarable = True  # a kind people may declare with --task or in a tasks file

    def output(self, labels: tuple) -> OutputKind:
        raise NotImplementedError

    def declare(self, entry: dict, values, pair: bool, where: str) -> dict:
        """Spec fields of a declaration: output, labels or value_range, metrics, head_init.

        `values(with_dev)` gives the label column's values in the train file (and the dev file);
        `where` names the train file in messages."""
        raise NotImplementedError


class Classes(_Target):
    """Labels are classes: two make a Sigmoid output, more a Softmax one."""

    def output(self, labels: tuple) -> OutputKind:
        return SIGMOID if len(labels) == 2 else SOFTMAX

    def declare(self, entry: dict, values, pair: bool, where: str) -> dict:
        label = entry["label_column"]
        # Classes come from the train file: a dev label it lacks is a row the head cannot answer.
        labels = tuple(map(str, entry["labels"])) if entry.get("labels") else label_names(values(False))
        if len(labels) < 2:
            raise ValueError(f"{where}: the {label} column holds {len(labels)} distinct label(s) "
                             f"({', '.join(labels) or 'none'}); a classification task needs two or more")
        if len(labels) > MAX_LABELS:
            raise ValueError(f"{where}: the {label} column holds {len(labels)} distinct labels; is it a "
                             f"regression target ({'pair-' if pair else ''}regression)?")
        binary_pair = pair and len(labels) == 2
        # As the built-in paraphrase head: a pair counts as the second label around cos > 0.7.
        return {"output": self.output(labels), "labels": labels,
                "metrics": ("accuracy", "f1") if binary_pair else ("accuracy", "macro_f1"),
                "head_init": (10.0, -7.0) if binary_pair else (1.0, 0.0)}


class Number(_Target):
    """A number on a range: a BoundedRegression output."""

    number = True

    def output(self, labels: tuple) -> OutputKind:
        return REGRESSION

    def declare(self, entry: dict, values, pair: bool, where: str) -> dict:
        value_range = tuple(entry["range"]) if entry.get("range") else None
        if value_range is None:
            numbers = [v for v in map(as_number, values(True)) if v is not None]
            if not numbers or min(numbers) == max(numbers):
                raise ValueError(f"{where}: the {entry['label_column']} column needs at least two different numbers "
                                 f"to read a range from (or give one: {entry['name']}:{entry['kind']}[LOW,HIGH]:...)")
            value_range = (min(numbers), max(numbers))
        low, high = float(value_range[0]), float(value_range[1])
        return {"output": REGRESSION, "value_range": (low, high), "metrics": ("pearson", "spearman"),
                "head_init": (high - low, low)}  # the cosine's 0..1 onto the range


def label_names(values: list[str]) -> tuple[str, ...]:
    """The distinct labels, sorted (numerically when all are numbers, "1.0" and "1" being one)."""
    numbers = [as_number(v) for v in values]
    if values and all(n is not None for n in numbers):
        return tuple(f"{n:g}" for n in sorted(set(numbers)))
    return tuple(sorted(set(values)))


class Tokens(_Target):
    """The tokens of a text (masked-LM): not a kind people declare with --task."""

    declarable = False

    def output(self, labels: tuple) -> OutputKind:
        return MASKED_LM

    def declare(self, entry: dict, values, pair: bool, where: str) -> dict:
        raise ValueError("masked-lm is not a kind to declare: train masked LM with --mlm-text")


# What a task predicts, by its declared kind: one sentence or a pair, a class, a number, or tokens.
TARGETS: dict[str, _Target] = {"classification": Classes(), "pair-classification": Classes(),
                               "regression": Number(), "pair-regression": Number(), "masked-lm": Tokens()}
KINDS = tuple(TARGETS)
DECLARABLE = tuple(k for k, t in TARGETS.items() if t.declarable)
