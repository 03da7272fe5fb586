"""Alembic environment, run programmatically by :func:`obsqc.service.store.repository.upgrade`.

The caller passes an open SQLAlchemy connection in ``config.attributes["connection"]``; no
``alembic.ini`` is read. Offline (SQL script) mode renders against ``sqlalchemy.url``.
"""

from alembic import context

from obsqc.service.store.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes["connection"]
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
