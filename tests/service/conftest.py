"""Fixtures of the service tests: real servers.

* ``redis_url``: a real ``redis-server`` of the test session's own on a free port, never the machine's
  Redis on 6379 (one per xdist worker); each test gets an empty database (``FLUSHALL`` first).
* ``database_url``: an empty database, parametrised over SQLite (a temporary file) and a real
  PostgreSQL: ``OBSQC_TEST_POSTGRES_URL`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``),
  a schema of its own per test, dropped afterwards. When PostgreSQL does not answer its tests are
  skipped, except under ``CI`` where they fail, so that CI really exercises PostgreSQL.
"""

from __future__ import annotations

import os
import uuid
from urllib.parse import quote

import psycopg
import pytest
import redis
from sqlalchemy.engine import make_url

from obsqc.service.redis_embedded import EmbeddedRedis

POSTGRES_URL = os.environ.get("OBSQC_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _libpq_conninfo(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    try:
        with psycopg.connect(_libpq_conninfo(POSTGRES_URL), connect_timeout=3) as conn:
            conn.execute("select 1")
    except psycopg.Error as exc:
        message = f"PostgreSQL at {POSTGRES_URL} is not reachable ({str(exc).strip()}); start it or set OBSQC_TEST_POSTGRES_URL"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI is set, so PostgreSQL tests must run)")
        pytest.skip(message)
    return POSTGRES_URL


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """An empty database: a fresh SQLite file, or a fresh PostgreSQL schema (dropped afterwards)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'obsqc.db'}"
        return
    admin_url = request.getfixturevalue("postgres_admin_url")
    schema = f"obsqc_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_libpq_conninfo(admin_url), autocommit=True) as conn:
        conn.execute(f'create schema "{schema}"')
    try:
        yield f"{admin_url}?options={quote(f'-csearch_path={schema}')}"
    finally:
        with psycopg.connect(_libpq_conninfo(admin_url), autocommit=True) as conn:
            conn.execute(f'drop schema "{schema}" cascade')




@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> EmbeddedRedis:
    """A real redis-server for this test session (TCP, free port, data in a temp directory)."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), tcp=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture()
def redis_url(redis_server: EmbeddedRedis) -> str:
    """URL of an empty Redis database (flushed before the test)."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url
