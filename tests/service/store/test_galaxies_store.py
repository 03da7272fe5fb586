"""Galaxy tables of the store (migration 0004) on SQLite and PostgreSQL: running score statistics against
numpy, the galaxy upsert, statuses, and the sigma-sorted keyset lists."""

from __future__ import annotations

import datetime as dt
import math
import threading

import numpy as np
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import delete, event, func, inspect, select

from obsqc.detectors.scoring import ExposureScore, Indicator
from obsqc.service.store import (
    ExposureRow, GalaxyRow, GalaxyScoreStats, get_exposure, get_galaxy, list_galaxies, load_score_stats,
    record_galaxies, record_received, record_verdict, set_galaxies_status, update_score_stats, upgrade,
)
from obsqc.service.store.repository import MIGRATIONS_DIR

T0 = dt.datetime(2024, 3, 1, 4, 0, tzinfo=dt.UTC)


def _galaxy(idx: int, s_disc_sigma: float | None, *, s_gen_sigma: float = 0.0, s_anom_sigma: float = 0.0,
            ccd: str = "N4", **extra) -> dict:
    return dict(idx=idx, ccd=ccd, x=10.5 + idx, y=20.25, s_gen=0.01 * idx, s_disc=1.0 + idx, s_anom=0.5 + idx,
                s_gen_sigma=s_gen_sigma, s_disc_sigma=s_disc_sigma, s_anom_sigma=s_anom_sigma) | extra


def _exposure(s, exposure_id: str, instrument: str = "DECam", band: str = "r", minutes: int = 0) -> None:
    record_received(s, exposure_id, instrument=instrument, band=band, received_at=T0 + dt.timedelta(minutes=minutes))


# ---- migration ------------------------------------------------------------------------------------


def test_migration_0004_creates_the_tables_and_goes_down_and_up_again(database_url, engine):
    tables = set(inspect(engine).get_table_names())
    assert {"galaxies", "galaxy_score_stats"} <= tables
    columns = {c["name"] for c in inspect(engine).get_columns("exposures")}
    assert {"autoencoder_mse", "autoencoder_sigma", "n_stamps", "galaxies_status", "n_galaxies",
            "n_galaxy_anomalies"} <= columns
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0003_exposure_revision")
    inspect(engine).clear_cache()
    assert "galaxies" not in inspect(engine).get_table_names()
    assert "n_galaxies" not in {c["name"] for c in inspect(engine).get_columns("exposures")}
    upgrade(engine)
    assert {"galaxies", "galaxy_score_stats"} <= set(inspect(engine).get_table_names())


# ---- running statistics (003 section 4.1) ---------------------------------------------------------


def test_running_stats_match_numpy_over_random_batches(session_factory):
    rng = np.random.default_rng(3)
    sizes = [1, 0, 17, 250, 3, 1000, 2]
    seen = {"s_gen": [], "s_disc": [], "s_anom": []}
    for size in sizes:
        batch = {"s_gen": rng.normal(0.02, 0.005, size), "s_disc": rng.lognormal(1.0, 0.7, size),
                 "s_anom": rng.normal(5.0, 2.0, size)}
        for name, values in batch.items():
            seen[name].append(values)
        with session_factory.begin() as s:
            out = update_score_stats(s, "DECam", "r", batch)
        for name in batch:
            everything = np.concatenate(seen[name])
            assert out[name] == pytest.approx((everything.mean(), everything.std()), rel=1e-9, abs=1e-15)
    with session_factory() as s:
        stored = load_score_stats(s, "DECam", "r")
        assert load_score_stats(s, "DECam", "g") == {}
        row = s.get(GalaxyScoreStats, ("DECam", "r", "s_disc"))
        assert row.n == sum(sizes)
    everything = np.concatenate(seen["s_disc"])
    assert stored["s_disc"] == pytest.approx((everything.mean(), everything.std()), rel=1e-9)


