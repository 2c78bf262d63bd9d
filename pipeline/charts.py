"""The report's charts: matplotlib (Agg) PNGs, drawn in a thread beside the report's SQL (:class:`ChartWorker`).

It imports neither DuckDB nor pandas, and matplotlib only once it draws.

Each chart is drawn once. Its axes are placed by hand, in inches, from the sizes of the texts around them
(tick labels, titles, legends), on a canvas with room to spare on every side; the PNG is then cropped to what
was drawn, plus a small margin. That is what savefig(bbox_inches="tight") after tight_layout() gives, without
the two extra layout passes (drawing a chart is what costs; each pass is most of a draw). A chart whose
drawing reaches the edge of its canvas (the estimate was short) is drawn again with more room.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import queue
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from .schema import EVIDENCE_ORDER


@dataclass
class ChartFacts:
    """The small aggregates the charts show besides summary.json, from the report's SQL."""

    severity_by_category: dict[str, str] = field(default_factory=dict)
    countries: list[tuple[str, int, int]] = field(default_factory=list)  # (country, users, high-severity users)
    owners_seen_hist: list[tuple[int, int]] = field(default_factory=list)  # (owners seen, viewers)
    viewer_count_hist: list[tuple[int, int]] = field(default_factory=list)  # (viewers, owners)


# ------------------------------------------------------------------------------------------------------------
# Drawing


def draw_charts(summary: dict[str, Any], timeline: dict[str, list[Any]], facts: ChartFacts) -> dict[str, bytes]:
    """PNG bytes per chart name, drawn in this process on bare Figures (no pyplot: a notebook's backend and
    state are untouched). ``timeline``: timeline.parquet by column, in time order ({} without buckets)."""
    return {**_draw_timeline(summary, timeline), **_draw_fact_charts(summary, facts)}


@contextlib.contextmanager
def _drawing() -> Iterator[None]:
    """The chart style, and no warning about a character the font lacks: matplotlib's names the character
    ("Glyph 23665 (\\N{CJK UNIFIED IDEOGRAPH-5C71}) missing from font(s)"), one warning per character of a label,
    on stderr, where nothing from the users directory may appear. The label still draws (a box per character).
    ``(?s)``: the character may be a line break ("Glyph 10 (\\n) missing"), a message over two lines."""
    import matplotlib

    with matplotlib.rc_context(_STYLE), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"(?s)Glyph \d+ .*missing from", category=UserWarning)
        yield


def _draw_timeline(summary: dict[str, Any], timeline: dict[str, list[Any]]) -> dict[str, bytes]:
    with _drawing():
        return {"timeline": _render(lambda spare: _chart_timeline(spare, timeline, summary))}


def _draw_fact_charts(summary: dict[str, Any], facts: ChartFacts) -> dict[str, bytes]:
    charts = {}
    with _drawing():
        for name, draw in (
            ("categories_evidence", _chart_categories),
            ("countries", _chart_countries),
            ("pairs", _chart_pairs),
        ):
            charts[name] = _render(lambda spare, draw=draw: draw(spare, facts, summary))
    return charts


_SEVERITY_COLOURS = {"critical": "#7f1d1d", "high": "#c0392b", "medium": "#e67e22", "low": "#e3b505"}
_TIER_COLOURS = {"value_owner": "#1f4e79", "digest": "#2e75b6", "connection": "#6fa8dc", "key": "#9fc5e8"}
_DPI = 100
_PAD = 0.1  # inches of white kept around a chart's content (as bbox_inches="tight" keeps)
_SPARE = 0.5  # inches of canvas beyond the estimated margins, on every side; cropped away
_TICK = 0.1  # inches between an axis and its tick labels (3.5 pt tick + 3.5 pt pad)
_TITLE = 0.35  # inches above an axes for its title (12 pt bold + 6 pt pad)
_XAXIS = 0.6  # inches below an axes for its tick labels and axis label
_STYLE = {
    "text.parse_math": False,
    "text.usetex": False,
    "font.family": "DejaVu Sans",
    "font.size": 10,
    "axes.titlesize": 12,
    "axes.titleweight": "bold",
    "axes.titley": 1.0,  # a fixed title position: matplotlib's automatic one measures the axes again
    "axes.spines.top": False,
    "axes.spines.right": False,
    "svg.hashsalt": "whosaw",
    "figure.dpi": _DPI,
}


