"""Scrape-time gauges read from the verdict store, so that alerts can name exposures, CCDs and flags.

Counters cannot carry an exposure id (a series per exposure would grow without bound), yet DESIGN.md
asks that an alert "say which CCDs and why" within a minute of a bad exposure. At each scrape the
API reads a bounded recent slice of the store (:func:`obsqc.service.store.ops.ops_snapshot`) and
exports it; the number of series stays bounded (at most 50 recent verdicts, 10 galaxies, and per
(instrument, band) a handful of gauges plus one per CCD currently flagged).

Like :class:`~obsqc.service.metrics.QueueStatsCollector`, the collector never fails the scrape: when
the store cannot be read it exports ``obsqc_store_up 0`` and nothing else of its own.

==================================================  ======  ================================================
name                                                type    labels
==================================================  ======  ================================================
``obsqc_store_up``                                  gauge   (none)
``obsqc_recent_exposure_verdict``                   gauge   instrument, band, exposure_id, verdict, flags, ccds
``obsqc_ccd_consecutive_flags``                     gauge   instrument, band, ccd
``obsqc_reference_members``                         gauge   instrument, band
``obsqc_reference_updated_timestamp_seconds``       gauge   instrument, band
``obsqc_calibrating``                               gauge   instrument, band
``obsqc_calibrating_since_timestamp_seconds``       gauge   instrument, band
``obsqc_recent_galaxy_anomaly``                     gauge   instrument, band, exposure_id, galaxy_id
==================================================  ======  ================================================

``flags`` and ``ccds`` are sorted and comma-joined, then cleaned and truncated by
:func:`~obsqc.service.metrics.label_value`; ``ccds`` is ``none`` when no flag names a CCD (an
exposure-level indicator such as ``source_orientation``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager

from obsqc.service.metrics import label_value

__all__ = ["EXPOSURE_ID_MAX_CHARS", "StoreStatsCollector"]

logger = logging.getLogger(__name__)

EXPOSURE_ID_MAX_CHARS = 128
"""Exposure ids are kept whole in labels (the store allows 128 characters): an alert must name it."""


def _timestamp(when) -> float:
    return when.timestamp()


def _adder(family):
    """``family.add_metric`` that keeps only the first sample of a label set: distinct raw values may
    clean to the same label values, and a repeated series would make Prometheus reject the scrape."""
    seen: set[tuple[str, ...]] = set()

    def add(labels: list[str], value: float) -> None:
        key = tuple(labels)
        if key not in seen:
            seen.add(key)
            family.add_metric(labels, value)

    return add


class StoreStatsCollector:
    """Scrape-time gauges of the verdict store (see the module docstring for the series).

    ``sessions`` is a session factory (``sessionmaker``): each scrape opens one read transaction.
    """

    def __init__(self, sessions: Callable[[], AbstractContextManager]) -> None:
        self._sessions = sessions

    def _snapshot(self):
        from obsqc.service.store.ops import ops_snapshot

        with self._sessions() as session, session.begin():
            return ops_snapshot(session)

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        try:
            snapshot = self._snapshot()
        except Exception:  # noqa: BLE001 - a store that cannot be read must not fail the scrape
            logger.warning("metrics: could not read the verdict store", exc_info=True)
            snapshot = None
        yield GaugeMetricFamily("obsqc_store_up", "1 when this scrape could read the verdict store, 0 when it "
                                "could not.", value=0.0 if snapshot is None else 1.0)
        if snapshot is None:
            return

        recent = GaugeMetricFamily(
            "obsqc_recent_exposure_verdict",
            "Unix time of the verdict of each exposure judged bad or warn in the last 15 minutes (at most "
            "50), naming its flags (indicators) and CCDs. The series behind the bad-exposure alert.",
            labels=["instrument", "band", "exposure_id", "verdict", "flags", "ccds"])
        add_recent = _adder(recent)
        for p in snapshot.problems:
            add_recent([label_value(p.instrument), label_value(p.band),
                               label_value(p.exposure_id, EXPOSURE_ID_MAX_CHARS), label_value(p.verdict),
                               label_value(",".join(p.flags)) if p.flags else "none",
                               label_value(",".join(p.ccds)) if p.ccds else "none"], _timestamp(p.judged_at))
        yield recent

        streaks = GaugeMetricFamily(
            "obsqc_ccd_consecutive_flags",
            "How many of the newest judged exposures of an instrument and band, without a gap, name this CCD "
            "in a flag (looking back 20; only CCDs the newest exposure names). A CCD flagged again and again "
            "is hardware.", labels=["instrument", "band", "ccd"])
        members = GaugeMetricFamily("obsqc_reference_members", "Exposures the current reference of an "
                                    "instrument and band is built from.", labels=["instrument", "band"])
        updated = GaugeMetricFamily("obsqc_reference_updated_timestamp_seconds", "Unix time the reference of an "
                                    "instrument and band was last rebuilt.", labels=["instrument", "band"])
        calibrating = GaugeMetricFamily("obsqc_calibrating", "1 when the newest judged exposure of an instrument "
                                        "and band got the verdict calibrating, else 0.", labels=["instrument", "band"])
        since = GaugeMetricFamily("obsqc_calibrating_since_timestamp_seconds", "Unix time of the first verdict of "
                                  "the current run of calibrating verdicts (absent when not calibrating).",
                                  labels=["instrument", "band"])
        add_streak, add_members, add_updated, add_calibrating, add_since = (
            _adder(f) for f in (streaks, members, updated, calibrating, since))
        for pair in snapshot.pairs:
            key = [label_value(pair.instrument), label_value(pair.band)]
            add_members(key, float(pair.reference_members))
            add_updated(key, _timestamp(pair.reference_updated_at))
            add_calibrating(key, 1.0 if pair.calibrating else 0.0)
            if pair.calibrating and pair.calibrating_since is not None:
                add_since(key, _timestamp(pair.calibrating_since))
            for ccd, count in sorted(pair.ccd_streaks.items()):
                if count >= 1:
                    add_streak([*key, label_value(ccd)], float(count))
        yield from (streaks, members, updated, calibrating, since)

        galaxies = GaugeMetricFamily(
            "obsqc_recent_galaxy_anomaly",
            "s_disc sigma of the 10 most anomalous galaxies (above 3 sigma) scored in the last hour.",
            labels=["instrument", "band", "exposure_id", "galaxy_id"])
        add_galaxy = _adder(galaxies)
        for g in snapshot.galaxies:
            add_galaxy([label_value(g.instrument), label_value(g.band),
                                 label_value(g.exposure_id, EXPOSURE_ID_MAX_CHARS), str(g.galaxy_id)],
                                g.s_disc_sigma)
        yield galaxies
