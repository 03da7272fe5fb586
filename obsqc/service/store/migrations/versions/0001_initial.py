"""Initial verdict store: exposures, ccd_results, references.

Revision ID: 0001_initial
Revises:
Create Date: 2024-06-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "exposures",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("instrument", sa.String(64)),
        sa.Column("band", sa.String(32)),
        sa.Column("mjd", sa.Float),
        sa.Column("exptime_s", sa.Float),
        sa.Column("path", sa.Text),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("verdict", sa.String(16)),
        sa.Column("flags", sa.JSON, nullable=False),
        sa.Column("reason", sa.Text),
        _ts("received_at", nullable=False),
        _ts("started_at"),
        _ts("finished_at"),
        sa.Column("n_sources", sa.Integer),
        *(sa.Column(f"{name}_{kind}", sa.Float)
          for name in ("source", "profile", "background", "large_scale") for kind in ("kl", "sigma")),
        sa.Column("line_z", sa.Float),
        sa.Column("line_sigma", sa.Float),
    )
    op.create_index("ix_exposures_received_at_id", "exposures", ["received_at", "id"])
    op.create_index("ix_exposures_instrument_band", "exposures", ["instrument", "band"])
    op.create_index("ix_exposures_verdict", "exposures", ["verdict"])
    op.create_table(
        "ccd_results",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("exposure_id", sa.String(128), sa.ForeignKey("exposures.id", ondelete="CASCADE"), nullable=False),
        sa.Column("ccd", sa.String(64), nullable=False),
        sa.Column("background_kl", sa.Float),
        sa.Column("background_sigma", sa.Float),
        sa.Column("large_scale_sigma", sa.Float),
        sa.Column("line_z", sa.Float),
        sa.Column("n_sources", sa.Integer),
        sa.UniqueConstraint("exposure_id", "ccd", name="uq_ccd_results_exposure_ccd"),
    )
    op.create_index("ix_ccd_results_exposure_id", "ccd_results", ["exposure_id"])
    op.create_table(
        "references",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("instrument", sa.String(64), nullable=False),
        sa.Column("band", sa.String(32), nullable=False),
        _ts("created_at", nullable=False),
        sa.Column("n_exposures", sa.Integer, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.UniqueConstraint("instrument", "band", name="uq_references_instrument_band"),
    )


def downgrade() -> None:
    op.drop_table("references")
    op.drop_index("ix_ccd_results_exposure_id", table_name="ccd_results")
    op.drop_table("ccd_results")
    op.drop_index("ix_exposures_verdict", table_name="exposures")
    op.drop_index("ix_exposures_instrument_band", table_name="exposures")
    op.drop_index("ix_exposures_received_at_id", table_name="exposures")
    op.drop_table("exposures")