class _Canvas:
    """A figure whose axes are placed in inches, with room around them (``margins``: left, right, top, bottom)."""

    def __init__(self, width: float, height: float, margins: tuple[float, float, float, float], spare: float):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure as MplFigure

        left, right, top, bottom = (m + spare for m in margins)
        self.origin = (left, bottom)
        self.size = (left + width + right, bottom + height + top)
        self.fig = MplFigure(figsize=self.size, dpi=_DPI)
        FigureCanvasAgg(self.fig)

    def axes(self, left: float, bottom: float, width: float, height: float, **kwargs: Any) -> Any:
        """An axes ``width`` x ``height`` inches, ``left``/``bottom`` inches from the content's corner."""
        (x0, y0), (w, h) = self.origin, self.size
        return self.fig.add_axes(((x0 + left) / w, (y0 + bottom) / h, width / w, height / h), **kwargs)


@functools.cache
def _text_width(text: str, size: float, bold: bool = False) -> float:
    """The width of one line of text in inches, as the chart will draw it (in the chart style's font)."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import text_to_path

    prop = FontProperties(family=_STYLE["font.family"], size=size, weight="bold" if bold else "normal")
    width, _, _ = text_to_path.get_text_width_height_descent(text, prop, ismath=False)
    return width / 72  # points


def _render(draw: Any) -> bytes:
    """Draw a chart (``draw(spare)`` returns its figure) once; PNG bytes of what it drew and its axes, plus a
    margin of ``_PAD``."""
    import numpy as np
    from PIL import Image

    for spare in (_SPARE, 4 * _SPARE):
        fig = draw(spare)
        fig.canvas.draw()
        pixels = np.asarray(fig.canvas.buffer_rgba())
        height, width = pixels.shape[:2]
        packed = pixels.view(np.uint32)[:, :, 0]  # one number per pixel: one comparison instead of four
        ink = packed != packed[0, 0]  # the corner is spare canvas: background
        rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
        if not rows.size or (rows[0] > 0 and cols[0] > 0 and rows[-1] < height - 1 and cols[-1] < width - 1):
            break  # else the drawing reached the edge of the canvas: draw it again with more room
    # the axes count as content even where nothing is drawn in them (an empty chart keeps its size)
    boxes = [(x0, height - y1, x1, height - y0) for x0, y0, x1, y1 in (ax.bbox.extents for ax in fig.axes)]
    if rows.size:
        boxes.append((cols[0], rows[0], cols[-1] + 1, rows[-1] + 1))
    pad = round(_PAD * _DPI)
    left, top = (max(int(min(box[i] for box in boxes)) - pad, 0) for i in (0, 1))
    right = min(int(np.ceil(max(box[2] for box in boxes))) + pad, width)
    bottom = min(int(np.ceil(max(box[3] for box in boxes))) + pad, height)
    buffer = io.BytesIO()
    # The canvas is opaque, so RGB loses nothing; zlib level 3 packs as small as the default level, in half the time.
    image = Image.fromarray(np.ascontiguousarray(pixels[top:bottom, left:right, :3]))
    image.save(buffer, format="png", compress_level=3, dpi=(_DPI, _DPI))
    return buffer.getvalue()


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=12, color="#5b6472", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _window_bounds(summary: dict[str, Any]) -> tuple[datetime | None, datetime | None]:
    window = summary.get("window") or {}
    return (
        utc(window["start"]) if window.get("start") else None,
        utc(window["end"]) if window.get("end") else None,
    )


def utc(value: str | datetime) -> datetime:
    """An ISO-8601 time (or a datetime) in UTC; a time without a zone is taken as UTC."""
    stamp = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).strip())
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)


def _chart_timeline(spare: float, frame: dict[str, list[Any]], summary: dict[str, Any]) -> Any:
    import matplotlib.dates as mdates
    from matplotlib.ticker import MaxNLocator

    width, height, gap = 7.25, 2.2, 0.25  # each of the two axes; the gap between them
    legend_text = [
        "crossed replies", "baseline: 0.00000e+00", "elevated above: 0.00000e+00", "near misses",
        "exposures (all, in or out of window)", "exposure window (config)",
    ]
    legend = max(_text_width(text, 8.5) for text in legend_text) + 0.6  # handle, padding, anchor offset
    canvas = _Canvas(width, 2 * height + gap, (1.3, legend + 0.1, _TITLE, _XAXIS + 0.2), spare)
    top = canvas.axes(0, height + gap, width, height)
    bottom = canvas.axes(0, 0, width, height, sharex=top)
    top.tick_params(labelbottom=False)
    if not frame.get("bucket_start"):
        _empty(top, "No timeline: the logs hold no requests")
        _empty(bottom, "")
        return canvas.fig
    times = [utc(t) for t in frame["bucket_start"]]
    seconds = int(frame["bucket_seconds"][0]) if "bucket_seconds" in frame else 300
    per = _duration(seconds)

    def counts(column: str) -> list[float]:
        return [float("nan") if v is None else v for v in frame.get(column, [0] * len(times))]

    step = {"where": "post", "linewidth": 1.3}
    top.step(times, counts("crossed_replies"), color="#2e75b6", label="crossed replies", **step)
    if "near_misses" in frame:
        bottom.step(times, counts("near_misses"), color="#b0b7c3", label="near misses", **step)
    bottom.step(
        times,
        counts("exposures"),
        color="#c0392b",
        label="exposures (all, in or out of window)",
        where="post",
        linewidth=1.8,
        zorder=3,
    )
    for column, style, text in (
        ("baseline", "--", "baseline"),
        ("threshold", ":", "elevated above"),
    ):
        known = [v for v in frame.get(column, []) if v is not None and v == v]  # v == v: not NaN
        if known:
            value = float(known[0])
            top.axhline(value, color="#333333", linestyle=style, linewidth=1.1, label=f"{text}: {value:g}")
    start, end = _window_bounds(summary)
    lo = start if start is not None else min(times)
    hi = end if end is not None else max(times) + timedelta(seconds=seconds)
    method = (summary.get("window") or {}).get("method", "")
    if start is not None or end is not None:
        for ax in (top, bottom):
            ax.axvspan(lo, hi, color="#f4b183", alpha=0.28, linewidth=0, label=f"exposure window ({method})")
    top.set_title(f"Crossed replies and exposures per {per} (UTC)")
    top.set_ylabel(f"crossed replies\nper {per}")
    bottom.set_ylabel(f"per {per}")
    bottom.set_xlabel("time (UTC)")
    for ax in (top, bottom):
        ax.yaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
        ax.set_ylim(bottom=0, top=max(ax.get_ylim()[1], 1))
        ax.grid(axis="y", color="#e5e8ec", linewidth=0.8)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8.5, frameon=False)
    locator = mdates.AutoDateLocator(tz=UTC)
    bottom.xaxis.set_major_locator(locator)
    bottom.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=UTC))
    return canvas.fig


def _duration(seconds: int) -> str:
    if seconds % 3600 == 0:
        hours = seconds // 3600
        return "hour" if hours == 1 else f"{hours} hours"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def _short(text: Any, width: int = 28) -> str:
    text = str(text)
    return text if len(text) <= width else text[: width - 1] + "…"


def _barh(ax: Any, labels: Sequence[str], values: Sequence[int], colours: Sequence[str]) -> None:
    positions = list(range(len(labels)))
    bars = ax.barh(positions, values, color=colours)
    ax.set_yticks(positions, [_short(label) for label in labels])
    ax.invert_yaxis()
    ax.bar_label(bars, labels=[f"{v:,}" for v in values], padding=3, fontsize=8.5)
    ax.set_xlim(0, max(values) * 1.18 if values else 1)
    ax.grid(axis="x", color="#e5e8ec", linewidth=0.8)
    ax.set_axisbelow(True)


def _barh_sides(labels: Sequence[str], values: Sequence[int], title: str, width: float) -> tuple[float, float]:
    """Inches a horizontal bar chart of ``width`` inches draws left and right of its axes."""
    left = max((_text_width(_short(label), 10) for label in labels), default=0.0) + _TICK
    right = 0.3  # half of the last x tick label
    if values:  # the value label of the longest bar, past the 18% of room the axis leaves it
        right = max(right, _text_width(f"{max(values):,}", 8.5) + 0.05 - width * 0.18 / 1.18)
    overhang = (_text_width(title, 12, bold=True) - width) / 2  # a title wider than its axes, centred
    return max(left, overhang), max(right, overhang)


def _side_by_side(
    sides: Sequence[Callable[[float], tuple[float, float]]], total: float, gap: float = 0.35
) -> tuple[float, list[float], float]:
    """Two axes of equal width side by side in ``total`` inches (content, margins included).

    ``sides``: per axes, a function of its width giving the inches drawn left and right of it. Returns the
    axes' width, their left edges and the left margin."""
    width = (total - gap) / 2
    for _ in range(3):  # the sides depend a little on the width (titles, value labels): settle it
        (l1, r1), (l2, r2) = (side(width) for side in sides)
        width = max((total - l1 - r1 - gap - l2 - r2) / 2, 2.0)
    return width, [0.0, width + r1 + gap + l2], l1


