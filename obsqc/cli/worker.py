"""``obsqc worker``: run N workers on the ``qc`` (or ``gpu``) queue of the service's Redis."""

from __future__ import annotations

import sys

import typer


def worker(
    workers: int = typer.Option(1, "--workers", "-n", min=1, help="Worker processes (one per core is usual)."),
    burst: bool = typer.Option(False, "--burst", help="Stop when the queue is empty (batch runs, tests)."),
    log_level: str = typer.Option("INFO", "--log-level", help="Log level of the workers (DEBUG, INFO, WARNING)."),
    queue: str = typer.Option("qc", "--queue", "-q",
                              help="qc: judge exposures (CPU); gpu: score galaxies with the WGAN (GPU when present)."),
) -> None:
    """Judge queued exposures: each worker warms the numba kernels, then takes jobs until SIGTERM.

    Needs OBSQC_REDIS_URL (the Redis of `obsqc up` or of a deployment) and OBSQC_DATABASE_URL (or the
    default SQLite under OBSQC_HOME, which only works on the machine that runs the API).
    """
    from obsqc.service.lifecycle import follow_parent_from_env
    from obsqc.service.settings import Settings
    from obsqc.service.worker import run_workers

    follow_parent_from_env()  # started by obsqc up: stop (gracefully) when it dies
    settings = Settings()
    if queue not in ("qc", "gpu"):
        typer.echo(f"error: --queue must be qc or gpu, not {queue!r}", err=True)
        raise typer.Exit(2)
    if settings.redis_url is None:
        typer.echo("error: set OBSQC_REDIS_URL to the Redis of the service (e.g. redis://host:6379/0)", err=True)
        raise typer.Exit(2)

    def ready(n: int, jit_s: float) -> None:
        warmed = f"numba kernels loaded in {jit_s:.1f} s" if queue == "qc" else "galaxy scoring"
        typer.echo(f"{n} worker(s) ready ({warmed}); queue {queue!r} on {settings.redis_url}")
        sys.stdout.flush()

    raise typer.Exit(run_workers(settings, workers, burst=burst, log_level=log_level.upper(), on_ready=ready,
                                 queue_name=queue))


def register(app: typer.Typer) -> None:
    """Add ``worker`` to the CLI."""
    app.command("worker")(worker)
