"""Fixtures of the service tests: a real ``redis-server`` of their own on a free port.

Never the machine's Redis on 6379: each test session starts its own (per xdist worker), and each test
gets an empty database (``FLUSHALL`` before it runs).
"""

from __future__ import annotations

import pytest
import redis

from obsqc.service.redis_embedded import EmbeddedRedis


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
