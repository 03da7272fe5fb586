"""The verdict-store suite runs on SQLite (a temporary file) and on a real PostgreSQL.

``database_url`` (tests/service/conftest.py) gives both; this adds an engine migrated to head.
"""

from __future__ import annotations

import pytest

from obsqc.service.store import make_engine, make_sessionmaker, upgrade


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
