"""Screenshots of the operators' pages for the README: ``docs/img/ui-exposures.png``,
``docs/img/ui-exposure.png`` (a bad exposure) and ``docs/img/ui-galaxies.png``.

It runs the real service (``obsqc up --no-simulate`` in a temporary ``OBSQC_HOME``), posts simulated
exposures like a telescope would (normal ones until the reference is calibrated, then a few spoiled
ones and more normal ones), waits for their verdicts and galaxy scores, and photographs the pages in
headless Chromium (Debian's ``chromium`` driven by Playwright). The camera is a DECam-shaped focal
plane of 62 small CCDs (512 x 256 pixels instead of 4096 x 2048, so that a run takes a minute or two);
the DETSEC cards are scaled by the same factor so the map looks like the camera. Each PNG is kept
under 300 KB (reduced to a 256-colour palette when larger).

Usage: ``.venv/bin/python scripts/screenshots.py [--out docs/img] [--keep]``
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from astropy.io import fits
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "screenshots"
MAX_BYTES = 300 * 1024
CCD_SHAPE = (512, 256)
"""(ny, nx) of the simulated CCDs; DECam's are (4096, 2048)."""


def _camera():
    from obsqc.sim.config import SizePreset

    return SizePreset("decam-mini", n_ccd=62, ccd_shape=CCD_SHAPE, layout="decam", min_saturated_stars=1)


def _scale_detsec(hdus: fits.HDUList) -> None:
    """DETSEC of the small CCDs placed on DECam's pitch, shrunk by the CCDs' own factor (8 in x and y)."""
    fy, fx = 4096 // CCD_SHAPE[0], 2048 // CCD_SHAPE[1]
    for hdu in hdus[1:]:
        m = re.fullmatch(r"\[(\d+):(\d+),(\d+):(\d+)\]", str(hdu.header.get("DETSEC", "")))
        if m:
            x1, _, y1, _ = (int(v) for v in m.groups())
            x1, y1 = (x1 - 1) // fx + 1, (y1 - 1) // fy + 1
            hdu.header["DETSEC"] = f"[{x1}:{x1 + CCD_SHAPE[1] - 1},{y1}:{y1 + CCD_SHAPE[0] - 1}]"


