"""Wire schemas of the API (requests and responses), apart from the store's table models.

:func:`exposure_out` and :func:`exposure_summary` turn an ``ExposureRow`` into the response models,
:func:`galaxy_out` a ``GalaxyRow``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field

from obsqc.service.store import GALAXIES_STATUSES, GALAXY_SCORES, STATUSES, VERDICTS, ExposureRow, GalaxyRow

__all__ = [
    "INDICATORS", "AutoencoderOut", "CCDOut", "ErrorOut", "ExposureGalaxies", "ExposureLinks", "ExposureList",
    "ExposureOut", "ExposureSubmit", "ExposureSummary", "Flag", "GalaxyLinks", "GalaxyList",
    "GalaxyOut", "GalaxyScores", "GalaxySort", "Score", "SigmaScore", "SubmitOut", "exposure_out", "exposure_path",
    "exposure_summary", "galaxies_url", "galaxy_out", "galaxy_path",
]

INDICATORS = ("source", "profile", "background", "large_scale", "line")
"""Indicators reported in ``scores``; ``line`` reports its raw z as ``kl``."""

Status = Literal[STATUSES]  # type: ignore[valid-type]
Verdict = Literal[VERDICTS]  # type: ignore[valid-type]
GalaxiesStatus = Literal[GALAXIES_STATUSES]  # type: ignore[valid-type]
GalaxySort = Literal[GALAXY_SCORES]  # type: ignore[valid-type]


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


class AutoencoderOut(BaseModel):
    """The source-stamp autoencoder indicator (seed paper 000 section 4); nulls when not measured."""

    mse: float | None = Field(default=None, description="Mean reconstruction MSE of the exposure's source stamps.")
    sigma: float | None = Field(default=None, description="The same in sigma units, calibrated like the KL scores.")
    n_stamps: int | None = Field(default=None, description="Source stamps scored.")


class ExposureGalaxies(BaseModel):
    """Where the galaxy scoring of the exposure stands (it finishes after the verdict)."""

    status: GalaxiesStatus | None = Field(
        default=None, description="pending (queued for scoring), done, error or none (nothing to score); "
                                  "null for exposures judged before galaxy scoring existed.")
    reason: str | None = Field(default=None, description="Why the scoring ended in error or none.")
    n: int | None = Field(default=None, description="Galaxies scored.")
    n_anomalies: int | None = Field(
        default=None, description="Galaxies with s_disc above the anomaly threshold (3 sigma: the high-anomaly "
                                  "sample of seed paper 003 section 4.1).")
    url: str = Field(description="GET /v1/galaxies listing this exposure's galaxies.")


class ExposureOut(ExposureSummary):
    """One exposure with its per-CCD numbers, links to its plots, the autoencoder indicator and its galaxies."""

    ccds: list[CCDOut] = Field(default_factory=list)
    autoencoder: AutoencoderOut = Field(default_factory=AutoencoderOut)
    galaxies: ExposureGalaxies
    links: ExposureLinks


class ExposureList(BaseModel):
    """A page of exposures, oldest received first; pass ``next_cursor`` as ``cursor`` for the next page."""

    items: list[ExposureSummary]
    next_cursor: str | None = None


class SigmaScore(BaseModel):
    """One WGAN score of a galaxy: the raw value (seed paper 003 section 3.2) and its number of standard
    deviations from the mean of the survey's running distribution for the instrument and band (section 4.1)."""

    value: float | None = None
    sigma: float | None = None


class GalaxyScores(BaseModel):
    """s_gen: generator (pixel) residual; s_disc: discriminator feature residual; s_anom: (1 - 0.3) s_gen +
    0.3 s_disc (seed paper 003 section 3.2). The paper's high-anomaly sample is s_disc > 3 sigma (section 4.1)."""

    s_gen: SigmaScore
    s_disc: SigmaScore
    s_anom: SigmaScore


class GalaxyLinks(BaseModel):
    self: str
    exposure: str = Field(description="GET /v1/exposures/{id} of the exposure the galaxy is in.")
    cutout: str = Field(description="PNG of the cutout the model scored.")
    reconstruction: str = Field(description="PNG of the WGAN's best reconstruction of it.")
    residual: str = Field(description="PNG of |cutout - reconstruction| (seed paper 003 section 3.3).")


class GalaxyOut(BaseModel):
    """One scored galaxy."""

    id: int
    exposure_id: str
    idx: int = Field(description="Row of the galaxy in its exposure's galaxy artifact.")
    instrument: str | None = None
    band: str | None = None
    ccd: str | None = None
    x: float = Field(description="0-based pixel column on the CCD (along NAXIS1).")
    y: float = Field(description="0-based pixel row on the CCD.")
    scores: GalaxyScores
    scored_at: dt.datetime
    links: GalaxyLinks


class GalaxyList(BaseModel):
    """A page of galaxies, highest sigma of the sort score first; pass ``next_cursor`` as ``cursor`` for the
    next page."""

    items: list[GalaxyOut]
    next_cursor: str | None = None


def exposure_path(exposure_id: str) -> str:
    """The path of ``GET /v1/exposures/{id}`` (the id percent-encoded, ``/`` included)."""
    return "/v1/exposures/" + quote(exposure_id, safe="")


def galaxy_path(galaxy_id: int) -> str:
    """The path of ``GET /v1/galaxies/{id}``."""
    return f"/v1/galaxies/{int(galaxy_id)}"


def galaxies_url(base_url: str, exposure_id: str) -> str:
    """The URL of ``GET /v1/galaxies`` listing the galaxies of ``exposure_id``."""
    return f"{base_url}/v1/galaxies?exposure_id={quote(exposure_id, safe='')}"


def galaxy_out(row: GalaxyRow, base_url: str) -> GalaxyOut:
    """The wire form of ``row``; ``base_url`` is the service's root URL without a trailing slash."""
    self_url = base_url + galaxy_path(row.id)
    scores = {name: SigmaScore(value=getattr(row, name), sigma=getattr(row, f"{name}_sigma")) for name in GALAXY_SCORES}
    return GalaxyOut(
        id=row.id, exposure_id=row.exposure_id, idx=row.idx, instrument=row.instrument, band=row.band, ccd=row.ccd,
        x=row.x, y=row.y, scores=GalaxyScores(**scores), scored_at=row.scored_at,
        links=GalaxyLinks(self=self_url, exposure=base_url + exposure_path(row.exposure_id),
                          cutout=f"{self_url}/cutout.png", reconstruction=f"{self_url}/reconstruction.png",
                          residual=f"{self_url}/residual.png"),
    )


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
        autoencoder=AutoencoderOut(mse=row.autoencoder_mse, sigma=row.autoencoder_sigma, n_stamps=row.n_stamps),
        galaxies=ExposureGalaxies(status=row.galaxies_status, reason=row.galaxies_reason, n=row.n_galaxies,
                                  n_anomalies=row.n_galaxy_anomalies, url=galaxies_url(base_url, row.id)),
        links=ExposureLinks(self=self_url, plots={n: f"{self_url}/plots/{n}.png" for n in plot_names}),
    )
