"""The FastAPI application: ``create_app(settings)`` wires routes, error handlers and request metrics.

At start-up (lifespan) it migrates the database to head, opens the engine and the Redis client once
for the process, switches this process's metrics to the shared multiprocess directory, and queues
again every exposure the store holds as queued whose job Redis lost (:func:`requeue_stale`), and
deletes unfinished uploads left by a killed server.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import AsyncIterator

from fastapi import FastAPI
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from obsqc.service.api.deps import ApiState
from obsqc.service.api.errors import install_error_handlers
from obsqc.service.api.galaxies import router as galaxies_router
from obsqc.service.api.intake import requeue_stale
from obsqc.service.api.routes import health_router, router
from obsqc.service.api.uploads import sweep_incoming
from obsqc.service.metrics import setup_metrics
from obsqc.service.queue import connect, make_queue
from obsqc.service.settings import Settings, get_settings
from obsqc.service.store import make_engine, make_sessionmaker, upgrade

__all__ = ["create_app", "open_state"]

logger = logging.getLogger(__name__)


def open_state(settings: Settings, metrics_identity: str | None = None) -> ApiState:
    """Migrate the store and open every client the API needs (also usable without an app)."""
    if not settings.redis_url:
        raise ValueError("OBSQC_REDIS_URL is not set: point it at the Redis of the workers (or run `obsqc up`)")
    settings.home.mkdir(parents=True, exist_ok=True)
    (settings.home / "uploads").mkdir(exist_ok=True)
    engine = make_engine(settings.database_url)
    upgrade(engine)
    redis = connect(settings.redis_url)
    metrics = setup_metrics(settings.metrics_dir, metrics_identity or f"api-{socket.gethostname()}")
    return ApiState(settings=settings, engine=engine, sessions=make_sessionmaker(engine), redis=redis,
                    queue=make_queue(redis), metrics=metrics)


class RequestMetrics:
    """ASGI middleware counting every answered request by method, route template and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            state = getattr(scope["app"].state, "obsqc", None)
            if state is not None:
                route = getattr(scope.get("route"), "path", None) or "unmatched"
                state.metrics.http_request(scope["method"], route, status, time.perf_counter() - start)


def create_app(settings: Settings | None = None, *, metrics_identity: str | None = None) -> FastAPI:
    """The obsqc API for ``settings`` (default: :func:`get_settings`); clients open at start-up."""
    settings = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = open_state(settings, metrics_identity)
        app.state.obsqc = state
        swept = sweep_incoming(settings.home / "uploads")
        if swept:
            logger.warning("deleted %d unfinished upload(s) left by an earlier server", swept)
        try:
            n = requeue_stale(state)
            if n:
                logger.warning("re-queued %d exposure(s) that the store holds as queued but Redis had lost", n)
        except RedisError as exc:
            logger.error("Redis unreachable at start-up (%s); queued exposures are re-queued at the next start", exc)
        logger.info("obsqc API ready (database %s)", state.engine.url.render_as_string(hide_password=True))
        try:
            yield
        finally:
            state.close()

    app = FastAPI(
        title="obsqc",
        summary="Real-time quality control of telescope exposures.",
        description="Submit exposures (writes need `Authorization: Bearer <OBSQC_API_TOKEN>`), read verdicts, "
                    "flags and per-CCD scores. Every error is JSON `{\"error\": <code>, \"detail\": <message>}`.",
        version="1",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.add_middleware(RequestMetrics)
    app.include_router(router)
    app.include_router(galaxies_router)
    app.include_router(health_router)
    from obsqc.service.ui.pages import install_ui  # here: the pages import the API's modules

    install_ui(app)
    return app
