"""Checkpoints: one directory of safetensors + JSON, written atomically; no pickle anywhere.

Layout of a checkpoint directory (RUN/last, RUN/best):
  bertmtl.json          format version, bertmtl version, step, epoch
  multitask.safetensors encoder (`encoder.*`) + heads, under our parameter names
  config.json           encoder config (Hugging Face format, without "architectures")
  heads.json            head configuration and the tasks trained
  tasks.json            the task specs of the heads (absent in older checkpoints: the built-in three)
  train_args.json       the training options
  metrics.json          dev metrics at this step
  vocab.txt, tokenizer_config.json
and, for resuming (last/ only):
  optimizer.safetensors optimizer moments and RNG states
  trainer_state.json    optimizer hyper-parameters, data position, best score so far

A checkpoint is not a Hugging Face model and is named so that nothing takes it for one: no
`model.safetensors`, so `transformers.AutoModel.from_pretrained(RUN/best)` fails instead of
loading a random encoder. `bertmtl export` writes what other tools load; `--encoder RUN/best`
starts a new run from its encoder (model/loading.py reads it). Format 1 checkpoints (weights
in model.safetensors, config.json naming an HF class) are still read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from . import __version__
from .config import BertConfig
from .errors import UserError
from .tasks import BUILTIN, TASKS, TaskSpec
from .fsutil import crash_point, recover_dir, save_safetensors, staged_dir, write_bytes, write_json  # noqa: F401 (some re-exported)

FORMAT = 2
# The weights file of each format we read.
WEIGHTS_FILE = {1: "model.safetensors", 2: "multitask.safetensors"}
REQUIRED_FILES = ("bertmtl.json", "config.json", "heads.json", "vocab.txt")


def read_json(path: Path) -> dict:
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: missing (an incomplete or foreign checkpoint)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: damaged JSON ({e})") from None
    if not isinstance(d, dict):
        raise UserError(f"{path}: expected a JSON object")
    return d


def _load_tensors(path: Path, device="cpu") -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise UserError(f"{path}: missing")
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise UserError(f"{path}: damaged or truncated safetensors file ({e})") from None


# -- saving -------------------------------------------------------------------------------

def save_checkpoint(target: Path, model, tokenizer, *, step: int, epoch: float, train_args: dict,
                    metrics: dict | None, tasks: list[str], resume: dict | None = None) -> None:
    """Write a complete checkpoint to `target` atomically (build beside it, then swap in)."""
    with staged_dir(target) as staging:
        save_safetensors(staging / WEIGHTS_FILE[FORMAT], model.state_dict())
        crash_point(f"writing:{Path(target).name}")
        config = model.encoder.config.to_dict()
        config.pop("architectures", None)  # no HF class loads these weights as they are stored
        write_json(staging / "config.json", config)
        write_json(staging / "heads.json", {**model.cfg.to_dict(), "tasks": tasks})
        write_json(staging / "tasks.json", {"tasks": [s.to_dict() for s in model.specs.values()]})
        write_json(staging / "train_args.json", train_args)
        write_json(staging / "metrics.json", metrics or {})
        tokenizer.save(staging)
        if resume is not None:
            save_safetensors(staging / "optimizer.safetensors", resume.pop("tensors"))
            write_json(staging / "trainer_state.json", resume)
        # Written last: a directory without it is never taken for a checkpoint.
        write_json(staging / "bertmtl.json", {"format": FORMAT, "version": __version__, "step": step,
                                              "epoch": epoch, "resumable": resume is not None})


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

    @property
    def tasks(self) -> list[str]:
        return list(self.heads.get("tasks", TASKS))


def check_checkpoint_dir(path: Path) -> dict:
    """Validate that `path` is a bertmtl checkpoint of a format we read; return bertmtl.json."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: no such checkpoint directory")
    if not (path / "bertmtl.json").is_file() and (path / "best" / "bertmtl.json").is_file():
        raise UserError(f"{path} is a run directory; use {path / 'best'} (or {path / 'last'})")
    info = read_json(path / "bertmtl.json")
    if info.get("format") not in WEIGHTS_FILE:
        readable = " or ".join(map(str, WEIGHTS_FILE))
        raise UserError(f"{path}: checkpoint format {info.get('format')!r} is not {readable} "
                        f"(written by bertmtl {info.get('version', '?')}; this is {__version__})")
    missing = [f for f in (*REQUIRED_FILES, WEIGHTS_FILE[info["format"]]) if not (path / f).is_file()]
    if missing:
        raise UserError(f"{path}: incomplete checkpoint, missing {', '.join(missing)}")
    return info


