"""The Monitor pane: loss and SMART curves, dev metrics, progress and configuration of a run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.geometry import Size
from textual.reactive import reactive
from textual.widgets import DataTable, Static

from ..runs.catalog import encoder_of
from ..tasks import BUILTIN, dev_table_metrics
from .bars import text_bar
from ..runs.state import RunState
from ..runs.status import Status
from .feed import format_duration
from .lineplot import LinePlot

# One colour per task (from its spec), the same in every plot.
TASK_COLORS = {s.name: s.color for s in BUILTIN}
TASK_LABELS = {s.name: s.tui_label for s in BUILTIN}
BAR_WIDTH = 10


def _metric(value) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "–"


def _epochs(value: float) -> str:
    """An epoch count as people read it: 0.09, 2.00, 12.5."""
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


@dataclass(frozen=True)
class Progress:
    """What the status line shows; frozen so an unchanged value does not redraw."""

    status: str
    step: int
    total_steps: int | None
    epoch: float
    epochs: float | None
    examples_per_s: float | None
    eta: str
    fraction: float
    note: str = ""  # a second line: stopping, how to resume, why training failed
    phase: str | None = None  # "evaluating" while a running run scores dev
    warnings: int = 0  # warnings in the run's messages (the log pane has them)


# The TUI's own states beside a run's (Status): a training it stops, or one that failed to start.
STATUS_STYLES = {**{str(st): f"bold {st.style}" for st in Status}, "waiting": "dim", "starting": "bold",
                 "stopping": "bold yellow", "failed": "bold red"}


class RunStatus(Static):
    """One or two lines: state, progress bar, step, epoch, speed, ETA; then any note."""

    # layout=True: the note comes and goes, and the height follows it.
    progress: reactive[Progress | None] = reactive(None, layout=True)

    def render(self) -> Text:
        return self.status_text(self.content_size.width)

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        # The packing depends on the width: count the lines at the width being laid out, not
        # at the last rendered one (which, before the first layout, is zero).
        return len(self.status_text(width).wrap(self.app.console, max(width, 1)))

    def status_text(self, width: int) -> Text:
        """The status at a given width: parts move to the next line whole."""
        p = self.progress
        if p is None:
            return Text("waiting for metrics.jsonl…", style="dim")
        line = Text()
        status = "evaluating" if p.status == Status.RUNNING and p.phase == "evaluating" else p.status
        line.append(f"● {status}", style=STATUS_STYLES.get(p.status, "bold"))
        line.append(" ▕")
        line.append(text_bar(p.fraction, BAR_WIDTH), style="green")
        line.append(f"▏{p.fraction:4.0%}")
        total = f"/{p.total_steps:,}" if p.total_steps else ""
        epochs = f"/{_epochs(p.epochs)}" if p.epochs else ""
        speed = f"{p.examples_per_s:,.0f} ex/s" if p.examples_per_s is not None else "– ex/s"
        width = max(width, 20)
        parts = [f"step {p.step:,}{total}", f"epoch {_epochs(p.epoch)}{epochs}", speed, f"ETA {p.eta}"]
        if p.warnings:
            parts.append(f"{p.warnings} warning{'s' * (p.warnings != 1)} (l: log)")
        for part in parts:
            current = len(line.plain) - line.plain.rfind("\n") - 1
            line.append(" · " + part if current + 3 + len(part) <= width else "\n" + part)
        if p.note:
            line.append("\n" + p.note, style="yellow" if p.status != "failed" else "red")
        return line


class DevTable(DataTable):
    """Dev metrics, one row per evaluation, newest first; ★ marks the best overall so far.

    `overall` and each task's primary metric come first, so they stay in view; the other
    metrics (SST F1, Quora F1, STS rho, ...) follow and scroll sideways in a narrow pane. One
    column per metric of each of the run's tasks (the built-in three until the run's start
    record names its tasks)."""

    COLUMNS = ("", "step", "overall", *(label for _, label in dev_table_metrics(BUILTIN)))
    # Widest the table grows for many tasks, before its columns scroll.
    MAX_WIDTH = 110

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.zebra_stripes = True
        self.columns_shown = self.COLUMNS
        self.add_columns(*self.COLUMNS)

    def show(self, state: RunState) -> None:
        """Rebuild the rows from the run state (a new best moves the star, so rows change)."""
        if state.dev_columns != self.columns_shown:
            self.clear(columns=True)
            self.columns_shown = state.dev_columns
            self.add_columns(*self.columns_shown)
            # Each column holds its header or a 5-character number, plus padding and the border. A
            # narrow terminal shows the primary metrics (the stylesheet's 51 columns) and scrolls to the
            # rest; a wide one the whole table, up to MAX_WIDTH.
            width = sum(max(len(c), 5) + 2 for c in self.columns_shown) + 3
            self.styles.max_width = min(max(width, 51), self.MAX_WIDTH)
        self.clear()
        keys = [k for k, _ in state.dev_metrics]
        for e in reversed(state.evals):
            star = Text("★", style="bold yellow") if e["step"] == state.best_step else ""
            self.add_row(star, str(e["step"]), _metric(e["overall"]), *(_metric(e.get(k)) for k in keys))


CONFIG_KEYS = (  # (label, how to show it from the start record's config), most telling first
    ("tasks", lambda c: " ".join([*c.get("tasks", []), *(f.split(":")[0] for f in c.get("task") or [])])
                        + (f" + {c['tasks_file']}" if c.get("tasks_file") else "")),
    ("schedule", None),  # the run's real length: ConfigView.schedule
    ("lr", lambda c: f"{c['lr']:g} {c.get('schedule', '')}"),
    ("combine", lambda c: str(c["combine"])),
    ("smart", lambda c: " ".join(f"{t}={w:g}" for t, w in (c.get("smart_weights") or {}).items() if w)
                        if c.get("smart") else "off"),
    ("model", lambda c: Path(encoder_of(c)).name),
    ("heads", lambda c: f"{c['pooling']}, {c.get('pair_mode', '–')}, {c.get('sts_loss', '–')}"),
    ("optim", lambda c: f"{c['optimizer']}, wd {c.get('weight_decay', 0):g}"),
    ("warmup", lambda c: f"{c['warmup']:g}"),
    ("max len", lambda c: str(c["max_length"])),
    ("precision", lambda c: str(c["precision"])),
    ("seed", lambda c: str(c["seed"])),
    ("data", lambda c: str(c["data_dir"])),
)


class ConfigView(Static):
    """The run's key training options, from its start record."""

    # layout=True: the height (auto) changes with the number of rows.
    config: reactive[dict] = reactive(dict, layout=True)
    details: reactive[str] = reactive("", layout=True)  # device and examples, which are not options
    schedule: reactive[str] = reactive("", layout=True)  # steps, epochs and batch, from the start record

    @staticmethod
    def schedule_of(state: RunState) -> str:
        """The run's real length: '20 steps (0.09 epochs) · batch 64 per task' (not --epochs' default
        when --max-steps set it), with gradient accumulation and --stop-at-step where used."""
        c = state.config
        batch = f"{c['batch_size']}" + (f" x {c['grad_accum']}" if c.get("grad_accum", 1) > 1 else "")
        if not state.total_steps:
            return f"{c['epochs']:g} epochs · batch {batch} per task"
        length = f"{state.total_steps:,} steps" + (f" ({_epochs(state.epochs)} epochs)" if state.epochs else "")
        if c.get("stop_at_step") and c["stop_at_step"] < state.total_steps:
            length += f", stopping at {c['stop_at_step']:,}"
        return f"{length} · batch {batch} per task"

    def render(self) -> Table | Text:
        if not self.config:
            return Text("no start record yet", style="dim")
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="dim", no_wrap=True)
        grid.add_column(overflow="fold")
        for label, show in CONFIG_KEYS:
            try:
                grid.add_row(label, show(self.config) if show is not None else self.schedule)
            except (TypeError, ValueError, KeyError):
                continue  # an option this run's record does not have (an older or newer bertmtl)
        if self.details:
            grid.add_row("run", self.details)
        return grid


