"""A run directory: its layout (every file name of a run and a checkpoint), its writer lock, reading
its checkpoints and dev outputs (no torch at import: `bertmtl runs` and the TUI read it). What the
run knows, folded from its metrics.jsonl, is runs/state.py's.

    RUN/
      metrics.jsonl     one JSON record per line: start/resume, train, eval, nonfinite, end
      summary.json      written at the end: status, steps, best overall, the last metrics
      train_args.json   the run's options
      messages.log      what the run said (warnings, notices, evaluations), a timestamped line each
      progress.json     the step bar's state (step, total, phase), replaced at most twice a second
      train.log         the console output of a run `bertmtl tui --train` started (made before it starts)
      .writer.lock      held by the process that trains the run (WriterLock)
      best/, last/      checkpoints (last/ with the state to resume from), each:
        bertmtl.json            the marker: format, bertmtl version, step, epoch; written last
        multitask.safetensors   encoder (`encoder.*`) and heads, under our parameter names
        config.json, heads.json, tasks.json, train_args.json, metrics.json, vocab.txt (or tokenizer.json), ...
        optimizer.safetensors, trainer_state.json (last/ only: what resuming needs)

runs/checkpoint.py writes checkpoints and builds models from them; this module reads their files.
A checkpoint is not a Hugging Face model: no `model.safetensors`, so transformers refuses it
rather than loading a random encoder; format 1 checkpoints (weights in model.safetensors) are
still read.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from .. import __version__, fsutil
from ..errors import UserError
from .locks import OwnerLock, is_locked, lock_owner
from ..tasks import BUILTIN, TaskSpec

# -- the layout ---------------------------------------------------------------------------------

METRICS_LOG = "metrics.jsonl"
SUMMARY = "summary.json"
TRAIN_ARGS = "train_args.json"
MESSAGES = "messages.log"
PROGRESS = "progress.json"
TRAIN_LOG = "train.log"
WRITER_LOCK = ".writer.lock"
BEST, LAST = "best", "last"
MARKER = "bertmtl.json"  # a checkpoint is a directory with this file (written last)
TRAINER_STATE = "trainer_state.json"
OPTIMIZER_STATE = "optimizer.safetensors"
# The last dev evaluation's raw outputs, labels and example ids per task (write_dev_outputs).
DEV_OUTPUTS = "dev_outputs.safetensors"
FORMAT = 2
# The weights file of each checkpoint format we read.
WEIGHTS_FILE = {1: "model.safetensors", 2: "multitask.safetensors"}
# A checkpoint's own files beside its weights: the encoder's config (HF's name), the heads and task
# list, the task specs, the options it was trained with, its dev metrics.
ENCODER_CONFIG, HEADS, TASK_SPECS, METRICS = "config.json", "heads.json", "tasks.json", "metrics.json"
REQUIRED_FILES = (MARKER, ENCODER_CONFIG, HEADS)
# A checkpoint's tokenizer: WordPiece's vocab.txt, or the tokenizer.json of the other families.
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json")
# An ensemble (`bertmtl ensemble`) is a checkpoint too: its marker names its members, each a
# complete checkpoint in a subdirectory (member-1, ...), and ensemble.json says where they came from.
ENSEMBLE = "ensemble.json"
SOUP = "soup.json"  # in a soup's checkpoint (`bertmtl soup`): the checkpoints it averages, and how they were chosen


def is_checkpoint(path: str | Path) -> bool:
    """Whether `path` is a bertmtl checkpoint (rather than an HF encoder directory or a run)."""
    return (Path(path) / MARKER).is_file()


def is_run(path: str | Path) -> bool:
    return (Path(path) / METRICS_LOG).is_file()


def holds_run(path: Path) -> bool:
    """Whether `path` is a training run (its log, or a writer lock: a run still starting) or a checkpoint."""
    return any(os.path.lexists(Path(path) / name) for name in (METRICS_LOG, WRITER_LOCK, MARKER))


def checkpoint_identity(run_dir: Path) -> tuple | None:
    """Which checkpoint the run offers now (best/, else last/) and which version of it.

    Checkpoints are replaced atomically, so a new inode or mtime of the marker means a new one.
    """
    for sub in (BEST, LAST):
        try:
            st = (Path(run_dir) / sub / MARKER).stat()
        except OSError:
            continue
        return sub, st.st_ino, st.st_mtime_ns
    return None


# -- reading checkpoints -------------------------------------------------------------------------

def read_json(path: Path) -> dict:
    """A JSON object from a checkpoint or run file, or a UserError naming the file."""
    return fsutil.read_json(path, missing="missing (an incomplete or foreign checkpoint)", damaged="damaged JSON")


def check_checkpoint_dir(path: Path) -> dict:
    """Validate that `path` is a bertmtl checkpoint of a format we read; return its marker's contents."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: no such checkpoint directory")
    if not is_checkpoint(path) and is_checkpoint(path / BEST):
        raise UserError(f"{path} is a run directory; use {path / BEST} (or {path / LAST})")
    info = read_json(path / MARKER)
    if "members" in info:
        return _check_ensemble_dir(path, info)
    if info.get("format") not in WEIGHTS_FILE:
        readable = " or ".join(map(str, WEIGHTS_FILE))
        raise UserError(f"{path}: checkpoint format {info.get('format')!r} is not {readable} "
                        f"(written by bertmtl {info.get('version', '?')}; this is {__version__})")
    missing = [f for f in (*REQUIRED_FILES, WEIGHTS_FILE[info["format"]]) if not (path / f).is_file()]
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        missing.append(" or ".join(TOKENIZER_FILES))
    if missing:
        raise UserError(f"{path}: incomplete checkpoint, missing {', '.join(missing)}")
    return info


