"""End to end: a real Prometheus scraping a running ``obsqc up`` every second and evaluating the
repository's rules (``observed_service``, tests/deploy/conftest.py).

After a normal night the bad-exposure alert is silent; a spoiled exposure is posted and the alert is
seen firing through Prometheus's HTTP API within 60 s of the POST (DESIGN.md: "an alert must fire
within a minute of a bad exposure, and say which CCDs and why"), its labels naming that exposure, its
flags and its CCDs.
"""

from __future__ import annotations

import time

import httpx
import pytest

ALERT = "ObsqcBadExposure"
BUDGET_S = 60.0
"""Seconds from the POST of a bad exposure to its alert firing (the operators' budget)."""


@pytest.mark.slow
def test_a_normal_night_does_not_page(observed_service):
    # Over the whole night (whatever other tests post later), the alert was never pending nor firing,
    # and nothing paged: asked of Prometheus's history with the @ modifier.
    print("observed_service phases (s):", observed_service.timings)  # shown by -rP, for slow runs
    start, end = observed_service.night_span
    window = f"[{int(end - start) + 2}s] @ {end:.3f}"
    assert observed_service.query(f'max_over_time(ALERTS{{alertname="{ALERT}"}}{window})') == []
    assert observed_service.query(f'max_over_time(ALERTS{{severity="page",alertstate="firing"}}{window})') == []
    # The collector behind the alert was scraped: the store reads fine, the night calibrated the
    # reference, and none of the night's exposures is listed as bad or warn.
    assert observed_service.query(f"min_over_time(obsqc_store_up{window}) == 1")
    assert observed_service.query(f'obsqc_reference_members{{instrument="SIMCAM",band="r"}} @ {end:.3f} >= 10')
    assert observed_service.query(f'obsqc_calibrating{{instrument="SIMCAM",band="r"}} @ {end:.3f} == 0')
    listed = observed_service.query(f"max_over_time(obsqc_recent_exposure_verdict{window})")
    assert not {r["metric"]["exposure_id"] for r in listed} & set(observed_service.night_ids)


@pytest.mark.slow
def test_a_bad_exposure_fires_its_alert_within_a_minute_naming_it(observed_service):
    path = observed_service.make_exposure("readout_stripes", seed=77)
    posted_at = time.monotonic()
    exposure_id = observed_service.post(path)

    firing: list = []
    while time.monotonic() - posted_at < BUDGET_S:
        firing = [a for a in observed_service.alerts(ALERT) if a.get("exposure_id") == exposure_id]
        if firing:
            break
        time.sleep(0.5)
    elapsed = time.monotonic() - posted_at
    record = observed_service.wait_verdict(exposure_id, timeout_s=5)
    assert firing, (f"{ALERT} for {exposure_id} not firing {elapsed:.0f} s after the POST; verdict "
                    f"{record['verdict']}, alerts now: {observed_service.query('ALERTS')}\n"
                    f"{observed_service.log_tails()}")

    labels = firing[0]
    assert record["verdict"] == "bad", record
    flags = sorted({f["name"] for f in record["flags"]})
    ccds = sorted({c for f in record["flags"] for c in f["ccds"]})
    assert ccds, record  # readout stripes are per-CCD gradients: the flags name CCDs
    assert labels["severity"] == "page"
    assert (labels["instrument"], labels["band"], labels["verdict"]) == ("SIMCAM", "r", "bad")
    assert labels["flags"] == ",".join(flags)
    assert labels["ccds"] == ",".join(ccds)
    assert any(flag.startswith("background") for flag in flags), flags

    # The alert's annotations, as Prometheus rendered them, name the exposure and its CCDs.
    body = httpx.get(f"{observed_service.prometheus_url}/api/v1/alerts", timeout=10).json()
    mine = [a for a in body["data"]["alerts"] if a["labels"].get("exposure_id") == exposure_id]
    assert mine and exposure_id in mine[0]["annotations"]["summary"]
    assert ",".join(ccds) in mine[0]["annotations"]["summary"]
