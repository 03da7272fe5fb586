"""The whole flow with real parts: POST to a live API, a real ``obsqc worker --burst``, GET the verdict."""

from __future__ import annotations

import os
import subprocess
import sys

from obsqc.sim import simulate_exposure
from tests.service.api.conftest import AUTH


def test_post_then_a_real_worker_then_get_shows_the_verdict_and_its_plot(client, settings, data_root):
    path = data_root / "sim.fits"
    simulate_exposure(size="tiny", seed=3, exposure_id=2003).writeto(path)
    r = client.post("/v1/exposures", json={"path": str(path)}, headers=AUTH)
    assert r.status_code == 202, r.text

    env = {k: v for k, v in os.environ.items() if not k.startswith("OBSQC_")}
    env.update(OBSQC_HOME=str(settings.home), OBSQC_REDIS_URL=settings.redis_url,
               OBSQC_DATABASE_URL=settings.database_url)
    worker = subprocess.run([sys.executable, "-m", "obsqc", "worker", "--burst", "--log-level", "WARNING"],
                            env=env, capture_output=True, text=True, timeout=300)
    assert worker.returncode == 0, worker.stdout + worker.stderr

    e = client.get(r.json()["url"]).json()
    assert (e["status"], e["verdict"], e["attempts"]) == ("done", "calibrating", 1)
    assert e["n_ccds"] == len(e["ccds"]) > 0 and e["scores"]["source"]["kl"] is not None
    assert "read_measure" in e["timings"] and e["latency_s"] > 0
    assert "summary" in e["links"]["plots"]
    png = client.get(e["links"]["plots"]["summary"])
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")

    again = client.post("/v1/exposures", json={"path": str(path)}, headers=AUTH)
    assert again.status_code == 200 and again.json()["verdict"] == "calibrating"
