"""Smoke tests of the learned-scorer benchmarks (galaxy anomalies, autoencoder indicator, scoring speed).

A tiny WGAN and autoencoder are trained for a few steps and exported (the real path: torch -> ONNX ->
onnxruntime); each script then runs end to end on a few simulated cutouts or exposures. The tests check
the structure and the internal consistency of every figure, and the metric helpers against hand-made
inputs with known answers; never the headline numbers (those need the shipped weights and belong in
BENCHMARKS.md).
"""

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")
pytest.importorskip("galsim")

from benchmarks import autoencoder_indicator as aei  # noqa: E402
from benchmarks import bench_scoring  # noqa: E402
from benchmarks import galaxy_anomalies as ga  # noqa: E402

SIZE = 32  # galaxy cutouts, px (a multiple of 2**depth = 16)
STAMP = 16  # autoencoder stamps, px


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """A 32x32 one-band WGAN scorer and a 16x16 autoencoder, a few steps each, exported to ONNX."""
    from obsqc.models.config import AutoencoderConfig, WGANConfig
    from obsqc.models.export import export_models
    from obsqc.models.train import train_autoencoder, train_wgan
    from obsqc.sim.galaxies import galaxy_images

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ckpt, out = tmp_path_factory.mktemp("ckpt"), tmp_path_factory.mktemp("model")
        images = galaxy_images(48, size=SIZE, seed=1)
        wcfg = WGANConfig(size=SIZE, channels=1, base_channels=4, encoder_base_channels=4, latent_dim=8,
                          batch_size=8, steps=3, encoder_steps=3, checkpoint_every=3, refine_steps=2, seed=0)
        train_wgan(images, wcfg, out_dir=ckpt, threads=1, metadata={"data": {"source": "sim", "seed": 1}})
        acfg = AutoencoderConfig(stamp_size=STAMP, hidden=(16, 8, 4, 8, 16), epochs=2, batch_size=16, seed=0)
        train_autoencoder(images[:, 0, :STAMP, :STAMP], acfg, out_dir=ckpt, threads=1)
        export_models(ckpt, out, heldout_images=galaxy_images(16, size=SIZE, seed=2),
                      heldout_stamps=images[:16, 0, :STAMP, :STAMP])
    finally:
        torch.set_num_threads(before)
    return out


# --------------------------------------------------------------------------------------------- metric helpers
def test_selection_figures_and_precision_ceiling():
    is_anom = np.array([True, True, False, False, False, False, False, False, False, False])
    sel = np.array([True, False, True, False, False, False, False, False, False, False])
    f = ga.selection_figures(sel, is_anom)
    assert f == {"n_selected": 2, "true_positives": 1, "precision": 0.5, "recall": 0.5, "normal_fraction": 1 / 8}
    assert math.isnan(ga.selection_figures(np.zeros(10, bool), is_anom)["precision"])
    # rate 1.5%, paper's 1.2% of normal images above 3 sigma: precision <= 0.559 even at full recall
    assert ga.precision_ceiling(0.015, 0.012) == pytest.approx(0.015 / (0.015 + 0.985 * 0.012))
    assert ga.precision_ceiling(0.015, 0.0) == 1.0
    assert list(np.flatnonzero(ga.top_k(np.array([0.1, 5.0, 3.0, 5.0]), 2))) == [1, 3]


