"""Fixtures of the API tests: the app served by a real uvicorn, on a real Redis and both databases.

``client`` is an ``httpx.Client`` on a live server (uvicorn in a thread of the test process, on a
socket of its own), whose lifespan ran (migrations, clients, metrics); ``state`` is that app's
``ApiState``. Exposures are two 40x64 CCDs written with astropy (about 20 KB) under ``data_root``,
the only allowed data root.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn
from astropy.io import fits
from fastapi import FastAPI

from obsqc.service.api import create_app
from obsqc.service.settings import Settings

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def write_fits(path: Path, expnum: int | str | None = 1001, *, instrument="TESTCAM", band="r", n_ccds=2,
               mjd=60000.25, seed=0) -> Path:
    """A tiny multi-extension exposure (``expnum=None``: no exposure id in the headers)."""
    cards = {"INSTRUME": instrument, "FILTER": band, "MJD-OBS": mjd, "EXPTIME": 30.0}
    if expnum is not None:
        cards["EXPNUM"] = expnum
    rng = np.random.default_rng(seed)
    hdus = [fits.PrimaryHDU(header=fits.Header(cards))]
    hdus += [fits.ImageHDU(rng.normal(100, 5, (40, 64)).astype(np.float32), name=f"C{i}") for i in range(n_ccds)]
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.HDUList(hdus).writeto(path)
    return path


@pytest.fixture
def data_root(tmp_path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    return root


@pytest.fixture
def settings(tmp_path, database_url, redis_url, data_root) -> Settings:
    return Settings(home=tmp_path / "home", database_url=database_url, redis_url=redis_url, api_token=TOKEN,
                    data_roots=[data_root], upload_max_bytes=64 * 1024)


@contextlib.contextmanager
def live_server(app: FastAPI) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread on a free port of 127.0.0.1; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", ws="none", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the API server did not start (see the log above)")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@pytest.fixture
def app(settings) -> FastAPI:
    return create_app(settings, metrics_identity="api-test")


@pytest.fixture
def server_url(app) -> Iterator[str]:
    with live_server(app) as url:
        yield url


@pytest.fixture
def client(server_url) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server_url, timeout=30) as c:
        yield c


@pytest.fixture
def state(app, client):
    """The running app's clients (engine, sessions, Redis, queue, metrics)."""
    return app.state.obsqc
