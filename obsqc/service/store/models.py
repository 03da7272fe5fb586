"""Tables of the verdict store (SQLAlchemy 2 typed ORM).

``exposures`` holds one row per exposure id: its lifecycle (``status``), the verdict, and per indicator
of :data:`obsqc.detectors.scoring.INDICATOR_NAMES` the raw statistic (``<name>_kl``; for ``line`` the
raw z, ``line_z``) and the standardised significance (``<name>_sigma``, sigma units). ``ccd_results``
holds the per-CCD numbers, ``references`` one reference distribution per (instrument, band).
``galaxies`` holds one row per scored galaxy of an exposure (WGAN scores, seed paper 003 section 3.2,
each also in sigma units, section 4.1) and ``galaxy_score_stats`` the survey's running distribution of
each score per (instrument, band), from which those sigmas are computed.
Every timestamp is stored timezone-aware and read back in UTC.
"""

from __future__ import annotations

import datetime as dt
from sqlalchemy import JSON, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

__all__ = [
    "Base", "CCDResult", "ExposureRow", "GALAXIES_STATUSES", "GALAXY_SCORES", "GalaxyRow", "GalaxyScoreStats",
    "ReferenceMember", "ReferenceRow", "STATUSES", "VERDICTS", "UTCDateTime", "utcnow",
]

STATUSES = ("queued", "running", "done", "rejected", "error")
"""Lifecycle of an exposure in the service."""

VERDICTS = ("ok", "warn", "bad", "calibrating", "rejected", "error")
"""Verdicts of a finished exposure (``None`` while queued or running)."""

GALAXIES_STATUSES = ("pending", "done", "error", "none")
"""Where the galaxy scoring of an exposure stands: queued on the ``gpu`` queue, scored, failed, or
nothing to score (no galaxies or no model); ``None`` for exposures judged before galaxies existed."""

GALAXY_SCORES = ("s_gen", "s_disc", "s_anom")
"""The WGAN anomaly scores of a galaxy (seed paper 003 section 3.2): generator (pixel) residual,
discriminator feature residual, and their mix ``(1 - lambda) s_gen + lambda s_disc``."""


def utcnow() -> dt.datetime:
    """The current time, timezone-aware UTC."""
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator):
    """A timezone-aware timestamp, always returned in UTC (SQLite stores naive UTC text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"timestamp {value!r} has no timezone; pass an aware datetime (UTC)")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    """Declarative base of the verdict store; its metadata is what the Alembic revisions build."""


class ExposureRow(Base):
    """One exposure: what was received, where it stands, and its scores."""

    __tablename__ = "exposures"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    instrument: Mapped[str | None] = mapped_column(String(64))
    band: Mapped[str | None] = mapped_column(String(32))
    mjd: Mapped[float | None] = mapped_column(Float)
    exptime_s: Mapped[float | None] = mapped_column(Float)
    path: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    verdict: Mapped[str | None] = mapped_column(String(16))
    flags: Mapped[list[str]] = mapped_column(JSON, default=list)
    reason: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    n_sources: Mapped[int | None] = mapped_column(Integer)
    source_kl: Mapped[float | None] = mapped_column(Float)
    source_sigma: Mapped[float | None] = mapped_column(Float)
    profile_kl: Mapped[float | None] = mapped_column(Float)
    profile_sigma: Mapped[float | None] = mapped_column(Float)
    background_kl: Mapped[float | None] = mapped_column(Float)
    background_sigma: Mapped[float | None] = mapped_column(Float)
    large_scale_kl: Mapped[float | None] = mapped_column(Float)
    large_scale_sigma: Mapped[float | None] = mapped_column(Float)
    line_z: Mapped[float | None] = mapped_column(Float)
    line_sigma: Mapped[float | None] = mapped_column(Float)
    n_ccds: Mapped[int | None] = mapped_column(Integer)
    attempts: Mapped[int | None] = mapped_column(Integer)
    """Worker attempts so far (1 on a first-time success)."""
    timings: Mapped[dict[str, float] | None] = mapped_column(JSON)
    """Seconds per step of the worker job (read_measure, score, store, ...)."""
    revision: Mapped[int] = mapped_column(Integer, nullable=False, default=1, server_default="1")
    """Bumped by every ORM update of the row (SQLAlchemy's version counter): readers cache by it."""
    autoencoder_mse: Mapped[float | None] = mapped_column(Float)
    """Mean reconstruction MSE of the exposure's source stamps (seed paper 000 section 4)."""
    autoencoder_sigma: Mapped[float | None] = mapped_column(Float)
    """``autoencoder_mse`` calibrated in sigma units like the KL indicators."""
    n_stamps: Mapped[int | None] = mapped_column(Integer)
    """Source stamps the autoencoder scored."""
    galaxies_status: Mapped[str | None] = mapped_column(String(16))
    """One of :data:`GALAXIES_STATUSES`, or None (judged before galaxy scoring existed)."""
    galaxies_reason: Mapped[str | None] = mapped_column(Text)
    """Why the galaxy scoring ended in ``error`` or ``none``."""
    n_galaxies: Mapped[int | None] = mapped_column(Integer)
    """Galaxies scored (rows of ``galaxies`` for this exposure)."""
    n_galaxy_anomalies: Mapped[int | None] = mapped_column(Integer)
    """Galaxies with ``s_disc_sigma`` above the anomaly threshold (3 sigma, seed paper 003 section 4.1)."""

    ccds: Mapped[list["CCDResult"]] = relationship(
        back_populates="exposure", cascade="all, delete-orphan", order_by="CCDResult.ccd", lazy="selectin"
    )

    __mapper_args__ = {"version_id_col": revision}

    __table_args__ = (
        Index("ix_exposures_received_at_id", "received_at", "id"),
        Index("ix_exposures_instrument_band", "instrument", "band"),
        Index("ix_exposures_verdict", "verdict"),
    )


class CCDResult(Base):
    """Per-CCD numbers of one exposure (one row per CCD)."""

    __tablename__ = "ccd_results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    exposure_id: Mapped[str] = mapped_column(ForeignKey("exposures.id", ondelete="CASCADE"), index=True)
    ccd: Mapped[str] = mapped_column(String(64))
    background_kl: Mapped[float | None] = mapped_column(Float)
    background_sigma: Mapped[float | None] = mapped_column(Float)
    large_scale_sigma: Mapped[float | None] = mapped_column(Float)
    line_z: Mapped[float | None] = mapped_column(Float)
    n_sources: Mapped[int | None] = mapped_column(Integer)

    exposure: Mapped[ExposureRow] = relationship(back_populates="ccds")

    __table_args__ = (UniqueConstraint("exposure_id", "ccd", name="uq_ccd_results_exposure_ccd"),)


class ReferenceRow(Base):
    """The reference of one (instrument, band): ``payload`` is ``Reference.to_json()``."""

    __tablename__ = "references"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    instrument: Mapped[str] = mapped_column(String(64))
    band: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    n_exposures: Mapped[int] = mapped_column(Integer, default=0)
    payload: Mapped[str] = mapped_column(Text)

    __table_args__ = (UniqueConstraint("instrument", "band", name="uq_references_instrument_band"),)


class ReferenceMember(Base):
    """One exposure a reference of (instrument, band) is built from: its measured histograms.

    ``stats`` is :func:`obsqc.service.calibration.stats_to_json` of the exposure's statistics;
    ``source`` says how it got in: ``archive`` (``obsqc calibrate``) or ``live`` (judged normal).
    """

    __tablename__ = "reference_members"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    instrument: Mapped[str] = mapped_column(String(64))
    band: Mapped[str] = mapped_column(String(32))
    exposure_id: Mapped[str] = mapped_column(String(128))
    added_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    source: Mapped[str] = mapped_column(String(16))
    n_sources: Mapped[int] = mapped_column(Integer)
    stats: Mapped[str] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("instrument", "band", "exposure_id", name="uq_reference_members_exposure"),
        Index("ix_reference_members_instrument_band_id", "instrument", "band", "id"),
    )


