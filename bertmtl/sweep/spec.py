"""A sweep's spec file (YAML or JSON), read and checked before anything trains. No torch.

    name: lr-and-combiner          # the study's name [default: the file's stem]
    base: {max_steps: 300, batch_size: 16}   # train options every trial shares (train's names)
    grid: {combine: [sum, pcgrad], lr: [5e-5, 1e-4]}      # every combination, or
    rows: {sum: {combine: sum}, pcgrad-smart: {combine: pcgrad, smart: true}}   # named fixed
                                   # configurations (bertmtl ablate's tables are these), or
    search: {lr: {log_uniform: [1e-5, 1e-3]}, dropout: {uniform: [0, 0.3]},
             batch_size: {int: [8, 32]}, combine: {choice: [sum, pcgrad]}}
    trials: 20                     # configurations a search tries
    sampler: tpe                   # tpe (default) or random, for a search
    seeds: 3                       # every configuration trains with seeds seed, seed + 1, ...
    baseline: {combine: sum}       # the configuration the others are compared with ({row: sum})
    metric: overall                # what the search maximises and the report leads with
    prune: {startup_trials: 2, warmup_steps: 0}   # stop lagging trials early (Optuna's median
                                   # pruner on each dev evaluation); `prune: true` for these defaults

A configuration is the values of the swept options; every one of them, merged over `base`, is
a TrainConfig checked like a command line (configuration/options.py), so a typo fails here, not an hour in.
With `rows`, the one swept value is the row's name (`row`), and each row sets its own options.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import UserError
from ..numbers import number_problem
from ..configuration.options import SEED_MAX, coerce
from ..configuration.train_config import TrainConfig

DISTRIBUTIONS = ("log_uniform", "uniform", "int", "choice")
SAMPLERS = ("tpe", "random")
KEYS = ("name", "base", "grid", "rows", "search", "trials", "sampler", "seeds", "baseline", "metric", "prune", "report")
# What a spec's `report` section may add to the report (sweep/report.py): a title, titles of its
# configurations (a row's name, or a grid point's key), telemetry columns (means over each run's
# log records, then over seeds), the final loss weights, reference values beside the metrics
# (e.g. a paper's, under `label`), notes, and the task-conflict picture of the first run.
REPORT_KEYS = ("title", "titles", "columns", "loss_weights", "reference", "notes", "picture")
REPORT_COLUMNS = {"conflicting": "Conflicting pairs", "update_cos": "cos(update, sum)",
                  "update_norm_ratio": "|update| / |sum|"}
PRUNE_DEFAULTS = {"startup_trials": 2, "warmup_steps": 0}
ROW = "row"  # the one swept parameter of a spec with rows: the row's name
# Options a sweep decides itself: where each run goes, and its seed (base's seed is the first);
# every run trains to its end (a --stop-at-step run would pause, never finish, and be resumed forever).
OWN = ("out", "seed", "resume", "runs_dir", "stop_at_step")
# A spec's size, bounded before anything is enumerated: a typo (seeds: 100000000000, a grid of a
# thousand values per option) is a message, not minutes of silence or gigabytes of memory.
MAX_SEEDS = 1_000
MAX_CONFIGURATIONS = 10_000
MAX_RUNS = 10_000  # configurations x seeds: every one a training run


@dataclass
class SweepSpec:
    name: str
    base: dict = field(default_factory=dict)
    grid: dict | None = None
    rows: dict | None = None  # row name -> its train options (named fixed configurations)
    search: dict | None = None
    trials: int | None = None
    sampler: str = "tpe"
    seeds: int = 1
    baseline: dict | None = None
    metric: str = "overall"
    first_seed: int = 42
    prune: dict | None = None  # MedianPruner's settings (PRUNE_DEFAULTS' keys); None: no pruning
    report: dict | None = None  # how the report shows it (REPORT_KEYS); not part of what it trains

    @property
    def swept(self) -> list[str]:
        return [ROW] if self.rows else list(self.grid or self.search or {})

    @property
    def fixed(self) -> bool:
        """Whether every configuration is known in advance (a grid, rows) and queued up front."""
        return bool(self.grid or self.rows)

    def seed_list(self) -> list[int]:
        return [self.first_seed + i for i in range(self.seeds)]

    def grid_points(self) -> list[dict]:
        """Every configuration of a grid (every combination of its values) or of rows, in the spec's order."""
        if self.rows:
            return [{ROW: name} for name in self.rows]
        names = list(self.grid)
        return [dict(zip(names, values)) for values in itertools.product(*(self.grid[n] for n in names))]

    def config(self, params: dict, seed: int, out: Path | str) -> TrainConfig:
        """The TrainConfig of one configuration and seed (checked)."""
        options = self.rows[params[ROW]] if self.rows else params
        cfg = TrainConfig.from_dict({**_defaults(), **self.base, **options, "seed": seed, "out": str(out)})
        # base's options of a method (cagrad_c) are for the points that choose it; a point's own are checked
        cfg.reset_unselected(keep=options)
        cfg.validate()
        return cfg

    def to_dict(self) -> dict:
        return asdict(self)

    def training_dict(self) -> dict:
        """What the sweep trains: the spec without its report section (a rerun may change that)."""
        return {k: v for k, v in self.to_dict().items() if k != "report"}

    @classmethod
    def from_dict(cls, d: dict) -> "SweepSpec":
        return cls(**d)


