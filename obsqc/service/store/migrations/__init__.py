"""Alembic environment of the verdict store, shipped inside the package and run by ``repository.upgrade``."""
