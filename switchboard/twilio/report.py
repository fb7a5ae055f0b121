"""Load-run results as figures: percentiles, a text table, JSON and an SVG picture.

Pure functions over plain data, no I/O (``switchboard.simulate.write_json``
and ``write_svg`` write the results), so the load simulator and the benchmarks
(``bench/load.py``) share one definition of "p99" and one output format.

Percentiles interpolate linearly between the closest ranks (numpy's default,
"type 7"), so p50 of ``[1, 2, 3, 4]`` is 2.5 and any value in ``[0, 100]`` works
on any non-empty sample.

The JSON document (``SCHEMA``) is::

    {"schema": "switchboard.simulate/1", "label": str, "config": {...},
     "counts": {name: int, ...},
     "latency_ms": {"first_token": Stats, "turn": Stats, "overhead": Stats},
     "errors": {kind: int}, "violations": [str, ...] (first few, as examples,
     each naming its call's index and CallSid),
     "problem_calls": [{"call": index, "call_sid": str, "problems": [str, ...]}, ...],
     "samples": [[t_s, first_token_ms, turn_ms | null], ...]}   # optional

with ``Stats = {"n", "min", "mean", "p50", "p95", "p99", "max"}`` (null when n == 0).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from xml.sax.saxutils import escape

__all__ = [
    "SCHEMA",
    "LatencyStats",
    "histogram",
    "percentile",
    "render_svg",
    "render_table",
    "summarize",
]

SCHEMA: Final = "switchboard.simulate/1"


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values``, linear between ranks.

    Raises ``ValueError`` for an empty sample or ``q`` outside 0..100.
    """
    if not values:
        raise ValueError("percentile of an empty sample")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True, slots=True)
class LatencyStats:
    """Summary of one latency sample, in milliseconds."""

    n: int
    min: float | None = None
    mean: float | None = None
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    max: float | None = None

    def to_json(self) -> dict[str, float | int | None]:
        def r(v: float | None) -> float | None:
            return None if v is None else round(v, 3)

        return {
            "n": self.n,
            "min": r(self.min),
            "mean": r(self.mean),
            "p50": r(self.p50),
            "p95": r(self.p95),
            "p99": r(self.p99),
            "max": r(self.max),
        }


def summarize(values: Sequence[float]) -> LatencyStats:
    """n, min, mean, p50, p95, p99 and max of ``values`` (all None but n when empty)."""
    if not values:
        return LatencyStats(n=0)
    return LatencyStats(
        n=len(values),
        min=min(values),
        mean=sum(values) / len(values),
        p50=percentile(values, 50),
        p95=percentile(values, 95),
        p99=percentile(values, 99),
        max=max(values),
    )


def histogram(values: Sequence[float], bins: int = 30) -> list[tuple[float, float, int]]:
    """``bins`` equal-width buckets ``(low, high, count)`` spanning min..max."""
    if not values:
        return []
    lo, hi = min(values), max(values)
    if hi <= lo:
        return [(lo, hi, len(values))]
    width = (hi - lo) / bins
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, int((v - lo) / width))] += 1
    return [(lo + i * width, lo + (i + 1) * width, c) for i, c in enumerate(counts)]


# --------------------------------------------------------------------------- text


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def render_table(doc: Mapping[str, Any]) -> str:
    """A human-readable summary of a result document (see the module docstring)."""
    lines = [f"{doc.get('label', 'simulation')}"]
    counts: Mapping[str, int] = doc.get("counts", {})
    lines.append("  " + "  ".join(f"{k}={v}" for k, v in counts.items()))
    lines.append(f"  {'latency (ms)':<24}{'n':>7}{'p50':>10}{'p95':>10}{'p99':>10}{'max':>10}")
    for name, label in (
        ("first_token", "prompt -> first token"),
        ("turn", "prompt -> last:true"),
        ("overhead", "overhead (- provider)"),
    ):
        s: Mapping[str, Any] = doc.get("latency_ms", {}).get(name) or {"n": 0}
        lines.append(
            f"  {label:<24}{s['n']:>7}{_fmt(s.get('p50')):>10}{_fmt(s.get('p95')):>10}"
            f"{_fmt(s.get('p99')):>10}{_fmt(s.get('max')):>10}"
        )
    errors: Mapping[str, int] = doc.get("errors", {})
    if errors:
        lines.append("  errors: " + ", ".join(f"{k}={v}" for k, v in sorted(errors.items())))
    for example in doc.get("violations", [])[:5]:
        lines.append(f"  violation: {example}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- SVG

_W: Final = 900
_PANEL_H: Final = 300
_MARGIN: Final = 60


def _nice_max(v: float) -> float:
    """A round axis maximum at or above ``v`` (1, 2, 5 x 10^k)."""
    if v <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(v))
    for step in (1, 2, 5, 10):
        if step * exp >= v:
            return float(step * exp)
    return float(10 * exp)