_DEFAULTS: dict | None = None


def _defaults() -> dict:
    """Every train option at its default (a complete configuration: TrainConfig.upgrade reads it as
    today's), made once: a grid of thousands of points is checked point by point."""
    global _DEFAULTS
    if _DEFAULTS is None:
        _DEFAULTS = TrainConfig().to_dict()
    return {k: v.copy() if isinstance(v, (list, dict)) else v for k, v in _DEFAULTS.items()}


def config_key(params: dict) -> str:
    """A configuration's name: its values, readable and safe as a directory name, and a short hash
    of them (two configurations whose readable parts coincide still differ)."""
    canon = json.dumps(params, sort_keys=True, default=str)
    text = "_".join(f"{k}={v}" for k, v in params.items())
    text = re.sub(r"[^A-Za-z0-9=._+-]+", "-", text)[:60].strip("-") or "base"
    return f"{text}-{hashlib.sha1(canon.encode()).hexdigest()[:8]}"


def _field(name: str, where: str, among=()):
    """(field name, field) of a spec key spelt as --config takes it; `among`: the mapping it comes from,
    where no other key may name the same option."""
    fields, key = TrainConfig.fields(), TrainConfig.field_name(name)
    TrainConfig.check_spellings([k for k in among if TrainConfig.field_name(k) == key], where)
    if key not in fields:
        raise UserError(f"{where}: {name} is not an option of bertmtl train (`bertmtl train --print-config` lists them)")
    if key in OWN:
        raise UserError(f"{where}: {name} is set by the sweep itself (each trial's run directory and seeds; every run "
                        f"trains to its end)")
    return key, fields[key]


def _coerce(name: str, value, where: str, among=()):
    key, f = _field(name, where, among)
    try:
        return key, coerce(f, value)
    except ValueError as e:
        raise UserError(f"{where}: {name}: {e}") from None


def _distribution(name: str, d, where: str) -> dict:
    if not isinstance(d, dict) or len(d) != 1 or next(iter(d)) not in DISTRIBUTIONS:
        raise UserError(f"{where}: {name} needs one of {', '.join(DISTRIBUTIONS)}, e.g. {{log_uniform: [1e-5, 1e-3]}}")
    kind, args = next(iter(d.items()))
    if not isinstance(args, list) or not args:
        raise UserError(f"{where}: {name}: {kind} takes a list ({'[low, high]' if kind != 'choice' else 'of values'})")
    if kind == "choice":
        return {"choice": [_coerce(name, v, where)[1] for v in args]}
    if len(args) != 2:
        raise UserError(f"{where}: {name}: {kind} takes [low, high]")
    try:
        lo, hi = (int(a) if kind == "int" else float(a) for a in args)
    except (TypeError, ValueError):
        raise UserError(f"{where}: {name}: {kind} bounds must be numbers, not {args!r}") from None
    if not lo < hi or (kind == "log_uniform" and lo <= 0):
        raise UserError(f"{where}: {name}: {kind} needs low < high" + (" and low > 0" if kind == "log_uniform" else ""))
    return {kind: [lo, hi]}


def _mapping(data: dict, key: str, error: str) -> dict:
    """data[key] as a non-empty mapping, else a UserError saying `error`."""
    value = data[key]
    if not isinstance(value, dict) or not value:
        raise UserError(error)
    return value


def _whole(value, minimum: int, error: str) -> int:
    """`value` as a whole number >= minimum (YAML's true/false are not numbers), else a UserError."""
    if number_problem(value, min=minimum, whole=True):
        raise UserError(error)
    return value


