"""Routes: ``/v1/exposures`` (submit, read, list, plots) and the health endpoints.

Status codes of ``POST /v1/exposures``:

* 202: recorded and queued now; 200: the exposure was already known (the same record, no new job);
* 400 ``invalid_path`` (empty, relative, NUL, ``..``), 403 ``path_not_allowed`` (outside every data
  root once symlinks are resolved), 401/403 for the token;
* 413 upload over ``OBSQC_UPLOAD_MAX_BYTES``; 415 neither JSON nor multipart;
* 422 a file that cannot be judged, ``error`` being its reason code (``not_found``, ``not_a_file``,
  ``not_fits``, ``truncated``, ``missing_exposure_id``, ...), recorded as ``rejected`` when the
  request named the exposure id; 422 ``invalid_request``/``bad_upload`` for a malformed body;
* 503 ``queue_unavailable``: recorded as ``queued`` but Redis is down (re-post later).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import zlib
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from pydantic import ValidationError
from redis.exceptions import RedisError
from rq import Worker
from sqlalchemy import bindparam, select, text
from sqlalchemy.orm import joinedload

from obsqc.service.api.auth import RequireToken
from obsqc.service.api.deps import State, base_url
from obsqc.service.api.errors import ApiError
from obsqc.service.api.intake import Submission, accept, check_exposure_id, read_header, record_rejection
from obsqc.service.api.paths import resolve_data_path
from obsqc.service.api.schemas import (
    ErrorOut, ExposureList, ExposureOut, ExposureSubmit, SubmitOut, Verdict, exposure_out, exposure_path,
    exposure_summary,
)
from obsqc.service.api.uploads import spool_upload
from obsqc.service.errors import InvalidExposureError
from obsqc.service.metrics import render_metrics, rq_queue_stats
from obsqc.service.ops_metrics import StoreStatsCollector
from obsqc.service.queue import GPU_QUEUE_NAME, job_id_for, make_queue
from obsqc.service.store import ExposureRow, list_exposures

__all__ = ["PLOT_NAME", "artifacts_dir", "health_router", "router"]

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["exposures"])
health_router = APIRouter(tags=["health"])

PLOT_NAME = re.compile(r"[a-z_]+")
"""Plot names served (``<name>.png`` in the exposure's artifact directory)."""

MAX_JSON_BYTES = 64 * 1024
"""Largest JSON body of ``POST /v1/exposures``."""

_ERRORS = {code: {"model": ErrorOut} for code in (400, 401, 403, 413, 415, 422, 503)}
_SUBMIT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": ExposureSubmit.model_json_schema()},
            "multipart/form-data": {"schema": {
                "type": "object", "required": ["file"],
                "properties": {"file": {"type": "string", "format": "binary", "description": "The FITS file."},
                               "exposure_id": {"type": "string", "maxLength": 128,
                                               "description": "Id to use when the headers carry none."}},
            }},
        },
    }
}


def artifacts_dir(state_settings, exposure_id: str) -> Path:
    """Where the worker writes the plots of ``exposure_id``."""
    return state_settings.home / "artifacts" / job_id_for(exposure_id)


# ---- POST /v1/exposures -------------------------------------------------------------------------


async def _read_json(request: Request) -> object:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_JSON_BYTES:
            raise ApiError(413, "payload_too_large", f"the JSON body is larger than {MAX_JSON_BYTES} bytes")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(422, "invalid_request", f"the body is not valid JSON ({exc})") from None


def _from_path(state, raw_path: str, requested_id: str | None) -> Submission:
    real = None
    try:
        real = resolve_data_path(raw_path, state.settings.data_roots)
        header = read_header(real, requested_id)
    except InvalidExposureError as exc:
        if requested_id is not None:
            record_rejection(state, requested_id, exc, str(real or exc.path or raw_path))
        raise
    return accept(state, header, str(real))


def _from_upload(state, spooled, requested_id: str | None) -> Submission:
    try:
        try:
            header = read_header(spooled.path, requested_id)
        except InvalidExposureError as exc:
            shown = "".join(c if c.isprintable() else "?" for c in (spooled.filename or "upload"))
            exc.message = exc.message.replace(spooled.path.name, shown)
            if requested_id is not None:
                record_rejection(state, requested_id, exc, None)
            raise
        return accept(state, header, None, spooled)
    finally:
        spooled.discard()


