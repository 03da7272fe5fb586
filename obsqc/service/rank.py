"""The paper's batch mode: measure a set of exposures, compare each with a reference, rank them.

Alonso, Zhang & Li §3.1-3.2: the reference is the mean distribution of the whole set, and exposures
are ranked by their KL divergence from it (eq. 1). ``rank_files`` does exactly that, or scores
against a reference saved earlier. Bad files are recorded as failures and never abort the run.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from obsqc.detectors.config import DetectorParams
from obsqc.detectors.scoring import INDICATOR_NAMES, ExposureScore, Reference, build_reference, score_exposure
from obsqc.service.errors import ObsQCError
from obsqc.service.measure import MeasuredExposure, measure_file
from obsqc.service.verdict import FLAG_NAMES

logger = logging.getLogger(__name__)

DEFAULT_FLAG_SIGMA = 4.0
"""An exposure whose source or background significance exceeds this is flagged, in sigma."""


@dataclass(frozen=True, slots=True)
class RankFailure:
    """A file that could not be ranked: its path, a stable reason code and a message."""

    file: str
    reason: str
    message: str


@dataclass(slots=True)
class RankRecord:
    """One ranked exposure, as printed by ``obsqc rank`` (see :meth:`to_dict`)."""

    file: str
    measured: MeasuredExposure
    score: ExposureScore
    rank: int = 0
    flags: list[str] = field(default_factory=list)

    @property
    def anomaly_sigma(self) -> float:
        """The largest of the indicators' significances: what the ranking sorts on."""
        s = self.score
        vals = [getattr(s, name).sigma for name in INDICATOR_NAMES]
        vals = [v for v in vals if not math.isnan(v)]
        return max(vals) if vals else float("nan")

    def to_dict(self, n_worst: int = 3) -> dict:
        """A flat JSON-ready record with the DESIGN.md contract fields first."""
        s, h = self.score, self.measured.header
        stats_by_name = {c.name: c for c in self.measured.stats.ccds}
        return {
            "exposure_id": s.exposure_id,
            "source_kl": _num(s.source.kl),
            "background_kl": _num(s.background.kl),
            "n_sources": s.n_sources,
            "rank": self.rank,
            "anomaly_sigma": _num(self.anomaly_sigma),
            "source_sigma": _num(s.source.sigma),
            "background_sigma": _num(s.background.sigma),
            "profile_kl": _num(s.profile.kl),
            "profile_sigma": _num(s.profile.sigma),
            "large_scale_kl": _num(s.large_scale.kl),
            "large_scale_sigma": _num(s.large_scale.sigma),
            "line_z": _num(s.line.kl),
            "line_sigma": _num(s.line.sigma),
            "source_kl_corrected": _num(s.source.kl_corrected),
            "background_kl_corrected": _num(s.background.kl_corrected),
            "flags": self.flags,
            "instrument": h.instrument,
            "band": h.band,
            "n_ccds": s.n_ccds,
            "worst_ccds": [
                {"ccd": c.name, "background_kl": _num(c.background.kl), "background_sigma": _num(c.background.sigma),
                 "large_scale_sigma": _num(c.large_scale.sigma), "line_z": _num(stats_by_name[c.name].line_z)}
                for c in s.worst_ccds(n_worst)
            ],
            "skipped_ccds": [{"ccd": n, "reason": r} for n, r in self.measured.stats.skipped_ccds],
            "file": self.file,
            "wall_s": round(self.measured.wall_s, 4),
        }


def flags_for(score: ExposureScore, flag_sigma: float) -> list[str]:
    """The flag names (:data:`obsqc.service.verdict.FLAG_NAMES`) of the indicators above ``flag_sigma``."""
    return [FLAG_NAMES[name] for name in INDICATOR_NAMES if getattr(score, name).sigma > flag_sigma]


def _num(x: float, digits: int = 6):
    return None if x is None or math.isnan(x) else round(float(x), digits)


@dataclass(slots=True)
class RankResult:
    """Ranked records (most anomalous first), failures, and the reference used."""

    records: list[RankRecord]
    failures: list[RankFailure]
    reference: Reference | None


def rank_files(
    paths: Iterable[str | Path],
    *,
    reference: Reference | None = None,
    params: DetectorParams = DetectorParams(),
    threads: int = 1,
    flag_sigma: float = DEFAULT_FLAG_SIGMA,
    on_progress: Callable[[str], None] | None = None,
) -> RankResult:
    """Measure ``paths``, score them against ``reference`` (default: the set's mean), and rank them."""
    measured: list[tuple[str, MeasuredExposure]] = []
    failures: list[RankFailure] = []
    for path in paths:
        path = str(path)
        try:
            measured.append((path, measure_file(path, params=params, threads=threads, id_from_filename=True)))
        except ObsQCError as exc:
            failures.append(RankFailure(path, getattr(exc, "reason", "invalid"), str(exc)))
            logger.warning("skipping %s: %s", path, exc)
        except (OSError, ValueError) as exc:
            failures.append(RankFailure(path, "unreadable", str(exc)))
            logger.warning("skipping %s: %s", path, exc)
        if on_progress is not None:
            on_progress(path)
    if not measured:
        return RankResult([], failures, reference)
    if reference is None:
        reference = build_reference([m.stats for _, m in measured], params)
    records = []
    for path, m in measured:
        score = score_exposure(m.stats, reference, params)
        rec = RankRecord(file=path, measured=m, score=score)
        rec.flags = flags_for(score, flag_sigma)
        records.append(rec)
    records.sort(key=lambda r: -r.anomaly_sigma if not math.isnan(r.anomaly_sigma) else math.inf)
    for i, rec in enumerate(records, start=1):
        rec.rank = i
    return RankResult(records, failures, reference)