def _start(home: Path, port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBSQC_")}
    env.update(OBSQC_HOME=str(home), OBSQC_API_TOKEN=TOKEN, OBSQC_MIN_REFERENCE_EXPOSURES="6")
    return subprocess.Popen([sys.executable, "-m", "obsqc", "up", "--no-simulate", "--port", str(port),
                             "--workers", "2"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _wait_ready(client: httpx.Client, up: subprocess.Popen, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if up.poll() is not None:
            raise SystemExit(f"obsqc up exited with code {up.returncode}")
        try:
            if client.get("/readyz").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit("obsqc up did not become ready")


def _simulate(number: int, anomaly: str | None, tries: int = 1, target: int = 0) -> fits.HDUList:
    """The exposure ``number``; with ``tries`` > 1, of as many seeds the one whose anomaly touches closest
    to ``target`` CCDs (readout stripes touch 30-100% of them: a map with some CCDs flagged, not all, reads
    better, and enough of them make the exposure bad rather than warn)."""
    from obsqc.sim import simulate_exposure

    def distance(hdus: fits.HDUList) -> int:
        return abs(int(hdus[0].header.get("OBSQCSIM NAFFECT", 0)) - target)

    best = None
    for k in range(tries):
        hdus = simulate_exposure(size=_camera(), seed=number + 1000 * k, exposure_id=number, anomaly=anomaly)
        if best is None or distance(hdus) < distance(best):
            best = hdus
    return best


def _post(client: httpx.Client, data: Path, number: int, anomaly: str | None = None, tries: int = 1,
          target: int = 0) -> str:
    hdus = _simulate(number, anomaly, tries, target)
    _scale_detsec(hdus)
    path = data / f"c4d_{number}.fits"
    hdus.writeto(path, overwrite=True)
    answer = client.post("/v1/exposures", json={"path": str(path)})
    answer.raise_for_status()
    return answer.json()["id"]


def _wait(client: httpx.Client, ids: list[str], timeout_s: float = 600) -> dict[str, dict]:
    deadline = time.monotonic() + timeout_s
    done: dict[str, dict] = {}
    while len(done) < len(ids):
        if time.monotonic() > deadline:
            raise SystemExit(f"no verdict in {timeout_s} s for {sorted(set(ids) - set(done))}")
        for i in ids:
            if i not in done:
                body = client.get(f"/v1/exposures/{i}").json()
                if body["verdict"] is not None and body["galaxies"]["status"] != "pending":
                    done[i] = body
        time.sleep(0.5)
    return done


def _save(png: bytes, path: Path) -> None:
    if len(png) > MAX_BYTES:
        image = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=True)
        png = buffer.getvalue()
    path.write_bytes(png)
    print(f"wrote {path} ({len(png) // 1024} KB)")


def _photograph(url: str, bad_id: str, out: Path) -> None:
    from urllib.parse import quote

    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("chromium is not installed (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{url}/ui/exposures", wait_until="networkidle")
        _save(page.screenshot(full_page=False), out / "ui-exposures.png")
        page.goto(f"{url}/ui/exposures/{quote(bad_id, safe='')}", wait_until="networkidle")
        page.set_viewport_size({"width": 1280, "height": 1800})
        _save(page.screenshot(full_page=True), out / "ui-exposure.png")
        page.set_viewport_size({"width": 1280, "height": 900})
        page.goto(f"{url}/ui/galaxies", wait_until="networkidle")
        _save(page.screenshot(full_page=False), out / "ui-galaxies.png")
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    parser.add_argument("--keep", action="store_true", help="keep the temporary OBSQC_HOME and print it")
    args = parser.parse_args()
    from obsqc.service.redis_embedded import free_tcp_port

    home = Path(tempfile.mkdtemp(prefix="obsqc-screenshots-")) / "home"
    data = home / "incoming"
    data.mkdir(parents=True)
    port = free_tcp_port()
    url = f"http://127.0.0.1:{port}"
    up = _start(home, port)
    client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    try:
        _wait_ready(client, up)
        first = 1_060_000  # fixed seeds: a re-run draws the same exposures
        # (anomaly, CCDs it should touch): stripes on about half, two thirds and most of the focal plane;
        # the page shows the bad one with the fewest flagged CCDs
        plan = [(None, 0)] * 6 + [("readout_stripes", 30), (None, 0), ("psf_elongation", 0), (None, 0),
                                  ("readout_stripes", 42), ("satellite_trail", 0), (None, 0),
                                  ("readout_stripes", 54), (None, 0)]
        ids = []
        for k, (anomaly, target) in enumerate(plan):
            ids.append(_post(client, data, first + k, anomaly, tries=6 if target else 1, target=target))
            if k == 5:  # the reference is built from the first six
                _wait(client, ids)
        junk = data / "c4d_truncated.fits"
        junk.write_bytes(b"SIMPLE  =                    T" + b" " * 50)
        client.post("/v1/exposures", json={"path": str(junk), "exposure_id": str(first + len(plan))})
        bodies = _wait(client, ids)
        flagged = {i: {c for f in bodies[i]["flags"] for c in f["ccds"]} for i in ids if bodies[i]["verdict"] == "bad"}
        flagged = {i: ccds for i, ccds in flagged.items() if ccds}
        if not flagged:
            raise SystemExit(f"no bad exposure with flagged CCDs: {[bodies[i]['verdict'] for i in ids]}")
        print("verdicts:", ", ".join(f"{i}={bodies[i]['verdict']}" for i in ids))
        args.out.mkdir(parents=True, exist_ok=True)
        _photograph(url, min(flagged, key=lambda i: len(flagged[i])), args.out)
    finally:
        client.close()
        up.send_signal(signal.SIGINT)
        try:
            up.wait(90)
        except subprocess.TimeoutExpired:
            up.kill()
        if args.keep:
            print(f"OBSQC_HOME kept: {home}")
        else:
            shutil.rmtree(home.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
