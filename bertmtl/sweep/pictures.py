"""Pictures of a run for reports, as SVG: text and lines a browser or GitHub draws as they are.

SVG rather than PNG: the labels are text (a PNG needs a font rasteriser, i.e. matplotlib or
Pillow, neither of which bertmtl depends on), it scales, and it is a few kilobytes of plain
text written here in one pass.
"""

from __future__ import annotations

from html import escape

from ..runs.state import RunState, conflict_summary

PAIR_COLORS = ("#c2185b", "#00838f", "#f9a825", "#2e7d32", "#d84315", "#1565c0", "#6a1b9a", "#4e342e")


NICE_SCALES = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def cosine_scale(values) -> float:
    """The smallest of NICE_SCALES that holds every |cosine|: the gradients of different tasks over
    millions of parameters are nearly orthogonal (cosines of a few hundredths), and a -1..1 scale
    would draw them all as zero."""
    top = max((abs(v) for v in values), default=0.0)
    return next((s for s in NICE_SCALES if top <= s), 1.0)


def cosine_fill(c: float, scale: float = 1.0) -> str:
    """Red for conflict (-scale), near black for orthogonal (0), green for agreement (+scale)."""
    shade = int(40 + 150 * min(1.0, abs(c) / scale))
    return f"rgb({shade},30,30)" if c < 0 else f"rgb(30,{shade},40)"


def cosine_text(c: float, scale: float) -> str:
    """A cosine with the digits its scale needs (+0.004 on a 0.01 scale, +0.42 on 1)."""
    return f"{c:+.3f}" if scale < 0.1 else f"{c:+.2f}"


def _tasks_of(pairs) -> list[str]:
    tasks: list[str] = []
    for pair in pairs:
        for t in pair.split("-", 1):
            if t not in tasks:
                tasks.append(t)
    return tasks