def _chart_categories(spare: float, facts: ChartFacts, summary: dict[str, Any]) -> Any:
    by_cat = summary.get("exposures_by_category") or {}
    by_ev = summary.get("exposures_by_evidence") or {}
    height = max(3.0, 0.42 * max(len(by_cat), len(by_ev), 1) + 1.4) - 1.05
    cats = sorted(by_cat, key=lambda c: (-by_cat[c], c))
    sev = [facts.severity_by_category.get(c, "") for c in cats]
    cat_labels = [f"{c} ({s})" if s else c for c, s in zip(cats, sev, strict=True)]
    cat_values = [int(by_cat[c]) for c in cats]
    tiers = sorted(by_ev, key=lambda e: (EVIDENCE_ORDER.index(e) if e in EVIDENCE_ORDER else 99, e))
    tier_values = [int(by_ev[e]) for e in tiers]
    titles = ("Exposures by category (severity)", "Exposures by evidence (strongest first)")
    width, lefts, margin = _side_by_side(
        [
            lambda w: _barh_sides(cat_labels, cat_values, titles[0], w),
            lambda w: _barh_sides(tiers, tier_values, titles[1], w),
        ],
        total=10 - 2 * _PAD,
    )
    canvas = _Canvas(lefts[1] + width, height, (margin, 1.0, _TITLE, _XAXIS), spare)
    panels = (
        (titles[0], cat_labels, cat_values, [_SEVERITY_COLOURS.get(s, "#8a94a3") for s in sev]),
        (titles[1], tiers, tier_values, [_TIER_COLOURS.get(e, "#b0b7c3") for e in tiers]),
    )
    for x, (title, labels, values, colours) in zip(lefts, panels, strict=True):
        ax = canvas.axes(x, 0, width, height)
        if not values:
            _empty(ax, "No exposures in the window")
        else:
            _barh(ax, labels, values, colours)
            ax.set_xlabel("exposures (rows)")
        ax.set_title(title)
    return canvas.fig