def test_evaluate_on_known_scores():
    rng = np.random.default_rng(0)
    n = 2000
    is_anom = np.zeros(n, bool)
    is_anom[:40] = True
    kind = np.where(is_anom, np.where(np.arange(n) % 2 == 0, "merger", "cosmic_ray"), "")
    noise = rng.normal(0.0, 1.0, n)
    perfect = noise + 100.0 * is_anom  # every anomaly far above every normal image
    blind = rng.normal(0.0, 1.0, n)  # knows nothing
    mergers_only = noise + 100.0 * (kind == "merger")
    ev = ga.evaluate({"s_gen": blind, "s_disc": perfect, "s_anom": mergers_only}, is_anom, kind,
                     export_reference={"s_disc": (0.0, 1.0)}, baselines={"pca_iforest": perfect})
    assert ev["n_anomalous"] == 40 and ev["per_kind"] == {"cosmic_ray": 20, "merger": 20}
    assert ev["auc"]["s_disc"] == {"overall": 1.0, "cosmic_ray": 1.0, "merger": 1.0}
    assert 0.35 < ev["auc"]["s_gen"]["overall"] < 0.65
    assert ev["auc"]["s_anom"]["merger"] == 1.0 and ev["auc"]["s_anom"]["cosmic_ray"] < 0.7
    cut = ev["cut_3sigma"]["s_disc"]["normal"]
    assert cut["recall"] == 1.0 and cut["true_positives"] == 40
    assert cut["n_selected"] == 40 + round(cut["normal_fraction"] * 1960)
    assert 0.0 <= cut["normal_fraction"] < 0.01  # a Gaussian's one-sided 3 sigma tail, 0.13%
    assert set(ev["cut_3sigma"]["s_disc"]) == {"normal", "sample", "export", "top_n_anomalous"}
    assert "export" not in ev["cut_3sigma"]["s_gen"]
    # the whole-sample reference includes the anomalies: its std is inflated, the cut selects fewer
    assert ev["cut_3sigma"]["s_disc"]["sample"]["n_selected"] <= cut["n_selected"]
    assert ev["cut_3sigma"]["s_disc"]["top_n_anomalous"]["precision"] == 1.0
    base = ev["baselines"]["pca_iforest"]
    assert base["top_k_at"]["s_disc"]["n_selected"] == cut["n_selected"]
    assert base["top_k_at"]["s_disc"]["recall"] == 1.0 and base["auc"]["overall"] == 1.0


def test_twin_diagnostics():
    is_anom = np.array([False] * 6 + [True] * 4)
    kind = np.array([""] * 6 + ["cosmic_ray", "cosmic_ray", "merger", "merger"])
    mean_pixel = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.2, 0.2, 0.3, 0.3])
    score = 10.0 * mean_pixel  # a score that only follows the mean pixel value
    twin = np.array([3.0, 3.0, 2.0, 2.0])  # the clean twins of the 4 anomalous cutouts
    d = ga.twin_diagnostics({"s_gen": score}, {"s_gen": twin}, is_anom, kind, mean_pixel)
    assert d["spearman_mean_pixel_normal"]["s_gen"] == pytest.approx(1.0)
    assert d["above_twin"]["s_gen"] == {"cosmic_ray": 0.0, "merger": 1.0}
    assert d["median_delta_sigma"]["s_gen"]["cosmic_ray"] == pytest.approx(-1.0 / np.std(score[:6]))
    assert d["mean_pixel"] == pytest.approx({"normal": 0.35, "cosmic_ray": 0.2, "merger": 0.3})
    assert d["auc_mean_pixel"]["cosmic_ray"] == pytest.approx(1.5 / 6)  # above 0.1, tied with 0.2


# --------------------------------------------------------------------------------------------- the scripts
@pytest.mark.slow
def test_galaxy_anomalies_end_to_end(tiny_models, tmp_path):
    out, fig = tmp_path / "ga.json", tmp_path / "ga.png"
    assert ga.main(["--models", str(tiny_models), "--n", "200", "--rate", "0.06", "--n-fit", "80", "--pca", "8",
                    "--threads", "1", "--seed", "5", "--json", str(out), "--figure", str(fig)]) == 0
    res = json.loads(out.read_text())
    ev = res["evaluation"]
    assert (res["size"], res["channels"], res["bands"]) == (SIZE, 1, ["r"])
    assert ev["n"] == 200 and ev["n_anomalous"] == 12 and sum(ev["per_kind"].values()) == 12
    from obsqc.sim.galaxy_anomalies import KINDS_1BAND

    assert set(ev["per_kind"]) == set(KINDS_1BAND)
    for name in ga.SCORES:
        assert set(ev["auc"][name]) == {"overall", *KINDS_1BAND}
        assert all(0.0 <= v <= 1.0 for v in ev["auc"][name].values())
        c = ev["cut_3sigma"][name]["normal"]
        assert c["true_positives"] <= min(c["n_selected"], 12)
        assert c["n_selected"] - c["true_positives"] == round(c["normal_fraction"] * 188)
        assert "export" in ev["cut_3sigma"][name]  # the tiny export carries a reference
    for name in ga.BASELINES:
        assert set(ev["baselines"][name]["top_k_at"]) == set(ga.SCORES)
    diag = res["diagnostics"]  # every anomalous cutout was scored against its clean twin
    for name in ga.SCORES:
        assert set(diag["above_twin"][name]) == set(KINDS_1BAND)
        assert all(0.0 <= v <= 1.0 for v in diag["above_twin"][name].values())
        assert -1.0 <= diag["spearman_mean_pixel_normal"][name] <= 1.0
    assert res["provider"] == "CPUExecutionProvider" and res["pca_components"] == 8
    assert fig.stat().st_size > 10_000
    assert "| s_disc |" in ga.markdown(res)


