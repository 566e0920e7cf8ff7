"""Checkpoints: one directory of safetensors + JSON, written atomically; no pickle anywhere.

Writing a checkpoint, building the model it holds, and the state a resumed run needs; the layout
and the reading of a checkpoint's files are runs/rundir.py's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import __version__
from ..encoders.config import BertConfig
from ..errors import UserError
from ..fsutil import crash_point, save_safetensors, staged_dir, write_json
from ..numbers import number_problem
from .rundir import (BEST, ENCODER_CONFIG, ENSEMBLE, FORMAT, LAST, HEADS, MARKER, METRICS, OPTIMIZER_STATE, TASK_SPECS, TRAIN_ARGS,
                     TRAINER_STATE, WEIGHTS_FILE, check_checkpoint_dir, checkpoint_part, checkpoint_weights,
                     is_checkpoint, read_json, read_specs, read_tensors)
from ..tasks import TASKS


# -- saving -------------------------------------------------------------------------------

def save_checkpoint(target: Path, model, tokenizer, *, step: int, epoch: float, train_args: dict,
                    metrics: dict | None, tasks: list[str], resume: dict | None = None,
                    extra: dict[str, dict] | None = None) -> None:
    """Write a complete checkpoint to `target` atomically (build beside it, then swap in); `extra`:
    more JSON files in it, by name (a soup's soup.json)."""
    with staged_dir(target) as staging:
        save_safetensors(staging / WEIGHTS_FILE[FORMAT], model.state_dict())
        crash_point(f"writing:{Path(target).name}")
        config = model.encoder.config.to_dict()
        config.pop("architectures", None)  # no HF class loads these weights as they are stored
        write_json(staging / ENCODER_CONFIG, config)
        write_json(staging / HEADS, {**model.cfg.to_dict(), "tasks": tasks})
        write_json(staging / TASK_SPECS, {"tasks": [s.to_dict() for s in model.specs.values()]})
        write_json(staging / TRAIN_ARGS, train_args)
        write_json(staging / METRICS, metrics or {})
        tokenizer.save(staging)
        for name, content in (extra or {}).items():
            write_json(staging / name, content)
        if resume is not None:
            save_safetensors(staging / OPTIMIZER_STATE, resume.pop("tensors"))
            write_json(staging / TRAINER_STATE, resume)
        # Written last: a directory without it is never taken for a checkpoint.
        write_json(staging / MARKER, {"format": FORMAT, "version": __version__, "step": step, "epoch": epoch,
                                      "resumable": resume is not None})


def save_ensemble(target: Path, members: list["Checkpoint"], metrics: dict | None = None,
                  built_with: str | None = None) -> None:
    """Write an ensemble of loaded checkpoints to `target` atomically: each member a complete
    checkpoint of its own (without the state to resume training: an ensemble only answers), the
    ensemble's own dev metrics, and where each member came from."""
    with staged_dir(target) as staging:
        names = []
        for i, m in enumerate(members, 1):
            names.append(f"member-{i}")
            save_checkpoint(staging / names[-1], m.model, m.tokenizer, step=m.info.get("step", 0),
                            epoch=m.info.get("epoch", 0), train_args=m.train_args, metrics=m.metrics, tasks=m.tasks)
        write_json(staging / ENSEMBLE, {"members": [
            {"dir": name, "source": str(Path(m.path).resolve()), "step": m.info.get("step"),
             "overall": m.metrics.get("overall")} for name, m in zip(names, members)],
            "command": built_with})
        write_json(staging / TASK_SPECS, {"tasks": [s.to_dict() for s in members[0].model.specs.values()]})
        write_json(staging / METRICS, metrics or {})
        write_json(staging / MARKER, {"format": FORMAT, "version": __version__, "members": names,
                                      "resumable": False})


def optimizer_state(optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer's state as (tensors for safetensors, JSON-able rest)."""
    sd = optimizer.state_dict()
    tensors = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            tensors[f"state.{idx}.{k}"] = v if isinstance(v, torch.Tensor) else torch.tensor(v)
    return tensors, {"param_groups": sd["param_groups"]}


def load_optimizer_state(optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        if key.startswith("state."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    groups = meta["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def rng_state(generators: dict[str, torch.Generator]) -> dict[str, torch.Tensor]:
    """Every random state the training loop draws from, as tensors."""
    out = {"rng.cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng.cuda.{i}"] = s
    for name, g in generators.items():
        out[f"rng.gen.{name}"] = g.get_state()
    return out


def load_rng_state(tensors: dict[str, torch.Tensor], generators: dict[str, torch.Generator]) -> None:
    if "rng.cpu" in tensors:
        torch.set_rng_state(tensors["rng.cpu"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    for name, g in generators.items():
        if f"rng.gen.{name}" in tensors:
            g.set_state(tensors[f"rng.gen.{name}"])


# -- loading ------------------------------------------------------------------------------

@dataclass
class Checkpoint:
    """A loaded checkpoint: the model, its tokenizer, and its JSON files."""

    path: Path
    model: "torch.nn.Module"
    tokenizer: "object"
    info: dict
    heads: dict
    train_args: dict
    metrics: dict
    members: list["Checkpoint"] = field(default_factory=list)  # an ensemble's, each loaded

    @property
    def tasks(self) -> list[str]:
        return list(self.heads.get("tasks", TASKS))

    def describe(self) -> str:
        """Which model this is, for people: its path, step and dev overall score; an ensemble's
        members each so, by the checkpoint each was made from."""
        if not self.members:
            return f"{self.path} ({self.summary()})"
        listed = "; ".join(f"{source} ({m.summary()})" for source, m in zip(self.member_sources(), self.members))
        return f"{self.path} (an ensemble of {len(self.members)}, {self.summary()}: {listed})"

    def member_sources(self) -> list[str]:
        """An ensemble's members by the checkpoint each was copied from (ensemble.json), else by their own path."""
        sources = {m["dir"]: m.get("source") for m in _ensemble_sources(self.path)}
        return [str(sources.get(m.path.name) or m.path) for m in self.members]

    @property
    def name(self) -> str:
        return checkpoint_name(self.path)

    def summary(self) -> str:
        """Its step and dev overall score, e.g. "step 120, dev overall 0.7012" (an ensemble: no step)."""
        overall = self.metrics.get("overall")
        score = f"dev overall {overall:.4f}" if isinstance(overall, (int, float)) else "not evaluated on dev"
        if self.members:
            return score
        step = self.info.get("step")
        return f"step {step if isinstance(step, int) else '?'}, {score}"


def checkpoint_name(path: str | Path) -> str:
    """What to call a checkpoint's model: its run's name for a run's best/ or last/, else its directory's."""
    where = Path(path).resolve()
    return where.parent.name if where.name in (BEST, LAST) else where.name


def _ensemble_sources(path: Path) -> list[dict]:
    try:
        members = read_json(Path(path) / ENSEMBLE).get("members")
    except UserError:  # written by hand, or damaged: the members' own paths say enough
        return []
    return [m for m in members if isinstance(m, dict) and "dir" in m] if isinstance(members, list) else []


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu", max_length: int | None = None) -> Checkpoint:
    """Load a checkpoint directory for prediction, evaluation or resuming."""
    from ..model.bert import BertModel, uninitialised
    from ..model.heads import HeadConfig, MultitaskBert
    from ..model.loading import load_into
    from ..encoders.tokenizer import DEFAULT_MAX_LENGTH, EncoderTokenizer

    path = Path(path)
    info = check_checkpoint_dir(path)
    if "members" in info:
        return _load_ensemble(path, info, device, max_length)
    config = BertConfig.from_json(path / ENCODER_CONFIG)
    heads = read_json(path / HEADS)
    try:
        head_cfg = HeadConfig(**{k: v for k, v in heads.items() if k != "tasks"})
    except (TypeError, ValueError) as e:
        raise UserError(f"{path / HEADS}: unexpected content ({e})") from None
    train_args = read_json(path / TRAIN_ARGS) if (path / TRAIN_ARGS).is_file() else {}
    metrics = read_json(path / METRICS) if (path / METRICS).is_file() else {}
    tokenizer = EncoderTokenizer.from_dir(path, max_length=max_length or train_args.get("max_length", DEFAULT_MAX_LENGTH))
    with uninitialised():  # every parameter is loaded next
        model = MultitaskBert(BertModel(config, init_weights=False), head_cfg, tuple(read_specs(path)))
    load_into(model, checkpoint_weights(path, info), source=path / WEIGHTS_FILE[info["format"]], assign=True)
    model.to(device).eval()
    return Checkpoint(path, model, tokenizer, info, heads, train_args, metrics)


def _load_ensemble(path: Path, info: dict, device, max_length: int | None) -> Checkpoint:
    from ..model.ensemble import Ensemble

    members = [load_checkpoint(path / name, device, max_length) for name in info["members"]]
    check_members(members)
    metrics = read_json(path / METRICS) if (path / METRICS).is_file() else {}
    first = members[0]
    return Checkpoint(path, Ensemble([m.model for m in members]).eval(), first.tokenizer, info, first.heads,
                      first.train_args, metrics, members)


def check_members(members: list[Checkpoint], soup: bool = False) -> None:
    """A UserError, one line naming both checkpoints, unless the models can answer as one: the same
    tasks with the same labels or value ranges, text read by the same tokenizer, pairs encoded the
    same way; for a soup (averaged weights) also the same encoder and heads, tensor for tensor."""
    first = members[0]
    if not [s for s in first.model.specs.values() if s.output.answers]:
        raise UserError(f"{first.path} has only a masked-LM task: it answers nothing to combine")
    for other in members[1:]:
        if problem := _incompatibility(first, other, soup):
            raise UserError(f"{other.path} cannot be {'averaged with' if soup else 'an ensemble member beside'} "
                            f"{first.path}: {problem}")


def _incompatibility(a: Checkpoint, b: Checkpoint, soup: bool) -> str | None:
    def task(s):
        return s.kind, list(s.labels) or s.value_range

    ta, tb = ({n: task(s) for n, s in ck.model.specs.items()} for ck in (a, b))
    if set(ta) != set(tb) or set(a.tasks) != set(b.tasks):  # the heads built, and those trained
        return f"its tasks are {', '.join(b.tasks)}, not {', '.join(a.tasks)}"
    for name in ta:
        if ta[name] != tb[name]:
            return f"its task {name} is a {tb[name][0]} over {tb[name][1]}, not a {ta[name][0]} over {ta[name][1]}"
    if a.tokenizer.fingerprint() != b.tokenizer.fingerprint():
        return "it reads text with another tokenizer (vocabulary, casing or maximum length)"
    if a.model.cfg.cross != b.model.cfg.cross:
        return f"it encodes pairs {b.model.cfg.pair_mode}, not {a.model.cfg.pair_mode}"
    if soup:
        if a.model.encoder.config.to_dict() != b.model.encoder.config.to_dict():
            return "its encoder has another architecture (config.json differs)"
        if a.model.cfg.to_dict() != b.model.cfg.to_dict():
            return "its heads are built with other options (heads.json differs)"
        sa, sb = a.model.state_dict(), b.model.state_dict()
        if list(sa) != list(sb) or any(sa[k].shape != sb[k].shape for k in sa):
            return "its weights have other names or shapes"
    return None


def load_heads(model: torch.nn.Module, directory: str | Path) -> list[str]:
    """Copy the task heads of checkpoint `directory` into the multitask `model`; returns the tasks taken.

    Heads of tasks the checkpoint lacks stay as initialised. The head structure (pooling, pair
    mode and features, MLP width) must match: heads trained on other embeddings would not fit.
    """
    directory = Path(directory)
    if not is_checkpoint(directory):
        raise UserError(f"{directory}: not a bertmtl checkpoint (no {MARKER}); --init-heads-from takes RUN/best")
    saved = read_json(directory / HEADS)
    own = model.cfg.to_dict()
    differ = [f"{k}: {saved.get(k)!r} there, {own[k]!r} here" for k in ("pooling", "pair_mode", "pair_features",
                                                                      "mlp_hidden") if saved.get(k, own[k]) != own[k]]
    if differ:
        raise UserError(f"{directory}: its heads do not fit this run's ({'; '.join(differ)}); "
                        f"train with the same options to take them")
    state = {k: v.float() if v.is_floating_point() else v for k, v in checkpoint_part(directory, "heads").items()}
    own_state = model.state_dict()
    theirs = {s.name: s for s in read_specs(directory)}
    taken = []
    for task, spec in model.specs.items():
        other = theirs.get(task)
        if other is not None and (other.kind, other.labels, other.value_range) != (spec.kind, spec.labels,
                                                                                   spec.value_range):
            raise UserError(f"{directory}: its task {task} is a {other.kind} over "
                            f"{list(other.labels) or other.value_range}, this run's a {spec.kind} over "
                            f"{list(spec.labels) or spec.value_range}: the head would answer other labels")
        keys = [k for k in own_state if k.split(".")[0] in (task, *(f"{task}_{x}" for x in spec.output.head_parameters(spec)))]
        if not keys or not all(k in state for k in keys):
            continue
        bad = [k for k in keys if state[k].shape != own_state[k].shape]
        if bad:
            raise UserError(f"{directory}: head {task} has other shapes ({', '.join(bad)}): trained on another "
                            f"encoder (hidden size) or other labels")
        model.load_state_dict({k: state[k] for k in keys}, strict=False)
        taken.append(task)
    return taken


def load_resume_state(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The optimizer / RNG tensors and trainer_state.json of a resumable checkpoint (its counters checked)."""
    state = read_json(path / TRAINER_STATE)
    check_trainer_state(state, path / TRAINER_STATE)
    return read_tensors(path / OPTIMIZER_STATE), state


def check_trainer_state(state: dict, where: Path) -> None:
    """UserError naming the field when a counter of trainer_state.json is missing, negative or not finite
    (a NaN best score would keep every later evaluation from becoming best/)."""
    def whole(key, required=False):
        v = state.get(key)
        if v is None and not required:
            return
        if number_problem(v, min=0, whole=True):
            raise UserError(f"{where}: {key} must be a whole number >= 0, not {v!r}")

    for key in ("optimizer", "data"):
        if not isinstance(state.get(key), dict):
            raise UserError(f"{where}: {key} is missing or not an object")
    whole("step", required=True)
    for key in ("since_best", "nonfinite", "total_steps", "ema_updates"):
        whole(key)
    best = state.get("best")
    if best is not None and number_problem(best):
        raise UserError(f"{where}: best must be a finite number or null, not {best!r}")