@router.post(
    "/exposures", status_code=202, response_model=SubmitOut, openapi_extra=_SUBMIT_BODY,
    responses={200: {"model": SubmitOut, "description": "Already known: the existing record, no new job."},
               **_ERRORS},
)
async def submit_exposure(request: Request, response: Response, state: State, _token: RequireToken) -> SubmitOut:
    """Submit an exposure: JSON {"path": ...} under a data root, or a multipart upload ("file")."""
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type == "application/json":
        try:
            body = ExposureSubmit.model_validate(await _read_json(request))
        except ValidationError as exc:
            detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()[:5])
            raise ApiError(422, "invalid_request", detail) from None
        requested = check_exposure_id(body.exposure_id) if body.exposure_id is not None else None
        submission = await run_in_threadpool(_from_path, state, body.path, requested)
    elif content_type == "multipart/form-data":
        spooled = await spool_upload(request, state.settings.home / "uploads", state.settings.upload_max_bytes)
        try:
            raw_id = spooled.fields.get("exposure_id", "").strip()
            requested = check_exposure_id(raw_id) if raw_id else None
        except ApiError:
            spooled.discard()
            raise
        submission = await run_in_threadpool(_from_upload, state, spooled, requested)
    else:
        raise ApiError(415, "unsupported_media_type",
                       'send JSON {"path": "..."} or a multipart/form-data upload with a "file" part')
    row = submission.row
    url = base_url(request) + exposure_path(row.id)
    response.status_code = 202 if submission.created else 200
    response.headers["Location"] = url
    return SubmitOut(id=row.id, status=row.status, verdict=row.verdict, url=url)


# ---- GET ----------------------------------------------------------------------------------------


@router.get("/exposures", response_model=ExposureList, responses={400: {"model": ErrorOut}, 422: {"model": ErrorOut}})
def list_exposures_route(
    request: Request,
    state: State,
    instrument: str | None = None,
    band: str | None = None,
    verdict: Verdict | None = None,
    since: Annotated[dt.datetime | None, Query(description="ISO 8601, inclusive; without a timezone: UTC.")] = None,
    until: Annotated[dt.datetime | None, Query(description="ISO 8601, exclusive; without a timezone: UTC.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page.")] = None,
) -> ExposureList:
    """List exposures, oldest received first, with filters and cursor paging."""
    since, until = (t.replace(tzinfo=dt.UTC) if t is not None and t.tzinfo is None else t for t in (since, until))
    with state.sessions() as session:
        try:
            page = list_exposures(session, instrument=instrument, band=band, verdict=verdict, since=since,
                                  until=until, limit=limit, cursor=cursor)
        except ValueError as exc:
            raise ApiError(400, "bad_cursor", str(exc)) from None
        root = base_url(request)
        return ExposureList(items=[exposure_summary(r, root) for r in page.items], next_cursor=page.next_cursor)


@router.get("/exposures/{exposure_id:path}/plots/{name}.png", response_class=FileResponse,
            responses={200: {"content": {"image/png": {}}}, 404: {"model": ErrorOut}})
def get_plot(exposure_id: str, name: str, state: State) -> FileResponse:
    """One plot of an exposure, as PNG."""
    path = artifacts_dir(state.settings, exposure_id) / f"{name}.png"
    if not PLOT_NAME.fullmatch(name) or not path.is_file():
        raise ApiError(404, "not_found", f"exposure {exposure_id!r} has no plot {name!r}")
    return FileResponse(path, media_type="image/png")


_ONE_EXPOSURE = (select(ExposureRow).options(joinedload(ExposureRow.ccds))
                 .where(ExposureRow.id == bindparam("exposure_id")))
"""The row and its CCD rows in one query; built once (building it per request cost a fifth of the CPU)."""

_REVISION = select(ExposureRow.revision).where(ExposureRow.id == bindparam("exposure_id"))
"""The revision alone: what a cached record is checked against (:mod:`obsqc.service.api.cache`)."""


