r"""Dense autoencoder on source stamps (Alonso, Zhang & Li, section 4.2-4.3, eq. 9).

The 64x64 stamp is flattened to 4096 values and passed through dense layers of 128, 64 and 32
nodes (encoder) and 64, 128 nodes (decoder) back to 4096 (:class:`AutoencoderConfig.hidden`). The
anomaly indicator of one stamp is its reconstruction MSE,

.. math::

    \mathrm{MSE} = \frac{1}{N^2} \sum_{i=1}^{N} \sum_{j=1}^{N} (\hat{x}_{ij} - x_{ij})^2,

eq. (9) with N = 64; an exposure's indicator is the mean over its stamps (section 4.3).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from obsqc.models.config import AutoencoderConfig

__all__ = ["AutoencoderExport", "DenseAutoencoder", "stamp_mse"]


def stamp_mse(stamps: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    """Per-stamp mean squared error of eq. (9): (B, N, N) or (B, N*N) -> (B,)."""
    return (reconstruction - stamps).pow(2).flatten(1).mean(dim=1)


class DenseAutoencoder(nn.Module):
    """The autoencoder of section 4.2, rebuilt entirely from its :class:`AutoencoderConfig`."""

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        self.config = config
        widths = (config.n_inputs, *config.hidden, config.n_inputs)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))

    def _act(self, h: torch.Tensor) -> torch.Tensor:
        return F.relu(h) if self.config.activation == "relu" else F.leaky_relu(h, 0.01)

    def forward(self, stamps: torch.Tensor) -> torch.Tensor:
        """Reconstruct stamps: (B, N, N) -> (B, N, N), or (B, N*N) -> (B, N*N)."""
        shape = stamps.shape
        h = stamps.reshape(shape[0], self.config.n_inputs)  # (B, 4096)
        for layer in self.layers[:-1]:
            h = self._act(layer(h))  # (B, 128) (B, 64) (B, 32) (B, 64) (B, 128)
        h = self.layers[-1](h)  # (B, 4096)
        if self.config.output_activation == "sigmoid":
            h = torch.sigmoid(h)
        return h.reshape(shape)

    def mse(self, stamps: torch.Tensor) -> torch.Tensor:
        """Per-stamp reconstruction MSE, eq. (9): (B, N, N) -> (B,)."""
        return stamp_mse(stamps, self(stamps))


class AutoencoderExport(nn.Module):
    """What ``autoencoder.onnx`` computes: stamps (B, N, N) -> (reconstruction (B, N, N), mse (B,))."""

    def __init__(self, model: DenseAutoencoder):
        super().__init__()
        self.model = model

    def forward(self, stamps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        reconstruction = self.model(stamps)
        return reconstruction, stamp_mse(stamps, reconstruction)
