"""`bertmtl export --push-to-hub` through the real huggingface_hub client against the local server of
tests/fakehub.py, each push the real command in a child process (huggingface_hub reads HF_ENDPOINT,
HF_HOME and HF_TOKEN when it is imported), and what it pushed loaded back from that server by
transformers and sentence-transformers in a child process of their own.

HF_HUB_DISABLE_XET=1: with hf_xet installed huggingface_hub sends large files to the Xet chunk store,
which the fake hub does not speak; it speaks the LFS protocol, and the commit request that names
the files, which is the same with either."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .conftest import REAL_SENTENCES, cli
from .fakehub import GITATTRIBUTES, TOKEN, Hub

pytest.importorskip("huggingface_hub")
transformers = pytest.importorskip("transformers")

SENTENCES = REAL_SENTENCES[:6] + ["the movie was good", "x"]


@pytest.fixture
def hub():
    h = Hub()
    yield h
    h.close()


def _push(hub, tmp_path: Path, *args, **env) -> subprocess.CompletedProcess:
    """`bertmtl export ARGS` in a child process talking to `hub` with a write token (unless `env`
    says otherwise), its temporary files in tmp_path/tmp."""
    (tmp_path / "tmp").mkdir(exist_ok=True)
    env = {"HF_TOKEN": TOKEN, "HF_HUB_DISABLE_XET": "1", "TMPDIR": str(tmp_path / "tmp"), **env}
    env = {k: v for k, v in hub.env(tmp_path / "hf", **env).items() if v is not None}
    return subprocess.run([sys.executable, "-m", "bertmtl", "export", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


def _load(hub, tmp_path: Path, code: str) -> dict:
    """Run `code` in a child process whose huggingface_hub reads from `hub`; the JSON it prints."""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env=hub.env(tmp_path / "hf-load", HF_TOKEN=TOKEN))
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def _pushed_line(hub, repo: str, branch: str = "main", url_tail: str = "") -> str:
    return f"pushed to {repo} (revision {branch}, commit {hub.head(repo, branch)[:7]}): {hub.url}/{repo}{url_tail}"


AUTOMODEL = """
import json, sys, torch
from transformers import AutoModel, AutoTokenizer
tok, model = AutoTokenizer.from_pretrained(sys.argv[1]), AutoModel.from_pretrained(sys.argv[1]).eval()
batch = tok(json.loads(sys.argv[2]), padding=True, truncation=True, return_tensors="pt")
with torch.no_grad():
    hidden = model(**batch).last_hidden_state
print(json.dumps({"class": type(model).__name__, "input_ids": batch["input_ids"].tolist(),
                  "mask": batch["attention_mask"].tolist(), "hidden": hidden.tolist()}))