def test_running_stats_start_from_the_prior_and_skip_non_finite_values(session_factory):
    rng = np.random.default_rng(11)
    prior = {"s_disc": (2.0, 0.5), "s_gen": (0.1, 0.02)}
    weight = 40.0
    batches = [rng.normal(2.4, 0.8, n) for n in (5, 60, 1)]
    for batch in batches:
        with session_factory.begin() as s:
            noisy = np.concatenate([batch, [np.nan, np.inf]])
            out = update_score_stats(s, "HSC", "i", {"s_disc": noisy}, prior=prior, prior_weight=weight)
    x = np.concatenate(batches)
    n = weight + x.size
    mean = (weight * 2.0 + x.sum()) / n
    var = (weight * (0.5 ** 2 + (2.0 - mean) ** 2) + np.square(x - mean).sum()) / n
    assert out["s_disc"] == pytest.approx((mean, math.sqrt(var)), rel=1e-12)
    with session_factory.begin() as s:
        # An empty batch for a new score starts it from its prior; the prior of an existing score is ignored.
        out = update_score_stats(s, "HSC", "i", {"s_gen": np.array([]), "s_disc": np.array([])},
                                 prior={"s_gen": (0.1, 0.02), "s_disc": (100.0, 1.0)}, prior_weight=weight)
        assert out["s_gen"] == pytest.approx((0.1, 0.02))
        assert out["s_disc"] == pytest.approx((mean, math.sqrt(var)), rel=1e-12)
        empty = update_score_stats(s, "HSC", "z", {"s_anom": np.array([np.nan])})
        assert all(math.isnan(v) for v in empty["s_anom"])


def test_running_stats_refuse_bad_arguments(session_factory):
    with session_factory() as s:
        with pytest.raises(ValueError, match="unknown score"):
            update_score_stats(s, "DECam", "r", {"s_weird": np.ones(3)})
        with pytest.raises(ValueError, match="prior_weight"):
            update_score_stats(s, "DECam", "r", {"s_gen": np.ones(3)}, prior_weight=-1.0)
        with pytest.raises(ValueError, match="prior of s_gen"):
            update_score_stats(s, "DECam", "r", {"s_gen": np.ones(3)}, prior={"s_gen": (0.0, float("nan"))})
        assert update_score_stats(s, "DECam", "r", {}) == {}


def test_two_workers_merging_at_once_both_count(engine, session_factory):
    """Two merges race: each pauses after reading the rows until the other has read them too (1 s at
    most). Without the row lock both would read the same state and the later write would drop the
    earlier batch; with it, the second read waits for the first transaction and merges on top of it."""
    rng = np.random.default_rng(5)
    batches = [rng.normal(1.0, 1.0, 300), rng.normal(3.0, 0.5, 200)]
    with session_factory.begin() as s:
        update_score_stats(s, "DECam", "z", {"s_disc": np.array([])}, prior={"s_disc": (0.0, 1.0)}, prior_weight=10)
    both_read = threading.Barrier(2, timeout=1.0)

    def pause_after_read(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT") and "galaxy_score_stats" in statement:
            try:
                both_read.wait()
            except threading.BrokenBarrierError:
                pass

    errors: list[BaseException] = []

    def merge(batch: np.ndarray) -> None:
        try:
            with session_factory.begin() as s:
                update_score_stats(s, "DECam", "z", {"s_disc": batch})
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    event.listen(engine, "after_cursor_execute", pause_after_read)
    try:
        threads = [threading.Thread(target=merge, args=(b,)) for b in batches]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=20)
    finally:
        event.remove(engine, "after_cursor_execute", pause_after_read)
    assert not errors, errors
    x = np.concatenate(batches)
    n = 10 + x.size
    mean = x.sum() / n
    var = (10 * (1.0 + mean ** 2) + np.square(x - mean).sum()) / n
    with session_factory() as s:
        assert s.get(GalaxyScoreStats, ("DECam", "z", "s_disc")).n == n
        assert load_score_stats(s, "DECam", "z")["s_disc"] == pytest.approx((mean, math.sqrt(var)), rel=1e-12)


