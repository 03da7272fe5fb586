"""WGAN-GP generator, critic and encoder (Storey-Fisher et al. 2021, sections 3.1-3.2).

Shapes below are for the paper preset (96x96x3, base 64, depth 4); every size follows from the
:class:`WGANConfig`, so a checkpoint rebuilds its networks from the stored config alone.

* :class:`Generator`: z (B, 128) -> dense -> ReLU -> (B, 512, 6, 6) -> 4 stride-2 transposed
  convolutions (ReLU between) -> sigmoid -> (B, 3, 96, 96) in [0, 1], like the asinh-scaled cutouts.
* :class:`Critic`: (B, 3, 96, 96) -> 4 stride-2 convolutions with LeakyReLU(0.2) -> d(x) (B, 512, 6, 6)
  (``features``, the "last convolutional layer" representation of eq. 6) -> dense -> score (B,).
  No batch normalisation: the gradient penalty of eq. (4) is per sample (Gulrajani et al. 2017).
* :class:`Encoder`: (B, 3, 96, 96) -> 4 stride-2 convolutions with ReLU -> dense -> z (B, 128),
  the first guess of the latent vector of section 3.2.

All stride-2 layers share one geometry (:func:`conv_geometry`): a convolution halves the side
exactly and a transposed convolution doubles it exactly, which the hand-written gradient of
``refine.py`` relies on.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from obsqc.models.config import WGANConfig

__all__ = ["Critic", "Encoder", "Generator", "build_networks", "conv_geometry"]


def conv_geometry(kernel_size: int) -> tuple[int, int]:
    """(padding, output_padding) making a stride-2 conv map S -> S/2 and its transpose S/2 -> S.

    Conv output: floor((S + 2p - k) / 2) + 1 = S/2 for even S when p = floor((k - 1) / 2);
    transposed output: (S/2 - 1) * 2 - 2p + k + op = S when op = 2 + 2p - k (0 or 1).
    """
    padding = (kernel_size - 1) // 2
    return padding, 2 + 2 * padding - kernel_size


def _widths(base: int, depth: int) -> list[int]:
    """Channels of the stride-2 stack, shallow to deep: base, 2 base, ..., base * 2**(depth-1)."""
    return [base * 2**i for i in range(depth)]


class Generator(nn.Module):
    """G(z): latent (B, latent_dim) -> image (B, channels, size, size) in [0, 1] (section 3.1)."""

    def __init__(self, config: WGANConfig):
        super().__init__()
        self.config = config
        k = config.kernel_size
        self.padding, self.output_padding = conv_geometry(k)
        widths = _widths(config.base_channels, config.depth)[::-1]  # deep to shallow: 512 256 128 64
        self.fc = nn.Linear(config.latent_dim, widths[0] * config.bottom**2)  # (B, 512 * 6 * 6)
        outs = widths[1:] + [config.channels]
        self.deconvs = nn.ModuleList(
            nn.ConvTranspose2d(a, b, k, stride=2, padding=self.padding, output_padding=self.output_padding)
            for a, b in zip(widths, outs)
        )  # (B, 256, 12, 12) (B, 128, 24, 24) (B, 64, 48, 48) (B, 3, 96, 96)

    @property
    def first_shape(self) -> tuple[int, int, int]:
        """Shape of the dense layer's output, reshaped: (512, 6, 6) for the paper preset."""
        c = self.config
        return (c.feature_channels, c.bottom, c.bottom)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.fc(z)).reshape(z.shape[0], *self.first_shape)  # (B, 512, 6, 6)
        for i, deconv in enumerate(self.deconvs):
            h = deconv(h)
            h = torch.sigmoid(h) if i == len(self.deconvs) - 1 else F.relu(h)
        return h  # (B, 3, 96, 96)


class _ConvStack(nn.Module):
    """``depth`` stride-2 convolutions, channels base * 2**i: (B, C, S, S) -> (B, 8 base, S/16, S/16)."""

    def __init__(self, in_channels: int, base: int, depth: int, kernel_size: int):
        super().__init__()
        self.padding, self.output_padding = conv_geometry(kernel_size)
        widths = _widths(base, depth)
        self.convs = nn.ModuleList(
            nn.Conv2d(a, b, kernel_size, stride=2, padding=self.padding)
            for a, b in zip([in_channels] + widths[:-1], widths)
        )  # (B, 64, 48, 48) (B, 128, 24, 24) (B, 256, 12, 12) (B, 512, 6, 6)


class Critic(nn.Module):
    """D(x): image -> Wasserstein critic score (section 3.1), and its features d(x) (eq. 6)."""

    def __init__(self, config: WGANConfig):
        super().__init__()
        self.config = config
        self.stack = _ConvStack(config.channels, config.base_channels, config.depth, config.kernel_size)
        self.head = nn.Linear(config.n_features, 1)

    @property
    def convs(self) -> nn.ModuleList:
        return self.stack.convs

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """d(x) of eq. (6): the LeakyReLU output of the last convolution, (B, 512, 6, 6) in the paper."""
        h = x
        for conv in self.stack.convs:
            h = F.leaky_relu(conv(h), self.config.leaky_slope)
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Critic score, (B,)."""
        return self.head(self.features(x).flatten(1)).squeeze(1)


class Encoder(nn.Module):
    """E(x): image -> latent vector z, the first guess of the refinement (section 3.2)."""

    def __init__(self, config: WGANConfig):
        super().__init__()
        self.config = config
        self.stack = _ConvStack(config.channels, config.encoder_base_channels, config.depth, config.kernel_size)
        deep = config.encoder_base_channels * 2 ** (config.depth - 1)
        self.fc = nn.Linear(deep * config.bottom**2, config.latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for conv in self.stack.convs:
            h = F.relu(conv(h))
        return self.fc(h.flatten(1))  # (B, 128)


def build_networks(config: WGANConfig, *, seed: int | None = None) -> tuple[Generator, Critic, Encoder]:
    """Fresh (G, critic, E) for ``config``, initialised from ``seed`` (default ``config.seed``)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed if seed is None else seed)
        return Generator(config), Critic(config), Encoder(config)
