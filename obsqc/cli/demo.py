"""``obsqc demo``: simulate a small night of exposures (normal and spoiled), rank them, draw plots."""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

import typer


SHORT_FLAG = {
    "source_orientation": "orient", "source_profile": "profile", "background_gradient": "bkg",
    "background_large_scale": "large", "linear_feature": "line",
}
"""Flag names as the demo table's column headers spell them (``obsqc rank`` prints the full names)."""


def demo(
    out: Path = typer.Option(Path("demo-night"), "--out", help="Folder for the simulated night, plots and results."),
    n: int = typer.Option(24, "--n", help="Exposures to simulate."),
    anomaly_fraction: float = typer.Option(0.3, "--anomaly-fraction", help="Fraction of spoiled exposures."),
    seed: int = typer.Option(2026, "--seed", help="Random seed of the night."),
    size: str = typer.Option("small", "--size", help="Exposure size preset (tiny, small, eval, decam)."),
) -> None:
    """Simulate a night, rank it with the Entropy Method, and show how the spoiled exposures rank."""
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from obsqc.detectors.warmup import warm_up
    from obsqc.service.plots import plot_exposure
    from obsqc.service.rank import rank_files
    from obsqc.sim import simulate_night

    console = Console(width=None if sys.stdout.isatty() else 120)
    t0 = time.perf_counter()
    jit_s = warm_up()
    console.print(f"numba kernels ready in {jit_s:.1f} s (compiled once, then loaded from the on-disk cache)")
    files_dir = out / "exposures"
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"simulating {n} exposures", total=n)
        simulate_night(files_dir, n=n, anomaly_fraction=anomaly_fraction, seed=seed, size=size,
                       progress=lambda *_: progress.advance(task))
    truth = {}
    with open(files_dir / "labels.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            truth[Path(row["file"]).name] = (row["anomaly"], row["strength"])
    files = sorted(files_dir.glob("*.fits"))
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("measuring and ranking", total=len(files))
        result = rank_files([str(f) for f in files], threads=2, on_progress=lambda _p: progress.advance(task))

    table = Table(title=f"{len(files)} simulated exposures ranked by anomaly significance (σ per indicator)")
    for col in ("rank", "exposure", "sources", "orient", "profile", "bkg", "large", "line", "flags", "truth"):
        table.add_column(col, justify="left" if col in ("exposure", "flags", "truth") else "right", overflow="fold")
    for rec in result.records:
        s = rec.score
        anomaly, strength = truth.get(Path(rec.file).name, ("?", "?"))
        label = "normal" if anomaly == "none" else f"{anomaly} ({strength})"
        sig = [f"{getattr(s, name).sigma:.1f}" for name in ("source", "profile", "background", "large_scale", "line")]
        flags = ", ".join(SHORT_FLAG.get(f, f) for f in rec.flags) or "ok"
        table.add_row(str(rec.rank), s.exposure_id, str(s.n_sources), *sig, flags, label,
                      style="bold red" if rec.flags else None)
    console.print(table)
    console.print("σ columns: orient = source orientation (paper eq. 1-5), profile = source peak offset, "
                  "bkg = background gradients (paper eq. 6-8), large = large-scale gradients, line = straight lines")
    plots_dir = out / "plots"
    written = [plot_exposure(r, result.reference, plots_dir) for r in result.records if r.flags]
    n_bad = sum(1 for a, _ in truth.values() if a != "none")
    top = result.records[:n_bad]
    hits = sum(1 for r in top if truth.get(Path(r.file).name, ("none",))[0] != "none")
    console.print(
        f"{hits} of the {n_bad} spoiled exposures rank in the top {n_bad}; "
        f"{sum(1 for r in result.records if r.flags)} flagged above the threshold."
    )
    console.print(f"plots of flagged exposures: {plots_dir} ({len(written)} PNG); files: {files_dir}")
    console.print(f"done in {time.perf_counter() - t0:.0f} s")


def register(app: typer.Typer) -> None:
    """Add ``demo`` to the CLI."""
    app.command("demo")(demo)
