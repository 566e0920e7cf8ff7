"""`bertmtl export --push-to-hub ORG/NAME`: an export uploaded to the Hugging Face Hub as one commit.

The token is looked up first (HF_TOKEN, else the one `hf auth login` stored), before any export
work. Then the repository is created if missing (private with --private), the branch if missing
(from main), and the export directory goes up as ONE commit (`HfApi.create_commit`): the large
files are uploaded first (Xet or LFS), then a single commit request names every file, and the Hub
applies a commit whole or not at all. The commit also removes the files an earlier export left that
this one does not have (a sentence-transformers export's modules.json under a later hf export would
change what loads); files no export writes (a LICENSE, images, .gitattributes) stay, and the
history keeps what was removed. `upload_folder` is not used: with hf_xet installed it may
split a folder into several commits, and a failure between them would leave part of an export on
the branch. So a failure at any step leaves the branch as it was, and the error says so.

No torch and no huggingface_hub at import: the configuration's parsers live here too.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from ..errors import UserError, extra_hint

DEFAULT_BRANCH = "main"
# The Hub's repository names (huggingface_hub's validate_repo_id): letters, digits, - _ . up to 96 of
# them, neither starting nor ending with - or ., no -- or .. inside.
_PART = r"[A-Za-z0-9](?:[\w.-]{0,94}[A-Za-z0-9])?"
_REPO_ID = re.compile(rf"^{_PART}/{_PART}$")
# A git branch name as the Hub takes one: path parts of letters, digits, - _ .; refs/... (a pull
# request's ref, a tag) is not a branch to create.
_BRANCH = re.compile(r"^(?!refs/)[A-Za-z0-9][\w.-]*(?:/[\w.-]+)*$")
TOKEN_HINT = "set HF_TOKEN=hf_... (a token with write access) or run `hf auth login`"
# What an export of some format may write (inference/export.py): configs, weights, the ONNX graph,
# tokenizer files, sentence-transformers' module folders (1_Pooling/, 2_Dense/). An earlier export's
# such files that this one lacks are removed by its commit; whatever else a repository holds stays.
_EXPORT_OUTPUT = re.compile(r"^(?:[^/]+\.(?:json|safetensors|onnx|model)|vocab\.txt|merges\.txt|\d+_[^/]+/.+)$")


def parse_repo_id(value: str) -> str:
    """ORG/NAME, checked against the Hub's rules for repository names; ValueError otherwise."""
    if not _REPO_ID.match(value) or ".." in value or "--" in value or value.endswith(".git"):
        raise ValueError(f"{value!r} is not a Hub repository name: give ORG/NAME (letters, digits, -, _ and ., "
                         f"e.g. my-org/my-encoder)")
    return value


def parse_branch(value: str) -> str:
    """A branch name (created from main when missing); ValueError otherwise."""
    if not _BRANCH.match(value) or ".." in value or value.endswith((".lock", "/", ".")):
        raise ValueError(f"{value!r} is not a branch name: give e.g. dev or experiments/v2")
    return value


@dataclass(frozen=True)
class Pushed:
    """What a push made: the repository, its branch, the commit it points to, where to see it, and
    the local export where one was kept (--out)."""

    repo: str
    revision: str
    commit: str
    url: str
    changed: bool = True  # False: the branch already held exactly these files, no commit was made
    removed: int = 0  # files of the branch that the export does not have, removed by the commit
    local: Path | None = None

    def __str__(self) -> str:
        notes = ([] if self.changed else ["no file changed"]) + \
            ([f"removed {self.removed} file{'s' * (self.removed != 1)} the export does not have"] if self.removed else [])
        return f"pushed to {self.repo} (revision {self.revision}, commit {self.commit[:7]}" + \
            "".join(f", {n}" for n in notes) + f"): {self.url}"


def require_token() -> str:
    """The Hugging Face token from the usual places, or a UserError saying how to give one."""
    try:
        from huggingface_hub import get_token
    except ImportError:
        raise UserError(f"--push-to-hub needs huggingface_hub: {extra_hint('hub', 'huggingface_hub')}") from None
    token = get_token()
    if not token:
        raise UserError(f"--push-to-hub needs a Hugging Face token: {TOKEN_HINT}; nothing was exported or uploaded")
    return token


