"""The documentation: a short README whose links resolve, and a docs site that builds strictly with
a command-line reference generated from the commands themselves."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_the_readme_is_short_and_its_links_resolve():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert text.count("\n") <= 200
    local = [t.split("#")[0] for t in LINK.findall(text) if not re.match(r"^[a-z]+:", t) and not t.startswith("#")]
    assert local, "the README links into docs/"
    assert [t for t in local if not (REPO / t).exists()] == []


def test_no_help_text_or_message_points_to_the_readme():
    """A `pip install` user has the commands and the docs site, not the repository's README."""
    found = [f"{p.relative_to(REPO)}:{n}" for p in (REPO / "bertmtl").rglob("*.py")
             for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
             if "README" in line and not (p.name == "export.py" and "README.md" in line)]  # an export's model card
    assert found == []


@pytest.mark.slow
def test_the_site_builds_strictly_with_every_command_and_option_in_its_reference(tmp_path):
    pytest.importorskip("mkdocs_click", reason="the docs extra: pip install -e '.[docs]'")
    site = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", str(REPO / "mkdocs.yml"),
                        "-d", str(site)], capture_output=True, text=True, cwd=REPO, timeout=300,
                       env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "WARNING" not in r.stderr, r.stderr[-3000:]  # (material warns of MkDocs 2 unless told not to, above)
    cli = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    assert "Sentinel" not in cli  # Click's marker of "no default" (docs/hooks.py)
    from click import Context

    from bertmtl.cli import main

    with Context(main) as ctx:
        for name in main.list_commands(ctx):
            command = main.get_command(ctx, name)
            assert f"bertmtl {name}" in cli, name
            for param in command.params:
                for opt in param.opts if param.param_type_name == "option" else []:
                    assert opt in cli, f"{name} {opt}"
    python = (site / "reference" / "python" / "index.html").read_text(encoding="utf-8")
    for api in ("Predictor", "TrainConfig", "train", "pretrain_config"):
        assert f"{api}</code>" in python or f">{api}<" in python, api


def _table(text: str, after: str) -> dict[str, list[str]]:
    """The first markdown table after the line starting with `after`: first cell (unquoted) -> cells."""
    lines = text[text.index(after):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| "))
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0].strip("`")] = cells[1:]
    return rows


def test_the_sweep_spec_reference_names_every_key_the_reader_takes_with_its_default():
    from bertmtl.sweep.spec import DISTRIBUTIONS, KEYS, PRUNE_DEFAULTS, REPORT_COLUMNS, REPORT_KEYS, SAMPLERS, SweepSpec

    text = (REPO / "docs" / "sweeps.md").read_text(encoding="utf-8")
    keys = _table(text, "## The spec, key by key")
    assert list(keys) == list(KEYS)
    assert list(_table(text, "The `report` section")) == list(REPORT_KEYS)
    default = SweepSpec(name="x")
    assert keys["seeds"][1] == str(default.seeds) and keys["metric"][1] == f"`{default.metric}`"
    assert keys["sampler"][1] == f"`{default.sampler}`" and all(f"`{s}`" in keys["sampler"][0] for s in SAMPLERS)
    assert all(f"{{{d}:" in keys["search"][2] for d in DISTRIBUTIONS)
    assert all(k in keys["prune"][0] for k in PRUNE_DEFAULTS)
    assert keys["prune"][1] == f"`false` (`true` = {' and '.join(map(str, PRUNE_DEFAULTS.values()))})"
    assert all(f"`{c}`" in _table(text, "The `report` section")["columns"][0] for c in REPORT_COLUMNS)


# ---------------------------------------------------------------------------------------------
# Every example runs: the code blocks of README.md and docs/, collected and run as written.
#
# A block's kind comes from its fence and an HTML comment on the line above it (invisible on the
# site):
#   <!-- run -->            run it: bash blocks in bash -e, python blocks in python, console
#                           blocks ($ COMMAND, then its output) command by command, each in a
#                           bash of its own, its standard output compared line by line (a line
#                           "..." stands for any lines; the exit status is not checked, so a
#                           block that shows it ends its command with `; echo "exit status $?"`);
#   <!-- skip: REASON -->   not run here, for the reason given (a GPU, the Hub, hours of CPU);
#   <!-- setup: COMMAND --> (anywhere on a page but in a block) run first, before the page's
#                           blocks: what the page assumes the reader has done (trained a run).
# `text` blocks are output or layout, never run; a yaml block whose first line is `# NAME` shows
# the sample file NAME and must equal it. Any other block must say run or skip.
# Each page runs in its own directory, made by `bertmtl examples .`, with the built-in encoders
# replaced by tiny random ones in a pre-filled cache ($BERTMTL_HOME): every command is the real
# one, only the weights are small.