def _plot_names(folder: Path) -> list[str]:
    try:
        with os.scandir(folder) as entries:
            names = [e.name[:-4] for e in entries if e.name.endswith(".png") and e.is_file()]
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(n for n in names if PLOT_NAME.fullmatch(n))


@router.get("/exposures/{exposure_id:path}", response_model=ExposureOut, responses={404: {"model": ErrorOut}})
def get_exposure_route(exposure_id: str, request: Request, state: State) -> Response:
    """One exposure: status, verdict, flags, scores, per-CCD numbers, timings, links to plots.

    Answers with an ``ETag``; a request whose ``If-None-Match`` carries it gets 304 and no body."""
    base = base_url(request)
    plots = tuple(_plot_names(artifacts_dir(state.settings, exposure_id)))
    with state.sessions() as session:
        revision = session.execute(_REVISION, {"exposure_id": exposure_id}).scalar_one_or_none()
        if revision is None:
            raise ApiError(404, "not_found", f"no exposure {exposure_id!r}; POST it to /v1/exposures first")
        body = state.records.get((exposure_id, revision, plots, base))
        if body is None:
            row = session.execute(_ONE_EXPOSURE, {"exposure_id": exposure_id}).unique().scalar_one_or_none()
            if row is None:  # deleted between the two reads
                raise ApiError(404, "not_found", f"no exposure {exposure_id!r}; POST it to /v1/exposures first")
            revision = row.revision
            # Serialised here, not by FastAPI: it would validate the model a second time (a third of the CPU).
            body = exposure_out(row, base, list(plots)).model_dump_json().encode()
            state.records.put((exposure_id, revision, plots, base), body)
    etag = f'"{revision}.{zlib.crc32("/".join(plots).encode()):08x}"'
    if etag in (request.headers.get("if-none-match") or ""):
        return Response(status_code=304, headers={"ETag": etag})
    return Response(body, media_type="application/json", headers={"ETag": etag})


# ---- health -------------------------------------------------------------------------------------


@health_router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


def _readiness(state) -> dict[str, str]:
    checks: dict[str, str] = {}
    try:
        state.redis.ping()
        checks["redis"] = "ok"
    except RedisError as exc:
        checks["redis"] = f"unreachable: {exc}"
    try:
        with state.engine.connect() as conn:
            conn.execute(text("select 1"))
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any driver error means not ready
        checks["database"] = f"unreachable: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    if checks["redis"] != "ok":
        checks["workers"] = "unknown: Redis unreachable"
        return checks
    try:
        horizon = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=state.settings.worker_ttl_s)
        workers = Worker.all(queue=state.queue)
        alive = [w for w in workers if w.last_heartbeat is not None and w.last_heartbeat >= horizon]
        checks["workers"] = (f"ok: {len(alive)} alive" if alive else
                             f"none alive: {len(workers)} registered on queue {state.queue.name!r}, "
                             f"none with a heartbeat in the last {state.settings.worker_ttl_s} s; start `obsqc worker`")
    except RedisError as exc:
        checks["workers"] = f"unknown: {exc}"
    return checks


@health_router.get("/readyz", responses={503: {"model": ErrorOut}})
def readyz(state: State):
    """Ready: Redis answers, the database answers, and a worker has sent a heartbeat recently."""
    checks = _readiness(state)
    failing = {k: v for k, v in checks.items() if not v.startswith("ok")}
    if failing:
        return JSONResponse({"error": "not_ready", "detail": "; ".join(f"{k}: {v}" for k, v in failing.items()),
                             "checks": checks}, status_code=503)
    return {"status": "ready", "checks": checks}


@health_router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
def metrics(state: State) -> Response:
    """Prometheus metrics of every obsqc process sharing the metrics directory, and the queue."""
    queues = {"qc": rq_queue_stats(state.queue), "gpu": rq_queue_stats(make_queue(state.redis, GPU_QUEUE_NAME))}
    body, content_type = render_metrics(state.settings.metrics_dir, queues,
                                        collectors=[StoreStatsCollector(state.sessions)])
    return Response(body, media_type=content_type)