def read_spec(path: str | Path) -> SweepSpec:
    """The spec in `path`, every configuration it can produce checked; UserError naming what is wrong."""
    path = Path(path)
    where = f"sweep spec {path}"
    from ..configuration.file import read_file

    data = read_file(path, where)
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a mapping with base and grid or search")
    if unknown := [str(k) for k in data if k not in KEYS]:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)}; a spec has {', '.join(KEYS)}")
    if (modes := [k for k in ("grid", "rows", "search") if k in data]) and len(modes) > 1:
        raise UserError(f"{where}: give one of grid (every combination), rows (named configurations) or search "
                        f"(distributions), not {' and '.join(modes)}")
    if not modes:
        raise UserError(f"{where}: give grid (every combination), rows (named configurations) or search (distributions)")
    base = data.get("base") or {}
    if not isinstance(base, dict):
        raise UserError(f"{where}: base must be a mapping of train options")
    first_seed = _whole(base.pop("seed", TrainConfig().seed), 0, f"{where}: base: seed must be a whole number >= 0 (the first seed)")
    base = dict(_coerce(k, v, f"{where}: base", base) for k, v in base.items())
    name = str(data.get("name") or path.stem)
    if not name.isprintable() or not name.strip():
        raise UserError(f"{where}: name must be printable text, not {name!r}")
    spec = SweepSpec(name=name, base=base, first_seed=first_seed)
    if "grid" in data:
        spec.grid = {}
        grid = _mapping(data, "grid", f"{where}: grid must map options to lists of values")
        for name, values in grid.items():
            if not isinstance(values, list) or not values:
                raise UserError(f"{where}: grid: {name} needs a list of values")
        size = math.prod(len(v) for v in grid.values())  # before a value is read: a typo's size is said at once
        if size > MAX_CONFIGURATIONS:
            raise UserError(f"{where}: the grid has {size:,} configurations ("
                            + " x ".join(f"{len(v):,} {k}" for k, v in grid.items())
                            + f"); a sweep trains at most {MAX_CONFIGURATIONS:,}: narrow it, or search with trials: N")
        for name, values in grid.items():
            key = _field(name, f"{where}: grid", grid)[0]
            spec.grid[key] = [_coerce(name, v, f"{where}: grid")[1] for v in values]
            if len(set(map(_canonical, spec.grid[key]))) < len(spec.grid[key]):
                twice = next(v for v in spec.grid[key] if spec.grid[key].count(v) > 1)
                raise UserError(f"{where}: grid: {name} lists {twice!r} twice (each value is one configuration)")
    elif "rows" in data:
        spec.rows = {}
        for name, options in _mapping(data, "rows", f"{where}: rows must map row names to mappings of train options").items():
            if not isinstance(options, dict):
                raise UserError(f"{where}: rows: {name} needs a mapping of train options ({{}} for base alone)")
            spec.rows[str(name)] = dict(_coerce(k, v, f"{where}: rows: {name}", options)
                                        for k, v in options.items())
        if len(spec.rows) > MAX_CONFIGURATIONS:
            raise UserError(f"{where}: {len(spec.rows):,} rows; a sweep trains at most {MAX_CONFIGURATIONS:,}")
    if "trials" in data and "search" not in data:
        raise UserError(f"{where}: trials is for a search; a grid or rows run every configuration")
    if "search" in data:
        search = _mapping(data, "search", f"{where}: search must map options to distributions")
        spec.search = {_field(n, f"{where}: search", search)[0]: _distribution(n, d, f"{where}: search")
                       for n, d in search.items()}
        spec.trials = _whole(data.get("trials"), 1, f"{where}: a search needs trials: N (N >= 1)")
        if spec.trials > MAX_CONFIGURATIONS:
            raise UserError(f"{where}: trials: {spec.trials:,}; a sweep trains at most {MAX_CONFIGURATIONS:,} "
                            f"configurations")
        spec.sampler = str(data.get("sampler", "tpe"))
        if spec.sampler not in SAMPLERS:
            raise UserError(f"{where}: sampler must be one of {', '.join(SAMPLERS)}")
    spec.seeds = _whole(data.get("seeds", 1), 1, f"{where}: seeds must be a whole number >= 1")
    if spec.seeds > MAX_SEEDS:
        raise UserError(f"{where}: seeds: {spec.seeds:,}; at most {MAX_SEEDS:,} per configuration (each seed is a "
                        f"whole training run)")
    if first_seed + spec.seeds - 1 > SEED_MAX:
        raise UserError(f"{where}: seeds {first_seed} to {first_seed + spec.seeds - 1} pass the largest seed, {SEED_MAX} "
                        f"(base's seed is the first)")
    configurations = len(spec.grid_points()) if spec.fixed else spec.trials
    if configurations * spec.seeds > MAX_RUNS:
        raise UserError(f"{where}: {configurations:,} configurations x {spec.seeds:,} seeds = "
                        f"{configurations * spec.seeds:,} runs; a sweep trains at most {MAX_RUNS:,}")
    if not isinstance(data.get("metric", "overall"), str):
        raise UserError(f"{where}: metric must be the name of a dev metric, e.g. overall or sst_acc")
    spec.metric = data.get("metric", "overall")
    prune = data.get("prune")
    if prune is True:
        spec.prune = dict(PRUNE_DEFAULTS)
    elif isinstance(prune, dict):
        if stray := [str(k) for k in prune if k not in PRUNE_DEFAULTS]:
            raise UserError(f"{where}: prune: unknown key(s) {', '.join(stray)}; it takes {', '.join(PRUNE_DEFAULTS)}")
        for v in prune.values():
            _whole(v, 0, f"{where}: prune: startup_trials and warmup_steps are whole numbers >= 0")
        spec.prune = {**PRUNE_DEFAULTS, **prune}
    elif prune not in (None, False):
        raise UserError(f"{where}: prune is true, false or {{startup_trials: N, warmup_steps: S}}")
    if data.get("baseline") is not None:
        b = data["baseline"]
        if not isinstance(b, dict):
            raise UserError(f"{where}: baseline must map swept options to values")
        spec.baseline = ({ROW: str(b[ROW])} if spec.rows and set(b) == {ROW}
                         else dict(_coerce(k, v, f"{where}: baseline") for k, v in b.items()))
        if stray := [k for k in spec.baseline if k not in spec.swept]:
            raise UserError(f"{where}: baseline: {', '.join(stray)} not swept (the swept options: "
                            f"{', '.join(spec.swept)})")
        if spec.fixed and not any(all(p[k] == v for k, v in spec.baseline.items()) for p in spec.grid_points()):
            raise UserError(f"{where}: baseline {spec.baseline} is not " + (
                f"one of the rows ({', '.join(spec.rows)})" if spec.rows else "a point of the grid"))
        if spec.search and set(spec.baseline) != set(spec.search):
            raise UserError(f"{where}: a search's baseline gives every searched option a value "
                            f"({', '.join(spec.search)})")
    # Every configuration the grid can make (a search: its bounds and choices) must be a valid run.
    for params in spec.grid_points() if spec.fixed else [_extremes(spec.search, i) for i in (0, 1)]:
        try:
            spec.config(params, spec.first_seed, "sweep")
        except UserError as e:
            raise UserError(f"{where}: the configuration {params}: {e.format_message()}") from None
    if spec.baseline and spec.search:
        spec.config(spec.baseline, spec.first_seed, "sweep")
    if data.get("report") is not None:
        spec.report = _report_section(data["report"], f"{where}: report", list(spec.rows or ()))
    samples = spec.grid_points() if spec.fixed else _search_samples(spec.search)
    _check_metric(spec, samples, where)
    _unused_base_options(spec, samples, where)
    return spec


