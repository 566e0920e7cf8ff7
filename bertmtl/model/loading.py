"""Encoder directories in: an HF one's tensors renamed to ours, or a bertmtl checkpoint's encoder.

Our modules have one naming (HF BERT's). A checkpoint of another family is renamed with that
family's plain key map (`Family.key_map` in encoders/config.py); `to_hf_key` is the inverse, for
export. Fetching built-in encoders by name is `bertmtl.encoders.weights`' job; a bertmtl checkpoint's
files are read through runs/rundir.py (its encoder starts a new run: `--encoder RUN/best`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..encoders.config import BertConfig, Family
from ..errors import UserError
from ..runs.rundir import checkpoint_part, is_checkpoint

# Keys that HF checkpoints carry but the bare encoder does not own: registered buffers, and the
# pretraining heads of each family (the masked-LM ones kept for `bertmtl pretrain`: model/mlm.py;
# ELECTRA's replaced-token discriminator head, which nothing here uses).
IGNORED_PREFIXES = ("embeddings.position_ids", "embeddings.token_type_ids", "cls.", "lm_head.", "vocab_transform.",
                    "vocab_layer_norm.", "vocab_projector.", "generator_predictions.", "generator_lm_head.",
                    "discriminator_predictions.", "lm_predictions.")


def encoder_directory(path: str | Path) -> Path:
    """`path` as an existing directory, or a clear error."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise UserError(f"{p}: not a directory. --encoder takes a built-in encoder name (minilm, mpnet), a "
                        f"Hugging Face Hub name (ORG/NAME[@REVISION]), a Hugging Face encoder directory (config.json, "
                        f"tokenizer files, model.safetensors or pytorch_model.bin), or a bertmtl run or "
                        f"checkpoint directory.")
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


def hf_state_dict(encoder) -> dict[str, torch.Tensor]:
    """The encoder's weights under the names transformers' bare model of its family uses."""
    family = encoder.config.family
    return {to_hf_key(k, family): v.detach().float().contiguous().cpu() for k, v in encoder.state_dict().items()}


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


def encoder_state(directory: str | Path, dtype: torch.dtype = torch.float32,
                  family: Family | None = None) -> dict[str, torch.Tensor]:
    """The encoder's tensors of an encoder directory under our names: an HF directory's (renamed),
    or a bertmtl checkpoint's encoder (a trained run's, without its heads)."""
    if is_checkpoint(directory):
        state = checkpoint_part(Path(directory), "encoder")
        return {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    return read_state_dict(directory, dtype, family)


def check_finite(state: dict[str, torch.Tensor], source: str | Path) -> None:
    """A UserError naming `source` and its first tensor that holds NaN or inf: such weights make
    every loss NaN from the first step, which would read as a learning rate too high."""
    floats = [(k, v) for k, v in state.items() if v.is_floating_point()]
    bad = [k for k, v in floats if not bool(torch.isfinite(v).all())]  # one isfinite per tensor
    if bad:
        raise UserError(f"{source}: {len(bad)} of {len(floats)} tensors hold NaN or inf, e.g. {bad[0]}; these "
                        f"weights are damaged (a broken download or a diverged save): nothing can train from them")


def load_into(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str | Path, assign: bool = False) -> None:
    """Copy `state` into `model`, with an error that lists missing / unexpected / misshapen keys.

    With `assign`, the tensors become the parameters (no copy): for a model built on the meta
    device, which skips random initialisation of weights about to be replaced.
    """
    own = model.state_dict()
    useful = {k: v for k, v in state.items() if not k.startswith(IGNORED_PREFIXES)}
    # Some DeBERTa-v3 releases carry absolute position embeddings their config does not use (HF skips them too).
    if "embeddings.position_embeddings.weight" not in own:
        useful.pop("embeddings.position_embeddings.weight", None)
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
