"""Configs, presets and network shapes: the autoencoder of 000 section 4.2, the WGAN of 003 section 3.1."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from obsqc.models.autoencoder import DenseAutoencoder, stamp_mse
from obsqc.models.config import AUTOENCODER_PRESETS, WGAN_PRESETS, AutoencoderConfig, WGANConfig, preset
from obsqc.models.wgan import Critic, Encoder, Generator, build_networks, conv_geometry



@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny tensors: one thread avoids torch's spinning thread pool on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(**kw) -> WGANConfig:
    base = dict(size=16, channels=1, base_channels=2, encoder_base_channels=2, latent_dim=8)
    return WGANConfig(**{**base, **kw})


@pytest.mark.parametrize("cfg", [tiny(), tiny(channels=3, size=32, kernel_size=4), tiny(kernel_size=3, depth=2, size=8)])
@torch.no_grad()
def test_wgan_shapes(cfg):
    G, C, E = build_networks(cfg)
    z = torch.randn(5, cfg.latent_dim)
    x = G(z)
    assert x.shape == (5, cfg.channels, cfg.size, cfg.size)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0  # sigmoid output, like the asinh-scaled cutouts
    feats = C.features(x)
    assert feats.shape == (5, cfg.feature_channels, cfg.bottom, cfg.bottom)
    assert feats[0].numel() == cfg.n_features
    assert C(x).shape == (5,)
    assert E(x).shape == (5, cfg.latent_dim)


def test_paper_preset_matches_storey_fisher():
    cfg = WGAN_PRESETS["paper"]
    assert (cfg.channels, cfg.size, cfg.latent_dim, cfg.depth) == (3, 96, 128, 4)
    assert (cfg.lambda_gp, cfg.lr, cfg.betas, cfg.n_critic, cfg.batch_size) == (10.0, 1e-4, (0.5, 0.9), 5, 32)
    assert (cfg.lambda_anom, cfg.refine_steps) == (0.3, 10)
    assert (cfg.feature_channels, cfg.bottom) == (512, 6)  # 003 section 3.2: 6 x 6 x 512 features


def test_critic_has_no_batch_norm_and_generator_depth():
    G, C, E = build_networks(WGAN_PRESETS["small"])
    for net in (G, C, E):
        assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
    assert len(G.deconvs) == 4 and len(C.convs) == 4 and len(E.stack.convs) == 4


@pytest.mark.parametrize("k", [2, 3, 4, 5, 6])
def test_conv_geometry_halves_and_doubles(k):
    p, op = conv_geometry(k)
    x = torch.zeros(1, 1, 12, 12)
    assert nn.Conv2d(1, 1, k, 2, p)(x).shape[-1] == 6
    assert nn.ConvTranspose2d(1, 1, k, 2, p, op)(torch.zeros(1, 1, 6, 6)).shape[-1] == 12


def test_build_networks_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(5)
    before = torch.get_rng_state()
    a = build_networks(tiny(seed=3))
    assert torch.equal(torch.get_rng_state(), before)
    b = build_networks(tiny(seed=3))
    c = build_networks(tiny(seed=4))
    assert torch.equal(a[0].fc.weight, b[0].fc.weight)
    assert not torch.equal(a[0].fc.weight, c[0].fc.weight)


def test_configs_round_trip_through_json():
    for cfg in (*WGAN_PRESETS.values(), *AUTOENCODER_PRESETS.values()):
        again = type(cfg).from_dict(json.loads(json.dumps(cfg.to_dict())))
        assert again == cfg
    assert WGANConfig.from_dict({"size": 32, "unknown_future_key": 1}).size == 32


@pytest.mark.parametrize("bad", [dict(channels=2), dict(size=40), dict(lambda_anom=1.5), dict(refine_steps=0)])
def test_wgan_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        WGANConfig(**bad)


def test_preset_lookup_and_overrides():
    assert preset("wgan", "small", steps=7).steps == 7
    assert preset("ae", "paper") == AutoencoderConfig()
    with pytest.raises(ValueError, match="unknown preset"):
        preset("wgan", "huge")
    with pytest.raises(ValueError, match="unknown model kind"):
        preset("vae", "small")


def test_small_preset_is_small():
    """Issue 4 section 2: the default weights (both ONNX files) stay under 20 MB; float32 weights of all
    networks must leave room for the exporter's few transposed copies."""
    w = WGAN_PRESETS["small"]
    assert (w.size, w.channels) == (64, 1)
    n_params = sum(p.numel() for net in build_networks(w) for p in net.parameters())
    n_params += sum(p.numel() for p in DenseAutoencoder(AUTOENCODER_PRESETS["small"]).parameters())
    assert n_params * 4 < 10e6


@torch.no_grad()
def test_autoencoder_layers_follow_alonso_section_4_2():
    model = DenseAutoencoder(AutoencoderConfig())
    sizes = [(m.in_features, m.out_features) for m in model.layers]
    assert sizes == [(4096, 128), (128, 64), (64, 32), (32, 64), (64, 128), (128, 4096)]
    x = torch.rand(3, 64, 64)
    y = model(x)
    assert y.shape == (3, 64, 64) and float(y.min()) >= 0 and float(y.max()) <= 1
    assert model(x.reshape(3, 4096)).shape == (3, 4096)


@torch.no_grad()
def test_stamp_mse_is_eq_9():
    rng = np.random.default_rng(1)
    a, b = rng.random((4, 64, 64)), rng.random((4, 64, 64))
    want = ((a - b) ** 2).sum(axis=(1, 2)) / 64**2
    np.testing.assert_allclose(stamp_mse(torch.from_numpy(a), torch.from_numpy(b)).numpy(), want, rtol=1e-12)
    model = DenseAutoencoder(AutoencoderConfig(stamp_size=8, hidden=(4,), output_activation="linear"))
    x = torch.rand(2, 8, 8)
    torch.testing.assert_close(model.mse(x), ((model(x) - x) ** 2).mean(dim=(1, 2)))


def test_autoencoder_config_validation():
    with pytest.raises(ValueError):
        AutoencoderConfig(output_activation="tanh")
    with pytest.raises(ValueError):
        AutoencoderConfig(val_fraction=1.0)


def test_networks_rebuild_from_config_alone():
    cfg = tiny(kernel_size=4)
    G, C, E = build_networks(cfg)
    for net, cls in ((G, Generator), (C, Critic), (E, Encoder)):
        twin = cls(WGANConfig.from_dict(cfg.to_dict()))
        twin.load_state_dict(net.state_dict())  # same architecture, strictly
