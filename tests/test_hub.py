"""--encoder ORG/NAME through the real huggingface_hub client against a local server speaking the
Hub's file API (tests/fakehub.py) and against a pre-filled cache with HF_HUB_OFFLINE=1. Each case
runs in a child process: huggingface_hub reads HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE when it
is imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .fakehub import Hub

pytest.importorskip("huggingface_hub")

RESOLVE = ("import sys; from bertmtl.weights import resolve_with_revision as r; from bertmtl.errors import UserError\n"
           "try:\n    p, rev = r(sys.argv[1]); print(p); print(rev)\n"
           "except UserError as e:\n    print(e.message, file=sys.stderr); sys.exit(2)\n")


@pytest.fixture
def hub(tiny_bert_dir):
    h = Hub()
    files = {f.name: f.read_bytes() for f in Path(tiny_bert_dir).iterdir() if f.is_file()}
    files["pytorch_model.bin"] = b"not wanted: the safetensors file is there"
    files["README.md"] = b"# tiny"
    h.tiny = files
    h.first = h.add("org/tiny-bert", files)
    yield h
    h.close()


def _env(hub, home: Path, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE"))}
    return {**env, "PYTHONPATH": os.getcwd(), "HF_ENDPOINT": hub.url, "HF_HOME": str(home),
            "HF_HUB_DISABLE_TELEMETRY": "1", "OMP_NUM_THREADS": "1", **extra}


def _resolve(name: str, env: dict):
    return subprocess.run([sys.executable, "-c", RESOLVE, name], capture_output=True, text=True, env=env, timeout=120)


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
    from bertmtl.hub import hub_name

    monkeypatch.chdir(tmp_path)
    (tmp_path / "local-encoder").mkdir()
    assert hub_name("bert-base-uncased") == ("bert-base-uncased", None)
    assert hub_name("google/electra-base-discriminator@v1.0") == ("google/electra-base-discriminator", "v1.0")
    assert hub_name("org/name@" + "a" * 40) == ("org/name", "a" * 40)
    for local in ("local-encoder", "./x", "/abs/path", "~/model", "a/b/c", "has space"):
        assert hub_name(local) is None, local  # an existing directory, or path-like: a path
