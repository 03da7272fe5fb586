"""Fixtures of the page tests: the API's live server on SQLite and PostgreSQL (``client``, ``state``,
``settings``; see ``tests/service/api/conftest.py``) and helpers that store exposures and galaxies the
way the worker does, with the records an operator may meet: queued, judged, rejected, failed."""

from __future__ import annotations

import datetime as dt

from obsqc.detectors.scoring import CCDScore, ExposureScore, Indicator
from obsqc.service.store import record_galaxies, record_received, record_verdict
from tests.service.api.conftest import app, client, data_root, server_url, settings, state  # noqa: F401

T0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=2)
"""Exposures are received from here on (recent: the list's counts cover the last 24 hours)."""

BG_FLAG = {"name": "background_gradient", "sigma": 7.3, "ccds": ["S2"],
           "reason": "background_gradient at 7.3 sigma on CCD S2: ..."}


def score(exposure_id: str, ccds: tuple[str, ...] = ("S1", "S2"), worst: float = 7.3) -> ExposureScore:
    """Scores of an exposure whose last CCD has background significance ``worst``."""
    ind = lambda kl, sigma, n=100: Indicator(kl=kl, kl_corrected=kl / 2, sigma=sigma, n=n)  # noqa: E731
    per_ccd = tuple(CCDScore(name, ind(0.1, worst if i == len(ccds) - 1 else 0.4), ind(0.02, 0.3), 40)
                    for i, name in enumerate(ccds))
    return ExposureScore(exposure_id=exposure_id, n_ccds=len(ccds), source=ind(0.05, 1.2, n=321),
                         profile=ind(0.03, 0.2), background=ind(0.25, worst), large_scale=ind(0.02, float("nan")),
                         line=ind(4.5, 0.3, n=2), ccds=per_ccd)


def store_exposure(state, exposure_id: str, verdict: str | None, *, minutes: float = 0, instrument: str = "DECAM",
                   band: str = "r", flags=(), reason: str | None = None, with_score: bool = True,
                   finished_at: dt.datetime | None = None, **kwargs) -> None:
    """Record ``exposure_id`` received at ``T0 + minutes``, with ``verdict`` (None: still queued)."""
    with state.sessions.begin() as session:
        record_received(session, exposure_id, instrument=instrument, band=band, mjd=60370.2, exptime_s=90.0,
                        received_at=T0 + dt.timedelta(minutes=minutes))
        if verdict is not None:
            record_verdict(session, exposure_id, verdict=verdict, flags=list(flags), reason=reason,
                           score=score(exposure_id) if with_score else None, attempts=1,
                           finished_at=finished_at or T0 + dt.timedelta(minutes=minutes, seconds=4), **kwargs)


def store_galaxies(state, exposure_id: str, sigmas: list[float]) -> None:
    """Scored galaxies of ``exposure_id`` with these s_disc sigmas (s_anom sigma: the reverse order)."""
    galaxies = [{"idx": i, "ccd": "S1", "x": 10.0 * i, "y": 5.0, "s_gen": 1.0, "s_disc": 2.0 + s, "s_anom": 1.5,
                 "s_gen_sigma": 0.1, "s_disc_sigma": s, "s_anom_sigma": -s} for i, s in enumerate(sigmas)]
    with state.sessions.begin() as session:
        record_galaxies(session, exposure_id, galaxies)
