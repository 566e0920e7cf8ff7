"""The package's shape: no import cycle, task files read without torch, output kinds decided in
one module, the run directory's layout named in one, and the public Python API the docs show."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "bertmtl"


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_imports(tree: ast.AST):
    """Import statements that run (at module level or inside functions), not `if TYPE_CHECKING:` ones."""
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING":
            node.body = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node


def import_graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports, read from the source (function-level imports too)."""
    modules = {_module(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _runtime_imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parent, *([base] if base else [])])
                # `from pkg import sub` imports the submodule when there is one, else a name in pkg.
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for t in targets:
                while t and t not in modules:
                    t = t.rpartition(".")[0]  # a name inside a module: the module
                if t and t != name:
                    graph[name].add(t)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_cycle_among_the_packages_modules():
    graph = import_graph()
    assert len(graph) > 40 and "bertmtl.training.loop" in graph["bertmtl.cli.train"]
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_reading_task_files_imports_no_torch(tmp_path):
    from .fixtures import write_task_data

    data = write_task_data(tmp_path / "data")
    code = (f"import sys\n"
            f"from bertmtl.tasks.files import TaskSource, read_tasks\n"
            f"from bertmtl.tasks import BUILTIN\n"
            f"from bertmtl.configuration.train_config import TrainConfig\n"
            f"from bertmtl.configuration.configs import AugmentConfig\n"
            f"read = read_tasks(BUILTIN, 'train', TaskSource({str(data)!r}))\n"
            f"assert [len(v) for v in read.examples.values()] == [96, 96, 96], read\n"
            f"TrainConfig().validate()\n"
            f"sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def lines_where(matches, owner: str) -> list[str]:
    """`file:line: text` of every line of the package, outside the module `owner` (a path under
    bertmtl/), whose code (comments cut off) `matches`."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        where = path.relative_to(PACKAGE).as_posix()
        if where == owner:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if matches(line.split("#", 1)[0]):
                found.append(f"{where}:{n}: {line.strip()}")
    return found


# What deciding by output kind looks like: comparing an activation or a loss name, or asking a
# spec whether it is a regression, a softmax or answers as a class.
KIND_BRANCHES = re.compile(r"""\.(activation|regression|answers_class|num_outputs|label_dtype)\b(?![.\w])|"""
                           r"""==\s*["'](softmax|sigmoid|clamp|regression|cross-entropy|bce)["']""")


def test_output_kinds_are_decided_only_by_the_kind_classes():
    found = lines_where(lambda code: KIND_BRANCHES.search(code) and ".output.label_dtype" not in code,
                        "tasks/kinds.py")
    assert not found, "\n".join(found)


# A run's and a checkpoint's files (config.json aside: Hugging Face's name, which exports write too).
LAYOUT_NAMES = ("bertmtl.json", "metrics.jsonl", "summary.json", "train_args.json", "messages.log", "progress.json",
                "train.log", ".writer.lock", "trainer_state.json", "optimizer.safetensors", "dev_outputs.safetensors",
                "heads.json", "tasks.json", "multitask.safetensors", "metrics.json", "ensemble.json", "soup.json")


def test_run_and_checkpoint_files_are_named_in_one_module():
    """Every surface finds a run's files through rundir's names: renaming one is a one-line change.
    A name quoted or after a slash (an f-string's path) counts; so does best/ or last/ joined to a path."""
    from bertmtl.runs import rundir

    defined = {v for v in vars(rundir).values() if isinstance(v, str)} | set(rundir.WEIGHTS_FILE.values())
    assert set(LAYOUT_NAMES) <= defined  # the list names rundir's own constants
    names = "|".join(map(re.escape, LAYOUT_NAMES))
    spelled = re.compile(rf"""(?<=["'/])(?:{names})(?=["'/])|/\s*["'](?:best|last)["']""")
    found = lines_where(spelled.search, "runs/rundir.py")
    assert not found, "\n".join(found)
    assert spelled.search('f"{run}/metrics.jsonl"') and spelled.search("run / 'best'")


def test_status_values_are_compared_only_inside_the_status_type():
    """A run's status means one thing everywhere: surfaces ask Status (final, resumable, succeeded,
    needs_last, tracker_state, style), never compare its strings, which once disagreed in 11 places."""
    from bertmtl.runs.status import Status

    values = "|".join(re.escape(s.value) for s in Status)
    literal = rf"""["'](?:{values})["']"""
    compared = re.compile(rf"""(==|!=)\s*{literal}|{literal}\s*(==|!=)|\bin\s*[(\[{{][^)\]}}]*{literal}""")
    # (a loop over names, `for key in ("since_best", "nonfinite", ...)`, compares nothing)
    found = lines_where(lambda code: compared.search(code) and not re.match(r"\s*(async\s+)?for\b", code), "runs/status.py")
    assert not found, "\n".join(found)
    assert compared.search('if info["status"] in ("finished", "pruned"):') and compared.search("s == 'running'")


def test_no_library_module_imports_the_cli():
    """The CLI parses and prints; the library never reaches back up into it (the TUI, a surface of
    its own, starts the same `bertmtl train` the CLI runs)."""
    graph = import_graph()
    surfaces = ("bertmtl.cli", "bertmtl.tui", "bertmtl.__main__")
    found = [f"{m} imports {t}" for m, targets in graph.items() for t in targets
             if t.startswith("bertmtl.cli") and not m.startswith(surfaces)]
    assert not found, "\n".join(found)


def test_the_pair_mode_is_decided_in_one_place():
    """Bi- or cross-encoded pairs: heads, batches, predict and the ONNX graph ask
    model/head_config.cross_encodes (through HeadConfig.cross), never compare the option's value."""
    compared = re.compile(r"""(==|!=)\s*["'](cross|bi)["']|["'](cross|bi)["']\s*(==|!=)|\bin\s*[(\[{][^)\]}]*["']cross["']""")
    found = lines_where(compared.search, "model/head_config.py")
    assert not found, "\n".join(found)


def test_no_module_branches_on_a_head_family_or_a_task_name():
    """Masked LM and the pooled heads differ through one object per family in each layer's table
    (model/heads.py, training/setup.py, inference/evaluate.py), never an `if` on the family; the
    built-in tasks' names (and a kind's parameter names) appear only in their tables."""
    family = re.compile(r"""head_family\s*(==|!=)\s*(["']|POOLED|TOKENS)|\b(POOLED|TOKENS)\s*(==|!=)""")
    found = lines_where(family.search, "tasks/kinds.py")
    names = {"sst", "para", "sts", "quora", "calibration", "pooled"}
    owners = {"tasks/builtin.py", "tasks/kinds.py"}
    for path in sorted(PACKAGE.rglob("*.py")):
        where = path.relative_to(PACKAGE).as_posix()
        if where not in owners:
            found += [f"{where}:{n.lineno}: {n.value!r}" for n in ast.walk(ast.parse(path.read_text()))
                      if isinstance(n, ast.Constant) and n.value in names]
    assert not found, "\n".join(found)
    assert family.search('if spec.output.head_family == "tokens":') and family.search("x.head_family != TOKENS")


def test_every_head_family_has_its_model_data_and_scores():
    from bertmtl.inference.evaluate import SCORES
    from bertmtl.model.heads import HEAD_FAMILIES
    from bertmtl.tasks import HEAD_FAMILY_NAMES, OUTPUT_KINDS
    from bertmtl.training.setup import DATA

    assert {k.head_family for k in OUTPUT_KINDS.values()} == set(HEAD_FAMILY_NAMES)
    assert set(HEAD_FAMILIES) == set(DATA) == set(SCORES) == set(HEAD_FAMILY_NAMES)
    assert list(DATA) == list(HEAD_FAMILY_NAMES)  # the batches' task order: pooled tasks first


def test_model_and_mtl_import_no_option_machinery():
    """The model and the multitask maths take their settings as arguments; options, config files and
    the CLI sit above them."""
    graph = import_graph()
    found = [f"{m} imports {t}" for m, targets in graph.items() for t in targets
             if m.startswith(("bertmtl.model", "bertmtl.mtl")) and t.startswith(("bertmtl.configuration", "bertmtl.cli"))]
    assert not found, "\n".join(found)
