"""GET /v1/exposures/{id}, its plots, and GET /v1/exposures (filters, cursor paging); JSON errors."""

from __future__ import annotations

import datetime as dt

import pytest

from obsqc.detectors.scoring import CCDScore, ExposureScore, Indicator
from obsqc.service.queue import job_id_for
from obsqc.service.store import ExposureRow, record_received, record_verdict
from tests.service.api.conftest import AUTH, write_fits
from tests.service.api.test_submit import assert_error

T0 = dt.datetime(2024, 3, 1, 4, 0, tzinfo=dt.UTC)
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 32


def _score(exposure_id: str) -> ExposureScore:
    ind = lambda kl, sigma, n=100: Indicator(kl=kl, kl_corrected=kl / 2, sigma=sigma, n=n)  # noqa: E731
    ccds = (CCDScore("N4", ind(0.3, 6.2), ind(0.02, 1.1), 40), CCDScore("S2", ind(0.2, 5.1), ind(0.01, 0.4), 35))
    return ExposureScore(exposure_id=exposure_id, n_ccds=2, source=ind(0.05, 1.5, n=321), profile=ind(0.03, 0.2),
                         background=ind(0.25, 6.2), large_scale=ind(0.02, float("nan")), line=ind(4.5, 0.3, n=2),
                         ccds=ccds)


FLAG = {"name": "background_gradient", "sigma": 6.2, "ccds": ["N4", "S2"], "reason": "background gradient at 6.2 sigma"}


def test_get_shows_status_verdict_flags_scores_ccds_timings_and_plots(client, state, data_root, settings):
    path = write_fits(data_root / "e.fits", 500)
    assert client.post("/v1/exposures", json={"path": str(path)}, headers=AUTH).status_code == 202
    queued = client.get("/v1/exposures/500").json()
    assert queued["status"] == "queued" and queued["verdict"] is None and queued["ccds"] == []
    assert queued["links"] == {"self": str(client.base_url).rstrip("/") + "/v1/exposures/500", "plots": {}}

    with state.sessions.begin() as s:
        record_verdict(s, "500", verdict="bad", flags=[FLAG, "line"], score=_score("500"), reason="gradient",
                       started_at=dt.datetime.now(dt.UTC), timings={"read_measure": 0.25, "score": 0.01}, attempts=1)
    plots = settings.home / "artifacts" / job_id_for("500")
    plots.mkdir(parents=True)
    (plots / "histograms.png").write_bytes(PNG)
    (plots / "Not-Served.png").write_bytes(PNG)

    r = client.get("/v1/exposures/500")
    assert r.status_code == 200
    e = r.json()
    assert (e["status"], e["verdict"], e["reason"], e["attempts"]) == ("done", "bad", "gradient", 1)
    assert (e["instrument"], e["band"], e["exptime_s"], e["n_ccds"], e["n_sources"]) == ("TESTCAM", "r", 30.0, 2, 321)
    assert e["flags"] == [FLAG, {"name": "line", "sigma": None, "ccds": [], "reason": None}]
    assert e["scores"]["background"] == {"kl": 0.25, "sigma": 6.2}
    assert e["scores"]["line"] == {"kl": 4.5, "sigma": 0.3}
    assert e["scores"]["large_scale"] == {"kl": 0.02, "sigma": None}
    assert [c["ccd"] for c in e["ccds"]] == ["N4", "S2"] and e["ccds"][0]["background_sigma"] == 6.2
    assert e["timings"] == {"read_measure": 0.25, "score": 0.01}
    assert e["latency_s"] >= 0 and e["finished_at"].endswith("Z")
    assert list(e["links"]["plots"]) == ["histograms"]
    png = client.get(e["links"]["plots"]["histograms"])
    assert png.status_code == 200 and png.headers["content-type"] == "image/png" and png.content == PNG
    for name in ("Not-Served", "missing", "..%2Fsecret"):
        assert_error(client.get(f"/v1/exposures/500/plots/{name}.png"), 404, "not_found")


def test_a_verdict_without_scores_reads_back(client, state):
    with state.sessions.begin() as s:
        record_received(s, "E-none", instrument="X", band="g")
        record_verdict(s, "E-none", verdict="error", score=None, reason="worker crashed twice")
    e = client.get("/v1/exposures/E-none").json()
    assert (e["status"], e["verdict"], e["scores"], e["ccds"], e["flags"]) == ("error", "error", {}, [], [])


