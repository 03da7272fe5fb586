"""Wire schemas of the API (requests and responses), apart from the store's table models.

:func:`exposure_out` and :func:`exposure_summary` turn an ``ExposureRow`` into the response models.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field

from obsqc.service.store import STATUSES, VERDICTS, ExposureRow

__all__ = [
    "INDICATORS", "CCDOut", "ErrorOut", "ExposureLinks", "ExposureList", "ExposureOut", "ExposureSubmit",
    "ExposureSummary", "Flag", "Score", "SubmitOut", "exposure_out", "exposure_path", "exposure_summary",
]

INDICATORS = ("source", "profile", "background", "large_scale", "line")
"""Indicators reported in ``scores``; ``line`` reports its raw z as ``kl``."""

Status = Literal[STATUSES]  # type: ignore[valid-type]
Verdict = Literal[VERDICTS]  # type: ignore[valid-type]


class ErrorOut(BaseModel):
    """Every error: a short stable code and a sentence saying what to do next."""

    error: str = Field(examples=["path_not_allowed"])
    detail: str = Field(examples=["'/etc/passwd' is not under an allowed data root"])


class ExposureSubmit(BaseModel):
    """``POST /v1/exposures`` as JSON: a file already on the shared storage."""

    path: str = Field(description="Absolute path of the FITS file, under one of OBSQC_DATA_ROOTS.",
                      examples=["/data/raw/20240301/c4d_240301_040012_ori.fits.fz"])
    exposure_id: str | None = Field(
        default=None, max_length=128,
        description="Id to use when the file's headers carry none (EXPNUM, EXPID, OBSID); the header id wins.")


class SubmitOut(BaseModel):
    """Answer of ``POST /v1/exposures`` (202 when queued now, 200 when the exposure was known)."""

    id: str
    status: Status
    verdict: Verdict | None = None
    url: str = Field(description="Absolute URL of GET /v1/exposures/{id}.")


class Flag(BaseModel):
    """Why an exposure is not ``ok``: an indicator name, its significance and the CCDs responsible."""

    model_config = ConfigDict(extra="allow")

    name: str
    sigma: float | None = None
    ccds: list[str] = Field(default_factory=list)
    reason: str | None = None


class Score(BaseModel):
    """One indicator: the raw statistic (the paper's KL; for ``line`` the raw z) and its calibrated sigma."""

    kl: float | None = None
    sigma: float | None = None


class CCDOut(BaseModel):
    """Per-CCD numbers."""

    ccd: str
    background_kl: float | None = None
    background_sigma: float | None = None
    large_scale_sigma: float | None = None
    line_z: float | None = None
    n_sources: int | None = None


class SummaryLinks(BaseModel):
    self: str


class ExposureLinks(SummaryLinks):
    plots: dict[str, str] = Field(default_factory=dict, description="Plot name -> URL of its PNG (those written so far).")


class ExposureSummary(BaseModel):
    """An exposure as listed by ``GET /v1/exposures`` (no per-CCD rows, no plot links)."""

    id: str
    instrument: str | None = None
    band: str | None = None
    mjd: float | None = None
    exptime_s: float | None = None
    status: Status
    verdict: Verdict | None = Field(default=None, description="null while queued or running.")
    flags: list[Flag] = Field(default_factory=list)
    reason: str | None = Field(default=None, description="Why: the flags in words, or why the file was refused.")
    received_at: dt.datetime
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    latency_s: float | None = Field(default=None, description="finished_at - received_at, seconds.")
    attempts: int | None = None
    n_sources: int | None = None
    n_ccds: int | None = None
    scores: dict[str, Score] = Field(default_factory=dict)
    timings: dict[str, float] | None = Field(default=None, description="Seconds per step of the worker job.")
    links: SummaryLinks


class ExposureOut(ExposureSummary):
    """One exposure with its per-CCD numbers and links to its plots."""

    ccds: list[CCDOut] = Field(default_factory=list)
    links: ExposureLinks


class ExposureList(BaseModel):
    """A page of exposures, oldest received first; pass ``next_cursor`` as ``cursor`` for the next page."""

    items: list[ExposureSummary]
    next_cursor: str | None = None


def exposure_path(exposure_id: str) -> str:
    """The path of ``GET /v1/exposures/{id}`` (the id percent-encoded, ``/`` included)."""
    return "/v1/exposures/" + quote(exposure_id, safe="")


def _flags(raw: Any) -> list[Flag]:
    out = []
    for f in raw or ():
        if isinstance(f, str):
            out.append(Flag(name=f))
        elif isinstance(f, dict) and f.get("name"):
            out.append(Flag.model_validate(f))
    return out


def _fields(row: ExposureRow, base_url: str) -> dict[str, Any]:
    latency = None
    if row.finished_at is not None and row.received_at is not None:
        latency = round((row.finished_at - row.received_at).total_seconds(), 6)
    scores = {}
    for name in INDICATORS:
        kl = row.line_z if name == "line" else getattr(row, f"{name}_kl")
        sigma = getattr(row, f"{name}_sigma")
        if kl is not None or sigma is not None:
            scores[name] = Score(kl=kl, sigma=sigma)
    return dict(
        id=row.id, instrument=row.instrument, band=row.band, mjd=row.mjd, exptime_s=row.exptime_s,
        status=row.status, verdict=row.verdict, flags=_flags(row.flags), reason=row.reason,
        received_at=row.received_at, started_at=row.started_at, finished_at=row.finished_at, latency_s=latency,
        attempts=row.attempts, n_sources=row.n_sources, n_ccds=row.n_ccds, scores=scores, timings=row.timings,
    )


def exposure_summary(row: ExposureRow, base_url: str) -> ExposureSummary:
    """The list form of ``row``; ``base_url`` is the service's root URL without a trailing slash."""
    return ExposureSummary(**_fields(row, base_url), links=SummaryLinks(self=base_url + exposure_path(row.id)))


def exposure_out(row: ExposureRow, base_url: str, plot_names: list[str]) -> ExposureOut:
    """The full form of ``row`` with links to the plots ``plot_names``."""
    self_url = base_url + exposure_path(row.id)
    return ExposureOut(
        **_fields(row, base_url),
        ccds=[CCDOut(ccd=c.ccd, background_kl=c.background_kl, background_sigma=c.background_sigma,
                     large_scale_sigma=c.large_scale_sigma, line_z=c.line_z, n_sources=c.n_sources) for c in row.ccds],
        links=ExposureLinks(self=self_url, plots={n: f"{self_url}/plots/{n}.png" for n in plot_names}),
    )
