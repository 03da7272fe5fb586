"""Alembic revisions of the verdict store (one module per revision)."""
