"""Routes of the operators' pages (HTML, not in the OpenAPI document).

* ``GET /ui``: redirects to ``/ui/exposures``.
* ``GET /ui/exposures``: the exposure list, newest first, filters ``instrument``, ``band``, ``verdict``
  (``queued``: no verdict yet), ``limit``, paging with ``older`` (the cursor of the last row shown).
* ``GET /ui/exposures/{id}``: one exposure (focal-plane map, histograms, thumbnails, flags in words,
  autoencoder indicator, galaxies); 404 page for an unknown id.
* ``GET /ui/exposures/{id}/thumbs/thumb_<n>.png``: a thumbnail the worker wrote (:mod:`.artifacts`).
* ``GET /ui/galaxies``: scored galaxies, most anomalous first by ``sort`` (``s_disc`` by default), filters
  ``instrument``, ``band``, ``min_sigma``, ``exposure_id``, paging with ``cursor``.

Every page refreshes by itself (``static/ui.js``): a page marks a region with ``data-live-url``, the
script fetches that URL every few seconds and swaps the region when the server's ``data-version`` of it
changed. The list polls always (first page), an exposure page while its verdict, galaxies or views are
still to come, the gallery every 15 s. Pages are autoescaped Jinja2 and served with a strict
Content-Security-Policy: no inline script or style, nothing from another origin.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import zlib
from functools import lru_cache
from pathlib import Path
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, FastAPI, Query, Response
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from obsqc.service.api.deps import State
from obsqc.service.api.routes import artifacts_dir
from obsqc.service.api.schemas import exposure_path
from obsqc.service.store import GALAXY_SCORES, ExposureRow, list_galaxies
from obsqc.service.ui.explain import join_names
from obsqc.service.ui.queries import UI_VERDICTS, ExposureFilter, known_values, newest_exposures, verdict_counts
from obsqc.service.ui.svg import SIGMA_STOPS
from obsqc.service.ui.views import exposure_url, exposure_view, list_item

__all__ = ["STATIC_DIR", "install_ui", "router"]

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
"""CSS, JavaScript and the icon, served under ``/ui/static``."""

LIST_REFRESH_S = 3
"""Seconds between refreshes of the exposure list."""

EXPOSURE_REFRESH_S = 2
"""Seconds between refreshes of an exposure page while something is still to come."""

GALLERY_REFRESH_S = 15
"""Seconds between refreshes of the first page of the gallery."""

COUNTS_WINDOW_H = 24
"""The counts per verdict above the exposure list cover the exposures received in this many hours."""

HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
"""Headers of every page."""

THUMB_NAME = re.compile(r"thumb_[0-9]{1,3}\.png")
"""Names of thumbnail files served."""

router = APIRouter(prefix="/ui", include_in_schema=False)


def _digest(text: str) -> str:
    return f"{zlib.crc32(str(text).encode()):08x}"


@lru_cache(maxsize=1)
def _env() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["digest"] = _digest
    env.filters["sigma"] = lambda v, d=1: "" if v is None or not math.isfinite(v) else f"{v:.{d}f}"
    env.globals.update(exposure_url=exposure_url, join_names=join_names, verdicts=UI_VERDICTS,
                       sigma_stops=SIGMA_STOPS)
    return env


def _page(template: str, status_code: int = 200, **context) -> HTMLResponse:
    html = _env().get_template(template).render(**context)
    return HTMLResponse(html, status_code=status_code, headers=HEADERS)


def _blank(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


@router.get("")
@router.get("/")
def ui_root() -> RedirectResponse:
    """The operators' pages start at the exposure list."""
    return RedirectResponse("/ui/exposures", status_code=307)


@router.get("/exposures")
def exposures_page(
    state: State,
    instrument: str | None = None,
    band: str | None = None,
    verdict: str | None = None,
    older: str | None = None,
    limit: Annotated[int, Query(ge=5, le=500)] = 50,
) -> HTMLResponse:
    """The exposure list."""
    verdict = _blank(verdict)
    filters = ExposureFilter(_blank(instrument), _blank(band), verdict if verdict in UI_VERDICTS else None)
    notice = f"unknown verdict {verdict!r} ignored" if verdict and verdict not in UI_VERDICTS else None
    older = _blank(older)
    with state.sessions() as session:
        try:
            page = newest_exposures(session, filters, limit=limit, older_than=older)
        except ValueError:
            notice, older = "that page link is not valid any more: showing the newest exposures", None
            page = newest_exposures(session, filters, limit=limit)
        counts = verdict_counts(session, filters, dt.datetime.now(dt.UTC) - dt.timedelta(hours=COUNTS_WINDOW_H))
        instruments = known_values(session, ExposureRow.instrument)
        bands = known_values(session, ExposureRow.band)
        items = [list_item(r) for r in page.rows]
    query = {k: v for k, v in (("instrument", filters.instrument), ("band", filters.band),
                               ("verdict", filters.verdict)) if v}
    if limit != 50:
        query["limit"] = str(limit)
    live_url = "/ui/exposures" + ("?" + urlencode(query) if query else "")
    others = {k: v for k, v in query.items() if k != "verdict"}
    verdict_urls = {v: "/ui/exposures?" + urlencode(others if v == filters.verdict else {**others, "verdict": v})
                    for v in UI_VERDICTS}
    older_url = "/ui/exposures?" + urlencode({**query, "older": page.older}) if page.older else None
    return _page("exposures.html", items=items, filters=filters, counts=counts, instruments=instruments, bands=bands,
                 notice=notice, live_url=None if older else live_url, first_url=live_url if older else None,
                 older_url=older_url, refresh_s=LIST_REFRESH_S, verdict_urls=verdict_urls,
                 counts_window_h=COUNTS_WINDOW_H, active="exposures")


