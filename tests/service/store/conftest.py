"""The verdict-store suite runs on SQLite (a temporary file) and on a real PostgreSQL.

PostgreSQL is ``OBSQC_TEST_POSTGRES_URL`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``);
each test gets a schema of its own, dropped afterwards. When PostgreSQL does not answer, its tests are
skipped, except under ``CI`` where they fail, so that CI really exercises PostgreSQL.
"""

from __future__ import annotations

import os
import uuid
from urllib.parse import quote

import psycopg
import pytest
from sqlalchemy.engine import make_url

from obsqc.service.store import make_engine, make_sessionmaker, upgrade

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


@pytest.fixture
def engine(database_url):
    """An engine on a database migrated to head."""
    upgrade(database_url)
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def session_factory(engine):
    return make_sessionmaker(engine)
