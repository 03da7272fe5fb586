"""/healthz, /readyz (Redis, database, a live worker), /metrics, and the OpenAPI document."""

from __future__ import annotations

import uuid

import redis
from rq import Worker

from obsqc.service.queue import make_queue
from tests.service.api.conftest import AUTH, write_fits


def test_healthz_is_ok(client):
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_readyz_needs_a_worker_with_a_recent_heartbeat(client, redis_url):
    r = client.get("/readyz")
    assert r.status_code == 503
    body = r.json()
    assert body["error"] == "not_ready" and "workers" in body["detail"]
    assert body["checks"]["redis"] == "ok" and body["checks"]["database"] == "ok"

    connection = redis.Redis.from_url(redis_url)
    worker = Worker([make_queue(connection)], connection=connection, name=f"test-{uuid.uuid4().hex[:8]}")
    worker.register_birth()
    try:
        r = client.get("/readyz")
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "ready" and r.json()["checks"]["workers"].startswith("ok")
    finally:
        worker.register_death()


def test_metrics_count_received_exposures_and_requests(client, data_root):
    path = write_fits(data_root / "e.fits", 12)
    assert client.post("/v1/exposures", json={"path": str(path)}, headers=AUTH).status_code == 202
    client.get("/v1/exposures/12")
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'obsqc_exposures_received_total{band="r",instrument="TESTCAM"} 1.0' in text
    assert 'obsqc_http_requests_total{method="POST",route="/v1/exposures",status="202"} 1.0' in text
    assert 'route="/v1/exposures/{exposure_id:path}",status="200"' in text
    assert 'obsqc_queue_jobs{queue="qc",state="queued"} 1.0' in text
    assert 'obsqc_queue_jobs{queue="gpu",state="queued"} 0.0' in text  # galaxy scoring has its own depth
    assert "obsqc_redis_up 1.0" in text


def test_openapi_documents_the_routes_errors_and_bearer_scheme(client):
    doc = client.get("/openapi.json").json()
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": doc["components"]["securitySchemes"]["bearer"]["description"]}
    post = doc["paths"]["/v1/exposures"]["post"]
    assert post["security"] == [{"bearer": []}]
    assert {"200", "202", "401", "403", "413", "422", "503"} <= set(post["responses"])
    assert set(post["requestBody"]["content"]) == {"application/json", "multipart/form-data"}
    assert "/v1/exposures/{exposure_id}" in doc["paths"] and "/readyz" in doc["paths"]