def _chart_countries(spare: float, facts: ChartFacts, summary: dict[str, Any]) -> Any:
    top_n = 15
    rows = [(country, users) for country, users, _ in facts.countries]
    if len(rows) > top_n + 1:
        rest = rows[top_n:]
        rows = rows[:top_n] + [(f"{len(rest)} other countries", sum(n for _, n in rest))]
    height = max(2.8, 0.38 * len(rows) + 1.3) - 1.05
    labels, values = [str(c) for c, _ in rows], [int(n) for _, n in rows]
    title = "Affected users by country (users directory)"
    width = 10 - 2 * _PAD - 1.0
    for _ in range(3):
        left, right = _barh_sides(labels, values, title, width)
        width = max(10 - 2 * _PAD - left - right, 4.0)
    canvas = _Canvas(width, height, (left, 1.0, _TITLE, _XAXIS), spare)
    ax = canvas.axes(0, 0, width, height)
    if not rows:
        _empty(ax, "No affected users")
    else:
        colours = [
            "#8a94a3" if str(c).startswith("(") or c.endswith("other countries") else "#2e75b6"
            for c, _ in rows
        ]
        _barh(ax, labels, values, colours)
        ax.set_xlabel("affected users")
    ax.set_title(title)
    return canvas.fig


def _bins(histogram: Sequence[tuple[int, int]]) -> tuple[list[str], list[int]]:
    """Group a small histogram (n, count) into readable bins: 1..3 each, then ranges; at most 8 bins, so the
    labels fit side by side under a half-width chart."""
    edges = [(1, 1), (2, 2), (3, 3), (4, 5), (6, 10), (11, 20), (21, 100), (101, None)]
    labels, values = [], []
    if not histogram:
        return labels, values
    largest = int(max(n for n, _ in histogram))
    for lo, hi in edges:
        if lo > largest:
            break
        labels.append(str(lo) if lo == hi else (f"{lo}+" if hi is None else f"{lo}-{hi}"))
        values.append(int(sum(count for n, count in histogram if n >= lo and (hi is None or n <= hi))))
    return labels, values


