r"""Per-image latent refinement and the anomaly scores of Storey-Fisher et al. (2021), section 3.2.

For a cutout x, start from the encoder's guess z_0 = E(x) and minimise, over z only,

.. math::

    L_\mathrm{gen}(z) = \sum_i^P |x_i - G(z)_i|                       \quad \text{(eq. 5)}

    L_\mathrm{disc}(z) = \sum_j^F |d(x)_j - d(G(z))_j|                \quad \text{(eq. 6)}

    L_\mathrm{tot} = (1 - \lambda) L_\mathrm{gen} + \lambda L_\mathrm{disc},  \lambda = 0.3

where d is the critic's last convolutional representation (:meth:`Critic.features`). The scores are
the losses of the final iteration: s_gen = L_gen, s_disc = L_disc, s_anom = L_tot, with G(z) the
reconstruction. Iterations follow the authors' code (kstoreyf/anomalies-GAN-HSC,
models/anomaly_detection_rgb.py): each of the ``refine_steps`` iterations evaluates the losses at
the current z and takes one Adam step (lr 0.1, betas (0.4, 0.9)); the reported scores are those of
the last evaluation, so the step computed in the last iteration, which would change nothing that
is reported, is skipped (``refine_steps`` evaluations, ``refine_steps - 1`` updates).

Two implementations of the same thing:

* :func:`refine`: the gradient of L_tot with respect to z written by hand as ordinary forward ops
  (vector-Jacobian products), unrolled for the fixed number of steps, so that ``torch.onnx.export``
  sees no autograd and the whole refinement lives inside ``galaxy_scorer.onnx``:

  - |x - y| -> sign(y - x); a LeakyReLU/ReLU -> its 0/1 (or slope) mask on the pre-activation;
    sigmoid s -> s (1 - s);
  - a stride-2 convolution with weight W -> ``conv_transpose2d`` with the same W, stride and padding
    (and the output padding that restores the input side);
  - a stride-2 transposed convolution with weight W -> ``conv2d`` with the same W;
  - a dense layer y = W z + b -> g @ W.

  Biases do not enter a vector-Jacobian product.
* :func:`refine_autograd`: the reference, with ``torch.autograd`` and ``torch.optim.Adam``; the
  tests check that the hand gradient equals the autograd one and that both give the same scores.

Tensors: x (B, C, S, S) in [0, 1]; z (B, latent_dim); d(x) (B, 8 base, S/16, S/16).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from obsqc.models.config import WGANConfig
from obsqc.models.wgan import Critic, Encoder, Generator

__all__ = [
    "RefineResult",
    "RefinementScorer",
    "anomaly_losses",
    "latent_gradient",
    "latent_gradient_autograd",
    "refine",
    "refine_autograd",
    "scores",
]


@dataclass(frozen=True)
class RefineResult:
    """Scores of section 3.2 for a batch: each (B,), reconstruction (B, C, S, S), final z (B, latent)."""

    s_gen: torch.Tensor
    s_disc: torch.Tensor
    s_anom: torch.Tensor
    reconstruction: torch.Tensor
    z: torch.Tensor


# ---------------------------------------------------------------------------------------- forward passes
def _generator_forward(G: Generator, z: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """G(z) as in :meth:`Generator.forward`, also returning the pre-activations of the ReLUs."""
    a = F.linear(z, G.fc.weight, G.fc.bias)  # (B, 512 * 6 * 6)
    pre = [a]
    h = F.relu(a).reshape(z.shape[0], *G.first_shape)  # (B, 512, 6, 6)
    last = len(G.deconvs) - 1
    for i, deconv in enumerate(G.deconvs):
        a = F.conv_transpose2d(h, deconv.weight, deconv.bias, stride=2, padding=G.padding,
                               output_padding=G.output_padding)
        if i == last:
            h = torch.sigmoid(a)  # (B, C, S, S)
        else:
            pre.append(a)
            h = F.relu(a)
    return h, pre


def _critic_forward(C: Critic, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """d(x) as in :meth:`Critic.features`, also returning the pre-activations of the LeakyReLUs."""
    slope = C.config.leaky_slope
    pre = []
    h = x
    for conv in C.convs:
        a = F.conv2d(h, conv.weight, conv.bias, stride=2, padding=C.stack.padding)
        pre.append(a)
        h = F.leaky_relu(a, slope)
    return h, pre


# ------------------------------------------------------------------------------ vector-Jacobian products
def _critic_vjp(C: Critic, pre: list[torch.Tensor], g: torch.Tensor) -> torch.Tensor:
    """g^T dd/dx: from a cotangent on the features (B, 512, 6, 6) to one on the image (B, C, S, S)."""
    slope = C.config.leaky_slope
    for conv, a in zip(reversed(C.convs), reversed(pre)):
        g = g * (slope + (1.0 - slope) * (a > 0).to(g.dtype))  # LeakyReLU
        g = F.conv_transpose2d(g, conv.weight, stride=2, padding=C.stack.padding,
                               output_padding=C.stack.output_padding)  # conv -> its transpose
    return g


def _generator_vjp(G: Generator, pre: list[torch.Tensor], image: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """g^T dG/dz: from a cotangent on the image (B, C, S, S) to one on z (B, latent_dim)."""
    g = g * image * (1.0 - image)  # sigmoid
    for i in range(len(G.deconvs) - 1, -1, -1):
        g = F.conv2d(g, G.deconvs[i].weight, stride=2, padding=G.padding)  # transposed conv -> conv
        if i > 0:
            g = g * (pre[i] > 0).to(g.dtype)  # ReLU after deconv i-1 (pre[i] is its pre-activation)
    g = g.reshape(g.shape[0], -1) * (pre[0] > 0).to(g.dtype)  # ReLU after the dense layer
    return g @ G.fc.weight  # dense layer: (B, 512 * 6 * 6) @ (512 * 6 * 6, latent) -> (B, latent)


def anomaly_losses(x: torch.Tensor, d_x: torch.Tensor, image: torch.Tensor, feats: torch.Tensor,
                   lam: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(L_gen, L_disc, L_tot), each (B,), of eq. (5), (6) and section 3.2 for images x and G(z).

    ``d_x`` and ``feats`` are the critic features of x and of ``image`` = G(z).
    """
    l_gen = (x - image).abs().sum(dim=(1, 2, 3))  # eq. (5)
    l_disc = (d_x - feats).abs().sum(dim=(1, 2, 3))  # eq. (6)
    return l_gen, l_disc, (1.0 - lam) * l_gen + lam * l_disc