def _named_rows(entries: dict, rows: list[str], where: str) -> None:
    """Titles and reference values are for named rows (a grid's configurations are named by their options)."""
    if not rows:
        raise UserError(f"{where}: only a spec with rows names its configurations (a grid's are named by their options)")
    if stray := [k for k in entries if k not in rows]:
        raise UserError(f"{where}: {', '.join(stray)} not among the rows ({', '.join(rows)})")


def _report_section(report, where: str, rows: list[str]) -> dict:
    """A spec's `report` section, checked (REPORT_KEYS); titles and reference values name `rows`."""
    if not isinstance(report, dict):
        raise UserError(f"{where}: expected a mapping with some of {', '.join(REPORT_KEYS)}")
    if stray := [str(k) for k in report if k not in REPORT_KEYS]:
        raise UserError(f"{where}: unknown key(s) {', '.join(stray)}; it takes {', '.join(REPORT_KEYS)}")

    def text(value, what):
        if not isinstance(value, str) or not value.strip():
            raise UserError(f"{where}: {what} must be text")
        return value

    out: dict = {}
    if "title" in report:
        out["title"] = text(report["title"], "title")
    if "titles" in report:
        if not isinstance(report["titles"], dict):
            raise UserError(f"{where}: titles must map configurations (row names) to titles")
        out["titles"] = {str(k): text(v, f"titles: {k}") for k, v in report["titles"].items()}
        _named_rows(out["titles"], rows, f"{where}: titles")
    if "columns" in report:
        cols = report["columns"]
        if not isinstance(cols, list) or any(c not in REPORT_COLUMNS for c in cols):
            raise UserError(f"{where}: columns is a list of {', '.join(REPORT_COLUMNS)}")
        out["columns"] = list(cols)
    for flag in ("loss_weights", "picture"):
        if flag in report:
            if not isinstance(report[flag], bool):
                raise UserError(f"{where}: {flag} is true or false")
            out[flag] = report[flag]
    if "reference" in report:
        ref = report["reference"]
        values = ref.get("values") if isinstance(ref, dict) else None
        if not isinstance(values, dict) or not all(
                isinstance(m, dict) and all(not number_problem(v) for v in m.values()) for m in values.values()):
            raise UserError(f"{where}: reference is {{label: TEXT, values: {{CONFIGURATION: {{METRIC: NUMBER}}}}}}")
        out["reference"] = {"label": text(ref.get("label", "Reference"), "reference: label"),
                            "values": {str(k): dict(v) for k, v in values.items()}}
        _named_rows(out["reference"]["values"], rows, f"{where}: reference")
    if "notes" in report:
        notes = report["notes"]
        if not isinstance(notes, list):
            raise UserError(f"{where}: notes is a list of text")
        out["notes"] = [text(n, "notes") for n in notes]
    return out


