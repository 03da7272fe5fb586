"""GET /v1/galaxies (filters, sort, min_sigma, paging), GET /v1/galaxies/{id}, its PNG images, and the
autoencoder and galaxy fields of GET /v1/exposures/{id}, on a live server over both databases."""

from __future__ import annotations

import datetime as dt
import io
from urllib.parse import quote

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from obsqc.service.queue import job_id_for
from obsqc.service.store import GalaxyRow, record_galaxies, record_received, record_verdict
from tests.service.api.test_submit import assert_error

T0 = dt.datetime(2024, 3, 1, 4, 0, tzinfo=dt.UTC)


def _galaxies(n: int, s_disc_sigmas, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [dict(idx=i, ccd=f"N{i % 3}", x=float(rng.uniform(0, 2048)), y=float(rng.uniform(0, 4096)),
                 s_gen=float(rng.uniform(0, 0.1)), s_disc=float(rng.uniform(0, 50)), s_anom=float(rng.uniform(0, 15)),
                 s_gen_sigma=float(rng.normal()), s_disc_sigma=float(s_disc_sigmas[i]),
                 s_anom_sigma=float(rng.normal()))
            for i in range(n)]


def write_artifact(settings, exposure_id: str, cutouts: np.ndarray, reconstructions: np.ndarray | None = None,
                   *, compressed: bool = False) -> None:
    folder = settings.home / "artifacts" / job_id_for(exposure_id)
    folder.mkdir(parents=True, exist_ok=True)
    n = len(cutouts)
    arrays = dict(cutouts=cutouts.astype(np.float32), ccd=np.array([f"N{i}" for i in range(n)]),
                  x=np.arange(n, dtype=np.float64), y=np.arange(n, dtype=np.float64))
    if reconstructions is not None:
        arrays["reconstructions"] = reconstructions.astype(np.float32)
    (np.savez_compressed if compressed else np.savez)(folder / "galaxies.npz", **arrays)


@pytest.fixture
def catalogue(state):
    """Exposures G1 (DECam r, 12 galaxies), G2 (DECam g, 8), G3 (HSC r, 6); sigmas with ties."""
    plan = [("G1", "DECam", "r", 12, 0), ("G2", "DECam", "g", 8, 1), ("G3", "HSC", "r", 6, 2)]
    with state.sessions.begin() as s:
        for seed, (eid, inst, band, n, minutes) in enumerate(plan):
            when = T0 + dt.timedelta(minutes=minutes)
            record_received(s, eid, instrument=inst, band=band, received_at=when)
            record_verdict(s, eid, verdict="ok", score=None)
            sigmas = np.round(np.random.default_rng(seed).normal(1.5, 2.0, n) * 2) / 2
            record_galaxies(s, eid, [g | {"scored_at": when} for g in _galaxies(n, sigmas, seed)])
    with state.sessions() as s:
        return {g.id: g for g in s.scalars(select(GalaxyRow))}


def _ids(client, **params) -> list[int]:
    r = client.get("/v1/galaxies", params=params | {"limit": 1000})
    assert r.status_code == 200, r.text
    return [g["id"] for g in r.json()["items"]]


def _by_sigma(rows, score="s_disc"):
    return [g.id for g in sorted(rows, key=lambda g: (getattr(g, f"{score}_sigma"), g.id), reverse=True)]


def test_list_sorts_filters_and_shows_each_galaxy(client, catalogue):
    everything = list(catalogue.values())
    assert _ids(client) == _by_sigma(everything)
    assert _ids(client, sort="s_anom") == _by_sigma(everything, "s_anom")
    assert _ids(client, min_sigma=3) == _by_sigma(g for g in everything if g.s_disc_sigma >= 3)
    assert _ids(client, min_sigma=0.5, sort="s_gen") == _by_sigma(
        (g for g in everything if g.s_gen_sigma >= 0.5), "s_gen")
    assert _ids(client, instrument="DECam") == _by_sigma(g for g in everything if g.instrument == "DECam")
    assert _ids(client, band="r", instrument="HSC") == _by_sigma(g for g in everything if g.exposure_id == "G3")
    assert _ids(client, exposure_id="G2", min_sigma=1) == _by_sigma(
        g for g in everything if g.exposure_id == "G2" and g.s_disc_sigma >= 1)
    assert _ids(client, since="2024-03-01T04:01:00", until="2024-03-01T05:02:00+01:00") == _by_sigma(
        g for g in everything if g.exposure_id == "G2")
    assert _ids(client, instrument="LSST") == []

    item = client.get("/v1/galaxies", params={"limit": 1}).json()["items"][0]
    row = catalogue[item["id"]]
    root = str(client.base_url).rstrip("/")
    assert item == {
        "id": row.id, "exposure_id": row.exposure_id, "idx": row.idx, "instrument": row.instrument,
        "band": row.band, "ccd": row.ccd, "x": row.x, "y": row.y,
        "scores": {name: {"value": getattr(row, name), "sigma": getattr(row, f"{name}_sigma")}
                   for name in ("s_gen", "s_disc", "s_anom")},
        "scored_at": row.scored_at.isoformat().replace("+00:00", "Z"),
        "links": {"self": f"{root}/v1/galaxies/{row.id}", "exposure": f"{root}/v1/exposures/{row.exposure_id}",
                  "cutout": f"{root}/v1/galaxies/{row.id}/cutout.png",
                  "reconstruction": f"{root}/v1/galaxies/{row.id}/reconstruction.png",
                  "residual": f"{root}/v1/galaxies/{row.id}/residual.png"},
    }
    one = client.get(item["links"]["self"])
    assert one.status_code == 200 and one.json() == item


@pytest.mark.parametrize("params", [{}, {"sort": "s_gen", "instrument": "DECam"}, {"min_sigma": 1}])
def test_paging_visits_every_galaxy_once(client, catalogue, params):
    seen, cursor, pages = [], None, 0
    while True:
        page = client.get("/v1/galaxies", params=params | {"limit": 4} | ({"cursor": cursor} if cursor else {}))
        assert page.status_code == 200, page.text
        seen += [g["id"] for g in page.json()["items"]]
        pages += 1
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == _ids(client, **params)
    assert len(seen) == len(set(seen)) and pages == max(1, -(-len(seen) // 4))


@pytest.mark.parametrize("params, error", [
    ({"sort": "s_weird"}, "invalid_request"),
    ({"limit": 0}, "invalid_request"),
    ({"limit": 1001}, "invalid_request"),
    ({"min_sigma": "nan"}, "invalid_request"),
    ({"min_sigma": "three"}, "invalid_request"),
    ({"since": "yesterday"}, "invalid_request"),
    ({"cursor": "garbage!"}, "bad_cursor"),
])
def test_list_refuses_bad_parameters(client, params, error):
    assert_error(client.get("/v1/galaxies", params=params), 422, error)


def test_a_cursor_belongs_to_its_sort_and_unknown_galaxies_are_404(client, catalogue):
    cursor = client.get("/v1/galaxies", params={"limit": 2}).json()["next_cursor"]
    assert "s_disc" in assert_error(client.get("/v1/galaxies", params={"cursor": cursor, "sort": "s_anom"}),
                                    422, "bad_cursor")["detail"]
    unknown = max(catalogue) + 1
    for path in (f"/v1/galaxies/{unknown}", "/v1/galaxies/0", f"/v1/galaxies/{2**70}",
                 f"/v1/galaxies/{unknown}/cutout.png"):
        assert_error(client.get(path), 404, "not_found")
    assert_error(client.get("/v1/galaxies/abc"), 422, "invalid_request")


def _png(response) -> Image.Image:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert "max-age" in response.headers["cache-control"]
    image = Image.open(io.BytesIO(response.content))
    image.load()
    return image


def _galaxy_id(state, exposure_id: str, idx: int) -> int:
    with state.sessions() as s:
        return s.scalar(select(GalaxyRow.id).where(GalaxyRow.exposure_id == exposure_id, GalaxyRow.idx == idx))


@pytest.mark.parametrize("compressed", [False, True])
def test_gri_images_are_i_r_g_as_rgb_enlarged_and_the_residual_of_a_perfect_reconstruction_is_black(
        client, state, settings, compressed):
    size, n = 24, 3
    cutouts = np.zeros((n, 3, size, size), np.float32)
    cutouts[1, 0] = 0.8            # galaxy 1: signal in g only -> blue
    cutouts[1, 2, 0, :] = 1.0      # and one row of i at pixel row 0 -> red, at the bottom of the image
    cutouts[2] = np.random.default_rng(0).uniform(0, 1, (3, size, size))
    reconstructions = cutouts.copy()
    reconstructions[2] *= 0.5
    with state.sessions.begin() as s:
        record_received(s, "RGB", instrument="HSC", band="gri")
        record_galaxies(s, "RGB", _galaxies(n, [0, 1, 2], 9))
    write_artifact(settings, "RGB", cutouts, reconstructions, compressed=compressed)

    one = _galaxy_id(state, "RGB", 1)
    cutout = _png(client.get(f"/v1/galaxies/{one}/cutout.png"))
    assert cutout.mode == "RGB" and cutout.size == (192, 192)  # 24 px enlarged 8 times
    pixels = np.asarray(cutout)
    assert pixels[:-8, :, 2].min() == round(0.8 * 255) and pixels[:-8, :, :2].max() == 0  # g -> blue only
    assert (pixels[-8:, :, 0] == 255).all() and pixels[:-8, :, 0].max() == 0  # i row 0 -> red, bottom rows
    residual = np.asarray(_png(client.get(f"/v1/galaxies/{one}/residual.png")))
    assert residual.shape == (192, 192, 3) and residual.max() == 0
    assert np.array_equal(np.asarray(_png(client.get(f"/v1/galaxies/{one}/reconstruction.png"))), pixels)

    two = _galaxy_id(state, "RGB", 2)
    residual = np.asarray(_png(client.get(f"/v1/galaxies/{two}/residual.png")), dtype=float)
    expected = np.round(np.abs(cutouts[2] - reconstructions[2])[::-1, ::-1].transpose(1, 2, 0) * 255)
    np.testing.assert_allclose(residual[::8, ::8], expected, atol=1)
    assert residual.max() > 100


def test_grey_images_etag_and_missing_artifacts(client, state, settings):
    size = 64
    cutouts = np.random.default_rng(1).uniform(0.1, 1, (2, 1, size, size)).astype(np.float32)
    with state.sessions.begin() as s:
        record_received(s, "GREY/1", instrument="DECam", band="r")
        record_received(s, "NOART", instrument="DECam", band="r")
        record_galaxies(s, "GREY/1", _galaxies(3, [0, 1, 2], 4))  # idx 2 is not in the artifact
        record_galaxies(s, "NOART", _galaxies(1, [5], 5))
    write_artifact(settings, "GREY/1", cutouts)  # not scored yet: no reconstructions

    first = _galaxy_id(state, "GREY/1", 0)
    r = client.get(f"/v1/galaxies/{first}/cutout.png")
    image = _png(r)
    assert image.mode == "L" and image.size == (192, 192)  # 64 px enlarged 3 times
    assert np.asarray(image).min() >= round(0.1 * 255) - 1
    cached = client.get(f"/v1/galaxies/{first}/cutout.png", headers={"If-None-Match": r.headers["etag"]})
    assert cached.status_code == 304 and not cached.content
    missing = assert_error(client.get(f"/v1/galaxies/{first}/reconstruction.png"), 404, "not_found")
    assert "reconstructions" in missing["detail"]
    assert_error(client.get(f"/v1/galaxies/{first}/residual.png"), 404, "not_found")
    assert_error(client.get(f"/v1/galaxies/{first}/thumbnail.png"), 404, "not_found")
    assert_error(client.get(f"/v1/galaxies/{_galaxy_id(state, 'GREY/1', 2)}/cutout.png"), 404, "not_found")
    assert "missing" in assert_error(client.get(f"/v1/galaxies/{_galaxy_id(state, 'NOART', 0)}/cutout.png"),
                                     404, "not_found")["detail"]

    # Scored later: the artifact gains its reconstructions, and the new file is drawn (new ETag).
    write_artifact(settings, "GREY/1", cutouts, cutouts)
    again = client.get(f"/v1/galaxies/{first}/cutout.png", headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 200 and again.headers["etag"] != r.headers["etag"]
    assert np.asarray(_png(client.get(f"/v1/galaxies/{first}/residual.png"))).max() == 0


def test_the_exposure_record_shows_the_autoencoder_and_its_galaxies(client, state):
    with state.sessions.begin() as s:
        record_received(s, "E/7", instrument="DECam", band="r")
    root = str(client.base_url).rstrip("/")
    url = f"{root}/v1/galaxies?exposure_id={quote('E/7', safe='')}"
    before = client.get("/v1/exposures/E%2F7").json()
    assert before["autoencoder"] == {"mse": None, "sigma": None, "n_stamps": None}
    assert before["galaxies"] == {"status": None, "reason": None, "n": None, "n_anomalies": None, "url": url}

    with state.sessions.begin() as s:
        record_verdict(s, "E/7", verdict="warn", score=None, autoencoder_mse=0.0042, autoencoder_sigma=3.7,
                       n_stamps=640, galaxies_status="pending")
    judged = client.get("/v1/exposures/E%2F7").json()  # a new revision: not the cached record
    assert judged["autoencoder"] == {"mse": 0.0042, "sigma": 3.7, "n_stamps": 640}
    assert judged["galaxies"]["status"] == "pending" and judged["galaxies"]["n"] is None

    with state.sessions.begin() as s:
        record_galaxies(s, "E/7", _galaxies(5, [0.0, 3.5, 4.0, 1.0, 2.9], 2))
    scored = client.get("/v1/exposures/E%2F7").json()
    assert scored["galaxies"] == {"status": "done", "reason": None, "n": 5, "n_anomalies": 2, "url": url}
    listed = client.get(scored["galaxies"]["url"]).json()["items"]
    assert len(listed) == 5 and {g["exposure_id"] for g in listed} == {"E/7"}
    assert listed[0]["links"]["exposure"] == f"{root}/v1/exposures/E%2F7"


def test_openapi_documents_the_galaxy_routes(client):
    doc = client.get("/openapi.json").json()
    for path in ("/v1/galaxies", "/v1/galaxies/{galaxy_id}", "/v1/galaxies/{galaxy_id}/{kind}.png"):
        assert "get" in doc["paths"][path]
    params = {p["name"] for p in doc["paths"]["/v1/galaxies"]["get"]["parameters"]}
    assert {"min_sigma", "sort", "instrument", "band", "exposure_id", "since", "until", "limit", "cursor"} <= params
    assert "image/png" in doc["paths"]["/v1/galaxies/{galaxy_id}/{kind}.png"]["get"]["responses"]["200"]["content"]
    assert {"GalaxyOut", "GalaxyList", "ExposureGalaxies", "AutoencoderOut"} <= set(doc["components"]["schemas"])
