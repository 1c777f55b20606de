"""SVG drawn by the server: the DAG graph (left to right), the Gantt chart of a run, and trend charts.

Pure functions from plain data to SVG text (markupsafe.Markup), escaped, no JavaScript needed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from markupsafe import Markup, escape

from sparkflow.web.present import colour, duration, nbytes, text_colour

NODE_W, NODE_H, GAP_X, GAP_Y, PAD = 170, 34, 60, 16, 12


@dataclass(frozen=True)
class GraphNode:
    task_id: str
    operator: str
    upstream: tuple[str, ...]
    state: str | None = None
    href: str | None = None
    edge_labels: tuple[tuple[str, str], ...] = ()  # (upstream task_id, label) of labelled edges into this node


def layout(nodes: Sequence[GraphNode]) -> dict[str, tuple[int, int]]:
    """Column = longest path from a root; row = order within the column. Nodes come in topological order."""
    column: dict[str, int] = {}
    for node in nodes:
        column[node.task_id] = max((column.get(u, 0) + 1 for u in node.upstream if u in column), default=0)
    rows: dict[int, int] = {}
    position = {}
    for node in nodes:
        col = column[node.task_id]
        position[node.task_id] = (col, rows.get(col, 0))
        rows[col] = rows.get(col, 0) + 1
    return position


def graph(nodes: Sequence[GraphNode]) -> Markup:
    if not nodes:
        return Markup('<p class="muted">This DAG has no tasks.</p>')
    pos = layout(nodes)
    cols = max(c for c, _ in pos.values()) + 1
    rows = max(r for _, r in pos.values()) + 1
    width, height = PAD * 2 + cols * NODE_W + (cols - 1) * GAP_X, PAD * 2 + rows * NODE_H + (rows - 1) * GAP_Y

    def xy(task_id: str) -> tuple[int, int]:
        c, r = pos[task_id]
        return PAD + c * (NODE_W + GAP_X), PAD + r * (NODE_H + GAP_Y)

    parts = [f'<svg class="graph" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="DAG graph">',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
             'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#666"/></marker></defs>']
    for node in nodes:
        x2, y2 = xy(node.task_id)
        for up in node.upstream:
            if up not in pos:
                continue
            x1, y1 = xy(up)
            sx, sy, ex, ey = x1 + NODE_W, y1 + NODE_H / 2, x2, y2 + NODE_H / 2
            mid = (sx + ex) / 2
            parts.append(f'<path class="edge" d="M {sx} {sy} C {mid} {sy}, {mid} {ey}, {ex - 2} {ey}" fill="none" '
                         'stroke="#888" stroke-width="1.5" marker-end="url(#arrow)"/>')
            label = dict(node.edge_labels).get(up)
            if label:
                parts.append(f'<text class="edge-label" x="{mid}" y="{(sy + ey) / 2 - 3}" text-anchor="middle" '
                             f'font-size="10" fill="#333">{escape(label)}</text>')
    for node in nodes:
        x, y = xy(node.task_id)
        state = node.state or "none"
        fill = colour(state) if node.state else "#ffffff"
        label = node.task_id if len(node.task_id) <= 22 else node.task_id[:21] + "\u2026"
        box = (f'<g class="node" data-task-id="{escape(node.task_id)}" data-state="{escape(state)}">'
               f'<title>{escape(node.task_id)} ({escape(node.operator)}): {escape(state)}</title>'
               f'<rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="5" fill="{fill}" stroke="#555"/>'
               f'<text x="{x + 8}" y="{y + 15}" font-size="12" fill="{text_colour(state) if node.state else "#111"}">'
               f'{escape(label)}</text>'
               f'<text x="{x + 8}" y="{y + 28}" font-size="10" fill="{text_colour(state) if node.state else "#666"}">'
               f'{escape(node.operator)}</text></g>')
        parts.append(f'<a href="{escape(node.href)}">{box}</a>' if node.href else box)
    parts.append("</svg>")
    return Markup("".join(parts))


@dataclass(frozen=True)
class GanttBar:
    task_id: str
    state: str
    start: datetime | None
    end: datetime | None
    href: str | None = None


def gantt(bars: Sequence[GanttBar], now: datetime) -> Markup:
    started = [b for b in bars if b.start is not None]
    if not started:
        return Markup('<p class="muted">No task of this run has started yet.</p>')
    t0 = min(b.start for b in started if b.start)
    t1 = max((b.end or now) for b in started)
    span = max((t1 - t0).total_seconds(), 0.001)
    label_w, bar_w, row_h = 190, 560, 22
    height = PAD * 2 + row_h * len(bars) + 16
    parts = [f'<svg class="gantt" xmlns="http://www.w3.org/2000/svg" width="{label_w + bar_w + PAD * 2}" '
             f'height="{height}" role="img" aria-label="Gantt chart">']
    for i, bar in enumerate(bars):
        y = PAD + i * row_h
        parts.append(f'<text x="{PAD}" y="{y + 15}" font-size="12">{escape(bar.task_id[:28])}</text>')
        if bar.start is None:
            continue
        x = label_w + (bar.start - t0).total_seconds() / span * bar_w
        seconds = ((bar.end or now) - bar.start).total_seconds()
        w = max(seconds / span * bar_w, 2)
        rect = (f'<rect x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}" fill="{colour(bar.state)}" '
                f'stroke="#444"><title>{escape(bar.task_id)}: {escape(bar.state)}, {duration(seconds)}</title></rect>')
        parts.append(f'<a href="{escape(bar.href)}">{rect}</a>' if bar.href else rect)
    axis_y = PAD + row_h * len(bars) + 12
    parts.append(f'<text x="{label_w}" y="{axis_y}" font-size="10" fill="#666">0s</text>')
    parts.append(f'<text x="{label_w + bar_w}" y="{axis_y}" font-size="10" fill="#666" text-anchor="end">'
                 f'{duration(span)}</text></svg>')
    return Markup("".join(parts))


@dataclass(frozen=True)
class TrendPoint:
    label: str  # run id
    values: Mapping[str, float | None]
    href: str | None = None


SERIES = {
    "duration": ("duration", "#1f77b4", duration),
    "input_bytes": ("input", "#2ca02c", nbytes),
    "shuffle_read_bytes": ("shuffle read", "#d62728", nbytes),
    "shuffle_write_bytes": ("shuffle write", "#9467bd", nbytes),
}


def trend_chart(points: Sequence[TrendPoint], keys: Sequence[str], title: str) -> Markup:
    """Bars per run, one group per run and one bar per key, each series scaled to its own maximum."""
    if not points:
        return Markup(f'<p class="muted">No runs of this task yet for "{escape(title)}".</p>')
    width, height, left, bottom = 620, 160, 10, 24
    plot_h = height - bottom - 42
    group_w = (width - left * 2) / len(points)
    bar_w = max(min(group_w / (len(keys) + 1), 18), 2)
    real_max = {k: max((p.values.get(k) or 0) for p in points) for k in keys}
    maxima = {k: real_max[k] or 1 for k in keys}  # scale; an all-zero series draws flat
    parts = [f'<svg class="trend" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'role="img" aria-label="{escape(title)}">',
             f'<text x="{left}" y="13" font-size="12" font-weight="bold">{escape(title)}</text>']
    lx = left
    for k in keys:
        name, fill, fmt = SERIES[k]
        parts.append(f'<rect x="{lx}" y="21" width="10" height="10" fill="{fill}"/>'
                     f'<text x="{lx + 14}" y="30" font-size="11">{escape(name)} (max {fmt(real_max[k])})</text>')
        lx += 200
    for i, point in enumerate(points):
        gx = left + i * group_w
        for j, k in enumerate(keys):
            value = point.values.get(k)
            if value is None:
                continue
            name, fill, fmt = SERIES[k]
            h = value / maxima[k] * plot_h
            x = gx + (j + 0.5) * bar_w
            parts.append(f'<rect x="{x:.1f}" y="{height - bottom - h:.1f}" width="{bar_w * 0.9:.1f}" '
                         f'height="{max(h, 0.5):.1f}" fill="{fill}"><title>{escape(point.label)}: {escape(name)} '
                         f'{escape(fmt(value))}</title></rect>')
    parts.append(f'<line x1="{left}" y1="{height - bottom}" x2="{width - left}" y2="{height - bottom}" '
                 'stroke="#999"/>')
    parts.append(f'<text x="{left}" y="{height - 8}" font-size="10" fill="#666">oldest</text>'
                 f'<text x="{width - left}" y="{height - 8}" font-size="10" fill="#666" '
                 'text-anchor="end">latest</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
