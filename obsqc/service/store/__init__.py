"""The verdict store: exposures, their verdicts and per-CCD numbers, and references (SQLAlchemy + Alembic)."""

from obsqc.service.store.models import (
    Base, CCDResult, ExposureRow, ReferenceMember, ReferenceRow, STATUSES, VERDICTS,
)
from obsqc.service.store.repository import (
    ExposurePage, get_exposure, list_exposures, load_reference, make_engine, make_sessionmaker,
    record_received, record_verdict, save_reference, upgrade,
)

__all__ = [
    "Base", "CCDResult", "ExposurePage", "ExposureRow", "ReferenceMember", "ReferenceRow", "STATUSES", "VERDICTS",
    "get_exposure", "list_exposures", "load_reference", "make_engine", "make_sessionmaker",
    "record_received", "record_verdict", "save_reference", "upgrade",
]
