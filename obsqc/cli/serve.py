"""``obsqc serve``: the HTTP API (FastAPI under uvicorn), migrating the database first."""

from __future__ import annotations

import logging

import typer


def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="TCP port to listen on."),
    log_level: str = typer.Option("INFO", "--log-level", help="Log level (DEBUG, INFO, WARNING)."),
) -> None:
    """Serve the REST API: POST/GET /v1/exposures, /healthz, /readyz, /metrics, OpenAPI at /docs.

    Needs OBSQC_REDIS_URL (the workers' Redis); writes need OBSQC_API_TOKEN; paths may be submitted
    from under OBSQC_DATA_ROOTS. The database (OBSQC_DATABASE_URL) is migrated at start-up.
    """
    import uvicorn
    from sqlalchemy.engine import make_url

    from obsqc.service.api import create_app
    from obsqc.service.lifecycle import follow_parent_from_env
    from obsqc.service.settings import Settings

    follow_parent_from_env()  # started by obsqc up: stop when it dies
    settings = Settings()
    if settings.redis_url is None:
        typer.echo("error: set OBSQC_REDIS_URL to the Redis of the workers (e.g. redis://host:6379/0), "
                   "or run `obsqc up`", err=True)
        raise typer.Exit(2)
    level = log_level.upper()
    logging.getLogger("obsqc").setLevel(level)
    shown_host = f"[{host}]" if ":" in host else host
    typer.echo(f"obsqc API on http://{shown_host}:{port} (OpenAPI at /docs); database "
               f"{make_url(settings.database_url).render_as_string(hide_password=True)}", err=True)
    if settings.api_token is None:
        typer.echo("warning: OBSQC_API_TOKEN is not set, so every write (POST) is refused", err=True)
    uvicorn.run(create_app(settings), host=host, port=port, log_level=level.lower(), ws="none")


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the CLI."""
    app.command("serve")(serve)
