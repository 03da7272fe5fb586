"""Configurations of the learned scorers: one frozen dataclass per network, plus named presets.

No torch here: the service reads these from ``model.json`` without importing torch.

* :class:`AutoencoderConfig`: the dense autoencoder on 64x64 source stamps of Alonso, Zhang & Li,
  section 4.2 (4096 -> 128 -> 64 -> 32 -> 64 -> 128 -> 4096), trained with an 80/20 split, keeping
  the epoch of lowest validation loss.
* :class:`WGANConfig`: the WGAN-GP, encoder and latent refinement of Storey-Fisher et al. (2021),
  sections 3.1-3.2 (latent 128, depth 4, lambda_GP = 10, Adam 1e-4 with betas (0.5, 0.9),
  5 critic steps per generator step, batch 32, lambda_anom = 0.3, 10 refinement steps).

Presets (:data:`AUTOENCODER_PRESETS`, :data:`WGAN_PRESETS`, :func:`preset`):

* ``"paper"``: the published sizes (96x96 gri cutouts, critic features 6x6x512 as in 003 eq. 6).
* ``"small"``: a CPU-sized galaxy scorer for the default weights (64x64, one band, narrow
  convolutions) that scores >= 200 cutouts/s per core with the refinement inside the ONNX graph
  and keeps both committed ONNX files under 20 MB together (figures in BENCHMARKS.md).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = [
    "AUTOENCODER_PRESETS",
    "AutoencoderConfig",
    "PRESET_NAMES",
    "WGANConfig",
    "WGAN_PRESETS",
    "preset",
]


def _to_dict(obj) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


def _from_dict(cls, data: dict[str, Any]):
    """Build ``cls`` from a dict, ignoring unknown keys (newer files) and tuple-izing lists."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in data.items():
        if k not in names:
            continue
        kwargs[k] = tuple(v) if isinstance(v, list) else v
    return cls(**kwargs)