# ---- exposures: verdict fields and galaxy status --------------------------------------------------


def test_verdict_stores_the_autoencoder_indicator_and_galaxy_status(session_factory):
    ind = Indicator(kl=0.1, kl_corrected=0.05, sigma=1.0, n=10)
    score = ExposureScore(exposure_id="V1", n_ccds=0, source=ind, profile=ind, background=ind, large_scale=ind,
                          line=ind, ccds=())
    with session_factory.begin() as s:
        _exposure(s, "V1")
        record_verdict(s, "V1", verdict="ok", score=score, autoencoder_mse=0.0123, autoencoder_sigma=float("inf"),
                       n_stamps=812, galaxies_status="pending")
    with session_factory.begin() as s:
        row = get_exposure(s, "V1")
        assert (row.autoencoder_mse, row.autoencoder_sigma, row.n_stamps, row.galaxies_status) == (
            0.0123, None, 812, "pending")
        record_verdict(s, "V1", verdict="warn", score=score, autoencoder_mse=0.02, autoencoder_sigma=3.1)
    with session_factory() as s:
        row = get_exposure(s, "V1")
        assert (row.autoencoder_mse, row.autoencoder_sigma, row.n_stamps, row.galaxies_status) == (
            0.02, 3.1, None, "pending")
        with pytest.raises(ValueError, match="galaxies_status"):
            record_verdict(s, "V1", verdict="ok", score=None, galaxies_status="finished")


def test_galaxy_status_moves_the_revision(session_factory):
    with session_factory.begin() as s:
        _exposure(s, "S1")
    with session_factory.begin() as s:
        before = get_exposure(s, "S1").revision
        set_galaxies_status(s, "S1", "error", "onnxruntime: model file missing")
    with session_factory.begin() as s:
        row = get_exposure(s, "S1")
        assert (row.galaxies_status, row.galaxies_reason) == ("error", "onnxruntime: model file missing")
        assert row.revision == before + 1
        with pytest.raises(ValueError, match="not one of"):
            set_galaxies_status(s, "S1", "finished")
        with pytest.raises(ValueError, match="no exposure"):
            set_galaxies_status(s, "nope", "none")


# ---- record_galaxies ------------------------------------------------------------------------------


def test_record_galaxies_upserts_keeps_ids_deletes_the_rest_and_counts_anomalies(session_factory):
    with session_factory.begin() as s:
        _exposure(s, "G1", "HSC", "i")
        _exposure(s, "G2")
        set_galaxies_status(s, "G1", "pending")
        record_galaxies(s, "G2", [_galaxy(0, 9.0)])
    with session_factory.begin() as s:
        revision = get_exposure(s, "G1").revision
        sigmas = [0.5, 3.0, 3.5, 7.0, float("nan")]
        anomalies = record_galaxies(s, "G1", [_galaxy(i, sigma) for i, sigma in enumerate(sigmas)])
        assert anomalies == 2
    with session_factory() as s:
        row = get_exposure(s, "G1")
        assert (row.galaxies_status, row.n_galaxies, row.n_galaxy_anomalies) == ("done", 5, 2)  # 3.0 is not > 3
        assert row.revision == revision + 1
        first = {g.idx: g for g in s.execute(select(GalaxyRow).where(GalaxyRow.exposure_id == "G1")).scalars()}
        assert first[4].s_disc_sigma is None and first[4].s_disc == 5.0
        g = first[2]
        assert (g.instrument, g.band, g.ccd, g.x, g.y, g.s_disc, g.s_disc_sigma) == (
            "HSC", "i", "N4", 12.5, 20.25, 3.0, 3.5)
        assert g.scored_at.tzinfo is not None
    # A re-run with fewer galaxies and new scores: same ids for the kept idx, the rest deleted.
    later = T0 + dt.timedelta(days=1)
    with session_factory.begin() as s:
        assert record_galaxies(s, "G1", [_galaxy(3, 1.0, scored_at=later), _galaxy(1, 4.0, ccd="S1")],
                               anomaly_sigma=0.5) == 2  # both above 0.5
    with session_factory() as s:
        again = {g.idx: g for g in s.execute(select(GalaxyRow).where(GalaxyRow.exposure_id == "G1")).scalars()}
        assert set(again) == {1, 3}
        assert again[1].id == first[1].id and again[3].id == first[3].id
        assert (again[1].ccd, again[1].s_disc_sigma, again[3].scored_at) == ("S1", 4.0, later)
        row = get_exposure(s, "G1")
        assert (row.n_galaxies, row.n_galaxy_anomalies) == (2, 2)
        assert s.scalar(select(func.count()).select_from(GalaxyRow).where(GalaxyRow.exposure_id == "G2")) == 1
    with session_factory.begin() as s:
        assert record_galaxies(s, "G1", []) == 0
        assert (get_exposure(s, "G1").n_galaxies, get_exposure(s, "G1").n_galaxy_anomalies) == (0, 0)
        assert s.scalar(select(func.count()).select_from(GalaxyRow).where(GalaxyRow.exposure_id == "G1")) == 0