@router.get("/galaxies")
def galaxies_page(
    state: State,
    instrument: str | None = None,
    band: str | None = None,
    exposure_id: str | None = None,
    min_sigma: str | None = None,
    sort: str | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=4, le=200)] = 24,
) -> HTMLResponse:
    """The galaxy gallery, most anomalous first."""
    sort = sort if sort in GALAXY_SCORES else "s_disc"
    notice = None
    try:
        threshold = float(min_sigma) if _blank(min_sigma) else None
        if threshold is not None and not math.isfinite(threshold):
            raise ValueError
    except ValueError:
        threshold, notice = None, f"minimum sigma {min_sigma!r} is not a number; ignored"
    filters = {"instrument": _blank(instrument), "band": _blank(band), "exposure_id": _blank(exposure_id)}
    cursor = _blank(cursor)
    with state.sessions() as session:
        try:
            page = list_galaxies(session, **filters, min_sigma=threshold, sort=sort, limit=limit, cursor=cursor)
        except ValueError:
            notice, cursor = "that page link is not valid any more: showing the most anomalous galaxies", None
            page = list_galaxies(session, **filters, min_sigma=threshold, sort=sort, limit=limit)
        instruments = known_values(session, ExposureRow.instrument)
        bands = known_values(session, ExposureRow.band)
        galaxies = list(page.items)
    query = {k: v for k, v in filters.items() if v}
    query |= {"sort": sort} if sort != "s_disc" else {}
    query |= {"min_sigma": f"{threshold:g}"} if threshold is not None else {}
    live_url = "/ui/galaxies" + ("?" + urlencode(query) if query else "")
    next_url = "/ui/galaxies?" + urlencode({**query, "cursor": page.next_cursor}) if page.next_cursor else None
    return _page("galaxies.html", galaxies=galaxies, filters=filters, sort=sort, sorts=GALAXY_SCORES,
                 min_sigma="" if threshold is None else f"{threshold:g}", instruments=instruments, bands=bands,
                 notice=notice, live_url=None if cursor else live_url, first_url=live_url if cursor else None,
                 next_url=next_url, refresh_s=GALLERY_REFRESH_S, anomaly_sigma=state.settings.galaxy_anomaly_sigma,
                 active="galaxies")


@router.get("/exposures/{exposure_id:path}/thumbs/{name}")
def thumbnail(exposure_id: str, name: str, state: State) -> Response:
    """One CCD thumbnail of an exposure (PNG)."""
    path = artifacts_dir(state.settings, exposure_id) / name
    if not THUMB_NAME.fullmatch(name) or not path.is_file():
        return _page("missing.html", 404, what="thumbnail", exposure_id=exposure_id, active="")
    return FileResponse(path, media_type="image/png", headers={"Cache-Control": "max-age=60"})


@router.get("/exposures/{exposure_id:path}")
def exposure_page(exposure_id: str, state: State) -> HTMLResponse:
    """One exposure."""
    with state.sessions() as session:
        row = session.get(ExposureRow, exposure_id)
        if row is None:
            return _page("missing.html", 404, what="exposure", exposure_id=exposure_id, active="exposures")
        view = exposure_view(row, artifacts_dir(state.settings, exposure_id), dt.datetime.now(dt.UTC))
        galaxies = list(list_galaxies(session, exposure_id=exposure_id, sort="s_disc", limit=4).items) \
            if row.galaxies_status == "done" else []
        html_context = dict(view=view, row=row, galaxies=galaxies, anomaly_sigma=state.settings.galaxy_anomaly_sigma,
                            page_url=exposure_url(exposure_id), refresh_s=EXPOSURE_REFRESH_S, active="exposures",
                            gallery_url="/ui/galaxies?" + urlencode({"exposure_id": exposure_id}),
                            json_url=exposure_path(exposure_id))
        return _page("exposure.html", **html_context)


def install_ui(app: FastAPI) -> None:
    """Add the pages and their static files to ``app``."""
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=STATIC_DIR), name="ui-static")

