"""The Conflicts pane: how much the tasks' gradients fight, live (mtl/telemetry.py's records).

A task x task heat map of the last log record's gradient cosines (red where they conflict,
green where they agree), each task's gradient norm and the combiner's weight beside it; the
cosines of every pair over the run as curves; and how far the combiner moved the update from
the plain sum.
"""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Static

from ..sweep.pictures import cosine_fill, cosine_scale, cosine_text
from ..runs.state import RunState
from .lineplot import LinePlot

PAIR_COLORS = ("magenta", "cyan", "yellow", "green", "red", "blue", "bright_magenta", "bright_cyan",
               "bright_yellow", "bright_green")


def cosine_style(c: float, scale: float = 1.0) -> str:
    """A cell's background: red for conflict (-scale), dark for orthogonal (0), green for agreement."""
    return f"white on {cosine_fill(c, scale)}"


def heat_map(last: dict, tasks: list[str]) -> Table:
    """The cosine matrix of one record, with each task's gradient norm and weight (and its loss
    weight under --loss-weighting)."""
    table = Table(box=None, pad_edge=False, show_edge=False, padding=(0, 1))
    table.add_column("")
    for t in tasks:
        table.add_column(t, justify="center")
    table.add_column("|g|", justify="right", style="dim")
    table.add_column("weight", justify="right")
    loss_weights = last.get("loss_weight")
    if loss_weights:
        table.add_column("loss w", justify="right")
    cos = last.get("cos") or {}
    scale = cosine_scale(cos.values())  # real runs' cosines are hundredths: colours and digits to fit
    for i, a in enumerate(tasks):
        cells = []
        for j, b in enumerate(tasks):
            if i == j:
                cells.append(Text("  ·  ", style="dim"))
                continue
            c = cos.get(f"{a}-{b}", cos.get(f"{b}-{a}"))
            cells.append(Text(cosine_text(c, scale), style=cosine_style(c, scale)) if c is not None
                         else Text("  –  ", style="dim"))
        norm = (last.get("grad_norm") or {}).get(a)
        weight = (last.get("weight") or {}).get(a)
        extra = [_number(loss_weights.get(a))] if loss_weights else []
        table.add_row(a, *cells, _number(norm), _number(weight), *extra)
    return table


def _number(v) -> str:
    return f"{v:.3g}" if v is not None else "–"


class ConflictSummary(Static):
    """The heat map and the update's distance from the plain sum."""

    can_focus = True  # the pane's place in the focus ring (Tab, c)

    def show(self, state: RunState) -> None:
        combiner = state.config.get("combine", "?")
        if not state.telemetry:
            why = ("--combine sum adds the tasks into one gradient; --telemetry on gives it per-task gradients"
                   if combiner == "sum" or state.config.get("telemetry") == "off" else
                   f"the first record comes after {state.config.get('log_every', 10)} steps (--log-every)")
            self.update(Text(f"no task-conflict statistics yet: {why}", style="dim"))
            return
        last = state.telemetry[-1]
        tasks = list((last.get("grad_norm") or last.get("loss_weight") or {}).keys())
        weighting = state.config.get("loss_weighting", "none")
        lines = Text(f"combiner {combiner}" + (f", loss weighting {weighting}" if weighting != "none" else "")
                     + f", step {last['step']}: ")
        if last.get("conflicting") is not None:
            lines.append(f"{100 * last['conflicting']:.0f}% of pairs conflicting")
        if last.get("update_cos") is not None:
            lines.append(f"; update vs plain sum: cos {last['update_cos']:.3f}, "
                         f"norm x{last.get('update_norm_ratio', float('nan')):.3f}")
        grid = Table.grid()
        grid.add_row(lines)
        grid.add_row(heat_map(last, tasks))
        self.update(grid)


class ConflictPane(Vertical):
    """The heat map on top, the pairs' cosines over the run below."""

    def compose(self) -> ComposeResult:
        with Horizontal(id="conflict-top"):
            yield ConflictSummary(id="conflict-summary")
        yield LinePlot({}, {}, "waiting for task-conflict records…", id="cos-plot")

    def on_mount(self) -> None:
        self.query_one("#conflict-summary").border_title = "gradient cosines (last log record)"
        self.query_one("#cos-plot").border_title = "gradient cosine per task pair"

    def show(self, state: RunState) -> None:
        self.query_one(ConflictSummary).show(state)
        plot = self.query_one("#cos-plot", LinePlot)
        series = state.cos_series
        plot.series_colors = {p: PAIR_COLORS[i % len(PAIR_COLORS)] for i, p in enumerate(series)}
        plot.set_series(series)
