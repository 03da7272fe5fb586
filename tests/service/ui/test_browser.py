"""The operators' pages in headless Chromium, against the real service.

``obsqc up --no-simulate`` runs in a subprocess (its own Redis, SQLite, the API, two workers and the
galaxy worker, the shipped model weights); simulated exposures are posted over HTTP like a telescope
would, three to calibrate, then a striped one (``bad``) and a normal one. Debian's ``chromium``,
driven by Playwright through its executable path, then checks that every page loads with no console
error and no failed request, that the focal-plane map, thumbnails and galaxy images have pixels, that
the verdict filter works, and that new verdicts appear without a reload. Without chromium (or
Playwright) the tests are skipped, except under ``CI`` where they fail.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from PIL import Image

from obsqc.service.redis_embedded import free_tcp_port
from obsqc.service.store import make_engine, make_sessionmaker, record_received, record_verdict
from obsqc.sim import simulate_exposure
from tests.service.ui.conftest import BG_FLAG, score
from tests.service.test_up import wait_ready

pytestmark = pytest.mark.slow

TOKEN = "ui-browser-token"


def _need(what: str) -> None:
    message = f"{what}; the browser tests of the /ui pages need it"
    if os.environ.get("CI"):
        pytest.fail(message + " (CI is set, so they must run)")
    pytest.skip(message)


@dataclass
class Service:
    """The running ``obsqc up`` and what was posted to it."""

    url: str
    home: Path
    client: httpx.Client
    data: Path
    verdicts: dict[str, dict] = field(default_factory=dict)

    def post(self, seed: int, **kwargs) -> str:
        path = self.data / f"exp{seed}.fits"
        simulate_exposure(size="tiny", seed=seed, exposure_id=800 + seed, **kwargs).writeto(path)
        answer = self.client.post("/v1/exposures", json={"path": str(path)})
        assert answer.status_code == 202, answer.text
        return answer.json()["id"]

    def wait(self, exposure_id: str, timeout_s: float = 90.0) -> dict:
        """The record once judged and its galaxies scored."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            body = self.client.get(f"/v1/exposures/{exposure_id}").json()
            if body["verdict"] is not None and body["galaxies"]["status"] != "pending":
                self.verdicts[exposure_id] = body
                return body
            time.sleep(0.1)
        raise AssertionError(f"exposure {exposure_id} not judged in {timeout_s} s: {body}")

    def sessions(self):
        return make_sessionmaker(make_engine(f"sqlite:///{self.home / 'obsqc.db'}"))


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> Iterator[Service]:
    home = tmp_path_factory.mktemp("ui") / "home"
    data = home / "incoming"
    data.mkdir(parents=True)
    port = free_tcp_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBSQC_")}
    env.update(OBSQC_HOME=str(home), OBSQC_API_TOKEN=TOKEN, OBSQC_MIN_REFERENCE_EXPOSURES="3")
    up = subprocess.Popen([sys.executable, "-m", "obsqc", "up", "--no-simulate", "--port", str(port), "--workers", "2"],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {TOKEN}"},
                          timeout=30)
    svc = Service(url=f"http://127.0.0.1:{port}", home=home, client=client, data=data)
    try:
        wait_ready(client, up, timeout_s=180)
        calibration = [svc.wait(exposure_id)["verdict"] for exposure_id in [svc.post(seed) for seed in range(3)]]
        assert calibration[0] == "calibrating" and set(calibration) <= {"calibrating", "ok"}, calibration
        spoiled = svc.post(3, anomaly="readout_stripes", strength="prominent")
        normal = svc.post(4)
        assert svc.wait(spoiled)["verdict"] == "bad", svc.verdicts[spoiled]
        assert svc.wait(normal)["verdict"] == "ok", svc.verdicts[normal]
        yield svc
    finally:
        client.close()
        up.send_signal(signal.SIGINT)
        try:
            up.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            up.kill()
            up.communicate()


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium")
    if chromium is None:
        _need("Debian's chromium is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need("the playwright package is not installed (pip install -e '.[dev]')")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield browser
        browser.close()


@dataclass
class Watched:
    """A page and every problem it reported: console errors, uncaught exceptions, failed requests."""

    page: object
    problems: list[str] = field(default_factory=list)

    def assert_clean(self) -> None:
        assert not self.problems, "\n".join(self.problems)


@pytest.fixture
def watched(browser) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    w = Watched(page)
    page.on("console", lambda m: m.type == "error" and w.problems.append(f"console: {m.text} ({m.location})"))
    page.on("pageerror", lambda e: w.problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: w.problems.append(f"failed: {r.url} {r.failure}"))
    page.on("response", lambda r: r.status >= 400 and w.problems.append(f"HTTP {r.status}: {r.url}"))
    yield w
    context.close()


def _colours(png: bytes) -> int:
    return len(Image.open(io.BytesIO(png)).convert("RGB").getcolors(maxcolors=1 << 24))


def _images_loaded(page, selector: str) -> list[int]:
    return page.eval_on_selector_all(selector, "els => els.map(e => e.complete ? e.naturalWidth : 0)")


def test_exposure_list_loads_and_filters_by_verdict(service, watched):
    page = watched.page
    page.goto(f"{service.url}/ui/exposures", wait_until="networkidle")
    rows = page.locator("table.list tbody tr[data-key]")
    assert rows.count() >= 5
    assert "bad" in [b.lower() for b in page.locator("table.list tbody .badge").all_inner_texts()]
    page.select_option("select[name=verdict]", "bad")  # the form submits itself on change
    page.wait_for_url("**/ui/exposures?verdict=bad")
    badges = page.locator("table.list tbody .badge").all_inner_texts()
    assert badges and {b.lower() for b in badges} == {"bad"}
    page.locator("table.list tbody td.id a").first.click()
    page.wait_for_url("**/ui/exposures/8*")
    assert page.locator("#verdict").inner_text().lower() == "bad"
    watched.assert_clean()


def test_a_new_verdict_appears_without_a_reload(service, watched):
    page = watched.page
    page.goto(f"{service.url}/ui/exposures", wait_until="networkidle")
    page.evaluate("window.__sameDocument = true")
    exposure_id = service.post(5)
    row = page.locator(f'tr[data-key="{exposure_id}"]')
    row.locator(".badge", has_text="ok").wait_for(timeout=45_000)
    assert page.evaluate("window.__sameDocument === true")  # no navigation happened
    assert page.locator("table.list tbody tr").first.get_attribute("data-key") == exposure_id
    watched.assert_clean()


def test_the_bad_exposure_page_has_its_map_histograms_thumbnails_and_words(service, watched):
    bad = next(b for b in service.verdicts.values() if b["verdict"] == "bad")
    flagged = [c for f in bad["flags"] for c in f["ccds"]]
    page = watched.page
    page.goto(f"{service.url}/ui/exposures/{quote(bad['id'], safe='')}", wait_until="networkidle")
    focal = page.locator("svg.focal")
    assert focal.locator("g.ccd").count() == len(bad["ccds"])
    assert _colours(focal.screenshot()) > 2
    assert {g.get_attribute("data-ccd") for g in focal.locator("g.flagged").all()} == set(flagged)
    assert page.locator("figure.hist").count() >= 2
    thumbs = page.locator("figure.thumb img")
    assert thumbs.count() == len(flagged)
    assert all(w > 0 for w in _images_loaded(page, "figure.thumb img"))
    assert _colours(thumbs.first.screenshot()) > 16
    words = page.locator(".flag-card").first.inner_text()
    assert f"The sky level of {flagged[0]}" in words and "Check:" in words
    assert all(w > 0 for w in _images_loaded(page, ".mini img"))
    watched.assert_clean()


def test_an_exposure_page_shows_its_verdict_when_it_arrives(service, watched):
    sessions = service.sessions()
    with sessions.begin() as session:
        record_received(session, "live-1", instrument="SIMCAM", band="r")
    page = watched.page
    page.goto(f"{service.url}/ui/exposures/live-1", wait_until="networkidle")
    assert page.locator("#verdict").inner_text().lower() == "queued"
    page.evaluate("window.__sameDocument = true")
    with sessions.begin() as session:
        record_verdict(session, "live-1", verdict="bad", flags=[BG_FLAG], score=score("live-1"), attempts=1)
    page.locator("#verdict", has_text="bad").wait_for(timeout=15_000)
    assert page.evaluate("window.__sameDocument === true")
    assert "The sky level of S2" in page.locator(".flag-card").inner_text()
    watched.assert_clean()


def test_the_galaxy_gallery_draws_its_images(service, watched):
    page = watched.page
    page.goto(f"{service.url}/ui/galaxies", wait_until="networkidle")
    cards = page.locator("article.galaxy")
    assert cards.count() >= 1
    loaded = _images_loaded(page, "article.galaxy img")
    assert len(loaded) == 3 * cards.count() and all(w > 0 for w in loaded)
    assert _colours(cards.first.locator(".triptych").screenshot()) > 16
    cards.first.locator(".where a").click()
    page.wait_for_url("**/ui/exposures/*")
    watched.assert_clean()
