"""Service settings, read from the environment with the ``OBSQC_`` prefix.

Nothing is built at import: :func:`get_settings` builds (and caches) one :class:`Settings` on first
call, and tests either pass their own ``Settings`` or clear the cache with
``get_settings.cache_clear()``. Every default runs on one machine with nothing installed beforehand.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "get_settings"]


def _default_home() -> Path:
    return Path("~/.obsqc").expanduser()


class Settings(BaseSettings):
    """Configuration of the obsqc service (``OBSQC_HOME``, ``OBSQC_DATABASE_URL``, ...)."""

    model_config = SettingsConfigDict(env_prefix="OBSQC_", extra="ignore")

    home: Path = Field(default_factory=_default_home)
    """Directory holding all local state (SQLite database, embedded Redis, models)."""
    database_url: str | None = None
    """SQLAlchemy URL of the verdict store; ``None`` means ``sqlite:///<home>/obsqc.db``."""
    redis_url: str | None = None
    """Redis URL of the job queue; ``None`` means ``obsqc up`` starts its own."""
    api_token: str | None = None
    """Bearer token required by write endpoints; ``None`` disables writes from outside."""
    data_roots: list[Path] = Field(default_factory=list)
    """Directories that submitted paths must lie under, as a JSON list in the environment
    (``OBSQC_DATA_ROOTS='["/data/raw"]'``); empty: no path submissions."""
    warn_sigma: float = 3.0
    """Significance (sigma units) at or above which an exposure is flagged ``warn``."""
    bad_sigma: float = 5.0
    """Significance (sigma units) at or above which an exposure is flagged ``bad``."""

    @model_validator(mode="after")
    def _resolve(self) -> "Settings":
        self.home = Path(self.home).expanduser()
        if self.database_url is None:
            self.database_url = f"sqlite:///{self.home / 'obsqc.db'}"
        if self.bad_sigma < self.warn_sigma:
            raise ValueError(f"OBSQC_BAD_SIGMA ({self.bad_sigma}) must be >= OBSQC_WARN_SIGMA ({self.warn_sigma})")
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, built from the environment on first call."""
    return Settings()
