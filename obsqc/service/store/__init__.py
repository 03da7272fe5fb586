"""The verdict store: exposures, their verdicts and per-CCD numbers, references, and scored galaxies
with the running distributions of their scores (SQLAlchemy + Alembic)."""

from obsqc.service.store.models import (
    GALAXIES_STATUSES, GALAXY_SCORES, STATUSES, VERDICTS, Base, CCDResult, ExposureRow, GalaxyRow, GalaxyScoreStats,
    ReferenceMember, ReferenceRow,
)
from obsqc.service.store.repository import (
    ExposurePage, GalaxyPage, get_exposure, get_galaxy, list_exposures, list_galaxies, load_reference,
    load_score_stats, make_engine, make_sessionmaker, record_galaxies, record_received, record_verdict,
    save_reference, set_galaxies_status, update_score_stats, upgrade,
)

__all__ = [
    "Base", "CCDResult", "ExposurePage", "ExposureRow", "GALAXIES_STATUSES", "GALAXY_SCORES", "GalaxyPage",
    "GalaxyRow", "GalaxyScoreStats", "ReferenceMember", "ReferenceRow", "STATUSES", "VERDICTS",
    "get_exposure", "get_galaxy", "list_exposures", "list_galaxies", "load_reference", "load_score_stats",
    "make_engine", "make_sessionmaker", "record_galaxies", "record_received", "record_verdict", "save_reference",
    "set_galaxies_status", "update_score_stats", "upgrade",
]