def test_a_polled_record_is_served_from_the_cache_until_it_changes(client, state, data_root, settings):
    """Every update of the row (queued -> running -> verdict) and every new plot shows at once; between
    changes the body comes from the cache; the ETag turns a repeated poll into a 304."""
    path = write_fits(data_root / "c.fits", 700)
    assert client.post("/v1/exposures", json={"path": str(path)}, headers=AUTH).status_code == 202
    first = client.get("/v1/exposures/700")
    hits = state.records.hits
    again = client.get("/v1/exposures/700")
    assert again.content == first.content and state.records.hits == hits + 1
    assert again.headers["etag"] == first.headers["etag"]
    assert client.get("/v1/exposures/700", headers={"If-None-Match": first.headers["etag"]}).status_code == 304

    with state.sessions.begin() as s:
        row = s.get(ExposureRow, "700")
        row.status = "running"
    running = client.get("/v1/exposures/700")
    assert running.json()["status"] == "running" and running.headers["etag"] != first.headers["etag"]

    with state.sessions.begin() as s:
        record_verdict(s, "700", verdict="ok", score=_score("700"), attempts=1)
    done = client.get("/v1/exposures/700", headers={"If-None-Match": running.headers["etag"]})
    assert done.status_code == 200 and done.json()["verdict"] == "ok" and len(done.json()["ccds"]) == 2

    plots = settings.home / "artifacts" / job_id_for("700")
    plots.mkdir(parents=True)
    (plots / "summary.png").write_bytes(PNG)
    drawn = client.get("/v1/exposures/700", headers={"If-None-Match": done.headers["etag"]})
    assert drawn.status_code == 200 and list(drawn.json()["links"]["plots"]) == ["summary"]


def test_unknown_exposures_and_routes_answer_json_errors(client):
    assert "no exposure" in assert_error(client.get("/v1/exposures/nope"), 404, "not_found")["detail"]
    assert_error(client.get("/v2/nothing"), 404, "not_found")
    r = client.delete("/v1/exposures")
    assert_error(r, 405, "method_not_allowed")
    assert r.headers["allow"]


@pytest.fixture
def listed(state):
    """Seven exposures one minute apart: DECam r/g and HSC i, mixed verdicts."""
    rows = [("a1", "DECam", "r", "ok"), ("a2", "DECam", "g", "bad"), ("a3", "HSC", "i", None), ("a4", "DECam", "r", "warn"),
            ("a5", "DECam", "r", "ok"), ("a6", "HSC", "i", "ok"), ("a7", "DECam", "r", "ok")]
    with state.sessions.begin() as s:
        for i, (eid, inst, band, verdict) in enumerate(rows):
            record_received(s, eid, instrument=inst, band=band, received_at=T0 + dt.timedelta(minutes=i))
            if verdict:
                record_verdict(s, eid, verdict=verdict, score=None)
    return rows


def test_list_filters(client, listed):
    def ids(**params):
        r = client.get("/v1/exposures", params=params)
        assert r.status_code == 200, r.text
        return [e["id"] for e in r.json()["items"]]

    assert ids() == ["a1", "a2", "a3", "a4", "a5", "a6", "a7"]
    assert ids(instrument="DECam", band="r") == ["a1", "a4", "a5", "a7"]
    assert ids(verdict="ok") == ["a1", "a5", "a6", "a7"]
    assert ids(instrument="HSC", verdict="ok") == ["a6"]
    assert ids(since="2024-03-01T04:02:00Z", until="2024-03-01T04:05:00+00:00") == ["a3", "a4", "a5"]
    assert ids(since="2024-03-01T04:05:00") == ["a6", "a7"]  # no timezone: UTC
    assert ids(since="2024-03-01T05:05:00+01:00") == ["a6", "a7"]
    first = client.get("/v1/exposures", params={"limit": 1}).json()["items"][0]
    assert first["links"]["self"].endswith("/v1/exposures/a1") and "ccds" not in first


def test_list_cursor_paging_visits_every_row_once(client, listed):
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 3, "instrument": "DECam"} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/exposures", params=params).json()
        seen += [e["id"] for e in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["a1", "a2", "a4", "a5", "a7"] and pages == 2


@pytest.mark.parametrize("params, status, error", [
    ({"cursor": "garbage!"}, 400, "bad_cursor"),
    ({"verdict": "great"}, 422, "invalid_request"),
    ({"limit": 0}, 422, "invalid_request"),
    ({"limit": 1001}, 422, "invalid_request"),
    ({"since": "yesterday"}, 422, "invalid_request"),
])
def test_list_refuses_bad_parameters(client, params, status, error):
    assert_error(client.get("/v1/exposures", params=params), status, error)