@dataclass(frozen=True)
class AutoencoderConfig:
    """Dense autoencoder of Alonso, Zhang & Li, section 4.2 (source stamps, 64x64 flattened to 4096).

    Activations (the paper leaves them open): ReLU after every hidden layer, including the 32-node
    bottleneck; ``output_activation`` on the 4096 outputs: ``"sigmoid"`` for stamps scaled to [0, 1]
    (obsqc.models.cutouts.source_stamps), ``"linear"`` for stamps of unbounded range. The loss is the
    per-stamp MSE of eq. (9), averaged over the batch; Adam optimiser.
    """

    stamp_size: int = 64
    """Side of the square source stamp [pixels]; the input is stamp_size**2 values (4096 in the paper)."""
    hidden: tuple[int, ...] = (128, 64, 32, 64, 128)
    """Widths of the hidden dense layers, encoder then decoder (section 4.2, Fig. 8)."""
    activation: str = "relu"
    """Activation after each hidden layer: ``"relu"`` or ``"leaky_relu"``."""
    output_activation: str = "sigmoid"
    """Activation of the output layer: ``"sigmoid"`` (stamps in [0, 1]) or ``"linear"``."""
    epochs: int = 500
    """Training epochs (section 4.2: 500); the epoch of lowest validation loss is kept."""
    batch_size: int = 128
    """Stamps per optimiser step."""
    lr: float = 1e-3
    """Adam learning rate."""
    val_fraction: float = 0.2
    """Fraction of the stamps held out for validation (section 4.2: about 20 %)."""
    seed: int = 0
    """Seed of the weights, the split and the batch order."""
    checkpoint_every: int = 10
    """Write a checkpoint every this many epochs (and at the end)."""

    def __post_init__(self) -> None:
        if self.stamp_size < 4:
            raise ValueError(f"stamp_size {self.stamp_size} is too small; the paper uses 64")
        if not self.hidden or any(int(h) < 1 for h in self.hidden):
            raise ValueError(f"hidden widths must be positive, got {self.hidden}")
        if self.activation not in ("relu", "leaky_relu"):
            raise ValueError(f"activation {self.activation!r}: choose 'relu' or 'leaky_relu'")
        if self.output_activation not in ("sigmoid", "linear"):
            raise ValueError(f"output_activation {self.output_activation!r}: choose 'sigmoid' or 'linear'")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.epochs < 1 or self.batch_size < 1 or self.checkpoint_every < 1:
            raise ValueError("epochs, batch_size and checkpoint_every must be >= 1")

    @property
    def n_inputs(self) -> int:
        """Length of the flattened stamp (4096 for 64x64)."""
        return self.stamp_size * self.stamp_size

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples as lists)."""
        return _to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AutoencoderConfig:
        """Inverse of :meth:`to_dict`; unknown keys are ignored."""
        return _from_dict(cls, data)

    def replace(self, **changes) -> AutoencoderConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class WGANConfig:
    """WGAN-GP, encoder and latent refinement of Storey-Fisher et al. (2021), sections 3.1-3.2.

    Generator: z (latent_dim) -> dense -> (base * 2**(depth-1), size / 2**depth, size / 2**depth) ->
    ``depth`` stride-2 transposed convolutions (ReLU between, sigmoid at the end) -> (channels, size,
    size). Critic: ``depth`` stride-2 convolutions with LeakyReLU (no normalisation: WGAN-GP), whose
    last output is the feature map d(x) of eq. (6), then a dense layer to one score. Encoder: the same
    convolution stack (ReLU) and a dense layer to z. With the paper preset the features are 6x6x512
    as in section 3.2.

    Refinement (section 3.2): z0 = E(x), then ``refine_steps`` iterations of Adam on z minimising
    L_tot = (1 - lambda_anom) L_gen + lambda_anom L_disc (eq. 5-6); the scores are the losses of the
    last iteration. Adam with lr 0.1, betas (0.4, 0.9) as in the authors' code
    (kstoreyf/anomalies-GAN-HSC, models/anomaly_detection_rgb.py).
    """

    channels: int = 1
    """Bands of the cutouts: 1 (single-band exposure cutouts) or 3 (g, r, i)."""
    size: int = 96
    """Cutout side [pixels]; a multiple of 2**depth (96 in the paper)."""
    latent_dim: int = 128
    """Dimension of z (section 3.1: 128)."""
    depth: int = 4
    """Stride-2 (transposed) convolution layers in the generator, critic and encoder (section 3.1: 4)."""
    base_channels: int = 64
    """Channels of the critic's first convolution (and of the generator's last hidden layer); doubled
    at each layer, so the critic features have base_channels * 2**(depth-1) channels (paper: 512)."""
    kernel_size: int = 5
    """Convolution kernel side (5 in the authors' code; 4 avoids the transposed-convolution
    checkerboard and costs 16/25 of the work)."""
    leaky_slope: float = 0.2
    """Negative slope of the critic's LeakyReLU."""
    lambda_gp: float = 10.0
    """Gradient-penalty weight lambda_GP of eq. (4)."""
    lr: float = 1e-4
    """Adam learning rate of generator and critic (section 3.1)."""
    betas: tuple[float, float] = (0.5, 0.9)
    """Adam betas of generator and critic (section 3.1)."""
    n_critic: int = 5
    """Critic updates per generator update (section 3.1)."""
    batch_size: int = 32
    """Images per batch (section 3.1)."""
    steps: int = 10_000
    """Generator iterations of the WGAN training (section 3.1: about 10,000)."""
    lambda_anom: float = 0.3
    """Weight of L_disc in L_tot = (1 - lambda) L_gen + lambda L_disc (section 3.2: 0.3)."""
    refine_steps: int = 10
    """Iterations of the per-image latent refinement (section 3.2: 10)."""
    refine_lr: float = 0.1
    """Adam step size of the refinement, in latent units (authors' code: 0.1)."""
    refine_betas: tuple[float, float] = (0.4, 0.9)
    """Adam betas of the refinement (authors' code: (0.4, 0.9))."""
    refine_eps: float = 1e-8
    """Adam epsilon of the refinement."""
    encoder_base_channels: int = 64
    """Channels of the encoder's first convolution (doubled at each layer)."""
    encoder_steps: int = 5_000
    """Optimiser steps of the encoder training (after the WGAN, with G and critic frozen)."""
    encoder_lr: float = 1e-3
    """Adam learning rate of the encoder."""
    encoder_betas: tuple[float, float] = (0.4, 0.9)
    """Adam betas of the encoder (authors' code: (0.4, 0.9))."""
    seed: int = 0
    """Seed of the weights, the batches and the noise."""
    checkpoint_every: int = 500
    """Write a checkpoint every this many steps of either phase (and at the end of each)."""

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 (one band) or 3 (g, r, i), got {self.channels}")
        if self.depth < 1:
            raise ValueError(f"depth must be >= 1, got {self.depth}")
        if self.size < 2**self.depth or self.size % 2**self.depth:
            raise ValueError(f"size {self.size} must be a positive multiple of 2**depth = {2**self.depth}")
        if self.kernel_size < 2:
            raise ValueError(f"kernel_size must be >= 2, got {self.kernel_size}")
        if min(self.latent_dim, self.base_channels, self.encoder_base_channels, self.batch_size) < 1:
            raise ValueError("latent_dim, base_channels, encoder_base_channels and batch_size must be >= 1")
        if self.n_critic < 1 or self.refine_steps < 1 or self.checkpoint_every < 1:
            raise ValueError("n_critic, refine_steps and checkpoint_every must be >= 1")
        if self.steps < 0 or self.encoder_steps < 0:
            raise ValueError("steps and encoder_steps must be >= 0")
        if not self.refine_eps > 0.0 or not self.refine_lr > 0.0:
            raise ValueError("refine_eps and refine_lr must be > 0")
        if not 0.0 <= self.lambda_anom <= 1.0:
            raise ValueError(f"lambda_anom must be in [0, 1], got {self.lambda_anom}")

    @property
    def bottom(self) -> int:
        """Side of the smallest feature map, size / 2**depth (6 for 96 and depth 4)."""
        return self.size // 2**self.depth

    @property
    def feature_channels(self) -> int:
        """Channels of the critic features d(x) of eq. (6) (512 in the paper)."""
        return self.base_channels * 2 ** (self.depth - 1)

    @property
    def n_features(self) -> int:
        """F of eq. (6): the number of critic features (6 * 6 * 512 in the paper)."""
        return self.feature_channels * self.bottom**2

    @property
    def n_pixels(self) -> int:
        """P of eq. (5): pixels of one cutout, all bands."""
        return self.channels * self.size**2

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples as lists)."""
        return _to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WGANConfig:
        """Inverse of :meth:`to_dict`; unknown keys are ignored."""
        return _from_dict(cls, data)

    def replace(self, **changes) -> WGANConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


AUTOENCODER_PRESETS: dict[str, AutoencoderConfig] = {
    "paper": AutoencoderConfig(),
    "small": AutoencoderConfig(epochs=150),
}
"""Autoencoder presets: the network is the paper's in both; ``small`` trains fewer epochs (CPU)."""

