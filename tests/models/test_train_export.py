"""Training (WGAN-GP 003 section 3.1, autoencoder 000 section 4.2), checkpoints, resumption, ONNX export
and its parity with torch (issue 4: networks within 1e-4, refined s_anom ranks with Spearman >= 0.99)."""

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

from obsqc.models.autoencoder import AutoencoderExport
from obsqc.models.config import AutoencoderConfig, WGANConfig
from obsqc.models.export import export_galaxy_scorer, export_models, export_onnx, reference_stats
from obsqc.models.noise_scores import anomaly_score, generator_score
from obsqc.models.onnx_scoring import AutoencoderScorer, GalaxyScorer, read_metadata
from obsqc.models.refine import refine, refine_autograd
from obsqc.models.wgan import build_networks
from obsqc.models.train import (
    CheckpointError,
    gradient_penalty,
    load_checkpoint,
    rebuild_autoencoder,
    rebuild_wgan,
    split_heldout,
    train_autoencoder,
    train_wgan,
)

WCFG = WGANConfig(size=16, channels=1, base_channels=4, encoder_base_channels=4, latent_dim=8, kernel_size=4,
                  batch_size=8, steps=6, encoder_steps=6, checkpoint_every=4, refine_steps=4, seed=7)
ACFG = AutoencoderConfig(stamp_size=8, hidden=(16, 8, 4, 8, 16), epochs=6, batch_size=16, lr=3e-3,
                         checkpoint_every=4, seed=3)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny tensors: one thread avoids torch's spinning thread pool on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def blobs(n: int, size: int, seed: int) -> np.ndarray:
    """Round Gaussian 'galaxies' of random width and position with noise, in [0, 1]: (n, 1, size, size)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    cx, cy = rng.normal(0, 1.0, (2, n, 1, 1))
    w = rng.uniform(1.2, 3.0, (n, 1, 1))
    img = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * w**2)) + rng.normal(0, 0.03, (n, size, size))
    return np.clip(img, 0, 1).astype(np.float32)[:, None]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    images = blobs(120, 16, seed=0)
    stamps = blobs(80, 8, seed=1)[:, 0]
    w = train_wgan(images, WCFG, out_dir=d, threads=1, metadata={"command": "test"})
    a = train_autoencoder(stamps, ACFG, out_dir=d, threads=1)
    return d, w, a


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    d, _, _ = trained
    out = tmp_path_factory.mktemp("model")
    meta = export_models(d, out, heldout_stamps=blobs(30, 8, seed=5)[:, 0], heldout_images=blobs(40, 16, seed=6))
    return out, meta


# --------------------------------------------------------------------------------------------- training
def test_wgan_resumed_run_equals_uninterrupted(trained, tmp_path):
    _, full, _ = trained
    images = blobs(120, 16, seed=0)
    # stop in the WGAN phase, then inside the encoder phase, then finish
    train_wgan(images, WCFG.replace(steps=3, encoder_steps=0), out_dir=tmp_path, threads=1)
    train_wgan(images, WCFG.replace(encoder_steps=2), out_dir=tmp_path, threads=1)
    resumed = train_wgan(images, WCFG, out_dir=tmp_path, threads=1)
    assert resumed.steps == {"wgan": 6, "encoder": 6}
    for a, b in ((full.generator, resumed.generator), (full.critic, resumed.critic), (full.encoder, resumed.encoder)):
        for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(p, q), name
    assert full.history == resumed.history


def test_autoencoder_resumed_run_equals_uninterrupted_and_keeps_best_epoch(trained, tmp_path):
    _, _, full = trained
    stamps = blobs(80, 8, seed=1)[:, 0]
    train_autoencoder(stamps, ACFG.replace(epochs=2), out_dir=tmp_path, threads=1)
    resumed = train_autoencoder(stamps, ACFG, out_dir=tmp_path, threads=1)
    assert resumed.history == full.history
    val = full.history["val_loss"]
    assert full.best_epoch == int(np.argmin(val)) + 1 and full.best_val_loss == min(val)
    assert val[-1] < val[0]  # it learns something
    for p, q in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(p, q)


def test_autoencoder_returns_the_best_validation_epoch_not_the_last():
    """000 section 4.2: the model kept is the one of the epoch with the lowest validation loss."""
    stamps = blobs(80, 8, seed=1)[:, 0]
    r = train_autoencoder(stamps, ACFG.replace(lr=0.1, epochs=8), threads=1)
    val = r.history["val_loss"]
    assert r.best_epoch == int(np.argmin(val)) + 1 < 8  # this seed's validation loss rises at the end
    val_rows = np.random.default_rng(ACFG.seed).permutation(80)[:16]  # the 20 % split of train_autoencoder
    with torch.no_grad():
        mse = r.model.mse(torch.from_numpy(stamps[val_rows])).mean().item()
    assert mse == pytest.approx(r.best_val_loss, rel=1e-6)


def test_checkpoints_rebuild_themselves(trained):
    d, w, a = trained
    G, C, E, cfg = rebuild_wgan(d / "wgan.pt")
    assert cfg == WCFG
    x = torch.from_numpy(blobs(5, 16, seed=3))
    with torch.no_grad():
        torch.testing.assert_close(C.features(x), w.critic.features(x))
        torch.testing.assert_close(G(E(x)), w.generator(w.encoder(x)))
    model = rebuild_autoencoder(d)
    s = torch.from_numpy(blobs(4, 8, seed=4)[:, 0])
    with torch.no_grad():
        torch.testing.assert_close(model(s), a.model(s))
    state = load_checkpoint(d, "wgan")
    assert state["meta"]["threads"] == 1 and state["meta"]["command"] == "test"
    assert state["wgan_step"] == 6 and len(state["history"]["critic_loss"]) == 6


def test_threads_are_honoured_and_restored(tmp_path):
    torch.set_num_threads(2)
    r = train_wgan(blobs(20, 16, seed=0), WCFG.replace(steps=1, encoder_steps=0), out_dir=tmp_path, threads=1)
    assert load_checkpoint(r.checkpoint)["meta"]["threads"] == 1
    assert torch.get_num_threads() == 2


def test_resume_refuses_another_architecture(trained, tmp_path):
    images = blobs(20, 16, seed=0)
    train_wgan(images, WCFG.replace(steps=1, encoder_steps=0), out_dir=tmp_path, threads=1)
    with pytest.raises(CheckpointError, match="base_channels"):
        train_wgan(images, WCFG.replace(base_channels=2), out_dir=tmp_path, threads=1)
    fresh = train_wgan(images, WCFG.replace(base_channels=2, steps=1, encoder_steps=0), out_dir=tmp_path,
                       resume=False, threads=1)
    assert fresh.steps["wgan"] == 1


def test_training_rejects_bad_arrays():
    with pytest.raises(ValueError, match="shape"):
        train_wgan(np.zeros((4, 3, 16, 16), np.float32), WCFG)
    bad = blobs(8, 16, seed=0)
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        train_wgan(bad, WCFG)


def test_gradient_penalty_of_a_linear_critic():
    """D(y) = w . y has grad norm ||w|| everywhere: GP = (||w|| - 1)^2 (eq. 4)."""

    class Linear(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.full((1, 2, 2), 1.5))  # norm 3

        def forward(self, y):
            return (y * self.w).flatten(1).sum(1)

    real, fake = torch.rand(4, 1, 2, 2), torch.rand(4, 1, 2, 2)
    gp = gradient_penalty(Linear(), real, fake, torch.rand(4, 1, 1, 1))
    assert gp.item() == pytest.approx(4.0)


def test_split_heldout_is_disjoint_and_seeded():
    a = np.arange(50)
    train, held = split_heldout(a, 0.2, seed=1)
    assert len(held) == 10 and not set(train) & set(held) and len(train) + len(held) == 50
    assert np.array_equal(held, split_heldout(a, 0.2, seed=1)[1])
    assert len(split_heldout(a, 0.0)[1]) == 0


# ----------------------------------------------------------------------------------------------- export
def _ort(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_networks_onnx_match_torch(trained, tmp_path):
    """Issue 4 section 1: ONNX vs torch within 1e-4 for G, the critic features, E and the autoencoder."""
    _, w, a = trained

    class Features(nn.Module):
        def __init__(self, critic):
            super().__init__()
            self.critic = critic

        def forward(self, x):
            return self.critic.features(x)

    z = torch.randn(7, WCFG.latent_dim, generator=torch.Generator().manual_seed(0))
    x = torch.from_numpy(blobs(9, 16, seed=8))
    s = torch.from_numpy(blobs(5, 8, seed=9)[:, 0])
    cases = [(w.generator, z), (Features(w.critic), x), (w.encoder, x), (AutoencoderExport(a.model), s)]
    for i, (net, inp) in enumerate(cases):
        path = export_onnx(net, inp[:2], tmp_path / f"net{i}.onnx", input_name="x",
                           output_names=[f"y{j}" for j in range(2 if i == 3 else 1)])
        with torch.no_grad():
            want = net(inp)
        want = want if isinstance(want, tuple) else (want,)
        got = _ort(path).run(None, {"x": inp.numpy()})  # batch differs from the export example: dynamic axis
        for wt, gt in zip(want, got):
            np.testing.assert_allclose(gt, wt.numpy(), rtol=1e-4, atol=1e-4)


def test_galaxy_scorer_ranks_like_the_autograd_path(trained, exported):
    """Issue 4 section 1: Spearman >= 0.99 between ONNX s_anom and the torch autograd refinement."""
    _, w, _ = trained
    out, _ = exported
    held = blobs(60, 16, seed=11)
    held[:6] = np.random.default_rng(3).random((6, 1, 16, 16))  # a few obvious outliers
    got = GalaxyScorer(out).score(held, batch_size=25)
    x = torch.from_numpy(held)
    ref = refine_autograd(w.generator, w.critic, w.encoder, x, WCFG)
    # The graph's refined L_tot (the paper's s_anom) against the autograd refinement.
    rho = spearmanr(got.l_tot, ref.s_anom.numpy()).statistic
    assert rho >= 0.99
    np.testing.assert_allclose(got.l_tot, ref.s_anom.numpy(), rtol=1e-3)
    # obsqc's scores, computed the same way from the torch path's reconstruction and critic features.
    torch_gen = generator_score(held, ref.reconstruction.detach().numpy())
    torch_anom = anomaly_score(torch_gen, ref.s_disc.detach().numpy(), reference=GalaxyScorer(out).reference)
    assert spearmanr(got.s_anom, torch_anom).statistic >= 0.99
    assert spearmanr(got.s_gen, torch_gen).statistic >= 0.99
    with torch.no_grad():
        hand = refine(w.generator, w.critic, w.encoder, x, WCFG)
    np.testing.assert_allclose(got.reconstruction, hand.reconstruction.numpy(), atol=1e-4)


def test_exported_refinement_survives_zero_gradients(tmp_path):
    """A generator whose last layer is zero draws one constant image: dL/dz is exactly 0 and the Adam
    step must be 0, not 0/0 (the exporter's optimiser once dropped Adam's "+ 1e-8" as if it were 0)."""
    cfg = WCFG.replace(refine_steps=2)
    G, C, E = build_networks(cfg)
    with torch.no_grad():
        G.deconvs[-1].weight.zero_()
    path = export_galaxy_scorer(G, C, E, cfg, tmp_path / "galaxy_scorer.onnx")
    got = GalaxyScorer(path).score(blobs(3, 16, seed=2))
    assert np.isfinite(got.s_anom).all() and np.isfinite(got.reconstruction).all()


def test_model_json_and_references(exported):
    out, meta = exported
    assert {p.name for p in out.iterdir()} == {"autoencoder.onnx", "galaxy_scorer.onnx", "model.json"}
    on_disk = json.loads((out / "model.json").read_text())
    assert on_disk == read_metadata(out) and on_disk["galaxy_scorer"]["config"] == WCFG.to_dict()
    g = GalaxyScorer(out)
    assert (g.channels, g.size) == (1, 16)
    scores = g.score(blobs(40, 16, seed=6))
    for name in ("s_gen", "s_disc", "s_anom"):
        mean, std = g.reference[name]
        assert mean == pytest.approx(getattr(scores, name).mean(), rel=1e-6)
        assert std == pytest.approx(getattr(scores, name).std(ddof=1), rel=1e-5)
    ae = AutoencoderScorer(out)
    assert ae.stamp_size == 8
    assert ae.reference["mse"][0] == pytest.approx(ae.mse(blobs(30, 8, seed=5)[:, 0]).mean(), rel=1e-6)
    gtrain = on_disk["galaxy_scorer"]["training"]
    assert gtrain["wgan_steps_run"] == 6 and gtrain["command"] == "test" and gtrain["train_seconds"] > 0
    assert on_disk["autoencoder"]["training"]["best_epoch"] >= 1
    assert {"torch", "onnx", "onnxruntime", "opset"} <= on_disk["versions"].keys()


def test_export_keeps_the_other_model_and_refuses_empty_dirs(trained, exported, tmp_path):
    from obsqc.models.export import ExportError

    import shutil

    d, _, _ = trained
    out, meta = exported
    with pytest.raises(ExportError, match="no autoencoder.pt"):
        export_models(tmp_path, tmp_path / "x")
    ae_only, again = tmp_path / "ae_only", tmp_path / "again"
    ae_only.mkdir()
    shutil.copy(d / "autoencoder.pt", ae_only)
    shutil.copytree(out, again)
    new = export_models(ae_only, again)
    assert new["galaxy_scorer"] == meta["galaxy_scorer"]  # still there: its ONNX file was not touched
    assert new["autoencoder"]["reference"] == {} and new["autoencoder"]["n_reference"] == 0
    assert reference_stats({"a": np.array([1.0, 3.0, np.nan])}) == {"a": [2.0, pytest.approx(2**0.5)]}