def _check_ensemble_dir(path: Path, info: dict) -> dict:
    members = info["members"]
    if not isinstance(members, list) or len(members) < 2 or not all(
            isinstance(m, str) and m and "/" not in m and "\\" not in m and m not in (".", "..") for m in members):
        raise UserError(f"{path / MARKER}: members must be a list of at least 2 subdirectory names, not {members!r}")
    for m in members:
        if not is_checkpoint(path / m):
            raise UserError(f"{path}: incomplete ensemble, its member {m}/ is missing or not a checkpoint")
        if "members" in read_json(path / m / MARKER):
            raise UserError(f"{path / m}: an ensemble's member is an ensemble itself")
        check_checkpoint_dir(path / m)
    return info


def is_ensemble(path: str | Path) -> bool:
    """Whether checkpoint `path` is an ensemble (its marker names members)."""
    try:
        return "members" in read_json(Path(path) / MARKER)
    except UserError:
        return False


def not_one_model(path: Path) -> UserError:
    """The refusal of an ensemble where one model's weights are needed (to train from, to export an encoder)."""
    return UserError(f"{path} is an ensemble, which answers (predict, evaluate, serve, ONNX) but has no one set of "
                     f"weights to train from or export as an encoder: take one of its members "
                     f"({Path(path) / 'member-1'}, ...) or a soup of them (`bertmtl soup`)")


def is_derived(path: str | Path) -> bool:
    """Whether checkpoint `path` was made of other checkpoints (an ensemble or a soup), which the same
    command makes again: the one kind of checkpoint --overwrite may replace."""
    return is_checkpoint(path) and (is_ensemble(path) or (Path(path) / SOUP).is_file())


def read_specs(path: Path) -> list:
    """The task specs a checkpoint's heads were built from (tasks.json), or the built-in three."""
    path = Path(path)
    if not (path / TASK_SPECS).is_file():
        return list(BUILTIN)
    try:
        return [TaskSpec.from_dict(d) for d in read_json(path / TASK_SPECS)["tasks"]]
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path / TASK_SPECS}: unexpected content ({e})") from None


def read_tensors(path: Path, device="cpu") -> dict:
    """A safetensors file's tensors, or a UserError saying it is missing or damaged."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise UserError(f"{path}: missing")
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise UserError(f"{path}: damaged or truncated safetensors file ({e})") from None


def checkpoint_weights(path: Path, info: dict | None = None) -> dict:
    """A checkpoint's tensors under our names: `encoder.*` and the heads."""
    info = info or check_checkpoint_dir(path)
    if "members" in info:
        raise not_one_model(path)
    return read_tensors(Path(path) / WEIGHTS_FILE[info["format"]])


def checkpoint_part(path: Path, part: str) -> dict:
    """One part of a checkpoint's weights: "encoder" (under the encoder's own names) or "heads"."""
    state = checkpoint_weights(path)
    if part == "encoder":
        return {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
    return {k: v for k, v in state.items() if not k.startswith("encoder.")}


# -- the writer lock ------------------------------------------------------------------------

# A run logs at least every --log-every steps and fsyncs every evaluation; silence this long
# on a run whose lock we cannot check means its writer is gone.
RECENT_S = 600


class WriterLock(OwnerLock):
    """RUN/.writer.lock, held by the process that trains the run from before its first write to its end.

    A second `bertmtl train` on the same run (a shared --out, a --resume of a run still training)
    is refused with the holder's pid and host.
    """

    def __init__(self, run_dir: Path):
        super().__init__(Path(run_dir) / WRITER_LOCK, f"run {run_dir}")


def writer_alive(run_dir: Path) -> bool:
    """Whether a process trains the run now: it holds RUN/.writer.lock (a run that ends, even with an
    error, removes it); where the lock cannot be seen (a lock file naming another host: a shared
    disk), whether metrics.jsonl was written in the last RECENT_S seconds."""
    path = Path(run_dir) / WRITER_LOCK
    log = Path(run_dir) / METRICS_LOG
    recent = log.is_file() and time.time() - log.stat().st_mtime < RECENT_S
    if lock_owner(path).get("host") not in (None, socket.gethostname()):
        return recent  # another machine's lock is invisible here
    locked = is_locked(path)
    return recent if locked is None else locked


# -- a run's dev outputs ------------------------------------------------------------------------

def write_dev_outputs(run_dir: Path, kept: dict) -> None:
    """RUN/dev_outputs.safetensors from evaluate()'s `keep`: replaced whole at each evaluation
    (a reader sees the last one or the one before, never a mix)."""
    import json

    tensors, ids = {}, {}
    for task, (task_ids, outputs, labels) in kept.items():
        tensors[f"{task}.outputs"], tensors[f"{task}.labels"] = outputs, labels
        ids[task] = task_ids
    path = Path(run_dir) / DEV_OUTPUTS
    tmp = path.with_name(path.name + ".tmp")
    fsutil.save_safetensors(tmp, tensors, {"ids": json.dumps(ids)})
    os.replace(tmp, path)


def read_dev_outputs(run_dir: Path) -> dict | None:
    """{task: (ids, outputs, labels)} of a run's last dev evaluation; None for a run without one
    (older runs did not keep them) or whose file is damaged."""
    import json

    from safetensors import safe_open

    from safetensors import SafetensorError

    path = Path(run_dir) / DEV_OUTPUTS
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), "pt") as fh:
            ids = json.loads(fh.metadata()["ids"])
            return {task: (task_ids, fh.get_tensor(f"{task}.outputs"), fh.get_tensor(f"{task}.labels"))
                    for task, task_ids in ids.items()}
    except (SafetensorError, OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # damaged: the run's comparisons are left out, as an older run's without outputs