class GalaxyRow(Base):
    """One scored galaxy of an exposure: where it is, its WGAN scores and their sigmas.

    ``idx`` is its row in the exposure's galaxy artifact (``galaxies.npz``: cutout, reconstruction);
    ``(exposure_id, idx)`` is unique, so a re-run of the scoring updates the same rows and keeps their
    ids. ``x``, ``y`` are 0-based pixel coordinates on CCD ``ccd``, x along NAXIS1. ``s_gen``,
    ``s_disc``, ``s_anom`` are the raw scores of seed paper 003 section 3.2; ``<score>_sigma`` is the
    number of standard deviations from the mean of the survey's running distribution of that score for
    the (instrument, band) (section 4.1, :class:`GalaxyScoreStats`). ``instrument`` and ``band`` are
    copied from the exposure so that lists filter without a join.
    """

    __tablename__ = "galaxies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    exposure_id: Mapped[str] = mapped_column(ForeignKey("exposures.id", ondelete="CASCADE"))
    idx: Mapped[int] = mapped_column(Integer)
    instrument: Mapped[str | None] = mapped_column(String(64))
    band: Mapped[str | None] = mapped_column(String(32))
    ccd: Mapped[str | None] = mapped_column(String(64))
    x: Mapped[float] = mapped_column(Float)
    y: Mapped[float] = mapped_column(Float)
    s_gen: Mapped[float | None] = mapped_column(Float)
    s_disc: Mapped[float | None] = mapped_column(Float)
    s_anom: Mapped[float | None] = mapped_column(Float)
    s_gen_sigma: Mapped[float | None] = mapped_column(Float)
    s_disc_sigma: Mapped[float | None] = mapped_column(Float)
    s_anom_sigma: Mapped[float | None] = mapped_column(Float)
    scored_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        # Also the index of "the galaxies of one exposure" (its leading column).
        UniqueConstraint("exposure_id", "idx", name="uq_galaxies_exposure_idx"),
        # Lists sort by one score's sigma, descending, ties by id: (sigma, id) read backwards, with or
        # without an (instrument, band) filter in front.
        *(Index(f"ix_galaxies_{score}_sigma_id", f"{score}_sigma", "id") for score in GALAXY_SCORES),
        *(Index(f"ix_galaxies_instrument_band_{score}_sigma_id", "instrument", "band", f"{score}_sigma", "id")
          for score in GALAXY_SCORES),
    )


class GalaxyScoreStats(Base):
    """Running distribution of one galaxy score in one (instrument, band).

    ``n`` is the total weight (galaxies, plus the prior's weight), ``mean`` the weighted mean and
    ``m2`` the weighted sum of squared deviations from it (Chan et al.'s parallel update), so the
    standard deviation is ``sqrt(m2 / n)``. Sigmas of seed paper 003 section 4.1 are
    ``(score - mean) / std``.
    """

    __tablename__ = "galaxy_score_stats"

    instrument: Mapped[str] = mapped_column(String(64), primary_key=True)
    band: Mapped[str] = mapped_column(String(32), primary_key=True)
    score: Mapped[str] = mapped_column(String(8), primary_key=True)
    n: Mapped[float] = mapped_column(Float)
    mean: Mapped[float] = mapped_column(Float)
    m2: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
