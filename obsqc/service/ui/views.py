"""What the pages show, computed from store rows and the exposure's artifacts (no HTML here).

:func:`list_item` is one row of the exposure list; :func:`exposure_view` everything on an exposure's
page. Both tolerate odd records: no verdict yet, ``rejected`` and ``error`` verdicts with no scores,
flags stored as bare strings, missing or malformed artifacts.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from obsqc.service.store import ExposureRow
from obsqc.service.ui.artifacts import read_views
from obsqc.service.ui.explain import Explanation, explain, join_names
from obsqc.service.ui.svg import FocalPlane, Histogram, focal_plane, histogram

__all__ = ["INDICATOR_LABELS", "ExposureView", "ListItem", "badge", "exposure_url", "exposure_view", "list_item",
           "short_flag"]

INDICATOR_LABELS = {
    "source": "Source orientation",
    "profile": "Source peak offset",
    "background": "Background gradients",
    "large_scale": "Large-scale background",
    "line": "Straight lines (z)",
}
"""Indicator column prefix -> its name on the page."""

SHORT_FLAG = {
    "source_orientation": "orientation",
    "source_profile": "peak offset",
    "background_gradient": "bkg gradient",
    "background_large_scale": "bkg large-scale",
    "linear_feature": "trail",
    "source_autoencoder": "autoencoder",
}
"""Flag name -> its short form in the list."""

JUDGED = ("ok", "warn", "bad", "calibrating")
"""Verdicts of exposures that went through the detectors (and have scores and artifacts)."""

ARTIFACT_GRACE_S = 60.0
"""For this long after its verdict, an exposure page keeps polling for the views the worker writes next."""


def exposure_url(exposure_id: str) -> str:
    """Path of the page of ``exposure_id`` (percent-encoded, ``/`` included)."""
    return "/ui/exposures/" + quote(exposure_id, safe="")


def badge(row: ExposureRow) -> str:
    """What the verdict badge says: the verdict, or the status while there is none."""
    return row.verdict or (row.status if row.status in ("queued", "running") else "queued")


def _flags(row: ExposureRow) -> list[dict]:
    out = []
    for f in row.flags or ():
        if isinstance(f, str):
            out.append({"name": f})
        elif isinstance(f, dict) and f.get("name"):
            out.append(f)
    return out


def short_flag(flag: dict) -> str:
    """A flag in a few characters: "bkg gradient S2, S3" (rejected/error: their reason code)."""
    name = str(flag.get("name"))
    if name in ("rejected", "error"):
        return f"{name}: {flag.get('reason') or '?'}"
    ccds = [str(c) for c in flag.get("ccds") or ()]
    where = f" {join_names(ccds, limit=3)}" if ccds else ""
    return SHORT_FLAG.get(name, name) + where


def _finite(x) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def _worst_sigma(row: ExposureRow) -> float | None:
    values = [_finite(getattr(row, f"{name}_sigma")) for name in INDICATOR_LABELS]
    values.append(_finite(row.autoencoder_sigma))
    values = [v for v in values if v is not None]
    return max(values) if values else None


@dataclass(frozen=True)
class ListItem:
    """One row of the exposure list."""

    id: str
    url: str
    badge: str
    instrument: str
    band: str
    received: str
    latency: str
    n_sources: str
    worst_sigma: str
    flags: list[str]
    reason: str


def _utc(t: dt.datetime | None) -> str:
    return "" if t is None else t.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def list_item(row: ExposureRow) -> ListItem:
    """The list's view of ``row``."""
    latency = ""
    if row.finished_at is not None and row.received_at is not None:
        latency = f"{(row.finished_at - row.received_at).total_seconds():.1f} s"
    worst = _worst_sigma(row)
    return ListItem(id=row.id, url=exposure_url(row.id), badge=badge(row), instrument=row.instrument or "",
                    band=row.band or "", received=_utc(row.received_at), latency=latency,
                    n_sources="" if row.n_sources is None else str(row.n_sources),
                    worst_sigma="" if worst is None else f"{worst:.1f}",
                    flags=[short_flag(f) for f in _flags(row)], reason=row.reason or "")


@dataclass
class ExposureView:
    """Everything the page of one exposure shows."""

    item: ListItem
    row: ExposureRow
    explanations: list[Explanation]
    scores: list[tuple[str, float | None, float | None]]
    focal: FocalPlane | None
    histograms: list[Histogram]
    thumbnails: list[dict]
    summary_plot: bool
    pending: bool
    skipped_ccds: list[tuple[str, str]] = field(default_factory=list)
    views_missing: bool = False
    n_flagged_ccds: int = 0


def _scores(row: ExposureRow) -> list[tuple[str, float | None, float | None]]:
    out = []
    for name, label in INDICATOR_LABELS.items():
        raw = row.line_z if name == "line" else getattr(row, f"{name}_kl")
        sigma = getattr(row, f"{name}_sigma")
        if raw is not None or sigma is not None:
            out.append((label, _finite(raw), _finite(sigma)))
    if row.autoencoder_mse is not None or row.autoencoder_sigma is not None:
        out.append(("Autoencoder stamp MSE", _finite(row.autoencoder_mse), _finite(row.autoencoder_sigma)))
    return out


def exposure_view(row: ExposureRow, artifacts: Path, now: dt.datetime | None = None) -> ExposureView:
    """The page of ``row``, whose artifacts (plots, ``ui.json``, thumbnails) are under ``artifacts``."""
    now = now or dt.datetime.now(dt.UTC)
    flags = _flags(row)
    views = read_views(artifacts) or {}
    flagged: dict[str, list[str]] = {}
    for f in flags:
        for c in f.get("ccds") or ():
            flagged.setdefault(str(c), []).append(str(f["name"]))
    ccds = [{"ccd": c.ccd, "background_sigma": _finite(c.background_sigma), "background_kl": _finite(c.background_kl),
             "large_scale_sigma": _finite(c.large_scale_sigma), "line_z": _finite(c.line_z), "n_sources": c.n_sources}
            for c in row.ccds]
    detsec = views.get("detsec") if isinstance(views.get("detsec"), dict) else None
    shapes = views.get("shapes") if isinstance(views.get("shapes"), dict) else None
    focal = focal_plane(ccds, detsec, shapes, flagged) if ccds else None
    raw_histograms = views.get("histograms") if isinstance(views.get("histograms"), list) else []
    histograms = [h for h in (histogram(h) for h in raw_histograms if isinstance(h, dict)) if h is not None]
    thumbnails = [t for t in views.get("thumbnails") or () if isinstance(t, dict)
                  and isinstance(t.get("file"), str) and (artifacts / t["file"]).is_file()]
    judged = row.verdict in JUDGED
    recent = row.finished_at is not None and (now - row.finished_at).total_seconds() < ARTIFACT_GRACE_S
    pending = (row.verdict is None or row.galaxies_status == "pending"
               or (judged and not views and recent))
    skipped = [tuple(s) for s in views.get("skipped_ccds") or () if isinstance(s, list) and len(s) == 2]
    return ExposureView(item=list_item(row), row=row, explanations=[explain(f) for f in flags], scores=_scores(row),
                        focal=focal, histograms=histograms, thumbnails=thumbnails,
                        summary_plot=(artifacts / "summary.png").is_file(), pending=pending, skipped_ccds=skipped,
                        views_missing=judged and not views, n_flagged_ccds=len(flagged))
