"""POST /v1/exposures: auth, paths, uploads, idempotency, the job on the real queue, Redis down."""

from __future__ import annotations

import datetime as dt
import json
import os
import time
import zlib

import httpx
import pytest
import redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer
from sqlalchemy import func, select

from obsqc.service.api import create_app
from obsqc.service.api.app import open_state
from obsqc.service.api.intake import requeue_stale
from obsqc.service.api.uploads import sweep_incoming
from obsqc.service.queue import JOB_FUNCTION, QUEUE_NAME, job_id_for
from obsqc.service.redis_embedded import free_tcp_port
from obsqc.service.store import ExposureRow, get_exposure, record_received, record_verdict
from tests.service.api.conftest import AUTH, live_server, write_fits


def _queue(redis_url) -> Queue:
    return Queue(QUEUE_NAME, connection=redis.Redis.from_url(redis_url), serializer=JSONSerializer)


def _row(state, exposure_id):
    with state.sessions() as s:
        return get_exposure(s, exposure_id)


def _count(state) -> int:
    with state.sessions() as s:
        return s.scalar(select(func.count()).select_from(ExposureRow))


def assert_error(response, status, error=None):
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) >= {"error", "detail"} and body["detail"]
    if error is not None:
        assert body["error"] == error, body
    return body


# ---- auth -----------------------------------------------------------------------------------------


def test_writes_without_a_bearer_token_are_unauthorized(client, data_root):
    path = str(write_fits(data_root / "e.fits"))
    for headers in ({}, {"Authorization": "Basic dXNlcjpwdw=="}, {"Authorization": "Bearer"}):
        r = client.post("/v1/exposures", json={"path": path}, headers=headers)
        assert_error(r, 401, "unauthorized")
        assert r.headers["www-authenticate"] == "Bearer"


def test_a_wrong_token_is_forbidden(client, data_root, state):
    path = str(write_fits(data_root / "e.fits"))
    r = client.post("/v1/exposures", json={"path": path}, headers={"Authorization": "Bearer nope"})
    assert_error(r, 403, "forbidden")
    assert _count(state) == 0


def test_without_a_configured_token_every_write_is_forbidden(settings, data_root):
    path = str(write_fits(data_root / "e.fits"))
    app = create_app(settings.model_copy(update={"api_token": None}), metrics_identity="api-test")
    with live_server(app) as url:
        r = httpx.post(url + "/v1/exposures", json={"path": path}, headers=AUTH)
    assert "OBSQC_API_TOKEN" in assert_error(r, 403, "forbidden")["detail"]


# ---- paths ----------------------------------------------------------------------------------------


def test_post_path_queues_one_json_job_and_repost_returns_the_same_record(client, data_root, state, redis_url):
    path = write_fits(data_root / "night" / "e1.fits", 424242)
    r = client.post("/v1/exposures", json={"path": str(path)}, headers=AUTH)
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["id"] == "424242" and body["status"] == "queued"
    assert body["url"] == str(client.base_url).rstrip("/") + "/v1/exposures/424242"
    assert r.headers["location"] == body["url"]

    queue = _queue(redis_url)
    assert queue.job_ids == [job_id_for("424242")]
    job = Job.fetch(job_id_for("424242"), connection=queue.connection, serializer=JSONSerializer)
    assert job.func_name == JOB_FUNCTION and list(job.args) == ["424242", str(path.resolve())]
    raw = zlib.decompress(queue.connection.hget(job.key, "data"))
    assert not raw.startswith(b"\x80")  # not a pickle
    assert json.loads(raw) == [JOB_FUNCTION, None, ["424242", str(path.resolve())], {}]

    row = _row(state, "424242")
    assert (row.status, row.instrument, row.band, row.path) == ("queued", "TESTCAM", "r", str(path.resolve()))

    again = client.post("/v1/exposures", json={"path": str(path)}, headers=AUTH)
    assert again.status_code == 200 and again.json()["id"] == "424242" and again.json()["url"] == body["url"]
    assert queue.job_ids == [job_id_for("424242")] and queue.count == 1
    assert _count(state) == 1


def test_the_request_id_is_used_only_when_the_header_has_none(client, data_root, state):
    no_id = write_fits(data_root / "noid.fits", None)
    r = client.post("/v1/exposures", json={"path": str(no_id)}, headers=AUTH)
    assert_error(r, 422, "missing_exposure_id")
    r = client.post("/v1/exposures", json={"path": str(no_id), "exposure_id": "night-7/exp 1"}, headers=AUTH)
    assert r.status_code == 202 and r.json()["id"] == "night-7/exp 1"
    assert r.json()["url"].endswith("/v1/exposures/night-7%2Fexp%201")
    assert client.get(r.json()["url"]).json()["id"] == "night-7/exp 1"

    with_id = write_fits(data_root / "withid.fits", 77)
    r = client.post("/v1/exposures", json={"path": str(with_id), "exposure_id": "other"}, headers=AUTH)
    assert r.status_code == 202 and r.json()["id"] == "77"


