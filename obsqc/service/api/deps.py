"""What the routes share: the clients built once by the app's lifespan, and typed dependencies."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from redis import Redis
from rq import Queue
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from obsqc.service.api.cache import RecordCache
from obsqc.service.metrics import ServiceMetrics
from obsqc.service.settings import Settings

__all__ = ["ApiState", "State", "base_url", "get_state"]


@dataclass
class ApiState:
    """Everything the API process holds open: built at start-up, closed at shutdown."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    redis: Redis
    queue: Queue
    metrics: ServiceMetrics
    records: RecordCache = field(default_factory=RecordCache)

    def close(self) -> None:
        """Close the Redis client, the engine's connections and this process's metric files."""
        self.redis.close()
        self.engine.dispose()
        self.metrics.close()


async def get_state(request: Request) -> ApiState:
    """The app's :class:`ApiState` (async: no thread-pool hop for a lookup)."""
    return request.app.state.obsqc


State = Annotated[ApiState, Depends(get_state)]


def base_url(request: Request) -> str:
    """The service's root URL as the client reached it, without a trailing slash."""
    return str(request.base_url).rstrip("/")
