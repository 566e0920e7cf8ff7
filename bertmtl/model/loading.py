"""Hugging Face checkpoint directories in: read tensors, rename keys to ours, load an encoder.

Our modules have one naming (HF BERT's). A checkpoint of another family is renamed with that
family's plain key map (`Family.key_map` in config.py); `to_hf_key` is the inverse, for export.
Fetching built-in encoders by name is `bertmtl.weights`' job; this module reads directories:
HF ones, and bertmtl checkpoints, whose encoder starts a new run (`--encoder RUN/best`) and
whose heads can come with it (`--init-heads-from`).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from ..config import BertConfig, Family
from ..errors import UserError

# Keys that HF checkpoints carry but the bare encoder does not own: a registered buffer, and
# the pretraining heads (kept for the masked-LM head of `bertmtl pretrain`).
IGNORED_PREFIXES = ("embeddings.position_ids", "cls.", "lm_head.")


def encoder_directory(path: str | Path) -> Path:
    """`path` as an existing directory, or a clear error."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise UserError(f"{p}: not a directory. --encoder takes a built-in encoder name (minilm, mpnet), a "
                        f"Hugging Face BERT or MPNet directory (config.json, vocab.txt, model.safetensors or "
                        f"pytorch_model.bin), or a bertmtl run or checkpoint directory.")
    return p


def from_hf_key(key: str, family: Family) -> str:
    """An HF checkpoint key of `family` -> our parameter name."""
    if key.startswith(family.hf_prefix):
        key = key[len(family.hf_prefix):]
    # Checkpoints converted from the original TensorFlow release name LayerNorm gamma/beta.
    if key.endswith(".gamma"):
        key = key[:-6] + ".weight"
    elif key.endswith(".beta"):
        key = key[:-5] + ".bias"
    for theirs, ours in family.key_map:
        key = key.replace(theirs, ours)
    return key


def to_hf_key(key: str, family: Family) -> str:
    """Our parameter name -> the key HF's bare encoder of `family` (BertModel, MPNetModel) uses."""
    for theirs, ours in family.key_map:
        key = key.replace(ours, theirs)
    return key


def is_checkpoint(directory: str | Path) -> bool:
    """Whether `directory` is a bertmtl checkpoint (rather than an HF encoder directory)."""
    return (Path(directory) / "bertmtl.json").is_file()


def checkpoint_state(directory: str | Path, part: str, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """One part of a bertmtl checkpoint's weights: "encoder" (under the encoder's own names) or "heads"."""
    from ..checkpoint import load_weights

    state = load_weights(Path(directory))
    if part == "encoder":
        state = {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
    else:
        state = {k: v for k, v in state.items() if not k.startswith("encoder.")}
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}


def load_heads(model: torch.nn.Module, directory: str | Path) -> list[str]:
    """Copy the task heads of checkpoint `directory` into the multitask `model`; returns the tasks taken.

    Heads of tasks the checkpoint lacks stay as initialised. The head structure (pooling, pair
    mode and features, MLP width) must match: heads trained on other embeddings would not fit.
    """
    from ..checkpoint import read_json, read_specs

    directory = Path(directory)
    if not is_checkpoint(directory):
        raise UserError(f"{directory}: not a bertmtl checkpoint (no bertmtl.json); --init-heads-from takes RUN/best")
    saved = read_json(directory / "heads.json")
    own = model.cfg.to_dict()
    differ = [f"{k}: {saved.get(k)!r} there, {own[k]!r} here" for k in ("pooling", "pair_mode", "pair_features",
                                                                      "mlp_hidden") if saved.get(k, own[k]) != own[k]]
    if differ:
        raise UserError(f"{directory}: its heads do not fit this run's ({'; '.join(differ)}); "
                        f"train with the same options to take them")
    state = checkpoint_state(directory, "heads")
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
        keys = [k for k in own_state if k.split(".")[0] in (task, f"{task}_calibration")]
        if not keys or not all(k in state for k in keys):
            continue
        bad = [k for k in keys if state[k].shape != own_state[k].shape]
        if bad:
            raise UserError(f"{directory}: head {task} has other shapes ({', '.join(bad)}): trained on another "
                            f"encoder (hidden size) or other labels")
        model.load_state_dict({k: state[k] for k in keys}, strict=False)
        taken.append(task)
    return taken


def read_config(directory: str | Path) -> BertConfig:
    return BertConfig.from_json(Path(directory) / "config.json")


def read_state_dict(directory: str | Path, dtype: torch.dtype = torch.float32,
                    family: Family | None = None) -> dict[str, torch.Tensor]:
    """All tensors of an HF checkpoint directory under our names, floats cast to `dtype`.

    The family (for the key renaming) is read from the directory's config.json unless given.
    Keys of heads (`cls.…`, `lm_head.…`) keep their HF names.
    """
    directory = Path(directory)
    if family is None:
        family = read_config(directory).family
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
        out[from_hf_key(k, family)] = v.to(dtype) if v.is_floating_point() else v
    return out


def load_encoder(path: str | Path, dtype: torch.dtype = torch.float32,
                 device: str | torch.device | None = None):
    """Build our encoder from an HF-format BERT or MPNet directory and load its weights."""
    from .bert import BertModel, uninitialised

    directory = encoder_directory(path)
    config = read_config(directory)
    if is_checkpoint(directory):  # a trained run: its encoder, without the heads
        state = checkpoint_state(directory, "encoder", dtype)
    else:
        state = read_state_dict(directory, dtype, config.family)
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
    useful = {k: v for k, v in state.items() if not k.startswith(IGNORED_PREFIXES)}
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
        raise UserError(f"{source}: weights do not fit the encoder its config.json describes: " + " | ".join(parts))
    if pooler_only:
        import warnings

        warnings.warn(f"{source}: no pooler weights; the pooler stays randomly initialised", stacklevel=3)
    model.load_state_dict({k: v for k, v in useful.items() if k in own}, strict=False, assign=assign)