@pytest.mark.parametrize("raw, status, error", [
    ("{root}/night/../e.fits", 400, "invalid_path"),
    ("night/e.fits", 400, "invalid_path"),
    ("{root}/e.fits\x00", 400, "invalid_path"),
    ("/etc/passwd", 403, "path_not_allowed"),
    ("{outside}/secret.fits", 403, "path_not_allowed"),
    ("{root}/escape.fits", 403, "path_not_allowed"),
    ("{root}/night", 422, "not_a_file"),
    ("{root}/missing.fits", 422, "not_found"),
])
def test_hostile_or_bad_paths_are_refused_with_json_errors(client, data_root, tmp_path, state, redis_url, raw, status, error):
    (data_root / "night").mkdir()
    write_fits(data_root / "e.fits", 1)
    outside = write_fits(tmp_path / "outside" / "secret.fits", 666)
    (data_root / "escape.fits").symlink_to(outside)
    r = client.post("/v1/exposures", json={"path": raw.format(root=data_root, outside=outside.parent)}, headers=AUTH)
    assert_error(r, status, error)
    assert _count(state) == 0 and _queue(redis_url).count == 0


def test_bad_json_bodies_and_media_types_are_refused(client):
    assert_error(client.post("/v1/exposures", content=b"{not json", headers={**AUTH, "Content-Type": "application/json"}),
                 422, "invalid_request")
    assert_error(client.post("/v1/exposures", json={"file": "x"}, headers=AUTH), 422, "invalid_request")
    assert_error(client.post("/v1/exposures", json={"path": "/x", "exposure_id": ""}, headers=AUTH),
                 422, "invalid_exposure_id")
    assert_error(client.post("/v1/exposures", content=b"x", headers={**AUTH, "Content-Type": "text/plain"}),
                 415, "unsupported_media_type")


def test_a_truncated_file_is_rejected_and_recorded_when_the_id_is_known(client, data_root, state, redis_url):
    good = write_fits(data_root / "good.fits", 5)
    (data_root / "cut.fits").write_bytes(good.read_bytes()[:-3000])
    r = client.post("/v1/exposures", json={"path": str(data_root / "cut.fits")}, headers=AUTH)
    assert_error(r, 422, "truncated")
    assert _count(state) == 0
    r = client.post("/v1/exposures", json={"path": str(data_root / "cut.fits"), "exposure_id": "5"}, headers=AUTH)
    assert_error(r, 422, "truncated")
    shown = client.get("/v1/exposures/5").json()
    assert shown["status"] == "rejected" and shown["verdict"] == "rejected" and shown["reason"].startswith("truncated:")
    assert shown["flags"] == [{"name": "rejected", "sigma": None, "ccds": [], "reason": "truncated"}]
    assert _queue(redis_url).count == 0

    # the copy finished: the same exposure posted again is accepted (an intake rejection is not final)
    (data_root / "cut.fits").write_bytes(good.read_bytes())
    r = client.post("/v1/exposures", json={"path": str(data_root / "cut.fits")}, headers=AUTH)
    assert r.status_code == 202 and r.json()["status"] == "queued"
    assert client.get("/v1/exposures/5").json()["verdict"] is None
    assert _queue(redis_url).job_ids == [job_id_for("5")]


def test_an_exposure_rejected_by_a_worker_is_final(client, data_root, state, redis_url):
    path = write_fits(data_root / "e.fits", 11)
    with state.sessions.begin() as s:
        record_received(s, "11", path=str(path))
        record_verdict(s, "11", verdict="rejected", score=None, reason="all_nan: every CCD is NaN",
                       started_at=dt.datetime.now(dt.UTC), attempts=1)
    r = client.post("/v1/exposures", json={"path": str(path)}, headers=AUTH)
    assert r.status_code == 200 and (r.json()["status"], r.json()["verdict"]) == ("rejected", "rejected")
    assert _queue(redis_url).count == 0


def test_a_bad_file_never_overwrites_an_accepted_exposure(client, data_root, state):
    write_fits(data_root / "good.fits", 9)
    assert client.post("/v1/exposures", json={"path": str(data_root / "good.fits")}, headers=AUTH).status_code == 202
    (data_root / "junk.fits").write_text("not fits")
    r = client.post("/v1/exposures", json={"path": str(data_root / "junk.fits"), "exposure_id": "9"}, headers=AUTH)
    assert_error(r, 422, "not_fits")
    assert _row(state, "9").status == "queued"


# ---- uploads --------------------------------------------------------------------------------------


def _uploads(settings):
    folder = settings.home / "uploads"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_upload_is_kept_under_a_name_from_the_id_and_queued(client, tmp_path, settings, state, redis_url):
    data = write_fits(tmp_path / "up.fits", 31337).read_bytes()
    files = {"file": ("../../evil name.fits", data, "application/fits")}
    r = client.post("/v1/exposures", files=files, headers=AUTH)
    assert r.status_code == 202, r.text
    assert r.json()["id"] == "31337"
    kept = settings.home / "uploads" / f"{job_id_for('31337')}.fits"
    assert _uploads(settings) == [kept.name] and kept.read_bytes() == data
    job = _queue(redis_url).fetch_job(job_id_for("31337"))
    assert list(job.args) == ["31337", str(kept)]
    assert _row(state, "31337").path == str(kept)

    r = client.post("/v1/exposures", files=files, headers=AUTH)
    assert r.status_code == 200 and _uploads(settings) == [kept.name] and _queue(redis_url).count == 1