def test_galaxy_anomalies_refuses_the_training_seed(tiny_models):
    with pytest.raises(SystemExit, match="training seed"):
        ga.main(["--models", str(tiny_models), "--n", "20", "--seed", "1"])


@pytest.mark.slow
def test_autoencoder_indicator_end_to_end(tiny_models, tmp_path):
    out, rows_path, fig = tmp_path / "ae.json", tmp_path / "rows.jsonl", tmp_path / "ae.png"
    argv = ["--models", str(tiny_models), "--size", "tiny", "--n-reference", "4", "--n-normal", "3",
            "--per-class", "1", "--classes", "defocus,readout_stripes", "--workers", "1", "--seed", "3",
            "--json", str(out), "--rows", str(rows_path), "--figure", str(fig)]
    assert aei.main(argv) == 0
    res = json.loads(out.read_text())
    ev = res["evaluation"]
    assert ev["n_normal"] == 3 and ev["n_anomalous"] == 4
    assert set(ev["auc"]) == {"all", "defocus", "defocus/prominent", "defocus/subtle", "readout_stripes",
                              "readout_stripes/prominent", "readout_stripes/subtle"}
    cal = res["reference"]["autoencoder_calibration"]
    assert cal is not None and cal[1] >= 0.05 and cal[2] == 4
    rows = [json.loads(line) for line in rows_path.read_text().splitlines()]
    assert len(rows) == 7 and {r["group"] for r in rows} == {"normal", "anomalous"}
    for r in rows:
        s = r["sigma"]
        assert r["n_stamps"] > 0 and r["mean_mse"] > 0
        # the worker's rule: (log mean MSE - median) / scale, and the fusion is the larger sigma
        assert s["autoencoder"] == pytest.approx((math.log(r["mean_mse"]) - cal[0]) / cal[1])
        assert s["fused"] == pytest.approx(max(s["combined"], s["autoencoder"]))
    from obsqc.detectors.scoring import INDICATOR_NAMES

    for g, best in ev["best_entropy"].items():
        assert best["auc"] == max(ev["auc"][g][k] for k in INDICATOR_NAMES)
        assert 0.0 <= ev["auc"][g]["autoencoder"] <= 1.0
    assert fig.stat().st_size > 10_000


@pytest.mark.slow
def test_bench_scoring_quick(tiny_models, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench_scoring.main(["--models", str(tiny_models), "--quick", "--threads", "1", "--processes", "0",
                               "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    (run,) = res["runs"]
    assert run["threads"] == 1 and res["concurrent"] is None
    models = {r["model"]: r for r in run["results"]}
    assert set(models) == {"galaxy_scorer", "autoencoder"}
    assert models["galaxy_scorer"]["shape"] == [1, SIZE, SIZE] and models["autoencoder"]["shape"] == [STAMP, STAMP]
    for r in run["results"]:
        assert len(r["wall_s"]) == 2 and r["min_per_s"] <= r["median_per_s"] <= r["max_per_s"]
        assert r["median_per_s"] > 0 and r["provider"] == "CPUExecutionProvider"
    assert not res["gpu_measured"] and "not measured" in capsys.readouterr().out