def latent_gradient(G: Generator, C: Critic, x: torch.Tensor, z: torch.Tensor, lam: float,
                    d_x: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hand-written dL_tot/dz (B, latent) with L_gen and L_disc (B,) at z; no autograd involved.

    dL_tot/dG(z) = (1 - lambda) sign(G(z) - x) + lambda (dd/dy)^T sign(d(G(z)) - d(x)), then through G.
    """
    if d_x is None:
        d_x, _ = _critic_forward(C, x)
    image, g_pre = _generator_forward(G, z)
    feats, c_pre = _critic_forward(C, image)
    l_gen, l_disc, _ = anomaly_losses(x, d_x, image, feats, lam)
    g_image = (1.0 - lam) * torch.sign(image - x) + _critic_vjp(C, c_pre, lam * torch.sign(feats - d_x))
    return _generator_vjp(G, g_pre, image, g_image), l_gen, l_disc


def latent_gradient_autograd(G: Generator, C: Critic, x: torch.Tensor, z: torch.Tensor, lam: float) -> torch.Tensor:
    """Reference dL_tot/dz by ``torch.autograd`` (losses summed over the batch; images independent)."""
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        image = G(z)
        _, _, l_tot = anomaly_losses(x, C.features(x).detach(), image, C.features(image), lam)
        (grad,) = torch.autograd.grad(l_tot.sum(), z)
    return grad


def scores(G: Generator, C: Critic, x: torch.Tensor, z: torch.Tensor, lam: float) -> RefineResult:
    """s_gen, s_disc, s_anom and G(z) at a given z (no refinement)."""
    image = G(z)
    l_gen, l_disc, l_tot = anomaly_losses(x, C.features(x), image, C.features(image), lam)
    return RefineResult(l_gen, l_disc, l_tot, image, z)


# ------------------------------------------------------------------------------------------ refinement
def refine(G: Generator, C: Critic, E: Encoder, x: torch.Tensor, config: WGANConfig,
           *, z0: torch.Tensor | None = None) -> RefineResult:
    """Section 3.2 refinement with the hand-written gradient and an unrolled Adam (exportable to ONNX).

    Adam (Kingma & Ba 2015) on each latent component:
    m_t = b1 m + (1 - b1) g, v_t = b2 v + (1 - b2) g^2, z -= lr (m_t / (1 - b1^t)) / (sqrt(v_t / (1 - b2^t)) + eps).
    """
    lam = config.lambda_anom
    lr, (b1, b2), inv_eps = config.refine_lr, config.refine_betas, 1.0 / config.refine_eps
    z = E(x) if z0 is None else z0
    d_x, _ = _critic_forward(C, x)
    m = torch.zeros_like(z)
    v = torch.zeros_like(z)
    for t in range(1, config.refine_steps + 1):
        image, g_pre = _generator_forward(G, z)
        feats, c_pre = _critic_forward(C, image)
        l_gen, l_disc, l_tot = anomaly_losses(x, d_x, image, feats, lam)
        if t == config.refine_steps:
            return RefineResult(l_gen, l_disc, l_tot, image, z)
        g_image = (1.0 - lam) * torch.sign(image - x) + _critic_vjp(C, c_pre, lam * torch.sign(feats - d_x))
        g = _generator_vjp(G, g_pre, image, g_image)
        m = b1 * m + (1.0 - b1) * g
        v = b2 * v + (1.0 - b2) * (g * g)
        # lr m_hat / (sqrt(v_hat) + eps), written with 1/eps so that no additive constant is near zero:
        # onnxscript's optimizer drops "+ 1e-8" as if it were "+ 0" (then 0/0 = NaN where g = 0)
        z = z - lr * (m * (inv_eps / (1.0 - b1**t))) / (torch.sqrt(v / (1.0 - b2**t)) * inv_eps + 1.0)
    raise AssertionError("unreachable: refine_steps >= 1")  # pragma: no cover


def refine_autograd(G: Generator, C: Critic, E: Encoder, x: torch.Tensor, config: WGANConfig,
                    *, z0: torch.Tensor | None = None) -> RefineResult:
    """Reference refinement: ``torch.autograd`` gradients and ``torch.optim.Adam`` (same schedule)."""
    lam = config.lambda_anom
    with torch.no_grad():
        z_init = E(x) if z0 is None else z0
        d_x = C.features(x)
    z = z_init.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=config.refine_lr, betas=config.refine_betas, eps=config.refine_eps)
    with torch.enable_grad():
        for t in range(1, config.refine_steps + 1):
            image = G(z)
            l_gen, l_disc, l_tot = anomaly_losses(x, d_x, image, C.features(image), lam)
            if t == config.refine_steps:
                return RefineResult(l_gen.detach(), l_disc.detach(), l_tot.detach(), image.detach(), z.detach())
            (z.grad,) = torch.autograd.grad(l_tot.sum(), z)  # w.r.t. z only: G and the critic stay fixed
            opt.step()
    raise AssertionError("unreachable: refine_steps >= 1")  # pragma: no cover


class RefinementScorer(nn.Module):
    """What ``galaxy_scorer.onnx`` computes: x (B, C, S, S) -> (s_gen, s_disc, s_anom (B,), G(z) (B, C, S, S))."""

    def __init__(self, generator: Generator, critic: Critic, encoder: Encoder, config: WGANConfig):
        super().__init__()
        self.generator, self.critic, self.encoder, self.config = generator, critic, encoder, config

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        r = refine(self.generator, self.critic, self.encoder, x, self.config)
        return r.s_gen, r.s_disc, r.s_anom, r.reconstruction
