"""Training loops, checkpoints and resumption for the autoencoder and the WGAN-GP galaxy scorer.

* :func:`train_autoencoder`: Alonso, Zhang & Li section 4.2: ~80/20 train/validation split, Adam on
  the per-stamp MSE of eq. (9), keeping the weights of the epoch with the lowest validation loss.
* :func:`train_wgan`: Storey-Fisher et al. (2021) section 3.1: WGAN-GP (Gulrajani et al. 2017), eq. (4)
  with the gradient penalty on random interpolates between real and generated images, ``n_critic``
  critic steps per generator step, Adam (1e-4, betas 0.5, 0.9), batch 32. Then the encoder of section
  3.2 with G and the critic frozen, trained to minimise the same L_tot = (1 - lambda) L_gen + lambda
  L_disc (eq. 5-6, L1 sums) of G(E(x)) that the refinement minimises, as in the authors' code
  (kstoreyf/anomalies-GAN-HSC, models/encoder_rgb.py); this is f-AnoGAN's "izi_f" encoder training
  (Schlegl et al. 2019, Medical Image Analysis 54, 30, image residual plus critic-feature residual)
  with L1 instead of squared residuals.

Checkpoints (``autoencoder.pt``, ``wgan.pt`` in the output directory) hold the config (so that they
rebuild their networks alone), the weights, the optimiser states, the step counters, the state of
the one random generator that draws every batch and every noise vector, the loss history and the
training metadata. A run resumed from a checkpoint continues from the saved step and ends with the
same weights as an uninterrupted run with the same seed (and the same thread count). A checkpoint is
written every ``checkpoint_every`` epochs/steps, at the end of each phase, and on Ctrl-C.

Arrays come in as numpy: stamps (N, 64, 64), cutouts (N, C, S, S) in [0, 1] (float32).
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from obsqc.models.autoencoder import DenseAutoencoder, stamp_mse
from obsqc.models.config import AutoencoderConfig, WGANConfig
from obsqc.models.refine import anomaly_losses
from obsqc.models.wgan import Critic, Encoder, Generator, build_networks

__all__ = [
    "AUTOENCODER_CHECKPOINT",
    "AutoencoderTraining",
    "CheckpointError",
    "WGANTraining",
    "WGAN_CHECKPOINT",
    "load_checkpoint",
    "rebuild_autoencoder",
    "rebuild_wgan",
    "split_heldout",
    "train_autoencoder",
    "train_wgan",
]

logger = logging.getLogger(__name__)

AUTOENCODER_CHECKPOINT = "autoencoder.pt"
"""File name of the autoencoder checkpoint inside a checkpoint directory."""
WGAN_CHECKPOINT = "wgan.pt"
"""File name of the WGAN (generator, critic, encoder) checkpoint inside a checkpoint directory."""

_SCHEDULE_FIELDS = frozenset({"epochs", "steps", "encoder_steps", "checkpoint_every"})
"""Config fields a resumed run may change (how long to train, how often to save); the rest must match."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, of another kind, or of an incompatible config."""


@dataclass
class AutoencoderTraining:
    """Result of :func:`train_autoencoder`: the model with the weights of the best validation epoch."""

    model: DenseAutoencoder
    config: AutoencoderConfig
    best_epoch: int
    best_val_loss: float
    history: dict[str, list[float]]
    checkpoint: Path | None
    seconds: float


@dataclass
class WGANTraining:
    """Result of :func:`train_wgan`: the trained generator, critic and encoder (eval mode)."""

    generator: Generator
    critic: Critic
    encoder: Encoder
    config: WGANConfig
    history: dict[str, list[float]]
    checkpoint: Path | None
    seconds: float
    steps: dict[str, int] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------- checkpoints
def _versions() -> dict[str, str]:
    import numpy

    return {"torch": str(torch.__version__), "numpy": str(numpy.__version__)}


