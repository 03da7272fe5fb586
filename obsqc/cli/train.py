"""``obsqc train ae|wgan``: train the learned scorers (needs torch: ``pip install obsqc[train]``).

    obsqc train ae   --out ckpt/ --preset small --data sim --n 10000 --epochs 150 --threads 2
    obsqc train wgan --out ckpt/ --preset small --data mixed --steps 3000 --threads 2

Checkpoints go to OUT (``autoencoder.pt``, ``wgan.pt``) every few epochs/steps and on Ctrl-C; running
the same command again resumes where it stopped (``--no-resume`` starts over). A fraction of the data
(``--heldout``) is never trained on and is saved next to the checkpoints (``heldout_stamps.npy``,
``heldout_images.npy``), for ``obsqc export`` to compute the reference score distributions.
torch, the simulator and GalSim are imported inside the command, so ``obsqc --help`` stays fast.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

DATA_SOURCES: tuple[str, ...] = ("sim", "hubble", "mixed")
"""Named training-data sources; anything else is read as a .npy file."""
HELDOUT_FILES = {"ae": "heldout_stamps.npy", "wgan": "heldout_images.npy"}
"""Held-out normal inputs saved next to the checkpoints, per model kind."""
DEFAULT_N = {"ae": 10_000, "wgan": 10_000}
"""Examples simulated when --n is not given (Alonso et al. section 4.2 used 10,000 stamps)."""


class Kind(str, Enum):
    """Which model to train."""

    ae = "ae"
    wgan = "wgan"


class PresetName(str, Enum):
    """Named configuration (obsqc.models.config)."""

    small = "small"
    paper = "paper"


def bands_for(channels: int) -> tuple[str, ...]:
    """Bands of a cutout with ``channels`` channels: r alone, or g, r, i (Storey-Fisher et al. section 2.2)."""
    return ("r",) if channels == 1 else ("g", "r", "i")


def build_data(kind: str, source: str, *, n: int, seed: int, size: int = 64, channels: int = 1,
               stamp_size: int = 64):
    """Training arrays: stamps (N, 64, 64) for ``ae``, cutouts (N, C, S, S) in [0, 1] for ``wgan``.

    ``sim``: simulated (GalSim) exposures' stamps or galaxies; ``hubble``: galaxies cut from
    scikit-image's Hubble Deep Field (wgan only); ``mixed``: both; anything else: a .npy file.
    """
    import numpy as np

    if source not in DATA_SOURCES:
        path = Path(source)
        if not path.is_file():
            raise typer.BadParameter(f"{source!r} is neither {', '.join(DATA_SOURCES)} nor an existing .npy file",
                                     param_hint="--data")
        arr = np.load(path, allow_pickle=False)
        want = (stamp_size, stamp_size) if kind == "ae" else (channels, size, size)
        if arr.ndim != len(want) + 1 or tuple(arr.shape[1:]) != want:
            raise typer.BadParameter(f"{path} holds {arr.shape}; {kind} needs (N, {', '.join(map(str, want))})",
                                     param_hint="--data")
        return arr.astype(np.float32, copy=False)
    if kind == "ae":
        if source != "sim":
            raise typer.BadParameter("the autoencoder trains on source stamps of exposures: use sim or a .npy file",
                                     param_hint="--data")
        from obsqc.sim.galaxies import source_stamps_from_simulation

        return source_stamps_from_simulation(n, seed=seed)
    parts = []
    if source in ("sim", "mixed"):
        from obsqc.sim.galaxies import galaxy_images

        parts.append(galaxy_images(n, size=size, bands=bands_for(channels), seed=seed))
    if source in ("hubble", "mixed"):
        from obsqc.sim.hubble import hubble_cutouts

        parts.append(hubble_cutouts(size=size, bands=bands_for(channels), augment=True))
    return np.concatenate(parts).astype(np.float32, copy=False)


def parse_overrides(config, items: list[str]) -> dict:
    """``["key=value", ...]`` -> typed overrides of ``config``'s fields (tuples as comma lists)."""
    import dataclasses

    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in fields:
            raise typer.BadParameter(f"{item!r}: expected KEY=VALUE with KEY one of {', '.join(sorted(fields))}",
                                     param_hint="--set")
        default = fields[key]
        try:
            if isinstance(default, tuple):
                kind = type(default[0]) if default else float
                out[key] = tuple(kind(v) for v in raw.split(",") if v.strip())
            elif isinstance(default, bool):
                out[key] = raw.strip().lower() in ("1", "true", "yes")
            else:
                out[key] = type(default)(raw)
        except ValueError as exc:
            raise typer.BadParameter(f"{item!r}: {exc}", param_hint="--set") from exc
    return out


