"""Routes ``/v1/galaxies``: scored galaxies by anomaly, one galaxy, and its images.

* ``GET /v1/galaxies``: galaxies most anomalous first by the sigma of ``sort`` (``s_disc`` by default,
  the score of the high-anomaly sample ``s_disc > 3 sigma`` of seed paper 003 section 4.1), filtered by
  instrument, band, exposure, a minimum sigma and the time they were scored; keyset paging with
  ``cursor``. 422 ``invalid_request`` for a bad parameter, 422 ``bad_cursor`` for a cursor this service
  did not issue (or issued for another sort).
* ``GET /v1/galaxies/{id}``: one galaxy, 404 ``not_found`` when unknown.
* ``GET /v1/galaxies/{id}/{kind}.png`` with kind ``cutout``, ``reconstruction`` or ``residual``
  (:mod:`obsqc.service.api.images`): 404 ``not_found`` when the galaxy, the kind, the artifact or its
  row is missing (the reconstruction exists once the galaxy is scored). The image of a galaxy changes
  only if its exposure is scored again, so it is cacheable for a day and carries an ``ETag``.

Reads need no token.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from obsqc.service.api.deps import State, base_url
from obsqc.service.api.errors import ApiError
from obsqc.service.api.images import KINDS, ArtifactMissing, galaxy_png
from obsqc.service.api.routes import artifacts_dir
from obsqc.service.api.schemas import ErrorOut, GalaxyList, GalaxyOut, GalaxySort, galaxy_out
from obsqc.service.store import get_galaxy, list_galaxies

__all__ = ["ARTIFACT_NAME", "IMAGE_MAX_AGE_S", "router"]

router = APIRouter(prefix="/v1", tags=["galaxies"])

ARTIFACT_NAME = "galaxies.npz"
"""The galaxy artifact of an exposure, in its artifact directory."""

IMAGE_MAX_AGE_S = 86400
"""``Cache-Control: max-age`` of galaxy images."""

_MAX_ID = 2**63 - 1


def _galaxy_or_404(state, galaxy_id: int):
    row = None
    if 1 <= galaxy_id <= _MAX_ID:
        with state.sessions() as session:
            row = get_galaxy(session, galaxy_id)
    if row is None:
        raise ApiError(404, "not_found", f"no galaxy {galaxy_id}; list them with GET /v1/galaxies")
    return row


def _json(model) -> Response:
    # Serialised here, not by FastAPI, which would validate the model a second time.
    return Response(model.model_dump_json(), media_type="application/json")


@router.get("/galaxies", response_model=GalaxyList, responses={422: {"model": ErrorOut}})
def list_galaxies_route(
    request: Request,
    state: State,
    min_sigma: Annotated[float | None, Query(
        allow_inf_nan=False, description="Keep galaxies whose sigma of the sort score is at least this "
                                         "(3: the high-anomaly sample of seed paper 003 section 4.1).")] = None,
    sort: Annotated[GalaxySort, Query(description="Score whose sigma orders the list, highest first.")] = "s_disc",
    instrument: str | None = None,
    band: str | None = None,
    exposure_id: str | None = None,
    since: Annotated[dt.datetime | None, Query(description="Scored at or after (ISO 8601; no timezone: UTC).")] = None,
    until: Annotated[dt.datetime | None, Query(description="Scored before (ISO 8601; no timezone: UTC).")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page (same sort).")] = None,
) -> Response:
    """List scored galaxies, most anomalous first by the sigma of ``sort``, ties by id, with filters and
    cursor paging. Galaxies without a sigma for ``sort`` are not listed."""
    since, until = (t.replace(tzinfo=dt.UTC) if t is not None and t.tzinfo is None else t for t in (since, until))
    with state.sessions() as session:
        try:
            page = list_galaxies(session, instrument=instrument, band=band, exposure_id=exposure_id,
                                 min_sigma=min_sigma, sort=sort, since=since, until=until, limit=limit,
                                 cursor=cursor)
        except ValueError as exc:
            raise ApiError(422, "bad_cursor", str(exc)) from None
        root = base_url(request)
        return _json(GalaxyList(items=[galaxy_out(g, root) for g in page.items], next_cursor=page.next_cursor))


@router.get("/galaxies/{galaxy_id}", response_model=GalaxyOut, responses={404: {"model": ErrorOut}})
def get_galaxy_route(galaxy_id: int, request: Request, state: State) -> Response:
    """One scored galaxy: position, scores with their sigmas, links to its exposure and its images."""
    return _json(galaxy_out(_galaxy_or_404(state, galaxy_id), base_url(request)))


@router.get(
    "/galaxies/{galaxy_id}/{kind}.png", response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "The image (304 for a matching If-None-Match)."},
               404: {"model": ErrorOut}},
)
def get_galaxy_image(galaxy_id: int, kind: str, request: Request, state: State) -> Response:
    """The galaxy's ``cutout``, ``reconstruction`` or ``residual`` (|cutout - reconstruction|) as PNG.

    gri cutouts are drawn as i, r, g -> red, green, blue; single-band ones in grey; pixel row 0 at the
    bottom; enlarged (nearest neighbour) to at least 192 pixels a side."""
    if kind not in KINDS:
        raise ApiError(404, "not_found", f"no image {kind!r}; one of {', '.join(KINDS)}")
    row = _galaxy_or_404(state, galaxy_id)
    path = artifacts_dir(state.settings, row.exposure_id) / ARTIFACT_NAME
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise ApiError(404, "not_found", f"the galaxy artifact of exposure {row.exposure_id!r} is missing") from None
    etag = f'"{stat.st_mtime_ns:x}-{stat.st_size:x}-{row.idx}-{kind}"'
    headers = {"ETag": etag, "Cache-Control": f"public, max-age={IMAGE_MAX_AGE_S}"}
    if etag in (request.headers.get("if-none-match") or ""):
        return Response(status_code=304, headers=headers)
    try:
        body = galaxy_png(path, row.idx, kind)
    except ArtifactMissing as exc:
        raise ApiError(404, "not_found", f"galaxy {galaxy_id}: {exc}") from None
    return Response(body, media_type="image/png", headers=headers)
