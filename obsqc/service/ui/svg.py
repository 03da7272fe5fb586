"""Geometry of the exposure page's drawings, computed here and drawn as SVG by the templates.

* :func:`focal_plane`: one rectangle per CCD, laid out from the DETSEC cards (FITS, 1-based,
  ``[x1:x2,y1:y2]`` on the focal plane, y up) when every CCD had one, on a grid in natural name order
  otherwise. Colour: the CCD's significance, the larger of its background-gradient and large-scale
  sigma (what ``plots.py`` shows too), on the fixed scale :data:`SIGMA_STOPS` so that a colour means
  the same on every exposure: pale below the warn level, amber at 3 sigma, red from 5 sigma.
* :func:`histogram`: bars of an exposure's smoothed histogram and the reference as a step line.

Only numbers and strings leave this module; the templates escape every string.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

__all__ = ["SIGMA_STOPS", "CCDBox", "FocalPlane", "Histogram", "colour", "focal_plane", "histogram", "natural_key"]

SIGMA_STOPS: tuple[tuple[float, tuple[int, int, int]], ...] = (
    (0.0, (238, 242, 247)),
    (2.0, (214, 226, 238)),
    (3.0, (253, 208, 120)),
    (5.0, (239, 101, 72)),
    (10.0, (127, 0, 0)),
)
"""(sigma, RGB) stops of the focal-plane colour scale; below the first and above the last: clamped."""

MISSING_COLOUR = "#c9ced6"
"""Fill of a CCD without a significance (not measured, or too small for the gradient search)."""

WIDTH = 640.0
"""Width of the focal-plane drawing, SVG user units (CSS pixels)."""

MAX_HEIGHT = 560.0
"""Tallest focal-plane drawing; a tall layout is narrowed instead."""

PAD = 6.0
"""Margin around the CCDs, user units."""


def natural_key(name: str) -> tuple:
    """Sort key putting S2 before S10."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def colour(sigma: float | None) -> str:
    """The fill of a CCD of significance ``sigma`` (hex RGB)."""
    if sigma is None or not math.isfinite(sigma):
        return MISSING_COLOUR
    s = min(max(sigma, SIGMA_STOPS[0][0]), SIGMA_STOPS[-1][0])
    for (s0, c0), (s1, c1) in zip(SIGMA_STOPS, SIGMA_STOPS[1:]):
        if s <= s1:
            t = (s - s0) / (s1 - s0)
            return "#" + "".join(f"{round(a + (b - a) * t):02x}" for a, b in zip(c0, c1))
    return "#" + "".join(f"{v:02x}" for v in SIGMA_STOPS[-1][1])


def _dark(hex_colour: str) -> bool:
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b < 140


@dataclass(frozen=True)
class CCDBox:
    """One CCD drawn: its box in SVG units (y down), fill, label colour, and the tooltip lines."""

    name: str
    x: float
    y: float
    w: float
    h: float
    fill: str
    text: str
    label_size: float
    show_value: bool
    value: str
    flagged: bool
    tooltip: str


@dataclass(frozen=True)
class FocalPlane:
    """The drawing: its size, the CCDs, whether the layout is the real one (DETSEC) or a grid, the legend."""

    width: float
    height: float
    ccds: list[CCDBox]
    from_detsec: bool
    legend: list[tuple[float, str]]


def _grid(names: list[str], shapes: dict) -> dict[str, tuple[float, float, float, float]]:
    cols = math.ceil(math.sqrt(len(names))) or 1
    rows = math.ceil(len(names) / cols)
    ny, nx = 1.0, 1.0
    known = [s for s in (shapes.get(n) for n in names) if isinstance(s, (list, tuple)) and len(s) == 2]
    if known and min(min(s) for s in known) > 0:
        ny, nx = max(s[0] for s in known), max(s[1] for s in known)
    gap = 0.06 * max(nx, ny)
    boxes = {}
    for i, name in enumerate(sorted(names, key=natural_key)):
        r, c = divmod(i, cols)
        boxes[name] = (c * (nx + gap), (rows - 1 - r) * (ny + gap), nx, ny)  # first row at the top
    return boxes


def _detsec_boxes(names: list[str], detsec: dict) -> dict[str, tuple[float, float, float, float]] | None:
    boxes = {}
    for name in names:
        sec = detsec.get(name)
        if not isinstance(sec, (list, tuple)) or len(sec) != 4:
            return None
        try:
            x1, x2, y1, y2 = (float(v) for v in sec)
        except (TypeError, ValueError):
            return None
        if not all(math.isfinite(v) for v in (x1, x2, y1, y2)):
            return None
        x_lo, x_hi, y_lo, y_hi = min(x1, x2), max(x1, x2), min(y1, y2), max(y1, y2)
        boxes[name] = (x_lo - 0.5, y_lo - 0.5, x_hi - x_lo + 1, y_hi - y_lo + 1)
    return boxes


def _fmt(value: float | None, unit: str = "sigma") -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.1f} {unit}"