def _chart_pairs(spare: float, facts: ChartFacts, summary: dict[str, Any]) -> Any:
    from matplotlib.ticker import MaxNLocator, StrMethodFormatter

    panels = [
        (
            _bins(facts.owners_seen_hist),
            "Viewers by how many owners they saw",
            "owners whose data the viewer was shown",
            "viewers",
            "#2e75b6",
        ),
        (
            _bins(facts.viewer_count_hist),
            "Owners by how many viewers saw their data",
            "viewers who were shown the owner's data",
            "owners",
            "#c0392b",
        ),
    ]

    def locator() -> Any:  # counts: whole numbers, written as the bar labels are
        return MaxNLocator(nbins=5, integer=True)

    def sides(values: list[int], title: str) -> Any:
        # left: the y tick labels and the y label; a title wider than its axes overhangs both sides
        top = max(values, default=0) * 1.18
        ticks = [f"{v:,.0f}" for v in locator().tick_values(0, top) if 0 <= v <= top]
        left = max((_text_width(t, 10) for t in ticks), default=0) + _TICK + 0.25 if values else 0.0
        return lambda w: (
            max(left, (_text_width(title, 12, bold=True) - w) / 2),
            max(0.3, (_text_width(title, 12, bold=True) - w) / 2),
        )

    width, lefts, margin = _side_by_side(
        [sides(values, title) for (_, values), title, *_ in panels], total=10 - 2 * _PAD
    )
    height = 3.6 - 1.0
    canvas = _Canvas(lefts[1] + width, height, (margin, 1.0, _TITLE, _XAXIS), spare)
    for x, ((labels, values), title, xlabel, ylabel, colour) in zip(lefts, panels, strict=True):
        ax = canvas.axes(x, 0, width, height)
        if not values:
            _empty(ax, "No exposures in the window")
        else:
            crowded = len(labels) > 5  # up to 8 bins under half the width: smaller labels keep them apart
            bars = ax.bar(labels, values, color=colour)
            ax.bar_label(bars, labels=[f"{v:,}" for v in values], padding=2, fontsize=7.5 if crowded else 8.5)
            ax.tick_params(axis="x", labelsize=8.5 if crowded else 10)
            ax.set_ylim(0, max(values) * 1.18)
            ax.yaxis.set_major_locator(locator())
            ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.grid(axis="y", color="#e5e8ec", linewidth=0.8)
            ax.set_axisbelow(True)
        ax.set_title(title)
    return canvas.fig


# ------------------------------------------------------------------------------------------------------------
# The chart worker


class ChartWorker:
    """Draws the charts in a thread while the report's SQL runs: give it the timeline, then the facts, then take
    the PNGs. Importing matplotlib (most of a second) needs nothing from the report, and DuckDB runs the SQL
    without holding the GIL. As a context manager, leaving it stops a worker never given what to draw.

    (A worker process started before the ingest, importing matplotlib at the lowest priority, took 0.15-0.3 s
    off ``whosaw run`` at 1M requests, for 0.35 CPU-s more: not worth a process protocol. See the README.)
    """

    def __init__(self) -> None:
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._drawing: Future[dict[str, bytes]] = Future()
        # a daemon: a worker nobody closed must not keep Python from exiting
        threading.Thread(target=self._draw, name="whosaw-charts", daemon=True).start()

    def __enter__(self) -> ChartWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def draw_timeline(self, summary: dict[str, Any], timeline: dict[str, list[Any]]) -> None:
        """Start on the timeline chart (``timeline``: timeline.parquet by column, in time order)."""
        self._inbox.put((summary, timeline))

    def draw_facts(self, facts: ChartFacts) -> None:
        """Start on the other charts (after :meth:`draw_timeline`)."""
        self._inbox.put(facts)

    def charts(self) -> dict[str, bytes]:
        """PNG bytes per chart name, once drawn."""
        return self._drawing.result()

    def close(self) -> None:
        """Stop the worker, if it still waits for something to draw."""
        self._inbox.put(None)

    def _draw(self) -> None:
        try:
            self._drawing.set_result(_draw_when_given(self._inbox.get))
        except BaseException as exc:  # noqa: BLE001 - handed to whoever asks for the charts
            self._drawing.set_exception(exc)


def _draw_when_given(receive: Callable[[], Any]) -> dict[str, bytes]:
    """Import matplotlib, then draw the timeline and the other charts as ``receive()`` gives (summary, timeline)
    and then the facts; None instead: stop."""
    for module in ("matplotlib.backends.backend_agg", "matplotlib.dates", "matplotlib.figure", "PIL.Image"):
        importlib.import_module(module)  # all at once, before waiting: most of a second
    first = receive()
    if first is None:
        return {}
    summary, timeline = first
    charts = _draw_timeline(summary, timeline)
    facts = receive()
    if facts is None:
        return {}
    charts.update(_draw_fact_charts(summary, facts))
    return charts