def _save(path: Path, state: dict[str, Any]) -> None:
    """Write atomically (temporary file, then rename) so that a kill never leaves half a checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike, kind: str | None = None) -> dict[str, Any]:
    """Read a checkpoint file (or the one of ``kind`` in a directory); ``kind`` is ``"ae"`` or ``"wgan"``."""
    p = Path(path)
    if p.is_dir():
        if kind is None:
            raise CheckpointError(f"{p} is a directory: say which checkpoint (kind='ae' or 'wgan')")
        p = p / (AUTOENCODER_CHECKPOINT if kind == "ae" else WGAN_CHECKPOINT)
    if not p.is_file():
        raise CheckpointError(f"no checkpoint at {p}; train one with `obsqc train`")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same thing here
        raise CheckpointError(f"cannot read checkpoint {p}: {exc}") from exc
    if not isinstance(state, dict) or state.get("kind") not in ("ae", "wgan"):
        raise CheckpointError(f"{p} is not an obsqc checkpoint")
    if kind is not None and state["kind"] != kind:
        raise CheckpointError(f"{p} holds a {state['kind']!r} checkpoint, not {kind!r}")
    return state


def rebuild_autoencoder(checkpoint: dict[str, Any] | str | os.PathLike, *, best: bool = True) -> DenseAutoencoder:
    """The autoencoder of a checkpoint (the best-validation weights unless ``best=False``), eval mode."""
    state = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint, "ae")
    model = DenseAutoencoder(AutoencoderConfig.from_dict(state["config"]))
    weights = state["best"]["model"] if best and state["best"]["model"] is not None else state["model"]
    model.load_state_dict(weights)
    return model.eval()


def rebuild_wgan(checkpoint: dict[str, Any] | str | os.PathLike) -> tuple[Generator, Critic, Encoder, WGANConfig]:
    """(generator, critic, encoder, config) of a WGAN checkpoint, eval mode."""
    state = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint, "wgan")
    config = WGANConfig.from_dict(state["config"])
    G, C, E = build_networks(config)
    for net, name in ((G, "generator"), (C, "critic"), (E, "encoder")):
        net.load_state_dict(state["models"][name])
        net.eval()
    return G, C, E, config


def _check_resumable(state: dict[str, Any], config, path: Path) -> None:
    old = type(config).from_dict(state["config"]).to_dict()
    new = config.to_dict()
    diff = sorted(k for k in new if old.get(k) != new[k] and k not in _SCHEDULE_FIELDS)
    if diff:
        raise CheckpointError(
            f"checkpoint {path} was trained with a different config ({', '.join(diff)} differ); "
            "train with --no-resume, or write to another --out directory")


# ---------------------------------------------------------------------------------------------- helpers
def split_heldout(array: np.ndarray, fraction: float, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) rows of ``array``, a random ``fraction`` held out (at least one row if > 0)."""
    n = len(array)
    n_out = 0 if fraction <= 0 else max(1, int(round(fraction * n)))
    if n_out >= n:
        raise ValueError(f"cannot hold out {n_out} of {n} rows and still train")
    perm = np.random.default_rng(seed).permutation(n)
    return array[np.sort(perm[n_out:])], array[np.sort(perm[:n_out])]


@contextlib.contextmanager
def _threads(threads: int | None):
    """Run with ``torch.set_num_threads(threads)`` (when given), restoring the previous count after."""
    before = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


class _StopFlag:
    """Set by Ctrl-C (SIGINT) during training; the loops stop at the next step boundary and save."""

    requested = False


