"""``obsqc up``: everything on one machine (Redis, SQLite, the API, workers, a simulated telescope)."""

from __future__ import annotations

import typer


def up(
    host: str = typer.Option("127.0.0.1", "--host", help="Address of the API."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="Port of the API."),
    workers: int = typer.Option(2, "--workers", "-n", min=1, help="Worker processes."),
    simulate: bool = typer.Option(True, "--simulate/--no-simulate", help="Run the simulated telescope."),
    interval: float = typer.Option(5.0, "--interval", min=0.5, help="Seconds between simulated exposures."),
    size: str = typer.Option("small", "--size", help="Simulated exposure size (tiny, small, eval, decam)."),
) -> None:
    """Start the whole service on this machine and stop it cleanly on Ctrl-C.

    State lives under OBSQC_HOME (default ~/.obsqc): the SQLite verdict store, the embedded Redis and
    its append-only file, the API token, the plots. With OBSQC_REDIS_URL or OBSQC_DATABASE_URL set,
    those are used instead of the embedded ones.
    """
    from obsqc.service.settings import Settings
    from obsqc.service.up import run_up

    def log(line: str) -> None:
        typer.echo(line)

    raise typer.Exit(run_up(Settings(), host=host, port=port, workers=workers, simulate=simulate,
                            interval_s=interval, size=size, log=log))


def register(app: typer.Typer) -> None:
    """Add ``up`` to the CLI."""
    app.command("up")(up)