def read_specs(path: Path) -> list[TaskSpec]:
    """The task specs a checkpoint's heads were built from (tasks.json), or the built-in three."""
    path = Path(path)
    if not (path / "tasks.json").is_file():
        return list(BUILTIN)
    try:
        return [TaskSpec.from_dict(d) for d in read_json(path / "tasks.json")["tasks"]]
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path / 'tasks.json'}: unexpected content ({e})") from None


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu", max_length: int | None = None) -> Checkpoint:
    """Load a checkpoint directory for prediction, evaluation or resuming."""
    from .model.bert import BertModel, uninitialised
    from .model.heads import HeadConfig, MultitaskBert
    from .tokenizer import DEFAULT_MAX_LENGTH, WordPieceTokenizer
    from .model.loading import load_into

    path = Path(path)
    info = check_checkpoint_dir(path)
    config = BertConfig.from_json(path / "config.json")
    heads = read_json(path / "heads.json")
    try:
        head_cfg = HeadConfig(**{k: v for k, v in heads.items() if k != "tasks"})
    except (TypeError, ValueError) as e:
        raise UserError(f"{path / 'heads.json'}: unexpected content ({e})") from None
    train_args = read_json(path / "train_args.json") if (path / "train_args.json").is_file() else {}
    metrics = read_json(path / "metrics.json") if (path / "metrics.json").is_file() else {}
    tokenizer = WordPieceTokenizer.from_dir(path, max_length=max_length or train_args.get("max_length", DEFAULT_MAX_LENGTH))
    with uninitialised():  # every parameter is loaded next
        model = MultitaskBert(BertModel(config, init_weights=False), head_cfg, tuple(read_specs(path)))
    load_into(model, load_weights(path, info), source=path / WEIGHTS_FILE[info["format"]], assign=True)
    model.to(device).eval()
    return Checkpoint(path, model, tokenizer, info, heads, train_args, metrics)


def load_weights(path: Path, info: dict | None = None) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors under our names: `encoder.*` and the heads."""
    info = info or check_checkpoint_dir(path)
    return _load_tensors(Path(path) / WEIGHTS_FILE[info["format"]])


def load_resume_state(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The optimizer / RNG tensors and trainer_state.json of a resumable checkpoint (its counters checked)."""
    state = read_json(path / "trainer_state.json")
    check_trainer_state(state, path / "trainer_state.json")
    return _load_tensors(path / "optimizer.safetensors"), state


def check_trainer_state(state: dict, where: Path) -> None:
    """UserError naming the field when a counter of trainer_state.json is missing, negative or not finite
    (a NaN best score would keep every later evaluation from becoming best/)."""
    import math

    def whole(key, required=False):
        v = state.get(key)
        if v is None and not required:
            return
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise UserError(f"{where}: {key} must be a whole number >= 0, not {v!r}")

    for key in ("optimizer", "data"):
        if not isinstance(state.get(key), dict):
            raise UserError(f"{where}: {key} is missing or not an object")
    whole("step", required=True)
    for key in ("since_best", "nonfinite", "total_steps", "ema_updates"):
        whole(key)
    best = state.get("best")
    if best is not None and (isinstance(best, bool) or not isinstance(best, (int, float)) or not math.isfinite(best)):
        raise UserError(f"{where}: best must be a finite number or null, not {best!r}")