@contextlib.contextmanager
def _deferred_interrupt():
    """Turn Ctrl-C into a flag checked between steps, so the checkpoint written is a consistent one."""
    import signal
    import threading

    flag = _StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):  # noqa: ARG001 - signal handler signature
        if flag.requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        flag.requested = True
        logger.warning("interrupted: saving a checkpoint at the end of this step (Ctrl-C again to abort)")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def _progress(enabled: bool):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    return Progress(TextColumn("[bold]{task.description}[/]"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=Console(stderr=True), disable=not enabled)


def _as_tensor(array: np.ndarray, shape_tail: tuple[int, ...], what: str) -> torch.Tensor:
    a = np.asarray(array)
    if a.ndim != len(shape_tail) + 1 or tuple(a.shape[1:]) != shape_tail:
        raise ValueError(f"{what} have shape {a.shape}; the config expects (N, {', '.join(map(str, shape_tail))})")
    if len(a) == 0:
        raise ValueError(f"no {what} to train on")
    if not np.isfinite(a).all():
        raise ValueError(f"{what} hold NaN or infinite values; clean them before training")
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------------------ autoencoder
def train_autoencoder(stamps: np.ndarray, config: AutoencoderConfig = AutoencoderConfig(), *,
                      out_dir: str | os.PathLike | None = None, resume: bool = True, threads: int | None = None,
                      progress: bool = False, metadata: dict[str, Any] | None = None) -> AutoencoderTraining:
    """Train the dense autoencoder of section 4.2 on stamps (N, S, S); checkpoint into ``out_dir``.

    The stamps are split ~80/20 (``config.val_fraction``, seeded); each epoch runs over the training
    part in a seeded random order; the weights of the epoch with the lowest validation loss (mean
    per-stamp MSE, eq. 9) are kept and returned.
    """
    data = _as_tensor(stamps, (config.stamp_size, config.stamp_size), "stamps")
    n = len(data)
    n_val = max(1, int(round(config.val_fraction * n)))
    if n_val >= n:
        raise ValueError(f"{n} stamps are too few for a {config.val_fraction:.0%} validation split")
    perm = torch.from_numpy(np.random.default_rng(config.seed).permutation(n))
    train_x, val_x = data[perm[n_val:]], data[perm[:n_val]]

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = DenseAutoencoder(config)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    gen = torch.Generator().manual_seed(config.seed)
    state: dict[str, Any] = {
        "kind": "ae", "epoch": 0, "history": {"train_loss": [], "val_loss": []},
        "best": {"epoch": -1, "val_loss": float("inf"), "model": None},
        "meta": {**(metadata or {}), "started": _now(), "train_seconds": 0.0, "n_train": len(train_x),
                 "n_val": n_val, "versions": _versions()},
    }
    path = Path(out_dir) / AUTOENCODER_CHECKPOINT if out_dir is not None else None
    if resume and path is not None and path.is_file():
        saved = load_checkpoint(path, "ae")
        _check_resumable(saved, config, path)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        gen.set_state(saved["rng"])
        state.update(epoch=saved["epoch"], history=saved["history"], best=saved["best"],
                     meta={**saved["meta"], **(metadata or {})})
        logger.info("resuming autoencoder training from epoch %d of %s", state["epoch"], path)

    def save() -> None:
        if path is not None:
            _save(path, {**state, "config": config.to_dict(), "model": model.state_dict(),
                         "optimizer": opt.state_dict(), "rng": gen.get_state()})

    t_start = time.perf_counter()
    seconds0 = state["meta"]["train_seconds"]
    with _threads(threads) as n_threads, _progress(progress) as bar, _deferred_interrupt() as stop:
        state["meta"]["threads"] = n_threads
        task = bar.add_task("autoencoder", total=config.epochs, completed=state["epoch"], info="")
        while state["epoch"] < config.epochs:
            model.train()
            order = torch.randperm(len(train_x), generator=gen)
            total = 0.0
            for i in range(0, len(order), config.batch_size):
                batch = train_x[order[i:i + config.batch_size]]
                loss = stamp_mse(batch, model(batch)).mean()  # eq. (9), batch mean
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(batch)
            model.eval()
            with torch.no_grad():
                val = float(torch.cat([model.mse(val_x[i:i + 1024]) for i in range(0, n_val, 1024)]).mean())
            state["epoch"] += 1
            state["history"]["train_loss"].append(total / len(train_x))
            state["history"]["val_loss"].append(val)
            if val < state["best"]["val_loss"]:  # section 4.2: keep the epoch of lowest validation loss
                state["best"] = {"epoch": state["epoch"], "val_loss": val, "model": copy.deepcopy(model.state_dict())}
            state["meta"]["train_seconds"] = seconds0 + time.perf_counter() - t_start
            bar.update(task, completed=state["epoch"],
                       info=f"train {total / len(train_x):.3g} val {val:.3g} best {state['best']['val_loss']:.3g}")
            if (state["epoch"] % config.checkpoint_every == 0 or state["epoch"] == config.epochs
                    or stop.requested):
                state["meta"]["finished"] = _now()
                save()
            if stop.requested:
                raise KeyboardInterrupt
    if state["best"]["model"] is not None:
        model.load_state_dict(state["best"]["model"])
    return AutoencoderTraining(model=model.eval(), config=config, best_epoch=state["best"]["epoch"],
                               best_val_loss=state["best"]["val_loss"], history=state["history"],
                               checkpoint=path, seconds=state["meta"]["train_seconds"])


# ------------------------------------------------------------------------------------------------ WGAN
def gradient_penalty(critic: Critic, real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """E_y[(||grad_y D(y)||_2 - 1)^2] of eq. (4), y = eps x + (1 - eps) G(z) with eps ~ U(0, 1) per image."""
    y = (eps * real + (1.0 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(y).sum(), y, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1.0) ** 2).mean()


def train_wgan(images: np.ndarray, config: WGANConfig = WGANConfig(), *, out_dir: str | os.PathLike | None = None,
               resume: bool = True, threads: int | None = None, progress: bool = False,
               metadata: dict[str, Any] | None = None) -> WGANTraining:
    """Train the WGAN-GP (``config.steps`` generator iterations), then the encoder (``encoder_steps``).

    Critic loss (eq. 4, as minimised): E[D(G(z))] - E[D(x)] + lambda_GP E[(||grad D(y)|| - 1)^2];
    generator loss (eq. 3): -E[D(G(z))]; z ~ N(0, 1). Batches are drawn with replacement. Encoder loss:
    the batch mean of L_tot(x, G(E(x))) of section 3.2 (see the module docstring).
    """
    x_all = _as_tensor(images, (config.channels, config.size, config.size), "images")
    G, C, E = build_networks(config)
    opt_g = torch.optim.Adam(G.parameters(), lr=config.lr, betas=config.betas)
    opt_c = torch.optim.Adam(C.parameters(), lr=config.lr, betas=config.betas)
    opt_e = torch.optim.Adam(E.parameters(), lr=config.encoder_lr, betas=config.encoder_betas)
    gen = torch.Generator().manual_seed(config.seed)
    state: dict[str, Any] = {
        "kind": "wgan", "wgan_step": 0, "encoder_step": 0,
        "history": {"critic_loss": [], "generator_loss": [], "wasserstein": [], "gradient_penalty": [],
                    "encoder_loss": []},
        "meta": {**(metadata or {}), "started": _now(), "train_seconds": 0.0, "n_train": len(x_all),
                 "versions": _versions()},
    }
    nets = {"generator": G, "critic": C, "encoder": E}
    opts = {"generator": opt_g, "critic": opt_c, "encoder": opt_e}
    path = Path(out_dir) / WGAN_CHECKPOINT if out_dir is not None else None
    if resume and path is not None and path.is_file():
        saved = load_checkpoint(path, "wgan")
        _check_resumable(saved, config, path)
        for name in nets:
            nets[name].load_state_dict(saved["models"][name])
            opts[name].load_state_dict(saved["optimizers"][name])
        gen.set_state(saved["rng"])
        state.update(wgan_step=saved["wgan_step"], encoder_step=saved["encoder_step"], history=saved["history"],
                     meta={**saved["meta"], **(metadata or {})})
        logger.info("resuming WGAN training at step %d, encoder step %d, from %s",
                    state["wgan_step"], state["encoder_step"], path)

    def save() -> None:
        if path is not None:
            _save(path, {**state, "config": config.to_dict(),
                         "models": {k: v.state_dict() for k, v in nets.items()},
                         "optimizers": {k: v.state_dict() for k, v in opts.items()}, "rng": gen.get_state()})

    def batch() -> torch.Tensor:
        return x_all[torch.randint(len(x_all), (config.batch_size,), generator=gen)]

    def noise() -> torch.Tensor:
        return torch.randn(config.batch_size, config.latent_dim, generator=gen)

    hist = state["history"]
    t_start = time.perf_counter()
    seconds0 = state["meta"]["train_seconds"]
    with _threads(threads) as n_threads, _progress(progress) as bar, _deferred_interrupt() as stop:
        state["meta"]["threads"] = n_threads
        t_wgan = bar.add_task("WGAN-GP", total=config.steps, completed=state["wgan_step"], info="")
        t_enc = bar.add_task("encoder", total=config.encoder_steps, completed=state["encoder_step"], info="")
        G.train(), C.train(), E.train()
        while state["wgan_step"] < config.steps:
            C.requires_grad_(True)
            for _ in range(config.n_critic):  # section 3.1: 5 critic updates per generator update
                real = batch()
                with torch.no_grad():
                    fake = G(noise())
                eps = torch.rand(config.batch_size, 1, 1, 1, generator=gen)
                d_real, d_fake = C(real).mean(), C(fake).mean()
                gp = gradient_penalty(C, real, fake, eps)
                loss_c = d_fake - d_real + config.lambda_gp * gp  # eq. (4), as minimised
                opt_c.zero_grad(set_to_none=True)
                loss_c.backward()
                opt_c.step()
            C.requires_grad_(False)
            loss_g = -C(G(noise())).mean()  # eq. (3)
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            state["wgan_step"] += 1
            hist["critic_loss"].append(loss_c.item())
            hist["generator_loss"].append(loss_g.item())
            hist["wasserstein"].append((d_real - d_fake).item())
            hist["gradient_penalty"].append(gp.item())
            state["meta"]["train_seconds"] = seconds0 + time.perf_counter() - t_start
            bar.update(t_wgan, completed=state["wgan_step"], info=f"W {hist['wasserstein'][-1]:.3g} GP {gp.item():.3g}")
            if state["wgan_step"] % config.checkpoint_every == 0 or state["wgan_step"] == config.steps or stop.requested:
                save()
            if stop.requested:
                raise KeyboardInterrupt
        G.eval(), C.eval()
        C.requires_grad_(False), G.requires_grad_(False)
        try:
            while state["encoder_step"] < config.encoder_steps:
                x = batch()
                image = G(E(x))
                _, _, l_tot = anomaly_losses(x, C.features(x), image, C.features(image), config.lambda_anom)
                loss_e = l_tot.mean()  # section 3.2 L_tot of G(E(x)), batch mean
                opt_e.zero_grad(set_to_none=True)
                loss_e.backward()
                opt_e.step()
                state["encoder_step"] += 1
                hist["encoder_loss"].append(loss_e.item())
                state["meta"]["train_seconds"] = seconds0 + time.perf_counter() - t_start
                bar.update(t_enc, completed=state["encoder_step"], info=f"L_tot {loss_e.item():.4g}")
                if (state["encoder_step"] % config.checkpoint_every == 0
                        or state["encoder_step"] == config.encoder_steps or stop.requested):
                    save()
                if stop.requested:
                    raise KeyboardInterrupt
        finally:
            G.requires_grad_(True), C.requires_grad_(True)
    state["meta"]["finished"] = _now()
    save()
    for net in nets.values():
        net.eval()
    return WGANTraining(generator=G, critic=C, encoder=E, config=config, history=hist, checkpoint=path,
                        seconds=state["meta"]["train_seconds"],
                        steps={"wgan": state["wgan_step"], "encoder": state["encoder_step"]})