def conflict_svg(state: RunState, title: str = "") -> str:
    """A run's task-conflict telemetry: the mean gradient cosine of every task pair as a heat map
    (with how often the pair conflicted), and each pair's cosine per log window against step."""
    summary = conflict_summary(state.telemetry)
    series = state.cos_series
    tasks = _tasks_of(summary)
    scale = cosine_scale([c for pts in series.values() for _, c in pts])
    cell, left, top = 64, 70, 60
    heat_w = left + cell * max(len(tasks), 1) + 30
    plot_x, plot_w, plot_h = heat_w + 50, 420, 260
    width, height = plot_x + plot_w + 150, max(top + cell * len(tasks) + 70, top + plot_h + 60)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="13">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="10" y="24" font-size="16" font-weight="bold">{escape(title or "task-conflict telemetry")}</text>',
           f'<text x="{left}" y="{top - 10}">mean gradient cosine (conflict fraction)</text>']
    for i, a in enumerate(tasks):
        y = top + i * cell
        out.append(f'<text x="{left - 8}" y="{y + cell / 2 + 4}" text-anchor="end">{escape(a)}</text>')
        out.append(f'<text x="{left + i * cell + cell / 2}" y="{top + cell * len(tasks) + 18}" '
                   f'text-anchor="middle">{escape(a)}</text>')
        for j, b in enumerate(tasks):
            x = left + j * cell
            p = summary.get(f"{a}-{b}") or summary.get(f"{b}-{a}")
            if i == j or p is None:
                out.append(f'<rect x="{x}" y="{y}" width="{cell - 2}" height="{cell - 2}" fill="#eeeeee"/>')
                continue
            c = p["mean_cos"]
            out.append(f'<rect x="{x}" y="{y}" width="{cell - 2}" height="{cell - 2}" '
                       f'fill="{cosine_fill(c, scale)}"/>')
            out.append(f'<text x="{x + cell / 2 - 1}" y="{y + cell / 2}" text-anchor="middle" fill="white">'
                       f'{cosine_text(c, scale)}</text>')
            out.append(f'<text x="{x + cell / 2 - 1}" y="{y + cell / 2 + 15}" text-anchor="middle" fill="white" '
                       f'font-size="11">({p["conflict_fraction"]:.0%})</text>')
    # cosine per log window against step
    steps = [s for pts in series.values() for s, _ in pts] or [0, 1]
    s0, s1 = min(steps), max(max(steps), min(steps) + 1)

    def xy(step: float, c: float) -> str:
        return f"{plot_x + (step - s0) / (s1 - s0) * plot_w:.1f},{top + (1 - c / scale) / 2 * plot_h:.1f}"

    out.append(f'<rect x="{plot_x}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>')
    for c in (-scale, -scale / 2, 0.0, scale / 2, scale):
        y = top + (1 - c / scale) / 2 * plot_h
        dash = "" if c == 0 else ' stroke-dasharray="3,4"'
        out.append(f'<line x1="{plot_x}" y1="{y:.1f}" x2="{plot_x + plot_w}" y2="{y:.1f}" stroke="#bbb"{dash}/>')
        out.append(f'<text x="{plot_x - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{c:+.3g}</text>')
    out.append(f'<text x="{plot_x}" y="{top - 10}">gradient cosine per log window (scale ±{scale:g})</text>')
    out.append(f'<text x="{plot_x}" y="{top + plot_h + 18}" font-size="11">step {s0}</text>')
    out.append(f'<text x="{plot_x + plot_w}" y="{top + plot_h + 18}" font-size="11" text-anchor="end">'
               f'step {s1}</text>')
    for k, (pair, pts) in enumerate(sorted(series.items())):
        color = PAIR_COLORS[k % len(PAIR_COLORS)]
        if len(pts) > 1:
            out.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" '
                       f'points="{" ".join(xy(s, c) for s, c in pts)}"/>')
        else:
            x, y = xy(*pts[0]).split(",")
            out.append(f'<circle cx="{x}" cy="{y}" r="3" fill="{color}"/>')
        out.append(f'<text x="{plot_x + plot_w + 10}" y="{top + 16 + 18 * k}" fill="{color}">{escape(pair)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def intervals_svg(rows: list[tuple[str, dict]], metrics: list[tuple[str, str]], title: str = "") -> str:
    """One panel per metric: every configuration's mean (a dot) and 95% interval (a bar), rows
    named by configuration. `rows`: (name, {metric: {"mean", "lo", "hi"}})."""
    label_w, panel_w, row_h, top = 300, 220, 22, 60
    width = label_w + panel_w * len(metrics) + 20
    height = top + row_h * len(rows) + 40
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="10" y="22" font-size="15" font-weight="bold">{escape(title)}</text>']
    for i, (name, _) in enumerate(rows):
        y = top + i * row_h + row_h / 2
        out.append(f'<text x="{label_w - 10}" y="{y + 4}" text-anchor="end">{escape(name[:48])}</text>')
    for j, (key, label) in enumerate(metrics):
        x0 = label_w + j * panel_w
        vals = [v for _, m in rows for v in (m[key].get("lo"), m[key].get("hi"), m[key].get("mean"))
                if isinstance(v, (int, float))]
        lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
        pad = (hi - lo) * 0.1 or 0.01
        lo, hi = lo - pad, hi + pad

        def x(v: float) -> float:
            return x0 + 10 + (v - lo) / (hi - lo) * (panel_w - 30)

        out.append(f'<text x="{x0 + panel_w / 2}" y="{top - 22}" text-anchor="middle" '
                   f'font-weight="bold">{escape(label)}</text>')
        out.append(f'<text x="{x0 + 10}" y="{top - 6}" font-size="10">{lo:.3f}</text>')
        out.append(f'<text x="{x0 + panel_w - 20}" y="{top - 6}" font-size="10" text-anchor="end">{hi:.3f}</text>')
        out.append(f'<rect x="{x0 + 5}" y="{top}" width="{panel_w - 20}" height="{row_h * len(rows)}" '
                   f'fill="none" stroke="#ccc"/>')
        for i, (_, m) in enumerate(rows):
            s, y = m[key], top + i * row_h + row_h / 2
            if s.get("lo") is not None and s.get("hi") is not None:
                out.append(f'<line x1="{x(s["lo"]):.1f}" y1="{y}" x2="{x(s["hi"]):.1f}" y2="{y}" '
                           f'stroke="#1565c0" stroke-width="3"/>')
            if s.get("mean") is not None:
                out.append(f'<circle cx="{x(s["mean"]):.1f}" cy="{y}" r="4" fill="#c2185b"/>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
