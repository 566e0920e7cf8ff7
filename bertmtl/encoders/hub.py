"""Encoders by Hugging Face Hub name: `--encoder ORG/NAME[@REVISION]` (or a bare name such as
bert-base-uncased), fetched through huggingface_hub into the shared Hugging Face cache.

Only what an encoder needs comes down: its config, its tokenizer files and one weight format
(safetensors where the repository has it, else pytorch_model.bin), with huggingface_hub's
progress bar. The library honours HF_HOME, HF_HUB_OFFLINE, HF_TOKEN and HF_ENDPOINT; a name
already in the cache is used without a download, and offline. The commit a name resolved to is
returned, so that a run records exactly what it started from (TrainConfig.encoder_revision).
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import UserError

# ORG/NAME or NAME (the Hub's legacy top-level models), then @REVISION (a branch, tag or commit).
_NAME = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*(?:/[A-Za-z0-9][\w.-]*)?)(?:@(?P<rev>[\w./-]+))?$")
CONFIG_AND_TOKENIZER = ["config.json", "vocab.txt", "tokenizer.json", "tokenizer_config.json",
                        "special_tokens_map.json", "vocab.json", "merges.txt", "spm.model", "sentencepiece.bpe.model"]
SAFETENSORS = ["*.safetensors", "*.safetensors.index.json"]
PYTORCH = ["pytorch_model.bin", "pytorch_model.bin.index.json", "pytorch_model-*.bin"]


def hub_name(value) -> tuple[str, str | None] | None:
    """(repo id, revision or None) when `value` names a Hub model rather than a local path."""
    if not isinstance(value, str) or value.startswith((".", "/", "~")) or Path(value).expanduser().exists():
        return None
    m = _NAME.match(value)
    if m is None and value.endswith("@") and _NAME.match(value[:-1]):  # not a path: a name whose revision is missing
        raise UserError(f"{value}: the revision after @ is empty; give a branch, tag or commit "
                        f"({value}main), or leave out the @")
    return (m.group("repo"), m.group("rev")) if m else None


def fetch(repo: str, revision: str | None = None) -> tuple[Path, str]:
    """The local snapshot directory of `repo` at `revision` (default: main) and its commit."""
    from huggingface_hub import HfApi, constants, snapshot_download
    from huggingface_hub import errors as hf

    name = f"{repo}@{revision}" if revision else repo
    try:
        if constants.HF_HUB_OFFLINE:
            raise hf.OfflineModeIsEnabled("HF_HUB_OFFLINE is set")
        # A bounded wait: a firewall that drops packets must not hang a run that can fall back.
        info = HfApi().model_info(repo, revision=revision, timeout=constants.HF_HUB_ETAG_TIMEOUT)
        files = {s.rfilename for s in info.siblings or ()}
        weights = SAFETENSORS if any(f.endswith(".safetensors") for f in files) else PYTORCH
        # by the name asked for (not info.sha), so that the cache records the branch or tag too and
        # an offline run finds it again
        path = snapshot_download(repo, revision=revision, allow_patterns=CONFIG_AND_TOKENIZER + weights)
    except hf.GatedRepoError:
        raise UserError(f"--encoder {name}: the model is gated on the Hub; accept its terms on its page and set "
                        f"HF_TOKEN (or `hf auth login`)") from None
    except hf.RepositoryNotFoundError:
        raise UserError(f"--encoder {name}: no such model on the Hub ({constants.ENDPOINT}), or it is private "
                        f"(set HF_TOKEN); a local directory must exist") from None
    except hf.RevisionNotFoundError:
        raise UserError(f"--encoder {name}: the model has no revision {revision!r} (a branch, tag or commit)") from None
    except Exception as e:  # offline, or the Hub out of reach: what the cache already holds
        if not (isinstance(e, (hf.OfflineModeIsEnabled, hf.LocalEntryNotFoundError, hf.HfHubHTTPError))
                or network_error(e)):
            raise
        path = _cached(repo, revision, name, e)
    return Path(path), Path(path).name


def network_error(e: BaseException) -> bool:
    """A failure to reach the Hub, from whichever HTTP stack huggingface_hub uses (httpx, its
    fork httpx2, requests): a name that does not resolve, a refused or dropped connection."""
    return isinstance(e, OSError) or type(e).__module__.split(".")[0] in (
        "httpx", "httpx2", "httpcore", "requests", "urllib3", "h11")


def cached_snapshot(repo: str, revision: str | None) -> Path | None:
    """`repo` at `revision` from the Hugging Face cache alone (no network), weights included; None when absent."""
    from huggingface_hub import snapshot_download
    from huggingface_hub import errors as hf

    for weights in (SAFETENSORS, PYTORCH):
        try:
            path = snapshot_download(repo, revision=revision, allow_patterns=CONFIG_AND_TOKENIZER + weights,
                                     local_files_only=True)
        except (hf.LocalEntryNotFoundError, OSError, ValueError):
            continue
        if any(p.suffix in (".safetensors", ".bin") for p in Path(path).iterdir()):
            return Path(path)
    return None


def _cached(repo: str, revision: str | None, name: str, why: Exception) -> str:
    from huggingface_hub import constants

    if (path := cached_snapshot(repo, revision)) is not None:
        return str(path)
    offline = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else f"the Hub cannot be reached ({why})"
    raise UserError(f"--encoder {name}: not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and {offline}. "
                    f"Run once with a connection (HF_HUB_OFFLINE unset) to fetch it, or give a local directory.")
