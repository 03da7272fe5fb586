"""Measure one exposure file: read its CCDs and run the detectors on each, in parallel threads.

The numba kernels release the GIL (``nogil=True``), so one thread per CCD scales across cores with
no shared state and no pickling; at most ``threads`` CCD arrays are alive at a time, so memory does
not grow with the number of CCDs. A CCD that cannot be measured (all NaN, too few usable pixels) is
skipped and recorded with its reason; the exposure is rejected only when no CCD is left.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from obsqc.detectors.ccd import CCDStats, measure_ccd
from obsqc.detectors.config import DetectorParams
from obsqc.detectors.exposure import ExposureStats, combine_ccds
from obsqc.service.errors import InvalidExposureError
from obsqc.service.fits_ingest import ExposureHeader, ExposureReader, IngestLimits, open_exposure

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MeasuredExposure:
    """An exposure's header, its measured statistics, the CCD positions and the wall time (s)."""

    header: ExposureHeader
    stats: ExposureStats
    detsec: dict[str, tuple[int, int, int, int]]
    wall_s: float


def _parse_detsec(text: object) -> tuple[int, int, int, int] | None:
    """'[x1:x2,y1:y2]' (FITS, 1-based) -> (x1, x2, y1, y2), or None when absent or malformed."""
    if not isinstance(text, str):
        return None
    try:
        xs, ys = text.strip().strip("[]").split(",")
        x1, x2 = (int(v) for v in xs.split(":"))
        y1, y2 = (int(v) for v in ys.split(":"))
    except ValueError:
        return None
    return x1, x2, y1, y2


def _measure_one(reader: ExposureReader, index: int, params: DetectorParams, seed: int):
    ccd = reader.read_ccd(index)
    stats = measure_ccd(ccd.data, name=ccd.name, saturate=ccd.saturate, params=params, seed=seed + 7919 * index)
    return stats, _parse_detsec(ccd.header.get("DETSEC"))


def measure_reader(
    reader: ExposureReader, *, params: DetectorParams = DetectorParams(), threads: int = 1, seed: int = 0
) -> MeasuredExposure:
    """Measure every CCD of an open exposure. Raises ``InvalidExposureError`` if no CCD is measurable."""
    t0 = time.perf_counter()
    header = reader.header
    results: list[CCDStats] = []
    skipped: list[tuple[str, str]] = []
    detsec: dict[str, tuple[int, int, int, int]] = {}

    def task(i: int):
        try:
            return _measure_one(reader, i, params, seed)
        except InvalidExposureError as exc:
            if exc.reason in ("truncated", "unreadable", "not_fits"):
                raise
            return exc
        except ValueError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for i, outcome in enumerate(pool.map(task, range(header.n_ccds))):
            name = header.ccd_names[i]
            if isinstance(outcome, Exception):
                logger.warning("exposure %s: CCD %s skipped: %s", header.exposure_id, name, outcome)
                skipped.append((name, str(outcome)))
                continue
            stats, sec = outcome
            results.append(stats)
            if sec is not None:
                detsec[stats.name] = sec
    if not results:
        reasons = "; ".join(f"{n}: {r}" for n, r in skipped)
        raise InvalidExposureError(
            f"no CCD of exposure {header.exposure_id!r} could be measured ({reasons})", reason="no_usable_ccd"
        )
    stats = combine_ccds(header.exposure_id, results, skipped=tuple(skipped))
    return MeasuredExposure(header=header, stats=stats, detsec=detsec, wall_s=time.perf_counter() - t0)


def measure_file(
    path: str,
    *,
    params: DetectorParams = DetectorParams(),
    threads: int = 1,
    exposure_id: str | None = None,
    id_from_filename: bool = False,
    limits: IngestLimits | None = None,
) -> MeasuredExposure:
    """Open a FITS exposure and measure it (see :func:`measure_reader`)."""
    kwargs = {"exposure_id": exposure_id, "id_from_filename": id_from_filename}
    if limits is not None:
        kwargs["limits"] = limits
    with open_exposure(path, **kwargs) as reader:
        return measure_reader(reader, params=params, threads=threads)
