"""What a sweep will train, said before it trains: its configurations, seeds and runs, the steps of
each run, and what an earlier command already did (`bertmtl sweep --dry-run` lists every run). No torch.

The steps of a run with --max-steps are known; otherwise they come from the size of the largest
training file (rows counted, not read: skipped rows, augmented copies and masked-LM text make the
real number differ a little, hence "about").
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from .spec import SweepSpec, _extremes
from .study import RUNS, run_dir_of


def count_rows(path: Path) -> int | None:
    """Data rows of a task file (lines, less the header of a delimited one); None when unreadable."""
    from ..tasks.files import file_format

    try:
        with open(path, "rb") as fh:
            lines = sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
    except OSError:
        return None
    return max(0, lines - (0 if file_format(Path(path)) == "jsonl" else 1))


def steps_per_run(cfg, rows=count_rows) -> tuple[int | None, bool]:
    """(steps a run of `cfg` trains, whether that is exact); (None, False) when the data cannot tell."""
    if cfg.max_steps:
        return cfg.max_steps + (cfg.head_steps or 0), not cfg.mlm_text or cfg.head_steps is not None
    from ..tasks.files import task_path
    from ..tasks import TASKS

    paths = [task_path(cfg.data_dir, TASKS[t], "train", cfg.files) for t in cfg.builtin_tasks()]
    if cfg.task or cfg.tasks_file:
        from ..tasks.declared import declared_entries

        entries = declared_entries(cfg.task, cfg.tasks_file)
        if any(e.get("dataset") for e in entries):  # rows of a dataset's split: not counted from a file
            return None, False
        paths += [Path(e["train"]) for e in entries]
    counts = [rows(p) for p in paths if p is not None]
    if not counts or None in counts:
        return None, False
    per_epoch = cfg.steps_per_epoch or max(1, math.ceil(max(counts) / cfg.batch_size / cfg.grad_accum))
    return max(1, int(round(cfg.epochs * per_epoch))), False


# Options that change which files a run reads.
DATA_OPTIONS = {"data_dir", "files", "tasks", "task", "text_column", "text_pair_column", "label_column", "tasks_file",
                "mlm_text", "mlm_only", "augment"}


@dataclass(frozen=True)
class PlannedRun:
    params: dict
    seed: int
    dir: Path
    state: str  # "finished", "stopped at step 40", "not started", ...
    done: bool


class SweepPlan:
    """The runs of `spec` in the sweep directory `out`, and how far an earlier command got."""

    def __init__(self, spec: SweepSpec, out: Path):
        self.spec, self.out = spec, Path(out)
        self.points = spec.grid_points() if spec.fixed else None

    @property
    def configurations(self) -> int:
        return len(self.points) if self.points is not None else self.spec.trials

    @property
    def runs(self) -> int:
        return self.configurations * self.spec.seeds

    def steps(self) -> str:
        """The steps per run: '300 steps each', 'about 4,450 steps each', 'about 1,100 to 4,450 steps each'."""
        spec = self.spec
        samples = self.points if self.points is not None else [_extremes(spec.search, 0), _extremes(spec.search, 1)]
        found = [steps_per_run(spec.config(p, spec.first_seed, "sweep")) for p in samples[:200]]
        known = [n for n, _ in found if n is not None]
        if not known:
            return "steps set by the data"
        exact = all(e for _, e in found) and len(known) == len(found)
        lo, hi = min(known), max(known)
        span = f"{lo:,}" if lo == hi else f"{lo:,} to {hi:,}"
        return f"{'' if exact else 'about '}{span} steps each"

    def planned(self) -> list[PlannedRun]:
        """Every run of a grid or of rows, with its state now (a search's configurations are drawn as it goes)."""
        from ..runs.rundir import holds_run
        from ..runs.catalog import run_info
        from ..runs.status import Status

        out = []
        root = self.out / RUNS
        present = {p.name for p in root.iterdir()} if root.is_dir() else set()  # one listing, not a look per run
        for params in self.points or []:
            for seed in self.spec.seed_list():
                run = run_dir_of(self.out, params, seed)
                if run.name not in present or not holds_run(run):
                    out.append(PlannedRun(params, seed, run, "not started", False))
                    continue
                info = run_info(run)
                status = Status.of(info["status"])
                state = str(status) if status.final else f"{status} at step {info['step']} of {info['total_steps']}"
                out.append(PlannedRun(params, seed, run, state, status.final))
        return out

    def check_data(self) -> None:
        """The files every configuration reads are there, as `bertmtl train` checks them before anything
        slow: a data directory or a task file swept to a typo is found now, not after the configurations
        before it have trained (each distinct set of files once)."""
        from ..errors import UserError
        from ..configuration.train_config import check_data_files
        from .spec import _search_samples

        spec, seen = self.spec, set()
        samples = self.points if self.points is not None else _search_samples(spec.search)
        if not spec.rows and not DATA_OPTIONS & set(spec.swept):
            samples = samples[:1]  # every configuration reads the same files
        for params in samples:
            cfg = spec.config(params, spec.first_seed, "sweep")
            key = (cfg.data_dir, json.dumps(cfg.files, sort_keys=True), tuple(cfg.tasks), tuple(cfg.mlm_text))
            if key in seen:
                continue
            seen.add(key)
            try:
                check_data_files(cfg)
            except UserError as e:
                which = f"the configuration {params}" if len(self.points or [None]) > 1 or spec.search else "its runs"
                raise UserError(f"sweep {spec.name}: {which}: {e.message}") from None

    def summary(self) -> str:
        """One line: what the sweep trains, and what is left of it."""
        spec = self.spec
        what = (f"{self.configurations:,} configuration{'s' * (self.configurations != 1)}" if self.points is not None
                else f"a search of {spec.trials:,} configuration{'s' * (spec.trials != 1)}")
        line = (f"sweep {spec.name}: {what} x {spec.seeds:,} seed{'s' * (spec.seeds != 1)} = {self.runs:,} "
                f"run{'s' * (self.runs != 1)}, {self.steps()}")
        if self.points is not None:
            runs = self.planned()
            done = sum(r.done for r in runs)
            begun = sum(not r.done and r.state != "not started" for r in runs)
            if done or begun:
                line += f"; {done:,} done" + (f", {begun:,} to resume" if begun else "") + \
                        f", {len(runs) - done - begun:,} to start"
        return line

    def listing(self) -> list[str]:
        """`--dry-run`: every run, its configuration, seed, directory and state."""
        if self.points is None:
            first = f"the baseline {self.spec.baseline}, then " if self.spec.baseline else ""
            return [f"{first}configurations drawn by the {self.spec.sampler} sampler from "
                    + ", ".join(f"{k} {next(iter(d))} {next(iter(d.values()))}" for k, d in self.spec.search.items()),
                    f"each with seeds {self.spec.seed_list()[0]}..{self.spec.seed_list()[-1]}, in {self.out / 'runs'}"]
        lines = []
        for r in self.planned():
            name = ", ".join(f"{k}={v}" for k, v in r.params.items())
            lines.append(f"{name}  seed {r.seed}  {r.dir}  ({r.state})")
        return lines


__all__ = ["SweepPlan", "steps_per_run", "count_rows"]