# Options that change a run's tasks, and so its dev metrics.
TASK_OPTIONS = ("tasks", "task", "text_column", "text_pair_column", "label_column", "tasks_file", "mlm_text",
                "mlm_only")


def _search_samples(search: dict) -> list[dict]:
    """Configurations of a search that between them hold every choice of every option (the others at
    their lowest values): the tasks a search may train, the methods it may choose."""
    low = _extremes(search, 0)
    samples = [low]
    for name, d in search.items():
        kind, args = next(iter(d.items()))
        if kind == "choice":
            samples += [{**low, name: v} for v in args]
    return samples


def run_metrics(cfg: TrainConfig) -> list[str]:
    """The dev metrics a new run of `cfg` scores: each of its heads' metrics, and overall."""
    from ..tasks.declared import column_flags, declared_specs

    declared = declared_specs(cfg.task, cfg.tasks_file, taken=cfg.tasks, columns=column_flags(cfg)) \
        if cfg.task or cfg.tasks_file else []
    return [*(k for s in cfg.new_run_specs(declared) for k in s.metric_keys), "overall"]


def _check_metric(spec: SweepSpec, samples: list[dict], where: str) -> None:
    """`metric` names a dev metric that every configuration's runs score (checked before any training,
    not found out after the first trial). Configurations share their tasks unless the tasks are swept."""
    swept_tasks = set(TASK_OPTIONS) & {k for p in samples for k in p} or spec.rows
    for params in samples if swept_tasks else samples[:1]:
        metrics = run_metrics(spec.config(params, spec.first_seed, "sweep"))
        if spec.metric not in metrics:
            which = f" ({params})" if swept_tasks else ""
            raise UserError(f"{where}: metric {spec.metric!r} is not a dev metric of these runs{which}; choose from "
                            f"{', '.join(metrics)}")


def _canonical(value) -> str:
    """A swept value as one key (lists and mappings are values too)."""
    return json.dumps(value, sort_keys=True, default=str)


def _unused_base_options(spec: "SweepSpec", points: list[dict], where: str) -> None:
    """A base option of a method no configuration chooses (--cagrad-c, and --combine never cagrad)
    would apply to nothing: as on a command line, an error."""
    fields = TrainConfig.fields()
    for key in spec.base:
        chooser_methods = fields[key].metadata.get("only_for")
        if not chooser_methods:
            continue
        chooser, methods = chooser_methods
        chosen = {spec.config(p, spec.first_seed, "sweep").to_dict().get(chooser) for p in points}
        if not chosen & set(methods):
            raise UserError(f"{where}: base: {key} applies to {chooser.replace('_', '-')} {' or '.join(methods)} "
                            f"only, which no configuration of this sweep chooses")


def _extremes(search: dict, end: int) -> dict:
    """A search's lowest (end 0) or highest (1) values of every option, to check them as runs."""
    out = {}
    for name, d in search.items():
        kind, args = next(iter(d.items()))
        out[name] = args[end if kind != "choice" else -end]
    return out


__all__ = ["SweepSpec", "config_key", "read_spec"]