def test_record_galaxies_refuses_bad_input_and_rows_go_with_their_exposure(session_factory):
    with session_factory.begin() as s:
        _exposure(s, "B1")
        record_galaxies(s, "B1", [_galaxy(0, 1.0), _galaxy(1, 2.0)])
    with session_factory() as s:
        with pytest.raises(ValueError, match="no exposure"):
            record_galaxies(s, "nope", [_galaxy(0, 1.0)])
        s.rollback()
        with pytest.raises(ValueError, match="repeat"):
            record_galaxies(s, "B1", [_galaxy(0, 1.0), _galaxy(0, 2.0)])
        s.rollback()
        with pytest.raises(ValueError, match="'x' is missing"):
            record_galaxies(s, "B1", [{"idx": 0, "y": 1.0}])
        s.rollback()
        for bad in (-1, 1.5, "2", True):
            with pytest.raises(ValueError, match="idx must be"):
                record_galaxies(s, "B1", [_galaxy(0, 1.0) | {"idx": bad}])
            s.rollback()
        with pytest.raises(ValueError, match="not finite"):
            record_galaxies(s, "B1", [_galaxy(0, 1.0) | {"x": float("nan")}])
        s.rollback()
    with session_factory.begin() as s:
        assert s.scalar(select(func.count()).select_from(GalaxyRow)) == 2
        s.execute(delete(ExposureRow).where(ExposureRow.id == "B1"))  # ON DELETE CASCADE
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(GalaxyRow)) == 0


# ---- lists ----------------------------------------------------------------------------------------


@pytest.fixture
def catalogue(session_factory):
    """Three exposures of 40, 30 and 20 galaxies; sigmas on a coarse grid so that ties are common."""
    rng = np.random.default_rng(17)
    with session_factory.begin() as s:
        for eid, inst, band, n, minutes in (("L1", "DECam", "r", 40, 0), ("L2", "DECam", "g", 30, 1),
                                            ("L3", "HSC", "r", 20, 2)):
            _exposure(s, eid, inst, band, minutes)
            galaxies = [_galaxy(i, float(rng.integers(-4, 9)) / 2, s_gen_sigma=float(rng.normal()),
                                s_anom_sigma=float(rng.normal()), scored_at=T0 + dt.timedelta(minutes=minutes))
                        for i in range(n)]
            galaxies[0]["s_gen_sigma"] = None  # not listed when sorting by s_gen
            record_galaxies(s, eid, galaxies)
    with session_factory() as s:
        return list(s.execute(select(GalaxyRow)).scalars())


def _all_pages(session_factory, **kwargs) -> tuple[list[GalaxyRow], int]:
    seen, cursor, pages = [], None, 0
    while True:
        with session_factory() as s:
            page = list_galaxies(s, cursor=cursor, **kwargs)
        seen += page.items
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            return seen, pages