def _axes(
    out: list[str], top: float, x_max: float, y_max: float, x_label: str, y_label: str
) -> None:
    left, right = _MARGIN, _W - 20
    bottom = top + _PANEL_H - 40
    out.append(
        f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#333"/>'
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="#333"/>'
    )
    for i in range(6):
        x = left + (right - left) * i / 5
        y = bottom - (bottom - top) * i / 5
        out.append(
            f'<text x="{x:.1f}" y="{bottom + 15}" font-size="10" text-anchor="middle">'
            f"{x_max * i / 5:g}</text>"
            f'<text x="{left - 5}" y="{y + 3:.1f}" font-size="10" text-anchor="end">'
            f"{y_max * i / 5:g}</text>"
            f'<line x1="{left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="#eee"/>'
        )
    out.append(
        f'<text x="{(left + right) / 2}" y="{bottom + 32}" font-size="11" '
        f'text-anchor="middle">{escape(x_label)}</text>'
        f'<text x="14" y="{(top + bottom) / 2}" font-size="11" text-anchor="middle" '
        f'transform="rotate(-90 14 {(top + bottom) / 2})">{escape(y_label)}</text>'
    )


def render_svg(
    samples: Sequence[tuple[float, float]],
    *,
    title: str,
    value_label: str = "first token (ms)",
    marks: Mapping[str, float] | None = None,
    turn_samples: Sequence[tuple[float, float]] = (),
    problems: Sequence[float] = (),
    open_calls: Sequence[tuple[float, int]] = (),
) -> str:
    """Panels: ``(t_s, ms)`` samples over time (scatter), their histogram, and,
    when ``open_calls`` is given, the calls open over time.

    ``marks`` draws labelled horizontal lines (e.g. ``{"p99": 12.3}``) on the
    scatter; ``turn_samples`` adds a second series there (whole-turn latency,
    prompt to ``last: true``); ``problems`` (times, s) are red ticks along its
    top edge; ``open_calls`` is a step series of ``(t_s, calls open from then
    on)``. Written by hand so a picture needs no plotting library.
    """
    panels = 3 if open_calls else 2
    height = panels * _PANEL_H + 40
    out: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{height}" '
        f'font-family="sans-serif">',
        f'<rect width="{_W}" height="{height}" fill="white"/>',
        f'<text x="{_W / 2}" y="20" font-size="14" text-anchor="middle">{escape(title)}</text>',
    ]
    times = [t for t, _ in samples] + [t for t, _ in turn_samples] + list(problems)
    times += [t for t, _ in open_calls]
    t_max = _nice_max(max(times, default=1.0))
    _scatter_panel(out, samples, turn_samples, t_max, value_label)
    _problem_ticks(out, problems, t_max)
    _mark_lines(out, marks or {}, samples, turn_samples)
    _histogram_panel(out, [v for _, v in samples], value_label)
    if open_calls:
        _open_calls_panel(out, open_calls, t_max)
    out.append("</svg>")
    return "\n".join(out) + "\n"


_LEFT, _RIGHT = _MARGIN, _W - 20
_TOP1 = 40.0  # the first panel's top edge
_BOTTOM1 = _TOP1 + _PANEL_H - 40


def _v_max(samples: Sequence[tuple[float, float]], turns: Sequence[tuple[float, float]]) -> float:
    return _nice_max(max([*(v for _, v in samples), *(v for _, v in turns)], default=1.0))


