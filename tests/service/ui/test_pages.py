"""The pages as HTML (no browser): what they list, filters and paging, odd and hostile records,
thumbnails, the gallery; on SQLite and PostgreSQL through the real app. The browser tests are in
``test_browser.py``."""

from __future__ import annotations

import datetime as dt
import json
import re
from urllib.parse import quote

from obsqc.service.queue import job_id_for
from obsqc.service.ui.explain import ERROR_KINDS
from tests.service.ui.conftest import BG_FLAG, store_exposure, store_galaxies

HOSTILE = '<script>alert("x")</script>/../&amp;'


def _keys(html: str) -> list[str]:
    return re.findall(r'<tr data-key="([^"]*)"', html)


def _badges(html: str) -> list[str]:
    return re.findall(r'<tr data-key="[^"]*" class="row-([a-z]+)"', html)


def test_ui_starts_at_the_exposure_list_and_is_not_in_the_openapi_document(client):
    answer = client.get("/ui", follow_redirects=False)
    assert answer.status_code == 307 and answer.headers["location"] == "/ui/exposures"
    assert not [p for p in client.get("/openapi.json").json()["paths"] if p.startswith("/ui")]
    page = client.get("/ui/exposures")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "No exposures yet" in page.text
    for name, kind in (("ui.css", "text/css"), ("ui.js", "javascript"), ("favicon.svg", "image/svg+xml")):
        static = client.get(f"/ui/static/{name}")
        assert static.status_code == 200 and kind in static.headers["content-type"]


def test_exposure_list_is_newest_first_with_verdicts_flags_and_counts(client, state):
    store_exposure(state, "E1", "ok", minutes=1)
    store_exposure(state, "E2", "bad", minutes=2, flags=[BG_FLAG], reason=BG_FLAG["reason"])
    store_exposure(state, "E3", None, minutes=3)
    store_exposure(state, "E4", "warn", minutes=4, instrument="HSC", band="i", flags=["linear_feature"])
    store_exposure(state, "E0", "bad", minutes=-3 * 24 * 60)  # listed, but older than the counts' window
    html = client.get("/ui/exposures").text
    assert _keys(html) == ["E4", "E3", "E2", "E1", "E0"]
    assert _badges(html) == ["warn", "queued", "bad", "ok", "bad"]
    assert "bkg gradient S2" in html and ">trail<" in html
    assert 'data-live-url="/ui/exposures"' in html
    counts = dict(re.findall(r'<span class="badge v-([a-z]+)">[a-z]+</span><span class="n">(\d+)</span>', html))
    assert counts == {"ok": "1", "warn": "1", "bad": "1", "calibrating": "0", "rejected": "0", "error": "0",
                      "queued": "1"}
    assert '<option value="HSC">HSC</option>' in html and '<option value="i">i</option>' in html


def test_exposure_list_filters(client, state):
    for i, verdict in enumerate(("ok", "bad", None, "bad")):
        store_exposure(state, f"F{i}", verdict, minutes=i, instrument="DECAM" if i < 3 else "HSC")
    assert _keys(client.get("/ui/exposures", params={"verdict": "bad"}).text) == ["F3", "F1"]
    assert _keys(client.get("/ui/exposures", params={"verdict": "queued"}).text) == ["F2"]
    filtered = client.get("/ui/exposures", params={"verdict": "bad", "instrument": "DECAM"}).text
    assert _keys(filtered) == ["F1"]
    assert 'data-live-url="/ui/exposures?instrument=DECAM&amp;verdict=bad"' in filtered
    assert "No exposure matches these filters" in client.get("/ui/exposures", params={"band": "z"}).text
    unknown = client.get("/ui/exposures", params={"verdict": "dreadful", "instrument": ""}).text
    assert "unknown verdict &#39;dreadful&#39; ignored" in unknown and len(_keys(unknown)) == 4


