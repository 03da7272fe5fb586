"""A revision counter on exposures, bumped by every update (API readers cache records by it).

Revision ID: 0003_exposure_revision
Revises: 0002_calibration_members
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_exposure_revision"
down_revision = "0002_calibration_members"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("exposures") as batch:
        batch.add_column(sa.Column("revision", sa.Integer, nullable=False, server_default="1"))


def downgrade() -> None:
    with op.batch_alter_table("exposures") as batch:
        batch.drop_column("revision")