def _scatter_panel(
    out: list[str],
    samples: Sequence[tuple[float, float]],
    turn_samples: Sequence[tuple[float, float]],
    t_max: float,
    value_label: str,
) -> None:
    """Panel 1: latency over time (first token, and whole turns if given)."""
    left, right, top, bottom = _LEFT, _RIGHT, _TOP1, _BOTTOM1
    v_max = _v_max(samples, turn_samples)
    _axes(out, top, t_max, v_max, "time since start (s)", value_label)
    for series, colour in ((turn_samples, "#ff7f0e"), (samples, "#1f77b4")):
        points = []
        for t, v in series:
            x = left + (right - left) * t / t_max
            y = bottom - (bottom - top) * v / v_max
            points.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="1.5"/>')
        out.append(f'<g fill="{colour}" fill-opacity="0.5">{"".join(points)}</g>')
    if turn_samples:
        out.append(
            f'<text x="{left + 6}" y="{top + 12}" font-size="10" fill="#1f77b4">'
            f"\u25cf {escape(value_label)}</text>"
            f'<text x="{left + 6}" y="{top + 25}" font-size="10" fill="#ff7f0e">'
            "\u25cf whole turn: prompt to last:true (ms)</text>"
        )


def _problem_ticks(out: list[str], problems: Sequence[float], t_max: float) -> None:
    """Red ticks along the first panel's top edge, one per problem."""
    if not problems:
        return
    left, right, top = _LEFT, _RIGHT, _TOP1
    ticks = "".join(
        f'<line x1="{left + (right - left) * t / t_max:.1f}" y1="{top}" '
        f'x2="{left + (right - left) * t / t_max:.1f}" y2="{top + 10}"/>'
        for t in problems
    )
    out.append(f'<g stroke="#d62728" stroke-width="2">{ticks}</g>')
    out.append(
        f'<text x="{right - 2}" y="{top + 22}" font-size="10" text-anchor="end" '
        f'fill="#d62728">{len(problems)} problem{"s" if len(problems) != 1 else ""} '
        "(red ticks)</text>"
    )


def _mark_lines(
    out: list[str],
    marks: Mapping[str, float],
    samples: Sequence[tuple[float, float]],
    turn_samples: Sequence[tuple[float, float]],
) -> None:
    """Labelled horizontal lines on the first panel (p50, p99, ...)."""
    left, right, top, bottom = _LEFT, _RIGHT, _TOP1, _BOTTOM1
    v_max = _v_max(samples, turn_samples)
    for name, value in marks.items():
        y = bottom - (bottom - top) * min(value, v_max) / v_max
        out.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="#d62728" '
            f'stroke-dasharray="4 3"/><text x="{right - 2}" y="{y - 3:.1f}" font-size="10" '
            f'text-anchor="end" fill="#d62728">{escape(name)} {value:.1f}</text>'
        )


def _histogram_panel(out: list[str], values: Sequence[float], value_label: str) -> None:
    """Panel 2: the histogram of the first-token values."""
    left, right = _LEFT, _RIGHT
    top = 40.0 + _PANEL_H
    bottom = top + _PANEL_H - 40
    buckets = histogram(values, bins=40)
    x_max = _nice_max(max(values, default=1.0))
    c_max = _nice_max(max((c for _, _, c in buckets), default=1))
    _axes(out, top, x_max, c_max, value_label, "turns")
    bars = []
    for lo, hi, count in buckets:
        x0 = left + (right - left) * lo / x_max
        x1 = left + (right - left) * hi / x_max
        h = (bottom - top) * count / c_max
        bars.append(
            f'<rect x="{x0:.1f}" y="{bottom - h:.1f}" width="{max(x1 - x0 - 0.5, 0.5):.1f}" '
            f'height="{h:.1f}"/>'
        )
    out.append(f'<g fill="#2ca02c">{"".join(bars)}</g>')


def _open_calls_panel(
    out: list[str], open_calls: Sequence[tuple[float, int]], t_max: float
) -> None:
    """Panel 3: calls open over time, a step line."""
    left, right = _LEFT, _RIGHT
    top = 40.0 + 2 * _PANEL_H
    bottom = top + _PANEL_H - 40
    n_max = _nice_max(max((n for _, n in open_calls), default=1))
    _axes(out, top, t_max, n_max, "time since start (s)", "calls open")
    path: list[str] = []
    previous = 0
    for t, n in sorted(open_calls):
        x = left + (right - left) * t / t_max
        y0 = bottom - (bottom - top) * previous / n_max
        y1 = bottom - (bottom - top) * n / n_max
        path.append(f"{'M' if not path else 'L'}{x:.1f},{y0:.1f} L{x:.1f},{y1:.1f}")
        previous = n
    out.append(f'<path d="{" ".join(path)}" fill="none" stroke="#9467bd" stroke-width="1.5"/>')