def test_exposure_list_pages_by_cursor_without_shifting(client, state):
    for i in range(7):
        store_exposure(state, f"P{i}", "ok", minutes=i)
    first = client.get("/ui/exposures", params={"limit": 5}).text
    assert _keys(first) == ["P6", "P5", "P4", "P3", "P2"]
    older = re.search(r'<a href="([^"]+)">Older', first).group(1).replace("&amp;", "&")
    store_exposure(state, "P7", "ok", minutes=8)  # a new one on top does not move the older pages
    second = client.get(older).text
    assert _keys(second) == ["P1", "P0"] and "data-live-url" not in second and "Newest" in second
    broken = client.get("/ui/exposures", params={"older": "!!"}).text
    assert "not valid any more" in broken and _keys(broken)[0] == "P7"


def test_hostile_and_odd_records_are_escaped_and_render(client, state):
    store_exposure(state, HOSTILE, "rejected", with_score=False, flags=[{"name": "rejected", "reason": "not_fits"}],
                   reason='not_fits: "<b>x.fits</b>" is not a FITS file')
    store_exposure(state, "ERR", "error", minutes=1, with_score=False, flags=[{"name": "error", "reason": "killed"}],
                   reason="killed: the worker process died")
    store_exposure(state, "BARE", "warn", minutes=2, flags=["background_gradient", 42, {"no": "name"}])
    listing = client.get("/ui/exposures").text
    assert "<script>alert" not in listing and "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in listing
    assert f'href="/ui/exposures/{quote(HOSTILE, safe="")}"'.replace("&", "&amp;") in listing

    page = client.get("/ui/exposures/" + quote(HOSTILE, safe=""))
    assert page.status_code == 200 and "<script>alert" not in page.text and "<b>x.fits" not in page.text
    assert "not a FITS file" in page.text and "File refused" in page.text and "No per-CCD numbers" in page.text
    assert "data-live-url" not in page.text

    failed = client.get("/ui/exposures/ERR").text
    assert ERROR_KINDS["killed"] in failed and "Judging failed" in failed
    bare = client.get("/ui/exposures/BARE").text
    assert "Background gradients share a direction" in bare and "The sky level of the CCDs varies" in bare