def push_export(source, fmt: str, repo: str, *, out: str | Path | None = None, private: bool = False,
                revision: str | None = None, command: str | None = None, overwrite: bool = False) -> Pushed:
    """Export checkpoint (or run) `source` as `fmt` and push it to Hub repository `repo` as one commit;
    into `out` (kept) when given, else into a temporary directory removed afterwards."""
    from .export import _public, export

    parse_repo_id(repo)
    token = require_token()  # before the export: without one, nothing is done
    message = f"bertmtl: {fmt} export"
    description = _public(command) if command else ""  # the commit leaves this machine: no local paths
    if out is not None:
        local = export(source, fmt, out, command=command, overwrite=overwrite, load_name=repo)
        pushed = push_folder(local, repo, private=private, revision=revision, token=token, message=message,
                             description=description)
        return dataclasses.replace(pushed, local=local)
    with tempfile.TemporaryDirectory(prefix="bertmtl-push-") as tmp:
        local = export(source, fmt, Path(tmp) / "export", command=command, load_name=repo)
        return push_folder(local, repo, private=private, revision=revision, token=token, message=message,
                           description=description)


def push_folder(folder: str | Path, repo: str, *, private: bool = False, revision: str | None = None,
                token: str | None = None, message: str = "bertmtl export", description: str = "",
                progress: bool | None = None) -> Pushed:
    """Every file under `folder` as one commit on branch `revision` (default main) of Hub model
    repository `repo`, both created if missing; a UserError naming the repository if anything fails
    (the branch then holds no new commit). `progress`: huggingface_hub's upload bars [default: when
    stderr is a terminal; plain output in pipes]."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    folder, branch = Path(folder), parse_branch(revision) if revision else DEFAULT_BRANCH
    parse_repo_id(repo)
    api = HfApi(token=token or require_token())
    head = None  # the branch's commit before ours, once known
    quiet = not (sys.stderr.isatty() if progress is None else progress) and not are_progress_bars_disabled()
    if quiet:
        disable_progress_bars()
    try:
        api.create_repo(repo, private=private, exist_ok=True)
        if branch != DEFAULT_BRANCH:
            api.create_branch(repo, branch=branch, exist_ok=True)  # from main's head
        info = api.model_info(repo, revision=branch)
        head = info.sha
        if private and info.private is False:  # create_repo leaves an existing repository as it is
            raise UserError(f"{repo} already exists and is public; --private does not change an existing "
                            f"repository's visibility (its settings page on the Hub does); nothing was uploaded")
        files = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}
        stale = sorted(name for name in {s.rfilename for s in info.siblings or ()} - set(files)
                       if _EXPORT_OUTPUT.match(name))
        operations: list[CommitOperationAdd | CommitOperationDelete] = [
            CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(p)) for name, p in files.items()]
        operations += [CommitOperationDelete(path_in_repo=name) for name in stale]
        commit = api.create_commit(repo, operations, commit_message=message, commit_description=description,
                                   revision=branch)
    except UserError:
        raise
    except Exception as e:  # an HTTP status, the HTTP stack's own errors, huggingface_hub's wrappers of them
        raise UserError(_failure(api, repo, branch, head, e)) from None
    finally:
        if quiet:
            enable_progress_bars()
    url = f"{api.endpoint}/{repo}" + ("" if branch == DEFAULT_BRANCH else f"/tree/{quote(branch, safe='')}")
    return Pushed(repo, branch, commit.oid, url, changed=commit.oid != head, removed=len(stale))


def _failure(api, repo: str, branch: str, head: str | None, e: Exception) -> str:
    """The one line a failed push prints: what failed, why, and what the branch holds now."""
    said = f"upload to {repo} failed: {_reason(e, repo)}"
    if head is None:  # failed before the commit was sent
        return f"{said}; nothing was committed"
    try:  # a commit whose answer was lost may still have been applied: ask the branch
        now = api.model_info(repo, revision=branch).sha
    except Exception:
        now = head
    if now != head:
        return (f"{said}; the branch {branch} has moved to commit {now[:7]} since, which may be this upload: "
                f"look at {api.endpoint}/{repo}/commits/{quote(branch, safe='')} before pushing again")
    return f"{said}; nothing was committed (branch {branch} is still at {head[:7]})"


def _reason(e: BaseException, repo: str) -> str:
    from huggingface_hub.errors import HfHubHTTPError

    from ..encoders.hub import network_error

    if isinstance(e, HfHubHTTPError) and e.response is not None:
        status = e.response.status_code
        if status == 401:
            return f"the Hub refused the token (401 Unauthorized): {TOKEN_HINT}"
        if status == 403:
            return f"the token may not write to {repo} (403 Forbidden): use a token with write access to its namespace"
        return f"the Hub answered {status} ({_first_line(e.server_message or e)})"
    if network_error(e):
        return f"the connection to the Hub failed ({type(e).__name__}: {_first_line(e)})"
    if e.__cause__ is not None:  # huggingface_hub's "Error while uploading 'FILE' to the Hub." around the cause
        return f"{_first_line(e).rstrip('.')}: {_reason(e.__cause__, repo)}"
    return f"{type(e).__name__}: {_first_line(e)}"


def _first_line(e) -> str:
    return (str(e).strip().splitlines() or ["no message"])[0]
