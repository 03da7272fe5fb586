#!/usr/bin/env python3
"""Container health check of obsqc (Docker ``HEALTHCHECK``, Kubernetes exec probes); stdlib + obsqc only.

``obsqc-healthcheck api`` (the default): ``GET http://127.0.0.1:$OBSQC_HEALTH_PORT/healthz`` answers 200
within 4 s (``OBSQC_HEALTH_PORT`` defaults to 8000, the port of the image's ``obsqc serve``).

``obsqc-healthcheck worker``: an RQ worker of this host (container hostname) has sent a heartbeat to
``OBSQC_REDIS_URL`` within ``OBSQC_WORKER_TTL_S``. A worker container has no HTTP port, and a wedged
supervisor whose workers stopped beating is exactly what should be restarted. The numba warm-up
(up to ~40 s on a fresh cache, BENCHMARKS.md "Cold start") comes before the first heartbeat, so give
this check a start period of a minute.

Exit status 0 means healthy; anything else, with one line on stderr saying why.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import sys
import urllib.request


def check_api(port: int, timeout_s: float = 4.0) -> str | None:
    """``None`` when ``/healthz`` on ``port`` answers 200, else why not."""
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - fixed http URL
            return None if response.status == 200 else f"{url} answered {response.status}"
    except OSError as exc:  # URLError, HTTPError, timeouts and refused connections are all OSErrors
        return f"{url}: {exc}"


def check_worker(hostname: str) -> str | None:
    """``None`` when an RQ worker registered from ``hostname`` has a recent heartbeat, else why not."""
    from redis.exceptions import RedisError
    from rq import Worker

    from obsqc.service.queue import connect
    from obsqc.service.settings import Settings

    settings = Settings()
    if settings.redis_url is None:
        return "OBSQC_REDIS_URL is not set"
    horizon = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=settings.worker_ttl_s)
    try:
        workers = Worker.all(connection=connect(settings.redis_url))
    except RedisError as exc:
        return f"Redis unreachable: {exc}"
    mine = [w for w in workers if w.hostname == hostname]
    if any(w.last_heartbeat is not None and w.last_heartbeat >= horizon for w in mine):
        return None
    return (f"no worker of host {hostname!r} sent a heartbeat in the last {settings.worker_ttl_s} s "
            f"({len(mine)} registered from this host, {len(workers)} in all)")


def main(argv: list[str]) -> int:
    mode = argv[1] if len(argv) > 1 else "api"
    if mode == "api":
        problem = check_api(int(os.environ.get("OBSQC_HEALTH_PORT", "8000")))
    elif mode == "worker":
        problem = check_worker(socket.gethostname())
    else:
        problem = f"unknown mode {mode!r}: use 'api' or 'worker'"
    if problem:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
