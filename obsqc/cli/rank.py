"""``obsqc rank``: the paper's batch mode, and ``obsqc sources``: the per-source catalogue."""

from __future__ import annotations

import csv
import json
import sys
from enum import Enum
from pathlib import Path

import typer


class Format(str, Enum):
    table = "table"
    jsonl = "jsonl"
    csv = "csv"


CSV_FIELDS = (
    "rank", "exposure_id", "source_kl", "background_kl", "n_sources", "source_sigma", "background_sigma",
    "profile_kl", "profile_sigma", "large_scale_kl", "large_scale_sigma", "line_z", "line_sigma", "source_kl_corrected", "background_kl_corrected", "anomaly_sigma", "flags", "worst_ccds", "instrument", "band", "n_ccds", "file",
)
SOURCE_FIELDS = ("ccd", "x", "y", "flux", "q_xx", "q_yy", "q_xy", "e1", "e2", "theta_deg", "peak", "n_pix", "flags")


def rank(
    files: list[Path] = typer.Argument(..., help="FITS exposures (multi-extension, one HDU per CCD)."),
    fmt: Format = typer.Option(Format.table, "--format", "-f", help="Output format."),
    plots: Path | None = typer.Option(None, "--plots", help="Write a PNG per flagged exposure into this folder."),
    reference: Path | None = typer.Option(None, "--reference", help="Score against a reference saved earlier."),
    save_reference: Path | None = typer.Option(None, "--save-reference", help="Save the reference used as JSON."),
    flag_sigma: float = typer.Option(4.0, "--flag-sigma", help="Flag exposures above this significance [sigma]."),
    threads: int = typer.Option(2, "--threads", help="CCDs measured in parallel."),
    top: int = typer.Option(0, "--top", help="Table format: show only the N most anomalous (0 = all)."),
) -> None:
    """Rank exposures by how anomalous they look (Alonso, Zhang & Li's Entropy Method)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import Progress

    from obsqc.detectors.scoring import Reference
    from obsqc.detectors.warmup import warm_up
    from obsqc.service.rank import rank_files

    err = Console(stderr=True)
    warm_up()
    ref = None
    if reference is not None:
        try:
            ref = Reference.from_json(reference.read_text())
        except (OSError, ValueError) as exc:
            err.print(f"[red]cannot read reference {escape(str(reference))}: {escape(str(exc))}[/red]")
            raise typer.Exit(2) from exc
    with Progress(console=err, transient=True, disable=not err.is_terminal) as progress:
        task = progress.add_task("measuring", total=len(files))
        result = rank_files(
            [str(f) for f in files], reference=ref, threads=threads, flag_sigma=flag_sigma,
            on_progress=lambda _p: progress.advance(task),
        )
    for f in result.failures:
        err.print(f"[yellow]skipped ({escape(f.reason)}): {escape(f.message)}[/yellow]", soft_wrap=True)
    if save_reference is not None and result.reference is not None:
        save_reference.write_text(result.reference.to_json())
    rows = [r.to_dict() for r in result.records]
    if fmt is Format.jsonl:
        for row in rows:
            sys.stdout.write(json.dumps(row) + "\n")
    elif fmt is Format.csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            row = dict(row, flags=";".join(row["flags"]), worst_ccds=";".join(c["ccd"] for c in row["worst_ccds"]))
            writer.writerow(row)
    else:
        _print_table(rows[: top or None], Console())
    if plots is not None and result.reference is not None:
        from obsqc.service.plots import plot_exposure

        written = [plot_exposure(r, result.reference, plots) for r in result.records if r.flags]
        err.print(f"wrote {len(written)} plot(s) of flagged exposures to {plots}")
    if not result.records and result.failures:
        raise typer.Exit(1)


def _print_table(rows: list[dict], console) -> None:
    from rich.table import Table

    table = Table(title="exposures ranked by anomaly significance")
    for col, just in (("rank", "right"), ("exposure", "left"), ("sources", "right"), ("source KL", "right"),
                      ("source σ", "right"), ("profile σ", "right"), ("bkg KL", "right"), ("bkg σ", "right"),
                      ("large σ", "right"), ("line σ", "right"), ("flags", "left"),
                      ("worst CCDs", "left")):
        table.add_column(col, justify=just, overflow="fold", min_width=22 if col == "flags" else None)

    def fmt(v, spec):
        return "-" if v is None else format(v, spec)

    for r in rows:
        style = "bold red" if r["flags"] else None
        worst = ", ".join(f"{c['ccd']} {fmt(c['background_sigma'], '.0f')}σ" for c in r["worst_ccds"][:2])
        table.add_row(
            str(r["rank"]), r["exposure_id"], str(r["n_sources"]), fmt(r["source_kl"], ".4f"), fmt(r["source_sigma"], ".1f"), fmt(r["profile_sigma"], ".1f"),
            fmt(r["background_kl"], ".4f"), fmt(r["background_sigma"], ".1f"), fmt(r["large_scale_sigma"], ".1f"),
            fmt(r["line_sigma"], ".1f"), "\n".join(r["flags"]) or "ok", worst,
            style=style,
        )
    console.print(table)


def sources(
    file: Path = typer.Argument(..., help="A FITS exposure."),
    fmt: Format = typer.Option(Format.jsonl, "--format", "-f", help="jsonl or csv (table prints jsonl)."),
    all_sources: bool = typer.Option(False, "--all", help="Include flagged sources (edge, saturated, sharp)."),
) -> None:
    """Print the per-source catalogue the detectors measured (x = column, 0-based; theta from +x, CCW)."""
    import numpy as np

    from obsqc.detectors.sources import usable
    from obsqc.detectors.warmup import warm_up
    from obsqc.service.errors import ObsQCError
    from obsqc.service.measure import measure_file

    warm_up()
    try:
        measured = measure_file(str(file), id_from_filename=True, threads=2)
    except ObsQCError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    writer = None
    if fmt is Format.csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=SOURCE_FIELDS)
        writer.writeheader()
    for ccd in measured.stats.ccds:
        cat = ccd.sources if all_sources else usable(ccd.sources)
        for s in cat:
            row = {
                "ccd": ccd.name, "x": round(float(s["x"]), 4), "y": round(float(s["y"]), 4),
                "flux": round(float(s["flux"]), 4), "q_xx": round(float(s["q_xx"]), 6), "q_yy": round(float(s["q_yy"]), 6),
                "q_xy": round(float(s["q_xy"]), 6), "e1": round(float(s["e1"]), 6), "e2": round(float(s["e2"]), 6),
                "theta_deg": round(float(np.rad2deg(s["theta_rad"])), 4), "peak": round(float(s["peak"]), 4),
                "n_pix": int(s["n_pix"]), "flags": int(s["flags"]),
            }
            if writer is not None:
                writer.writerow(row)
            else:
                sys.stdout.write(json.dumps(row) + "\n")


def register(app: typer.Typer) -> None:
    """Add ``rank`` and ``sources`` to the CLI."""
    app.command("rank")(rank)
    app.command("sources")(sources)