WGAN_PRESETS: dict[str, WGANConfig] = {
    "paper": WGANConfig(channels=3, size=96, base_channels=64, kernel_size=5, encoder_base_channels=64,
                        steps=10_000, encoder_steps=5_000),
    "small": WGANConfig(channels=1, size=64, base_channels=6, kernel_size=4, encoder_base_channels=8,
                        steps=3_000, encoder_steps=1_500, checkpoint_every=250),
}
"""WGAN presets: ``paper`` (96x96 gri, features 6x6x512) and ``small`` (64x64 one band, CPU-sized).

``small``: critic/generator widths 6, 12, 24, 48 (features 4x4x48), kernel 4. Measured on one
onnxruntime thread of the shared 2-core development machine (AMD EPYC), refinement included, batch
64: base 6 -> median 274 cutouts/s (235-326), base 8 -> median 235 (189-269); base 6 keeps the
>= 200/s per core target with margin. The encoder runs once per cutout, so it can be wider (8).
"""

PRESET_NAMES: tuple[str, ...] = ("small", "paper")
"""Names accepted by :func:`preset` and ``obsqc train --preset``."""


def preset(kind: str, name: str, **overrides) -> AutoencoderConfig | WGANConfig:
    """The named preset of ``kind`` (``"ae"`` or ``"wgan"``), with fields overridden."""
    table = {"ae": AUTOENCODER_PRESETS, "wgan": WGAN_PRESETS}.get(kind)
    if table is None:
        raise ValueError(f"unknown model kind {kind!r}; choose 'ae' or 'wgan'")
    if name not in table:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(sorted(table))}")
    base = table[name]
    return base.replace(**overrides) if overrides else base