def test_exposure_page_without_views_draws_the_focal_plane_on_a_grid(client, state):
    store_exposure(state, "G1", "bad", flags=[BG_FLAG], finished_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    html = client.get("/ui/exposures/G1").text
    focal = re.search(r'<svg class="focal".*?</svg>', html, re.S).group(0)
    assert focal.count("<rect") == 2 and "On a grid by name" in html
    assert re.search(r'<g class="ccd flagged" data-ccd="S2">\s*<title>CCD S2: 7.3 sigma', focal)
    assert "The sky level of S2 varies across the CCD" in html and "7.3 &sigma;" in html
    assert "data-live-url" not in html  # judged an hour ago: nothing more is coming


def test_a_queued_exposure_page_polls_until_judged(client, state):
    store_exposure(state, "Q1", None)
    html = client.get("/ui/exposures/Q1").text
    assert 'data-live-url="/ui/exposures/Q1"' in html and "Queued: the verdict appears here" in html
    store_exposure(state, "Q2", "ok", finished_at=dt.datetime.now(dt.UTC))  # views still to be written
    assert 'data-live-url="/ui/exposures/Q2"' in client.get("/ui/exposures/Q2").text


def test_exposure_page_with_the_workers_views_and_thumbnails(client, state, settings):
    store_exposure(state, "V/1", "bad", flags=[BG_FLAG], finished_at=dt.datetime.now(dt.UTC))
    folder = settings.home / "artifacts" / job_id_for("V/1")
    folder.mkdir(parents=True)
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 32
    (folder / "thumb_0.png").write_bytes(png)
    views = {"version": 1, "detsec": {"S1": [1, 256, 1, 512], "S2": [301, 556, 1, 512]},
             "shapes": {"S1": [512, 256], "S2": [512, 256]}, "skipped_ccds": [["S3", "all NaN"]],
             "histograms": [{"key": "source", "title": "Source orientation", "span": [-90, 90], "xlabel": "deg",
                             "n": 40, "p": [0.2, 0.5, 0.3], "reference": [0.3, 0.4, 0.3], "kl": 0.1, "sigma": 1.2},
                            {"key": "bad", "p": "oops"}],
             "thumbnails": [{"ccd": "S2", "file": "thumb_0.png", "why": "flagged", "factor": 2, "shape": [512, 256]},
                            {"ccd": "S1", "file": "thumb_1.png", "why": "flagged"}]}
    (folder / "ui.json").write_text(json.dumps(views))
    html = client.get("/ui/exposures/" + quote("V/1", safe="")).text
    assert "Laid out from the DETSEC cards" in html and "data-live-url" not in html
    assert html.count('<figure class="hist"') == 1 and "Source orientation" in html
    thumbs = re.findall(r'<img src="([^"]+/thumbs/[^"]+)"', html)
    assert thumbs == ["/ui/exposures/V%2F1/thumbs/thumb_0.png"]  # the missing thumb_1 is left out
    assert "S3 (all NaN)" in html
    image = client.get(thumbs[0])
    assert image.status_code == 200 and image.headers["content-type"] == "image/png" and image.content == png
    assert client.get("/ui/exposures/V%2F1/thumbs/ui.json").status_code == 404
    assert client.get("/ui/exposures/V%2F1/thumbs/thumb_1.png").status_code == 404
    assert client.get("/ui/exposures/nope/thumbs/thumb_0.png").status_code == 404


def test_unknown_exposure_is_a_404_page(client):
    page = client.get("/ui/exposures/" + quote("<i>nope</i>", safe=""))
    assert page.status_code == 404 and "No such exposure" in page.text and "<i>nope" not in page.text


def test_exposure_page_summarises_autoencoder_and_galaxies(client, state):
    store_exposure(state, "A1", "ok", autoencoder_mse=0.0042, autoencoder_sigma=0.7, n_stamps=300,
                   galaxies_status="pending")
    store_galaxies(state, "A1", [4.2, 1.0, 0.5])
    html = client.get("/ui/exposures/A1").text
    assert "0.7 &sigma;" in html and "300 source stamps" in html and "Within the normal range" in html
    assert "3 scored, <strong>1</strong> above 3 &sigma;" in html
    assert html.count('class="mini"') == 3 and 'href="/ui/galaxies?exposure_id=A1"' in html


def test_galaxy_gallery_sorts_filters_and_links(client, state):
    store_exposure(state, "GA", "ok", galaxies_status="pending")
    store_exposure(state, "GB", "ok", minutes=1, instrument="HSC", galaxies_status="pending")
    store_galaxies(state, "GA", [0.5, 4.0])
    store_galaxies(state, "GB", [2.0])
    html = client.get("/ui/galaxies").text
    cards = re.findall(r'<article class="galaxy( anomalous)?" data-key="(\d+)">', html)
    assert len(cards) == 3 and [a for a, _ in cards] == [" anomalous", "", ""]
    sigmas = [float(s) for s in re.findall(r'<tr class="sorted"><td>s_disc</td><td class="num">[^<]*</td>'
                                          r'<td class="num sigma">([-0-9.]+)</td>', html)]
    assert sigmas == [4.0, 2.0, 0.5]
    first = cards[0][1]
    for kind in ("cutout", "reconstruction", "residual"):
        assert f'src="/v1/galaxies/{first}/{kind}.png"' in html
    assert 'href="/ui/exposures/GA"' in html
    assert len(re.findall(r"<article", client.get("/ui/galaxies", params={"min_sigma": 3}).text)) == 1
    by_anom = client.get("/ui/galaxies", params={"sort": "s_anom"}).text
    assert re.findall(r'<tr class="sorted"><td>(s_anom)</td>', by_anom) == ["s_anom"] * 3
    assert len(re.findall(r"<article", client.get("/ui/galaxies", params={"instrument": "HSC"}).text)) == 1
    one = client.get("/ui/galaxies", params={"exposure_id": "GB"}).text
    assert len(re.findall(r"<article", one)) == 1 and 'name="exposure_id" value="GB"' in one
    bad = client.get("/ui/galaxies", params={"min_sigma": "lots", "sort": "nonsense"}).text
    assert "is not a number; ignored" in bad and len(re.findall(r"<article", bad)) == 3
    assert "No scored galaxies match these filters" in client.get("/ui/galaxies", params={"band": "u"}).text
