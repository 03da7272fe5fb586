"""``obsqc db upgrade``: migrate the verdict store (the API also does it at start-up)."""

from __future__ import annotations

import typer

db_app = typer.Typer(help="The verdict store (SQL database).", no_args_is_help=True)


@db_app.command("upgrade")
def upgrade(revision: str = typer.Argument("head", help="Alembic revision to migrate to.")) -> None:
    """Migrate OBSQC_DATABASE_URL (default: SQLite under OBSQC_HOME) to the latest schema."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from obsqc.service.settings import Settings
    from obsqc.service.store import make_engine
    from obsqc.service.store import upgrade as migrate

    settings = Settings()
    shown = make_url(settings.database_url).render_as_string(hide_password=True)
    engine = make_engine(settings.database_url)
    try:
        migrate(engine, revision)
        with engine.connect() as conn:
            current = conn.execute(text("select version_num from alembic_version")).scalars().all()
    except SQLAlchemyError as exc:
        typer.echo(f"error: cannot migrate {shown}: {exc}", err=True)
        raise typer.Exit(1) from exc
    finally:
        engine.dispose()
    typer.echo(f"{shown} is at revision {', '.join(current) or 'base'}")


def register(app: typer.Typer) -> None:
    """Add ``db`` (with ``upgrade``) to the CLI."""
    app.add_typer(db_app, name="db")