DEV_COLORS = {"overall": "white"}


class MonitorPane(Vertical):
    """Progress on top; the curves (training loss, dev scores, learning rate, SMART terms when on);
    then the dev table beside the configuration. Narrow terminals leave out the learning rate
    (the stylesheet's width classes)."""

    def compose(self) -> ComposeResult:
        yield RunStatus(id="run-status")
        with Horizontal(id="plots"):
            yield LinePlot(TASK_COLORS, TASK_LABELS, "waiting for training records…", id="loss-plot")
            yield LinePlot(DEV_COLORS, {"overall": "overall"}, "after the first dev evaluation", id="dev-plot")
            yield LinePlot({"lr": "cyan"}, {"lr": "learning rate"}, "waiting for training records…", id="lr-plot")
            yield LinePlot(TASK_COLORS, TASK_LABELS, "waiting for training records…", id="smart-plot")
        with Horizontal(id="lower"):
            yield DevTable(id="dev-table")
            with VerticalScroll(id="config-box"):
                yield ConfigView(id="config")

    def on_mount(self) -> None:
        self.query_one("#loss-plot").border_title = "training loss"
        self.query_one("#dev-plot").border_title = "dev score"
        self.query_one("#lr-plot").border_title = "learning rate"
        self.query_one("#smart-plot").border_title = "SMART terms"
        self.query_one("#dev-table").border_title = "dev metrics (★ best)"
        self.query_one("#config-box").border_title = "configuration"

    def show(self, state: RunState, status: str | None = None, note: str = "", evals_changed: bool = True,
             warnings: int = 0) -> None:
        """Redraw from the run state; `status`/`note` override what the records say (stopping, failed)."""
        loss = self.query_one("#loss-plot", LinePlot)
        smart = self.query_one("#smart-plot", LinePlot)
        dev = self.query_one("#dev-plot", LinePlot)
        lr = self.query_one("#lr-plot", LinePlot)
        for plot in (loss, smart):  # one curve per task of the run, in its colour
            plot.series_colors, plot.series_labels = state.colors, state.labels
        dev.series_colors = {**{s.primary_metric: s.color for s in state.specs}, **DEV_COLORS}
        dev.series_labels = {**dict(state.dev_metrics), "overall": "overall"}
        if state.config.get("log_every") and state.status == Status.RUNNING:
            # Otherwise slow first steps look like a hung run.
            waiting = f"the first point comes after {state.config['log_every']} steps (--log-every)"
            for plot in (loss, smart, lr):
                plot.set_empty(waiting)
        loss.set_series(state.loss)
        lr.set_series({"lr": state.lr_series})
        if evals_changed:
            dev.set_series(state.dev_series)
        weights = state.config.get("smart_weights") or {}
        # SMART off: its plot goes (the room is the other curves'), instead of a pane saying so.
        self.set_class(bool(state.config) and not state.config.get("smart", True), "-smart-off")
        # A task with weight 0 has no SMART term; its flat zero line would only hide the others.
        smart.set_series({t: pts for t, pts in state.smart.items() if weights.get(t, 1) > 0})
        if evals_changed:
            self.query_one(DevTable).show(state)
        config = self.query_one(ConfigView)
        config.config = state.config
        if state.config:
            try:
                config.schedule = ConfigView.schedule_of(state)
            except (TypeError, ValueError, KeyError):
                pass
        if state.device:
            examples = " ".join(f"{t}={n:,}" for t, n in state.examples.items())
            world = f" ×{state.world_size}" if state.world_size and state.world_size > 1 else ""
            config.details = f"{state.device}{world}; train examples {examples}"
        self.show_progress(state, status, note, warnings)

    def show_progress(self, state: RunState, status: str | None = None, note: str = "", warnings: int = 0) -> None:
        """The status line alone (the step bar moves between records: cheap, twice a second)."""
        if state.records == 0 and status is None:
            self.query_one(RunStatus).progress = None
            return
        step = state.live_step
        epoch = step / state.steps_per_epoch if state.steps_per_epoch else state.epoch
        self.query_one(RunStatus).progress = Progress(
            status=status or state.status, step=step, total_steps=state.total_steps, epoch=epoch,
            epochs=state.epochs, examples_per_s=state.examples_per_s,
            eta=format_duration(state.eta_seconds) if status is None else "–",  # crashed, stopping: no ETA
            fraction=state.fraction, note=note, phase=state.phase, warnings=warnings)