def test_upload_without_header_id_takes_the_form_field(client, tmp_path, settings):
    data = write_fits(tmp_path / "up.fits", None).read_bytes()
    r = client.post("/v1/exposures", files={"file": ("x.fits", data)}, headers=AUTH)
    assert_error(r, 422, "missing_exposure_id")
    assert _uploads(settings) == []
    r = client.post("/v1/exposures", files={"file": ("x.fits", data)}, data={"exposure_id": "U-1"}, headers=AUTH)
    assert r.status_code == 202 and r.json()["id"] == "U-1"


def test_upload_over_the_limit_is_refused_while_streaming_and_leaves_nothing(client, tmp_path, settings, state):
    big = write_fits(tmp_path / "big.fits", 1, n_ccds=12).read_bytes()  # ~140 KB > 64 KiB, < the early check
    assert settings.upload_max_bytes < len(big)
    r = client.post("/v1/exposures", files={"file": ("big.fits", big)}, headers=AUTH)
    assert_error(r, 413, "payload_too_large")
    huge = b"\0" * (2 * 1024 * 1024)  # refused from Content-Length alone
    r = client.post("/v1/exposures", files={"file": ("huge.fits", huge)}, headers=AUTH)
    assert_error(r, 413, "payload_too_large")
    assert _uploads(settings) == [] and _count(state) == 0


def test_upload_of_a_non_fits_file_is_rejected_and_recorded(client, settings, state, redis_url):
    r = client.post("/v1/exposures", files={"file": ("notes.txt", b"hello, not FITS\n" * 200)},
                    data={"exposure_id": "N-1"}, headers=AUTH)
    body = assert_error(r, 422, "not_fits")
    assert "notes.txt" in body["detail"] and ".incoming" not in body["detail"]
    row = _row(state, "N-1")
    assert (row.status, row.verdict, row.path) == ("rejected", "rejected", None)
    assert _uploads(settings) == [] and _queue(redis_url).count == 0
    r = client.post("/v1/exposures", files={"file": ("notes.txt", b"nope" * 1000)}, headers=AUTH)
    assert_error(r, 422, "not_fits")
    assert _count(state) == 1


def test_malformed_multipart_is_refused(client, settings):
    r = client.post("/v1/exposures", content=b"--x\r\nnonsense", headers={**AUTH, "Content-Type": "multipart/form-data; boundary=x"})
    assert_error(r, 422, "bad_upload")
    r = client.post("/v1/exposures", data={"exposure_id": "1"}, files={"other": ("a", b"b")}, headers=AUTH)
    assert_error(r, 422, "bad_upload")
    assert _uploads(settings) == []


# ---- Redis down -----------------------------------------------------------------------------------


def test_redis_down_answers_503_keeps_the_exposure_queued_and_start_up_requeues_it(settings, data_root, redis_url):
    path = write_fits(data_root / "e.fits", 8080)
    down = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_tcp_port()}/0"})
    with live_server(create_app(down, metrics_identity="api-test")) as url:
        r = httpx.post(url + "/v1/exposures", json={"path": str(path)}, headers=AUTH, timeout=30)
        assert_error(r, 503, "queue_unavailable")
        shown = httpx.get(url + "/v1/exposures/8080").json()
        assert shown["status"] == "queued"
        assert httpx.get(url + "/readyz").status_code == 503

    state = open_state(settings, "api-test")
    try:
        assert requeue_stale(state) == 1
        assert requeue_stale(state) == 0  # the job is known now
        assert _queue(redis_url).job_ids == [job_id_for("8080")]
    finally:
        state.close()

    _queue(redis_url).empty()
    with live_server(create_app(settings, metrics_identity="api-test")) as url:  # start-up sweep
        assert _queue(redis_url).job_ids == [job_id_for("8080")]


def test_unfinished_uploads_of_a_killed_server_are_swept(tmp_path):
    folder = tmp_path / "uploads"
    folder.mkdir()
    (folder / ".incoming-old").write_bytes(b"x")
    (folder / ".incoming-live").write_bytes(b"x")
    (folder / "qc-kept.fits").write_bytes(b"x")
    hour_ago = time.time() - 7200
    os.utime(folder / ".incoming-old", (hour_ago, hour_ago))
    os.utime(folder / "qc-kept.fits", (hour_ago, hour_ago))
    assert sweep_incoming(folder) == 1
    assert sorted(p.name for p in folder.iterdir()) == [".incoming-live", "qc-kept.fits"]
    assert sweep_incoming(tmp_path / "missing") == 0
