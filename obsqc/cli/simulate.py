"""``obsqc simulate``: write a night of simulated exposures and their labels.

    obsqc simulate --n 50 --anomaly-fraction 0.2 --seed 1 --size small [--compress] [--dtype int16] OUT/

The simulator (and GalSim) is imported inside the command, so ``obsqc --help`` stays fast.
"""

from __future__ import annotations

import time
from enum import Enum
from pathlib import Path

import typer

SIZE_CHOICES: tuple[str, ...] = ("tiny", "small", "eval", "decam")
"""Size presets offered on the command line (the keys of ``obsqc.sim.SIZE_PRESETS``)."""


class Size(str, Enum):
    """Size preset of the simulated camera."""

    tiny = "tiny"
    small = "small"
    eval = "eval"
    decam = "decam"


class DType(str, Enum):
    """Pixel type written to the FITS files."""

    float32 = "float32"
    int16 = "int16"


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024.0
    return f"{n:.1f} GiB"  # pragma: no cover


def register(app: typer.Typer) -> None:
    """Add the ``simulate`` command to ``app``."""

    @app.command("simulate")
    def simulate(
        out: Path = typer.Argument(..., help="Output directory (created if missing).", file_okay=False),
        n: int = typer.Option(20, "--n", min=0, help="Number of exposures."),
        anomaly_fraction: float = typer.Option(
            0.2, "--anomaly-fraction", min=0.0, max=1.0,
            help="Fraction of anomalous exposures (classes spread evenly, half subtle, half prominent)."),
        seed: int = typer.Option(0, "--seed", help="Seed of the night; same seed, same files."),
        size: Size = typer.Option(Size.small, "--size", help="Camera size preset."),
        compress: bool = typer.Option(False, "--compress",
                                      help="Write tile-compressed (RICE_1) CCD extensions."),
        dtype: DType = typer.Option(DType.float32, "--dtype",
                                    help="float32, or int16 = unsigned 16-bit (BZERO=32768)."),
        workers: int = typer.Option(1, "--workers", min=1, help="Processes simulating in parallel."),
        band: str = typer.Option("r", "--band", help="Filter: g, r, i or z."),
        first_id: int = typer.Option(1, "--first-id", min=0, help="Exposure number of the first exposure."),
    ) -> None:
        """Simulate a night of exposures: FITS files (exp_NNNNNN.fits) plus labels.csv with the truth."""
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
            TimeRemainingColumn
        from rich.table import Table

        from obsqc.sim import BANDS, simulate_night

        console = Console()
        if band not in BANDS:
            raise typer.BadParameter(f"unknown band {band!r}; choose one of {', '.join(sorted(BANDS))}",
                                     param_hint="--band")
        t0 = time.perf_counter()
        with Progress(TextColumn("[bold]simulate[/]"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[last]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                      console=console, transient=False) as progress:
            task = progress.add_task("simulate", total=n, last="")

            def advance(label) -> None:
                what = label.anomaly if label.anomaly == "none" else f"{label.anomaly} ({label.strength})"
                progress.update(task, advance=1, last=f"{label.file}: {what}")

            labels = simulate_night(out, n=n, anomaly_fraction=anomaly_fraction, seed=seed, size=size.value,
                                    dtype=dtype.value, compress=compress, progress=advance, workers=workers,
                                    band=band, first_exposure_id=first_id)
        elapsed = time.perf_counter() - t0

        counts: dict[tuple[str, str], int] = {}
        for lab in labels:
            counts[(lab.anomaly, lab.strength)] = counts.get((lab.anomaly, lab.strength), 0) + 1
        table = Table(title=f"{len(labels)} exposures in {out}")
        table.add_column("anomaly")
        table.add_column("strength")
        table.add_column("exposures", justify="right")
        for (anom, strength), c in sorted(counts.items(), key=lambda kv: (kv[0][0] != "none", kv[0])):
            table.add_row(anom, strength, str(c))
        console.print(table)
        size_bytes = sum((out / lab.file).stat().st_size for lab in labels)
        per = elapsed / max(1, len(labels))
        console.print(f"size preset [bold]{size.value}[/], {dtype.value}{', RICE_1' if compress else ''}; "
                      f"{_human_bytes(size_bytes)} written; {elapsed:.1f} s ({per:.2f} s per exposure); "
                      f"labels: {out / 'labels.csv'}")