def focal_plane(ccds: list[dict], detsec: dict | None, shapes: dict | None,
                flagged: dict[str, list[str]]) -> FocalPlane:
    """The focal-plane map of ``ccds`` (dicts with ``ccd``, ``background_sigma``, ``large_scale_sigma``,
    ``background_kl``, ``line_z``, ``n_sources``); ``flagged`` maps a CCD name to the flags naming it."""
    names = [str(c["ccd"]) for c in ccds]
    by_name = {str(c["ccd"]): c for c in ccds}
    boxes = _detsec_boxes(names, detsec or {}) if names else None
    from_detsec = boxes is not None
    if boxes is None:
        boxes = _grid(names, shapes or {})
    legend = [(s, colour(s)) for s in (0.0, 2.0, 3.0, 5.0, 10.0)]
    if not boxes:
        return FocalPlane(WIDTH, 40.0, [], from_detsec, legend)
    x0 = min(b[0] for b in boxes.values())
    x1 = max(b[0] + b[2] for b in boxes.values())
    y0 = min(b[1] for b in boxes.values())
    y1 = max(b[1] + b[3] for b in boxes.values())
    scale = (WIDTH - 2 * PAD) / max(x1 - x0, 1e-9)
    if (y1 - y0) * scale > MAX_HEIGHT - 2 * PAD:
        scale = (MAX_HEIGHT - 2 * PAD) / max(y1 - y0, 1e-9)
    width, height = (x1 - x0) * scale + 2 * PAD, (y1 - y0) * scale + 2 * PAD
    out = []
    for name in sorted(boxes, key=natural_key):
        bx, by, bw, bh = boxes[name]
        c = by_name[name]
        sigmas = [v for v in (c.get("background_sigma"), c.get("large_scale_sigma"))
                  if v is not None and math.isfinite(v)]
        sigma = max(sigmas) if sigmas else None
        fill = colour(sigma)
        w, h = bw * scale, bh * scale
        x, y = PAD + (bx - x0) * scale, PAD + (y1 - by - bh) * scale  # focal-plane y up -> SVG y down
        label = min(max(min(w, h) * 0.28, 7.0), 14.0)
        lines = [f"CCD {name}: {_fmt(sigma)}",
                 f"background gradients {_fmt(c.get('background_sigma'))}"
                 + (f" (KL {c['background_kl']:.4f})" if c.get("background_kl") is not None else ""),
                 f"large-scale {_fmt(c.get('large_scale_sigma'))}",
                 f"brightest line z {_fmt(c.get('line_z'), '')}".rstrip(),
                 f"{c['n_sources']} sources" if c.get("n_sources") is not None else "sources: n/a"]
        if flagged.get(name):
            lines.append("flagged: " + ", ".join(flagged[name]))
        out.append(CCDBox(name=name, x=round(x, 2), y=round(y, 2), w=round(w, 2), h=round(h, 2), fill=fill,
                          text="#ffffff" if _dark(fill) else "#1b2733", label_size=round(label, 1),
                          show_value=h >= 3.2 * label and w >= 2.2 * label,
                          value="" if sigma is None else f"{sigma:.1f}σ", flagged=bool(flagged.get(name)),
                          tooltip="\n".join(lines)))
    return FocalPlane(round(width, 2), round(height, 2), out, from_detsec, legend)


@dataclass(frozen=True)
class Histogram:
    """One histogram drawn in a ``width x height`` box: bars (x, y, w, h), the reference step path, axes."""

    key: str
    title: str
    width: float
    height: float
    bars: list[tuple[float, float, float, float]]
    reference_path: str
    x_ticks: list[tuple[float, str]]
    y_ticks: list[tuple[float, str]]
    plot: tuple[float, float, float, float]
    xlabel: str
    n: int
    kl: float | None
    sigma: float | None


def histogram(h: dict, width: float = 360.0, height: float = 190.0) -> Histogram | None:
    """The drawing of one histogram of ``ui.json`` (None when it is malformed)."""
    try:
        p = [float(v) for v in h["p"]]
        ref = [float(v) for v in h["reference"]]
        lo, hi = (float(v) for v in h.get("span", (-90.0, 90.0)))
    except (KeyError, TypeError, ValueError):
        return None
    if not p or len(p) != len(ref) or not hi > lo or not all(math.isfinite(v) for v in p + ref):
        return None
    left, right, top, bottom = 44.0, 10.0, 8.0, 34.0
    pw, ph = width - left - right, height - top - bottom
    ymax = max(max(p), max(ref)) * 1.12 or 1.0
    bw = pw / len(p)
    sx = lambda i: left + i * bw  # noqa: E731
    sy = lambda v: top + ph * (1.0 - v / ymax)  # noqa: E731
    bars = [(round(sx(i) + 0.08 * bw, 2), round(sy(v), 2), round(0.84 * bw, 2), round(top + ph - sy(v), 2))
            for i, v in enumerate(p)]
    path = [f"M{sx(0):.2f},{sy(ref[0]):.2f}"]
    for i, v in enumerate(ref):
        path.append(f"H{sx(i + 1):.2f}")
        if i + 1 < len(ref):
            path.append(f"V{sy(ref[i + 1]):.2f}")
    x_ticks = [(round(left + pw * k / 4, 2), f"{lo + (hi - lo) * k / 4:g}") for k in range(5)]
    step = _nice_step(ymax / 3)
    y_ticks = [(round(sy(k * step), 2), f"{k * step:.3g}") for k in range(int(ymax / step) + 1)]
    return Histogram(key=str(h.get("key", "")), title=str(h.get("title", "")), width=width, height=height,
                     bars=bars, reference_path="".join(path), x_ticks=x_ticks, y_ticks=y_ticks,
                     plot=(left, top, pw, ph), xlabel=str(h.get("xlabel", "")), n=int(h.get("n") or 0),
                     kl=h.get("kl") if isinstance(h.get("kl"), (int, float)) else None,
                     sigma=h.get("sigma") if isinstance(h.get("sigma"), (int, float)) else None)


def _nice_step(x: float) -> float:
    """1, 2 or 5 times a power of ten, at least ``x``."""
    if not x > 0:
        return 1.0
    base = 10 ** math.floor(math.log10(x))
    return next(m * base for m in (1, 2, 5, 10) if m * base >= x)
