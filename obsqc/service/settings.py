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
    min_reference_exposures: int = Field(default=10, ge=3)
    """Normal exposures a reference of one (instrument, band) needs before verdicts leave ``calibrating``."""
    reference_window: int = Field(default=200, ge=3)
    """The reference of one (instrument, band) is rebuilt from its most recent this-many member exposures."""
    reference_rebuild_every: int = Field(default=20, ge=1)
    """Once a reference is ready, it is rebuilt after every this-many new normal members."""
    upload_max_bytes: int = Field(default=2 * 1024**3, ge=2880)
    """Largest multipart upload accepted by ``POST /v1/exposures`` (bytes); larger answers 413."""
    job_timeout_s: int = Field(default=600, ge=1)
    """Seconds a worker may spend on one exposure before the attempt is killed and retried."""
    job_retries: int = Field(default=2, ge=0)
    """Retries of a failed job (with back-off) before its exposure gets the verdict ``error``."""
    retry_backoff_s: list[int] = Field(default_factory=lambda: [5, 30])
    """Seconds to wait before each retry (the last value repeats)."""
    worker_threads: int = Field(default=1, ge=1)
    """Threads per worker for the CCDs of one exposure (one worker per core is the usual layout)."""
    worker_nice: int = Field(default=10, ge=0, le=19)
    """CPU niceness added to each worker process: on a machine shared with the API, busy workers then leave
    it the CPU it needs to answer reads quickly (0 = same priority as the API)."""
    worker_ttl_s: int = Field(default=60, ge=15)
    """Seconds after which a silent worker counts as gone; its job is then retried by another worker."""
    learned_scorers: bool = True
    """Run the learned scorers: the autoencoder indicator in the verdict, and the WGAN galaxy scores
    (queue ``gpu``) after it. Off, or without model files, exposures are judged by the detectors alone."""
    models_dir: Path | None = None
    """Directory of the exported models (autoencoder.onnx, galaxy_scorer.onnx, model.json); ``None``
    means the weights shipped with obsqc (``obsqc/models/weights``)."""
    scorer_threads: int = Field(default=1, ge=1)
    """onnxruntime threads per scoring process."""
    max_stamps_per_exposure: int = Field(default=2000, ge=0)
    """Source stamps cut per exposure for the autoencoder indicator (spread over its CCDs)."""
    max_galaxies_per_exposure: int = Field(default=300, ge=0)
    """Galaxy cutouts scored per exposure by the WGAN (spread over its CCDs)."""
    galaxy_batch_size: int = Field(default=64, ge=1)
    """Cutouts per inference batch of the galaxy scorer."""
    galaxy_anomaly_sigma: float = 3.0
    """A galaxy is an anomaly when its s_disc is this many sigma above the survey's running mean
    (Storey-Fisher et al. 2021, sec. 4.1)."""
    galaxy_prior_weight: float = Field(default=100.0, ge=0)
    """Weight, in galaxies, of the model's own score distribution when a survey's running distribution starts."""
    write_plots: bool = True
    """Draw each exposure's summary figure (after its verdict is stored, so it never delays it)."""
    metrics_dir: Path | None = None
    """Directory of prometheus-client's multiprocess files; ``None`` means ``<home>/metrics``."""

    @model_validator(mode="after")
    def _resolve(self) -> "Settings":
        self.home = Path(self.home).expanduser()
        if self.metrics_dir is None:
            self.metrics_dir = self.home / "metrics"
        if self.database_url is None:
            self.database_url = f"sqlite:///{self.home / 'obsqc.db'}"
        if self.bad_sigma < self.warn_sigma:
            raise ValueError(f"OBSQC_BAD_SIGMA ({self.bad_sigma}) must be >= OBSQC_WARN_SIGMA ({self.warn_sigma})")
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, built from the environment on first call."""
    return Settings()
