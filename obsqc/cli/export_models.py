"""``obsqc export CHECKPOINT_DIR --out DIR``: write the ONNX models and model.json the service loads.

    obsqc export ckpt/ --out obsqc/models/weights

Exports whichever of ``autoencoder.pt`` and ``wgan.pt`` the checkpoint directory holds (to
``autoencoder.onnx`` and ``galaxy_scorer.onnx``, the latter with the latent refinement inside the
graph), checks each against torch, and computes the reference mean/std of every score over the
held-out normal inputs that ``obsqc train`` saved (or over ``--reference-data``). Needs torch.
"""

from __future__ import annotations

from pathlib import Path

import typer


def export(
    checkpoint_dir: Path = typer.Argument(..., help="Directory written by `obsqc train`.", exists=True,
                                          file_okay=False),
    out: Path = typer.Option(..., "--out", help="Model directory to write (created if missing).", file_okay=False),
    reference_data: str | None = typer.Option(
        None, "--reference-data",
        help="Normal inputs for the score reference instead of the saved held-out set: sim, hubble, mixed or "
             "FILE.npy (wgan; ae takes sim or a .npy of stamps)."),
    n_reference: int = typer.Option(1000, "--n-reference", min=2, help="Examples simulated for --reference-data."),
    seed: int = typer.Option(12345, "--seed", help="Seed of simulated --reference-data (keep it off the training seed)."),
    threads: int = typer.Option(1, "--threads", min=1, help="onnxruntime threads for the reference scores."),
) -> None:
    """Export trained checkpoints to ONNX (refinement inside the galaxy scorer) plus model.json."""
    import json

    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from obsqc.cli.train import HELDOUT_FILES, build_data
    from obsqc.models.export import ExportError, export_models
    from obsqc.models.train import CheckpointError, load_checkpoint

    console = Console(stderr=True)
    held: dict[str, np.ndarray | None] = {}
    for kind in ("ae", "wgan"):
        ckpt = checkpoint_dir / ("autoencoder.pt" if kind == "ae" else "wgan.pt")
        held[kind] = None
        if not ckpt.is_file():
            continue
        if reference_data is not None:
            config = load_checkpoint(ckpt)["config"]
            if kind == "ae":
                held[kind] = build_data(kind, reference_data, n=n_reference, seed=seed,
                                        stamp_size=config["stamp_size"])
            else:
                held[kind] = build_data(kind, reference_data, n=n_reference, seed=seed, size=config["size"],
                                        channels=config["channels"])
        elif (checkpoint_dir / HELDOUT_FILES[kind]).is_file():
            held[kind] = np.load(checkpoint_dir / HELDOUT_FILES[kind], allow_pickle=False)
        else:
            console.print(f"[yellow]no {HELDOUT_FILES[kind]} in {checkpoint_dir} and no --reference-data: the "
                          f"{kind} score reference stays empty[/yellow]")
    command = f"obsqc export {checkpoint_dir} --out {out}" + (
        f" --reference-data {reference_data} --n-reference {n_reference} --seed {seed}" if reference_data else "")
    try:
        with console.status("exporting to ONNX and checking against torch"):
            meta = export_models(checkpoint_dir, out, heldout_stamps=held["ae"], heldout_images=held["wgan"],
                                 threads=threads, command=command)
    except (ExportError, CheckpointError) as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(1) from exc

    table = Table(title=f"exported to {out}")
    for col in ("model", "file", "MB", "reference (mean ± std)", "n"):
        table.add_column(col)
    total = 0
    for key in ("autoencoder", "galaxy_scorer"):
        entry = meta.get(key)
        if entry is None:
            continue
        size = (out / entry["file"]).stat().st_size
        total += size
        ref = ", ".join(f"{name} {m:.4g} ± {s:.2g}" for name, (m, s) in entry["reference"].items()) or "-"
        table.add_row(key, entry["file"], f"{size / 1e6:.2f}", ref, str(entry["n_reference"]))
    Console().print(table)
    console.print(f"total {total / 1e6:.2f} MB; metadata {out / 'model.json'}")
    typer.echo(json.dumps({"out": str(out), "models": [k for k in ("autoencoder", "galaxy_scorer") if k in meta],
                           "bytes": total}))


def register(app: typer.Typer) -> None:
    """Add ``export`` to the CLI."""
    app.command("export")(export)