def train(
    kind: Kind = typer.Argument(..., help="ae: source-stamp autoencoder; wgan: WGAN-GP galaxy scorer + encoder."),
    out: Path = typer.Option(..., "--out", help="Checkpoint directory (created if missing).", file_okay=False),
    preset: PresetName = typer.Option(PresetName.small, "--preset", help="small (CPU, default weights) or paper."),
    data: str = typer.Option("sim", "--data",
                             help="sim, hubble (wgan), mixed (wgan: N simulated plus all Hubble cutouts) or FILE.npy."),
    n: int | None = typer.Option(None, "--n", min=2, help="Examples to simulate (sim, mixed); default 10000."),
    steps: int | None = typer.Option(None, "--steps", min=0,
                                     help="wgan: generator iterations (default: the preset's)."),
    encoder_steps: int | None = typer.Option(None, "--encoder-steps", min=0,
                                             help="wgan: encoder steps (default: the preset's)."),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="ae: epochs (default: the preset's)."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue from a checkpoint in OUT."),
    seed: int = typer.Option(0, "--seed", help="Seed of the weights, the batches and the simulated data."),
    threads: int = typer.Option(2, "--threads", min=1, help="torch threads (torch.set_num_threads)."),
    heldout: float = typer.Option(0.1, "--heldout", min=0.0, max=0.5,
                                  help="Fraction of the data held out for the export's score reference."),
    checkpoint_every: int | None = typer.Option(None, "--checkpoint-every", min=1,
                                                help="Checkpoint every N epochs (ae) / steps (wgan) "
                                                     "(default: the preset's)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    set_: list[str] = typer.Option([], "--set", metavar="KEY=VALUE",
                                   help="Override a config field, e.g. --set base_channels=16 (repeatable)."),
) -> None:
    """Train a learned scorer from simulated or real data, with checkpoints; resumable."""
    import time

    import numpy as np
    from rich.console import Console

    from obsqc.models.config import preset as get_preset
    from obsqc.models.train import CheckpointError, split_heldout, train_autoencoder, train_wgan

    console = Console(stderr=True)
    k = kind.value
    if k == "ae" and (steps is not None or encoder_steps is not None):
        raise typer.BadParameter("the autoencoder trains for --epochs, not --steps", param_hint="--steps")
    if k == "wgan" and epochs is not None:
        raise typer.BadParameter("the WGAN trains for --steps (generator iterations), not --epochs",
                                 param_hint="--epochs")
    overrides = {"seed": seed}
    for name, value in (("epochs", epochs), ("steps", steps), ("encoder_steps", encoder_steps),
                        ("checkpoint_every", checkpoint_every)):
        if value is not None:
            overrides[name] = value
    base = get_preset(k, preset.value)
    explicit = dict(overrides)
    overrides.update(parse_overrides(base, set_))
    try:
        config = base.replace(**overrides)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--set") from exc
    n_data = n or DEFAULT_N[k]

    t0 = time.perf_counter()
    with console.status(f"building {k} training data ({data})"):
        if k == "ae":
            arrays = build_data(k, data, n=n_data, seed=seed, stamp_size=config.stamp_size)
        else:
            arrays = build_data(k, data, n=n_data, seed=seed, size=config.size, channels=config.channels)
    train_part, held = split_heldout(arrays, heldout, seed=seed + 1)
    out.mkdir(parents=True, exist_ok=True)
    if len(held):
        np.save(out / HELDOUT_FILES[k], held)
    console.print(f"{len(arrays)} {'stamps' if k == 'ae' else 'cutouts'} of shape {arrays.shape[1:]} "
                  f"({time.perf_counter() - t0:.1f} s): {len(train_part)} to train on, {len(held)} held out")

    command = [f"obsqc train {k}", f"--preset {preset.value}", f"--data {data}", f"--n {n_data}", f"--seed {seed}",
               f"--threads {threads}", f"--heldout {heldout}"]
    command += [f"--{name.replace('_', '-')} {value}" for name, value in explicit.items() if name != "seed"]
    command += [f"--set {item}" for item in set_]
    metadata = {"command": " ".join(command), "preset": preset.value,
                "data": {"source": data, "n": int(len(arrays)), "n_train": int(len(train_part)),
                         "n_heldout": int(len(held)), "seed": seed}}
    trainer = train_autoencoder if k == "ae" else train_wgan
    try:
        result = trainer(train_part, config, out_dir=out, resume=resume, threads=threads, progress=progress,
                         metadata=metadata)
    except CheckpointError as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(2) from exc
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted[/yellow]: checkpoint saved in {out}; run the same command to resume")
        raise typer.Exit(130) from None
    if k == "ae":
        console.print(f"autoencoder: best validation MSE {result.best_val_loss:.4g} at epoch {result.best_epoch} "
                      f"of {config.epochs}; {result.seconds:.0f} s of training; checkpoint {result.checkpoint}")
    else:
        w = result.history["wasserstein"][-1] if result.history["wasserstein"] else float("nan")
        e = result.history["encoder_loss"][-1] if result.history["encoder_loss"] else float("nan")
        console.print(f"WGAN-GP: {result.steps['wgan']} generator steps (last W estimate {w:.4g}), encoder "
                      f"{result.steps['encoder']} steps (last L_tot {e:.4g}); {result.seconds:.0f} s of training; "
                      f"checkpoint {result.checkpoint}")
    console.print(f"next: obsqc export {out} --out MODEL_DIR")


def register(app: typer.Typer) -> None:
    """Add ``train`` to the CLI."""
    app.command("train")(train)