@pytest.mark.parametrize("sort", ["s_disc", "s_gen", "s_anom"])
def test_paging_visits_every_galaxy_once_most_anomalous_first(session_factory, catalogue, sort):
    seen, pages = _all_pages(session_factory, sort=sort, limit=7)
    expected = sorted((g for g in catalogue if getattr(g, f"{sort}_sigma") is not None),
                      key=lambda g: (getattr(g, f"{sort}_sigma"), g.id), reverse=True)
    assert [g.id for g in seen] == [g.id for g in expected]
    assert len(seen) == len({g.id for g in seen}) == (90 if sort != "s_gen" else 87)
    assert pages == math.ceil(len(expected) / 7)


def test_filters_and_min_sigma(session_factory, catalogue):
    def ids(**kwargs) -> list[int]:
        seen, _ = _all_pages(session_factory, limit=1000, **kwargs)
        return sorted(g.id for g in seen)

    def expect(pred) -> list[int]:
        return sorted(g.id for g in catalogue if pred(g))

    assert ids(min_sigma=3) == expect(lambda g: g.s_disc_sigma >= 3)
    assert ids(min_sigma=3, instrument="DECam") == expect(lambda g: g.s_disc_sigma >= 3 and g.instrument == "DECam")
    assert ids(instrument="DECam", band="r") == expect(lambda g: g.exposure_id == "L1")
    assert ids(band="r") == expect(lambda g: g.exposure_id in ("L1", "L3"))
    assert ids(exposure_id="L2", min_sigma=1.5) == expect(lambda g: g.exposure_id == "L2" and g.s_disc_sigma >= 1.5)
    assert ids(sort="s_anom", min_sigma=0.5) == expect(lambda g: g.s_anom_sigma >= 0.5)
    assert ids(since=T0 + dt.timedelta(minutes=1), until=T0 + dt.timedelta(minutes=2)) == expect(
        lambda g: g.exposure_id == "L2")
    assert ids(instrument="LSST") == []
    # Paging with a filter and a threshold still visits each row once.
    seen, _ = _all_pages(session_factory, limit=3, min_sigma=1.0, instrument="DECam")
    expected = expect(lambda g: g.s_disc_sigma >= 1 and g.instrument == "DECam")
    assert len(seen) == len({g.id for g in seen}) == len(expected)


def test_bad_list_arguments_and_get(session_factory, catalogue):
    with session_factory() as s:
        page = list_galaxies(s, limit=2)
        with pytest.raises(ValueError, match="sorted by s_disc, not s_gen"):
            list_galaxies(s, sort="s_gen", cursor=page.next_cursor)
        for cursor in ("not-a-cursor", "WzEsMiwzXQ"):  # the second is base64 of [1,2,3]
            with pytest.raises(ValueError, match="not one this service issued"):
                list_galaxies(s, cursor=cursor)
        with pytest.raises(ValueError, match="sort"):
            list_galaxies(s, sort="s_weird")
        for limit in (0, 1001):
            with pytest.raises(ValueError, match="limit"):
                list_galaxies(s, limit=limit)
        with pytest.raises(ValueError, match="min_sigma"):
            list_galaxies(s, min_sigma=float("nan"))
        best = page.items[0]
        assert get_galaxy(s, best.id).s_disc_sigma == max(g.s_disc_sigma for g in catalogue)
        assert get_galaxy(s, 10**9) is None


def test_the_list_indexes_exist(session_factory, catalogue):
    """The (sigma, id) and (instrument, band, sigma, id) indexes of each sort exist."""
    with session_factory() as s:
        names = {ix["name"] for ix in inspect(s.get_bind()).get_indexes("galaxies")}
    for score in ("s_gen", "s_disc", "s_anom"):
        assert {f"ix_galaxies_{score}_sigma_id", f"ix_galaxies_instrument_band_{score}_sigma_id"} <= names