"""


@pytest.mark.slow
def test_an_hf_push_loads_with_automodel_from_the_hub_and_gives_our_hidden_states(hub, trained_run, tmp_path):
    from bertmtl.inference.export import export
    from bertmtl.runs.checkpoint import load_checkpoint

    hub.drop_writes["lfs"] = 1  # the weights' first upload drops halfway: huggingface_hub sends them again
    r = _push(hub, tmp_path, trained_run, "--format", "hf", "--push-to-hub", "org/tiny-encoder")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines() == [_pushed_line(hub, "org/tiny-encoder")]
    assert [p for m, p in hub.log if m == "PUT"] == [f"/lfs-upload/{o}" for o in hub.lfs] * 2  # one object, twice
    assert list((tmp_path / "tmp").iterdir()) == []  # the temporary export is gone
    # One commit on top of the repository's first: the whole export, bytes as a local export writes them.
    local = export(trained_run, "hf", tmp_path / "local")
    pushed = hub.files("org/tiny-encoder")
    assert sorted(pushed) == sorted([".gitattributes", *(p.name for p in local.iterdir())])
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        assert pushed[name] == (local / name).read_bytes(), name
    # The card: the command that was run, the example loading the repository, no local path.
    card = pushed["README.md"].decode()
    assert f"bertmtl export .../{trained_run.name} --format hf --push-to-hub org/tiny-encoder\n" in card
    assert 'AutoModel.from_pretrained("org/tiny-encoder")' in card
    assert str(tmp_path) not in card and str(trained_run.parent) not in card and "bertmtl-push-" not in card

    got = _load(hub, tmp_path, AUTOMODEL.replace("sys.argv[1]", "'org/tiny-encoder'").replace(
        "sys.argv[2]", repr(json.dumps(SENTENCES))))
    ck = load_checkpoint(trained_run / "best")
    assert got["class"] == ck.model.encoder.config.family.architecture == "BertModel"
    batch = ck.tokenizer(SENTENCES)
    assert torch.equal(torch.tensor(got["input_ids"]), batch.input_ids)
    with torch.no_grad():
        ours = ck.model.encoder(batch.input_ids, batch.attention_mask, batch.token_type_ids).last_hidden_state
    real = batch.attention_mask.bool()
    assert (ours[real] - torch.tensor(got["hidden"])[real]).abs().max() <= 1e-5


@pytest.mark.slow
def test_a_sentence_transformers_push_encodes_as_the_local_export(hub, trained_run, tmp_path):
    pytest.importorskip("sentence_transformers")
    from bertmtl.inference.export import export

    r = _push(hub, tmp_path, trained_run, "--format", "sentence-transformers", "--push-to-hub", "org/tiny-st")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines() == [_pushed_line(hub, "org/tiny-st")]
    local = export(trained_run, "sentence-transformers", tmp_path / "st")
    assert "1_Pooling/config.json" in hub.files("org/tiny-st") and "modules.json" in hub.files("org/tiny-st")
    got = _load(hub, tmp_path, (
        "import json\nfrom sentence_transformers import SentenceTransformer as ST\n"
        f"s = {SENTENCES!r}\n"
        f"a, b = ST('org/tiny-st', device='cpu').encode(s), ST({str(local)!r}, device='cpu').encode(s)\n"
        "print(json.dumps({'shape': list(a.shape), 'diff': float(abs(a - b).max()), 'norm': float(abs(a).max())}))"))
    assert got["shape"] == [len(SENTENCES), 32] and got["norm"] > 0.01  # real embeddings, not zeros
    assert got["diff"] <= 1e-5


@pytest.mark.slow
def test_private_and_a_new_branch_reach_the_hub_and_main_is_left_as_it_was(hub, trained_run, tmp_path):
    import urllib.error
    import urllib.request

    r = _push(hub, tmp_path, trained_run, "--format", "hf", "--push-to-hub", "org/private-encoder", "--private",
              "--revision", "dev", "--out", tmp_path / "kept")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines() == [
        f"hf export written to {tmp_path / 'kept'} (see {tmp_path / 'kept'}/README.md)",
        _pushed_line(hub, "org/private-encoder", "dev", "/tree/dev")]
    repo = hub.repos["org/private-encoder"]
    assert repo["private"] is True and sorted(repo["branches"]) == ["dev", "main"]
    assert hub.files("org/private-encoder", "main") == {".gitattributes": GITATTRIBUTES}  # as create_repo left it
    dev = hub.files("org/private-encoder", "dev")
    assert dev["model.safetensors"] == (tmp_path / "kept" / "model.safetensors").read_bytes()
    assert "--private --revision dev" in dev["README.md"].decode()
    with pytest.raises(urllib.error.HTTPError) as e:  # private: not there for a reader without the token
        urllib.request.urlopen(f"{hub.url}/api/models/org/private-encoder")
    assert e.value.code == 401

    # --private never pushes into an existing public repository.
    first = hub.add("org/public", {"README.md": b"# public"})
    hub.log.clear()
    r = _push(hub, tmp_path, trained_run, "--format", "hf", "--push-to-hub", "org/public", "--private")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [
        "Error: org/public already exists and is public; --private does not change an existing repository's "
        "visibility (its settings page on the Hub does); nothing was uploaded"]
    assert hub.head("org/public") == first and [m for m, p in hub.log if m == "PUT"] == []


@pytest.mark.slow
def test_without_a_token_nothing_is_exported_or_created(hub, trained_run, tmp_path):
    r = _push(hub, tmp_path, trained_run, "--format", "hf", "--push-to-hub", "org/none", HF_TOKEN=None)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [
        "Error: --push-to-hub needs a Hugging Face token: set HF_TOKEN=hf_... (a token with write access) or run "
        "`hf auth login`; nothing was exported or uploaded"]
    assert hub.log == [] and hub.repos == {} and list((tmp_path / "tmp").iterdir()) == []


@pytest.mark.slow
def test_a_wrong_token_is_a_clear_error(hub, trained_run, tmp_path):
    r = _push(hub, tmp_path, trained_run, "--format", "hf", "--push-to-hub", "org/refused", HF_TOKEN="hf_not_this_one")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [
        "Error: upload to org/refused failed: the Hub refused the token (401 Unauthorized): set HF_TOKEN=hf_... (a "
        "token with write access) or run `hf auth login`; nothing was committed"]
    assert hub.repos == {} and hub.log[0] == ("POST", "/api/repos/create")


@pytest.mark.slow
def test_a_connection_dropped_mid_commit_commits_nothing_and_says_so(hub, trained_run, tmp_path):
    """The weights are uploaded, then the commit request stops halfway: an error naming the repository,
    the branch where it was, and no "pushed to" line; the same command again completes, and the
    branch then holds the export, and of what it held before only what no export writes."""
    from bertmtl.inference.export import export

    before = {".gitattributes": GITATTRIBUTES, "README.md": b"# an earlier push", "modules.json": b"[]",
              "LICENSE": b"MIT", "1_Pooling/config.json": b"{}"}
    first = hub.add("org/dropped", before)
    hub.drop_writes["commit"] = 1
    args = (trained_run, "--format", "hf", "--push-to-hub", "org/dropped")
    r = _push(hub, tmp_path, *args)
    assert r.returncode == 2 and r.stdout == "" and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: upload to org/dropped failed: the connection to the Hub "
                                                   "failed (")
    assert lines[0].endswith(f"; nothing was committed (branch main is still at {first[:7]})")
    assert hub.head("org/dropped") == first and hub.files("org/dropped") == before
    assert len(hub.lfs) == 1  # the weights arrived, and no commit names them
    # the commit request, then the branch asked where it stands (a lost answer may hide an applied commit)
    assert hub.log[-2:] == [("POST", "/api/models/org/dropped/commit/main"), ("GET", "/api/models/org/dropped/revision/main")]

    hub.log.clear()
    r = _push(hub, tmp_path, *args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines() == [_pushed_line(hub, "org/dropped").replace(
        "):", ", removed 2 files the export does not have):")]
    local = export(trained_run, "hf", tmp_path / "local")
    assert hub.head("org/dropped") != first
    assert sorted(hub.files("org/dropped")) == sorted([".gitattributes", "LICENSE", *(p.name for p in local.iterdir())])
    assert [m for m, p in hub.log if m == "PUT"] == []  # the weights were there already: not sent again


def test_push_options_are_checked_before_anything_runs(tmp_path):
    r = cli("export", tmp_path, "--format", "hf", code=2)
    assert "Error: --out must be given (the directory to write), unless --push-to-hub uploads the export" in r.output
    r = cli("export", tmp_path, "--format", "hf", "--out", tmp_path / "x", "--revision", "dev", code=2)
    assert "Error: --revision applies to --push-to-hub only" in r.output
    r = cli("export", tmp_path, "--format", "hf", "--push-to-hub", "just-a-name", code=2)
    assert "'just-a-name' is not a Hub repository name: give ORG/NAME" in r.output
    r = cli("export", tmp_path, "--format", "hf", "--push-to-hub", "org/x", "--revision", "refs/pr/1", code=2)
    assert "'refs/pr/1' is not a branch name" in r.output
    assert not (tmp_path / "x").exists()


def test_repository_and_branch_names():
    from bertmtl.inference.hub_push import parse_branch, parse_repo_id

    for good in ("org/name", "my-org/bert_base.v2", "a/b"):
        assert parse_repo_id(good) == good
    for bad in ("name", "org/", "/name", "a/b/c", "org/-x", "org/x.", "org/a--b", "org/a..b", "org/x.git", "o g/x"):
        with pytest.raises(ValueError):
            parse_repo_id(bad)
    for good in ("dev", "experiments/v2", "release-1.0"):
        assert parse_branch(good) == good
    for bad in ("refs/pr/1", "a..b", "x.lock", "dev/", "-x", "has space", ""):
        with pytest.raises(ValueError):
            parse_branch(bad)
