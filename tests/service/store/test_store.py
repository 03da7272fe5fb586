"""The verdict store on SQLite and PostgreSQL (see conftest.py)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from sqlalchemy import func, inspect, select

from obsqc.detectors.scoring import CCDScore, ExposureScore, Indicator, Reference
from obsqc.service.store import (
    CCDResult, ExposureRow, get_exposure, list_exposures, load_reference, record_received, record_verdict,
    save_reference, upgrade,
)

T0 = dt.datetime(2024, 3, 1, 4, 0, tzinfo=dt.UTC)


def _indicator(kl: float, sigma: float, n: int = 100) -> Indicator:
    return Indicator(kl=kl, kl_corrected=kl / 2, sigma=sigma, n=n)


def _score(exposure_id: str, ccd_names: tuple[str, ...], shift: float = 0.0) -> ExposureScore:
    ccds = tuple(CCDScore(name, _indicator(0.01 + shift, 1.0 + shift), _indicator(0.02, 0.5 + shift), 40 + i)
                 for i, name in enumerate(ccd_names))
    return ExposureScore(
        exposure_id=exposure_id, n_ccds=len(ccds),
        source=_indicator(0.05 + shift, 2.5 + shift, n=321), profile=_indicator(0.03, 1.2),
        background=_indicator(0.04, float("nan")), large_scale=_indicator(0.02, 0.7),
        line=_indicator(4.5, 0.3, n=len(ccds)), ccds=ccds,
    )


def test_upgrade_twice_is_a_no_op(database_url, engine):
    upgrade(database_url)
    upgrade(database_url)
    tables = set(inspect(engine).get_table_names())
    assert {"exposures", "ccd_results", "references", "reference_members", "alembic_version"} <= tables
    with engine.connect() as conn:
        assert conn.exec_driver_sql("select version_num from alembic_version").scalars().all() == ["0004_galaxies"]


def test_receive_is_idempotent(session_factory):
    with session_factory.begin() as s:
        row, existed = record_received(s, "E1", path="/data/e1.fits", instrument="DECam", band="r",
                                       mjd=60000.5, exptime_s=90.0, received_at=T0)
        assert not existed and row.status == "queued" and row.verdict is None
    with session_factory.begin() as s:
        row, existed = record_received(s, "E1", path="/elsewhere.fits", received_at=T0 + dt.timedelta(hours=1))
        assert existed
        assert row.path == "/data/e1.fits" and row.received_at == T0
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(ExposureRow)) == 1


def test_verdict_is_idempotent_and_replaces_ccd_rows(session_factory):
    with session_factory.begin() as s:
        record_received(s, "E2", instrument="DECam", band="g", received_at=T0)
    with session_factory.begin() as s:
        record_verdict(s, "E2", verdict="warn", flags=["source"], score=_score("E2", ("N1", "N2", "S1")))
    with session_factory.begin() as s:
        record_verdict(s, "E2", verdict="bad", flags=["source", "line"], score=_score("E2", ("N2", "S7"), shift=1.0),
                       reason="satellite trail")
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(ExposureRow)) == 1
        row = get_exposure(s, "E2")
        assert (row.status, row.verdict, row.flags, row.reason) == ("done", "bad", ["source", "line"], "satellite trail")
        assert row.n_sources == 321
        assert row.source_kl == pytest.approx(1.05) and row.source_sigma == pytest.approx(3.5)
        assert row.line_z == pytest.approx(4.5) and row.line_sigma == pytest.approx(0.3)
        assert row.background_kl == pytest.approx(0.04) and row.background_sigma is None  # NaN stored as NULL
        assert [c.ccd for c in row.ccds] == ["N2", "S7"]
        assert [c.n_sources for c in row.ccds] == [40, 41]
        assert row.ccds[0].background_sigma == pytest.approx(2.0)
        assert s.scalar(select(func.count()).select_from(CCDResult)) == 2


def test_verdict_without_score_clears_scores(session_factory):
    with session_factory.begin() as s:
        record_received(s, "E3", received_at=T0)
        record_verdict(s, "E3", verdict="ok", score=_score("E3", ("N1",)))
    with session_factory.begin() as s:
        record_verdict(s, "E3", verdict="rejected", flags=[], score=None, reason="truncated")
    with session_factory() as s:
        row = get_exposure(s, "E3")
        assert (row.status, row.verdict, row.reason) == ("rejected", "rejected", "truncated")
        assert row.source_kl is None and row.n_sources is None and row.ccds == []


def test_verdict_of_unknown_exposure_creates_it_and_bad_verdict_raises(session_factory):
    with session_factory.begin() as s:
        record_verdict(s, "E4", verdict="error", score=None, reason="worker crashed")
    with session_factory() as s:
        assert get_exposure(s, "E4").status == "error"
        with pytest.raises(ValueError, match="verdict 'great'"):
            record_verdict(s, "E4", verdict="great", score=None)


def test_paging_returns_every_row_once_in_order(session_factory):
    # 120 rows over 3 distinct timestamps, so the id tie-break matters.
    with session_factory.begin() as s:
        for i in range(120):
            record_received(s, f"X{(i * 37) % 120:03d}", instrument="DECam", band="r",
                            received_at=T0 + dt.timedelta(seconds=i % 3))
    seen, cursor, pages = [], None, 0
    while True:
        with session_factory() as s:
            page = list_exposures(s, limit=7, cursor=cursor)
        seen += [(r.received_at, r.id) for r in page.items]
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
    assert pages == 18  # 17 full pages of 7 and one of 1
    assert len(seen) == len(set(seen)) == 120
    assert seen == sorted(seen)


def test_filters(session_factory):
    with session_factory.begin() as s:
        for i, (instrument, band) in enumerate([("DECam", "r"), ("DECam", "g"), ("HSC", "r"), ("DECam", "r")]):
            record_received(s, f"F{i}", instrument=instrument, band=band, received_at=T0 + dt.timedelta(minutes=i))
        record_verdict(s, "F3", verdict="bad", score=None)
    with session_factory() as s:
        ids = lambda **kw: [r.id for r in list_exposures(s, **kw).items]  # noqa: E731
        assert ids(instrument="DECam") == ["F0", "F1", "F3"]
        assert ids(instrument="DECam", band="r") == ["F0", "F3"]
        assert ids(band="r", verdict="bad") == ["F3"]
        assert ids(since=T0 + dt.timedelta(minutes=1), until=T0 + dt.timedelta(minutes=3)) == ["F1", "F2"]
        assert ids(instrument="LSST") == []
        with pytest.raises(ValueError, match="cursor"):
            list_exposures(s, cursor="not-a-cursor")
        with pytest.raises(ValueError, match="limit"):
            list_exposures(s, limit=0)


def test_reference_round_trip(session_factory):
    rng = np.random.default_rng(7)
    arrays = [p / p.sum() for p in rng.random((4, 24))]
    reference = Reference(*arrays, source_kappa=0.01, line_loc=3.2, line_scale=0.4,
                          sigma_loc={"source": 0.2}, sigma_scale={"source": 1.3}, n_exposures=57, n_ccds=3420)
    with session_factory.begin() as s:
        assert load_reference(s, "DECam", "r") is None
        save_reference(s, "DECam", "r", Reference(*arrays, n_exposures=1))
    with session_factory.begin() as s:
        save_reference(s, "DECam", "r", reference)  # replaces, never a second row
    with session_factory() as s:
        loaded = load_reference(s, "DECam", "r")
        assert load_reference(s, "DECam", "g") is None
    for key in ("source_p", "profile_p", "background_p", "large_scale_p"):
        np.testing.assert_array_equal(getattr(loaded, key), getattr(reference, key))
    assert (loaded.source_kappa, loaded.line_loc, loaded.line_scale) == (0.01, 3.2, 0.4)
    assert loaded.sigma_loc == {"source": 0.2} and loaded.sigma_scale == {"source": 1.3}
    assert (loaded.n_exposures, loaded.n_ccds) == (57, 3420)


def test_timestamps_are_aware_utc(session_factory):
    tokyo = dt.timezone(dt.timedelta(hours=9))
    with session_factory.begin() as s:
        record_received(s, "T1", received_at=dt.datetime(2024, 3, 1, 13, 0, tzinfo=tokyo))
        record_received(s, "T2")
        record_verdict(s, "T2", verdict="ok", score=None, started_at=T0)
    with session_factory() as s:
        t1, t2 = get_exposure(s, "T1"), get_exposure(s, "T2")
    assert t1.received_at == dt.datetime(2024, 3, 1, 4, 0, tzinfo=dt.UTC)
    for value in (t1.received_at, t2.received_at, t2.started_at, t2.finished_at):
        assert value.tzinfo is not None and value.utcoffset() == dt.timedelta(0)
    assert t2.started_at == T0
    with session_factory() as s, pytest.raises(Exception, match="no timezone"):
        record_received(s, "T3", received_at=dt.datetime(2024, 3, 1))


def test_migrations_build_exactly_the_models(database_url, engine):
    """Alembic's autogenerate finds nothing to do: the revisions and the ORM models agree."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from obsqc.service.store import Base

    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection, opts={"compare_type": False}), Base.metadata)
    assert diff == []


def test_migrations_started_at_once_by_many_processes_all_succeed(database_url):
    """Replicas starting together on an empty database (Kubernetes, compose): each upgrade succeeds and the
    database ends at head once (PostgreSQL: the advisory lock; SQLite: the writer's transaction)."""
    import multiprocessing

    from sqlalchemy import inspect

    from obsqc.service.store import make_engine

    # Processes, as in a deployment (alembic's command API keeps module-level state: not for threads).
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=upgrade, args=(database_url,)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    engine = make_engine(database_url)
    try:
        assert "exposures" in inspect(engine).get_table_names()
        with engine.connect() as conn:
            from sqlalchemy import text

            assert len(conn.execute(text("select version_num from alembic_version")).all()) == 1
    finally:
        engine.dispose()
