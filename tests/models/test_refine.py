"""The latent refinement of 003 section 3.2: the hand-written gradient against autograd, and the scores."""

import pytest
import torch

from obsqc.models.config import WGANConfig
from obsqc.models.refine import (
    _critic_forward,
    _critic_vjp,
    _generator_forward,
    _generator_vjp,
    anomaly_losses,
    latent_gradient,
    latent_gradient_autograd,
    refine,
    refine_autograd,
    scores,
)
from obsqc.models.wgan import build_networks


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny tensors: one thread avoids torch's spinning thread pool on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


CONFIGS = [
    WGANConfig(size=16, channels=1, base_channels=3, encoder_base_channels=2, latent_dim=8, kernel_size=4, seed=1),
    WGANConfig(size=32, channels=3, base_channels=2, encoder_base_channels=2, latent_dim=16, kernel_size=5, seed=2),
    WGANConfig(size=16, channels=1, base_channels=4, encoder_base_channels=2, latent_dim=8, kernel_size=3, depth=3,
               seed=3, leaky_slope=0.1),
]


def _nets(cfg):
    G, C, E = build_networks(cfg)
    with torch.no_grad():  # a positive bias keeps the random ReLUs alive, so every path carries gradient
        for conv in G.deconvs[:-1]:
            conv.bias.add_(0.1)
        G.fc.bias.add_(0.1)
    return G.eval(), C.eval(), E.eval()


def _batch(cfg, n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, cfg.channels, cfg.size, cfg.size, generator=g), torch.randn(n, cfg.latent_dim, generator=g)


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


@pytest.mark.parametrize("cfg", CONFIGS)
def test_vjps_match_autograd(cfg):
    G, C, _ = _nets(cfg)
    x, z = _batch(cfg)
    z = z.requires_grad_(True)
    image = G(z)
    g_img = torch.randn_like(image)
    (want_z,) = torch.autograd.grad(image, z, g_img)
    with torch.no_grad():
        img2, pre = _generator_forward(G, z)
        got_z = _generator_vjp(G, pre, img2, g_img)
    assert _rel(got_z, want_z) < 1e-5
    xr = x.clone().requires_grad_(True)
    feats = C.features(xr)
    g_f = torch.randn_like(feats)
    (want_x,) = torch.autograd.grad(feats, xr, g_f)
    with torch.no_grad():
        f2, cpre = _critic_forward(C, x)
        got_x = _critic_vjp(C, cpre, g_f)
    torch.testing.assert_close(f2, feats.detach())
    assert _rel(got_x, want_x) < 1e-5


@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("cfg", CONFIGS)
def test_hand_gradient_equals_autograd(cfg, lam):
    G, C, _ = _nets(cfg)
    x, z = _batch(cfg)
    with torch.no_grad():
        got, l_gen, l_disc = latent_gradient(G, C, x, z, lam)
    want = latent_gradient_autograd(G, C, x, z, lam)
    assert float(want.abs().max()) > 0
    assert _rel(got, want) < 1e-5
    ref = scores(G, C, x, z, lam)
    torch.testing.assert_close(l_gen, ref.s_gen.detach())
    torch.testing.assert_close(l_disc, ref.s_disc.detach())


@pytest.mark.parametrize("cfg", CONFIGS)
def test_refined_scores_equal_autograd_path(cfg):
    G, C, E = _nets(cfg)
    x, _ = _batch(cfg, n=8, seed=1)
    with torch.no_grad():
        hand = refine(G, C, E, x, cfg)
    ref = refine_autograd(G, C, E, x, cfg)
    for name in ("s_gen", "s_disc", "s_anom"):
        torch.testing.assert_close(getattr(hand, name), getattr(ref, name), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(hand.reconstruction, ref.reconstruction, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(hand.s_anom, (1 - cfg.lambda_anom) * hand.s_gen + cfg.lambda_anom * hand.s_disc)


def test_refinement_lowers_the_loss_and_moves_z():
    cfg = CONFIGS[0]
    G, C, E = _nets(cfg)
    x, _ = _batch(cfg, n=16, seed=2)
    with torch.no_grad():
        start = scores(G, C, x, E(x), cfg.lambda_anom)
        done = refine(G, C, E, x, cfg)
        one = refine(G, C, E, x, cfg.replace(refine_steps=1))
    assert float(done.s_anom.mean()) < float(start.s_anom.mean())
    assert float((done.z - start.z).abs().max()) > 0.05
    torch.testing.assert_close(one.s_anom, start.s_anom)  # one iteration = the encoder's guess, no step
    torch.testing.assert_close(one.reconstruction, G(E(x)))


def test_known_truth_image_from_the_generator_scores_zero():
    """x = G(z*) and z0 = z*: L_gen = L_disc = 0, sign(0) = 0, so z stays and every score is 0."""
    cfg = CONFIGS[1]
    G, C, E = _nets(cfg)
    _, z_true = _batch(cfg, n=3)
    with torch.no_grad():
        x = G(z_true)
        r = refine(G, C, E, x, cfg, z0=z_true)
    assert float(r.s_anom.abs().max()) == 0.0
    torch.testing.assert_close(r.z, z_true)


def test_anomaly_losses_are_l1_sums():
    x = torch.zeros(2, 1, 4, 4)
    img = torch.full((2, 1, 4, 4), 0.25)
    d_x, feats = torch.zeros(2, 3, 1, 1), torch.ones(2, 3, 1, 1)
    l_gen, l_disc, l_tot = anomaly_losses(x, d_x, img, feats, 0.3)
    torch.testing.assert_close(l_gen, torch.tensor([4.0, 4.0]))  # 16 pixels x 0.25, eq. (5)
    torch.testing.assert_close(l_disc, torch.tensor([3.0, 3.0]))  # eq. (6)
    torch.testing.assert_close(l_tot, 0.7 * l_gen + 0.3 * l_disc)