PAGES = ["README.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").rglob("*.md"))]
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.S | re.M)
MARK = re.compile(r"<!--\s*(run|skip:\s*(?P<why>.*?))\s*-->\s*$")
SETUP = re.compile(r"<!--\s*setup:\s*(.*?)\s*-->")
RUNNABLE = ("bash", "python", "console")
DISPLAY = ("text", "yaml", "json")


def _blocks(page: str) -> list[dict]:
    """The fenced blocks of a page, each with its language, body (dedented), line and mark."""
    text = (REPO / page).read_text(encoding="utf-8")
    out = []
    for m in FENCE.finditer(text):
        before = text[:m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        mark = MARK.search(before)
        indent = len(m["indent"])
        body = "".join(line[indent:] for line in m["body"].splitlines(keepends=True))
        out.append({"lang": m["lang"], "body": body, "line": text.count("\n", 0, m.start()) + 1,
                    "mark": None if mark is None else "skip" if mark["why"] is not None else "run",
                    "why": mark and mark["why"]})
    return out


def _setups(page: str) -> list[str]:
    """The page's setup commands, outside its code blocks."""
    return SETUP.findall(FENCE.sub("", (REPO / page).read_text(encoding="utf-8")))


def test_every_code_block_says_whether_it_runs_and_shown_sample_files_are_the_shipped_ones():
    from bertmtl.examples import _source, names

    counts = {"blocks": 0, "run": 0, "skip": 0}
    for page in PAGES:
        assert "~~~" not in (REPO / page).read_text(encoding="utf-8"), f"{page}: use ``` fences (the collector reads those)"
        for b in _blocks(page):
            where = f"{page}:{b['line']}"
            counts["blocks"] += 1
            if b["mark"]:
                counts[b["mark"]] += 1
            assert b["lang"] in RUNNABLE + DISPLAY, f"{where}: give the block a language ({RUNNABLE + DISPLAY})"
            if b["lang"] in RUNNABLE:
                assert b["mark"], f"{where}: mark the block <!-- run --> or <!-- skip: why -->"
                assert b["mark"] == "run" or b["why"].strip(), f"{where}: a skipped block says why"
            else:
                assert b["mark"] is None, f"{where}: a {b['lang']} block is not run"
            first = b["body"].split("\n", 1)[0]
            if b["lang"] == "yaml" and re.fullmatch(r"# [\w.-]+\.ya?ml", first):
                shipped = first[2:]
                assert shipped in names(), f"{where}: {shipped} is not a sample file of `bertmtl examples`"
                assert b["body"] == (_source() / shipped).read_text(encoding="utf-8"), f"{where}: differs from {shipped}"
    print(counts)
    assert counts["run"] > counts["skip"], counts  # most examples run; a skip says why


def test_the_examples_name_only_files_that_bertmtl_examples_writes_or_the_page_makes():
    """A file named in a block (x.csv, x.tsv, x.jsonl, x.yaml) is a sample file, a run's output
    inside a run or sweep directory, or written by the page's blocks (`> FILE`); skipped blocks
    too, which the runner cannot prove."""
    from bertmtl.examples import names
    from bertmtl.runs import rundir

    shipped = set(names()) | {v for k, v in vars(rundir).items() if k.isupper() and isinstance(v, str)}  # a run's files
    made_by_runs = ("checkpoints/", "sweeps/", "preds/", "aug/", "data/")
    missing = []
    for page in PAGES:
        made = set()
        for b in _blocks(page):
            if b["lang"] not in RUNNABLE:
                continue
            made |= set(re.findall(r">\s*([\w./-]+)", b["body"]))  # this block's own output files too
            for name in re.findall(r"[\w./-]+\.(?:csv|tsv|jsonl|ya?ml)\b", b["body"]):
                # (an absolute path is the reader's own choice, written by the block's first command)
                if name in shipped or name.startswith(made_by_runs) or name in made or name.startswith("/"):
                    continue
                missing.append(f"{page}:{b['line']}: {name}")
    assert missing == []


@pytest.fixture(scope="module")
def docs_home(tmp_path_factory, tiny_bert_dir):
    """$BERTMTL_HOME with the built-in encoders present: tiny random ones under their real names."""
    import shutil

    home = tmp_path_factory.mktemp("bertmtl-home")
    shutil.copytree(tiny_bert_dir, home / "all-MiniLM-L6-v2")
    try:
        from .conftest import write_tiny_mpnet

        write_tiny_mpnet(home / "all-mpnet-base-v2")
    except ImportError:  # transformers (the test extra) builds the tiny MPNet
        pass
    return home


def _docs_env(home, bin_dir) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BERTMTL_")}
    return {**env, "PATH": f"{bin_dir}{os.pathsep}{os.path.dirname(sys.executable)}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONPATH": str(REPO), "BERTMTL_HOME": str(home), "HF_HOME": str(home / "hf"), "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": "1", "COLUMNS": "100", "NO_COLOR": "1", "PYTHONWARNINGS": "ignore"}


def _console(body: str) -> list[tuple[str, list[str]]]:
    """A console block's ($ COMMAND, expected output lines) in order."""
    steps = []
    for line in body.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            assert steps, f"output before the first command: {line!r}"
            steps[-1][1].append(line.rstrip())
    return steps


def _matches(expected: list[str], got: list[str]) -> bool:
    """Line by line; an expected line "..." matches any number of lines (a glob over lines)."""
    reach = {0}  # the lines of `got` matched so far, for each way through `expected`
    for line in expected:
        if line == "...":
            reach = set(range(min(reach), len(got) + 1)) if reach else set()
        else:
            reach = {i + 1 for i in reach if i < len(got) and got[i] == line}
    return len(got) in reach


def test_the_console_output_match():
    assert _matches(["a", "...", "d"], ["a", "b", "c", "d"]) and _matches(["...", "a"], ["a"]) and _matches([], [])
    assert not _matches(["a", "...", "d"], ["a", "b"]) and not _matches(["a"], ["a", "b"]) and not _matches(["a"], [])


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in PAGES if any(b["mark"] == "run" for b in _blocks(p))])
def test_the_examples_of_a_page_run_as_written(page, docs_home, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if not (Path(sys.executable).parent / "bertmtl").exists():  # the console script pip installs; else the same entry
        (bin_dir / "bertmtl").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m bertmtl "$@"\n')
        (bin_dir / "bertmtl").chmod(0o755)
    work = tmp_path / "work"
    env = _docs_env(docs_home, bin_dir)

    def sh(command: str, what: str, strict: bool = True) -> str:
        r = subprocess.run(["bash", "-euo" if strict else "-o", "pipefail", "-c", command], cwd=work, env=env,
                           capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
        assert r.returncode == 0 or not strict, f"{what}: exit {r.returncode}\n$ {command}\n{r.stdout[-3000:]}{r.stderr[-3000:]}"
        return r.stdout

    work.mkdir()
    sh("bertmtl examples .", "bertmtl examples")
    for command in _setups(page):
        sh(command, f"{page}: setup")
    ran = 0
    for b in _blocks(page):
        if b["mark"] != "run":
            continue
        where = f"{page}:{b['line']}"
        if b["lang"] == "bash":
            sh(b["body"], where)
        elif b["lang"] == "python":
            r = subprocess.run([sys.executable, "-c", b["body"]], cwd=work, env=env, capture_output=True, text=True,
                               timeout=900, stdin=subprocess.DEVNULL)
            assert r.returncode == 0, f"{where}: exit {r.returncode}\n{r.stdout[-3000:]}{r.stderr[-3000:]}"
        else:
            for command, expected in _console(b["body"]):
                got = [line.rstrip() for line in sh(command, where, strict=False).splitlines()]
                assert _matches(expected, got), f"{where}: $ {command}\nexpected:\n" + "\n".join(expected) + \
                    "\ngot:\n" + "\n".join(got)
        ran += 1
    assert ran


def test_the_run_layout_page_names_every_file_of_a_run_and_every_record_type():
    """docs/reference/run-layout.md against runs/rundir.py (the one module that names them) and the
    record types the training code emits."""
    from bertmtl.runs import rundir

    text = (REPO / "docs" / "reference" / "run-layout.md").read_text(encoding="utf-8")
    files = [v for k, v in vars(rundir).items() if k.isupper() and isinstance(v, str) and "." in v]
    files += [*rundir.WEIGHTS_FILE.values(), *rundir.TOKENIZER_FILES, rundir.BEST + "/", rundir.LAST + "/"]
    assert len(files) > 15 and [f for f in files if f"`{f}`" not in text and f"  {f}" not in text] == []
    emitted = {m for p in (REPO / "bertmtl" / "training").glob("*.py")
               for m in re.findall(r'"type": "(\w+)"', p.read_text(encoding="utf-8"))}
    assert "resume" in emitted  # `"resume" if run.resumed else "start"`: one row, start, says both
    table = _table(text, "## Records of")
    assert set(table) == emitted - {"resume"} | {"start"} and "`resume`" in table["start"][0]
