"""A line-plot widget drawn with braille characters: several series against step, any size.

Each terminal cell holds a 2x4 grid of braille dots, so a 40x8 plot has 80x32 points of
resolution. The y axis shows max / middle / min, the x axis the step range, and the last row
a legend in the series' colours.
"""

from __future__ import annotations

import math

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

Series = dict[str, list[tuple[float, float]]]

BRAILLE_BASE = 0x2800
# Bit of each dot in a braille cell, by (column, row) inside the cell.
DOT_BITS = {(0, 0): 0x01, (0, 1): 0x02, (0, 2): 0x04, (0, 3): 0x40,
            (1, 0): 0x08, (1, 1): 0x10, (1, 2): 0x20, (1, 3): 0x80}
AXIS_STYLE = "dim"


def format_tick(value: float) -> str:
    """A short axis label: 3 significant digits, no trailing noise."""
    if value == 0:
        return "0"
    if abs(value) >= 1e4 or abs(value) < 1e-3:
        return f"{value:.1e}"
    return f"{value:.3g}"


def _line(x0: int, y0: int, x1: int, y1: int):
    """Dots of a straight segment (Bresenham), both ends included."""
    dx, dy = abs(x1 - x0), -abs(y1 - y0)
    sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
    err = dx + dy
    while True:
        yield x0, y0
        if x0 == x1 and y0 == y1:
            return
        e2 = 2 * err
        if e2 >= dy:
            err += dy
            x0 += sx
        if e2 <= dx:
            err += dx
            y0 += sy


def _dot_path(points: list[tuple[float, float]], to_x, to_y):
    """Dots of the polyline through `points`, drawn one dot column at a time.

    Points that fall in the same column become one vertical span (their min to max), joined to
    the neighbouring columns: the same picture as drawing every segment, at the cost of one
    pass over the points however long the run.
    """
    columns: list[list[int]] = []  # [dx, first_dy, min_dy, max_dy, last_dy]
    for x, y in points:
        if not (math.isfinite(x) and math.isfinite(y)):
            continue
        dx, dy = to_x(x), to_y(y)
        if columns and columns[-1][0] == dx:
            col = columns[-1]
            col[2], col[3], col[4] = min(col[2], dy), max(col[3], dy), dy
        else:
            columns.append([dx, dy, dy, dy, dy])
    previous = None
    for dx, first, low, high, last in columns:
        if previous is not None:
            yield from _line(previous[0], previous[1], dx, first)
        for dy in range(low, high + 1):
            yield dx, dy
        previous = (dx, last)


def plot_lines(series: Series, colors: dict[str, str], width: int, height: int, labels: dict[str, str] | None = None,
               x_label: str = "step", empty: str = "no data yet") -> list[Text]:
    """The plot as `height` lines of `width` cells (pure function: the widget only calls it)."""
    labels = labels or {}
    names = [n for n in series if any(math.isfinite(y) for _, y in series[n])]
    legend = Text(no_wrap=True, overflow="ellipsis")
    for name in (names or list(series)):
        legend.append("━ ", style=colors.get(name, ""))
        legend.append(labels.get(name, name) + "  ")
    if width < 12 or height < 3 or not names:
        lines = [Text() for _ in range(max(height, 0))]
        if lines:
            msg = empty if not names else "(too small)"
            lines[max(0, (height - 1) // 2)] = Text(msg.center(width)[:width], style=AXIS_STYLE)
            if height >= 3 and series:
                lines[-1] = legend
        return lines

    values = [y for n in names for _, y in series[n] if math.isfinite(y)]
    xs = [x for n in names for x, y in series[n] if math.isfinite(y)]
    y_min, y_max = min(values), max(values)
    if y_max - y_min < 1e-12:  # a flat line sits in the middle
        pad = abs(y_max) * 0.1 or 1.0
        y_min, y_max = y_min - pad, y_max + pad
    x_min, x_max = min(xs), max(xs)
    x_span = (x_max - x_min) or 1.0

    plot_h = height - 2  # one row for the x axis, one for the legend
    ticks = {0: format_tick(y_max), plot_h - 1: format_tick(y_min)}
    if plot_h >= 5:
        ticks[(plot_h - 1) // 2] = format_tick(y_max - (y_max - y_min) * ((plot_h - 1) // 2) / (plot_h - 1))
    gutter = max(len(t) for t in ticks.values()) + 1
    plot_w = width - gutter - 1
    if plot_w < 2:
        return [Text("(too small)")] + [Text() for _ in range(height - 1)]
    dots_w, dots_h = plot_w * 2, plot_h * 4

    def to_x(x: float) -> int:
        return round((x - x_min) / x_span * (dots_w - 1))

    def to_y(y: float) -> int:
        return round((y_max - y) / (y_max - y_min) * (dots_h - 1))

    bits = [[0] * plot_w for _ in range(plot_h)]
    owner: list[list[str | None]] = [[None] * plot_w for _ in range(plot_h)]
    for name in names:
        for dx, dy in _dot_path(series[name], to_x, to_y):
            row, col = dy // 4, dx // 2
            bits[row][col] |= DOT_BITS[(dx % 2, dy % 4)]
            owner[row][col] = name  # where lines cross, the later series shows its colour

    lines = []
    for row in range(plot_h):
        line = Text(no_wrap=True)
        tick = ticks.get(row)
        line.append((tick or "").rjust(gutter - 1) + " ", style=AXIS_STYLE)
        line.append("┤" if tick else "│", style=AXIS_STYLE)
        for col in range(plot_w):
            b = bits[row][col]
            line.append(chr(BRAILLE_BASE + b) if b else " ", style=colors.get(owner[row][col], "") if b else "")
        lines.append(line)

    left, right, mid = format_tick(x_min), format_tick(x_max), f" {x_label} "
    fill = plot_w - len(left) - len(right)
    axis = Text(" " * gutter + "└", style=AXIS_STYLE, no_wrap=True)
    if fill >= len(mid) + 2:
        before = (fill - len(mid)) // 2
        axis.append(left + "─" * before + mid + "─" * (fill - len(mid) - before) + right, style=AXIS_STYLE)
    elif fill >= 1:
        axis.append(left + "─" * fill + right, style=AXIS_STYLE)
    else:
        axis.append("─" * plot_w, style=AXIS_STYLE)
    lines.append(axis)
    legend.truncate(width, overflow="ellipsis")
    lines.append(legend)
    return lines


class LinePlot(Widget):
    """Named series drawn as coloured lines; call `set_series` when points arrive."""

    # Bumped whenever the points change: the reactive is what makes Textual redraw the plot.
    revision: reactive[int] = reactive(0)

    def __init__(self, colors: dict[str, str], labels: dict[str, str] | None = None, empty: str = "no data yet",
                 *, id: str | None = None, classes: str | None = None):
        super().__init__(id=id, classes=classes)
        self.series_colors = colors
        self.series_labels = labels or {}
        self.empty = empty
        self.series: Series = {}

    def set_series(self, series: Series) -> None:
        """Show these series (name -> [(step, value)]), redrawing the plot."""
        self.series = {name: list(points) for name, points in series.items()}
        self.revision += 1

    def set_empty(self, message: str) -> None:
        """The text shown while there is nothing to draw."""
        self.empty = message
        self.refresh()

    def render(self) -> Text:
        size = self.content_size
        lines = plot_lines(self.series, self.series_colors, size.width, size.height, self.series_labels,
                           empty=self.empty)
        return Text("\n").join(lines)
