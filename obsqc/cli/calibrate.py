"""``obsqc calibrate FILES...``: seed the references of the service from an archive of normal exposures."""

from __future__ import annotations

from pathlib import Path

import typer


def calibrate(
    files: list[Path] = typer.Argument(..., help="FITS exposures judged normal (an archive night, a survey sample)."),
    threads: int = typer.Option(2, "--threads", help="Threads per exposure (one CCD each)."),
) -> None:
    """Measure FILES and add them to the reference of their instrument and band, then rebuild each
    reference robustly (members that stand out from the rest are left out and listed).

    Writes to the verdict store of OBSQC_DATABASE_URL (default: SQLite under OBSQC_HOME), which the
    workers read; until a reference holds OBSQC_MIN_REFERENCE_EXPOSURES members, verdicts are
    'calibrating'.
    """
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from obsqc.detectors.warmup import warm_up
    from obsqc.service.calibration import calibrate_files
    from obsqc.service.settings import Settings
    from obsqc.service.store import make_engine, make_sessionmaker, upgrade

    console = Console()
    settings = Settings()
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    warm_up()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"measuring {len(files)} exposures", total=len(files))
        run = calibrate_files(files, make_sessionmaker(engine), window=settings.reference_window,
                              warn_sigma=settings.warn_sigma, threads=threads,
                              on_progress=lambda _p: progress.advance(task))
    engine.dispose()
    table = Table(title="references")
    for col in ("instrument", "band", "new members", "used", "left out", "state"):
        table.add_column(col)
    for (instrument, band), report in sorted(run.reports.items()):
        ready = report.n_used >= settings.min_reference_exposures
        table.add_row(instrument, band, str(run.added[(instrument, band)]), str(report.n_used),
                      ", ".join(report.rejected) or "-",
                      "ready" if ready else f"calibrating ({report.n_used}/{settings.min_reference_exposures})")
    console.print(table)
    for path, reason, message in run.failures:
        console.print(f"[red]skipped[/red] {path}: {reason}: {message}")
    if run.failures and not run.reports:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``calibrate`` to the CLI."""
    app.command("calibrate")(calibrate)
