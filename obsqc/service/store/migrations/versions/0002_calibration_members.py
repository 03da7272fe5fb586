"""Reference members (the exposures a reference is built from), exposure timings and attempts.

Revision ID: 0002_calibration_members
Revises: 0001_initial
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_calibration_members"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("exposures") as batch:
        batch.add_column(sa.Column("n_ccds", sa.Integer))
        batch.add_column(sa.Column("attempts", sa.Integer))
        batch.add_column(sa.Column("timings", sa.JSON))
    op.create_table(
        "reference_members",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("instrument", sa.String(64), nullable=False),
        sa.Column("band", sa.String(32), nullable=False),
        sa.Column("exposure_id", sa.String(128), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("n_sources", sa.Integer, nullable=False),
        sa.Column("stats", sa.Text, nullable=False),
        sa.UniqueConstraint("instrument", "band", "exposure_id", name="uq_reference_members_exposure"),
    )
    op.create_index("ix_reference_members_instrument_band_id", "reference_members", ["instrument", "band", "id"])


def downgrade() -> None:
    op.drop_index("ix_reference_members_instrument_band_id", table_name="reference_members")
    op.drop_table("reference_members")
    with op.batch_alter_table("exposures") as batch:
        batch.drop_column("timings")
        batch.drop_column("attempts")
        batch.drop_column("n_ccds")
