"""Galaxy anomaly scores: the autoencoder indicator and galaxy summary on exposures, the ``galaxies``
table (WGAN scores of seed paper 003 section 3.2 with their sigmas, section 4.1) and the running score
distributions ``galaxy_score_stats``.

Revision ID: 0004_galaxies
Revises: 0003_exposure_revision
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_galaxies"
down_revision = "0003_exposure_revision"
branch_labels = None
depends_on = None

SCORES = ("s_gen", "s_disc", "s_anom")


def upgrade() -> None:
    with op.batch_alter_table("exposures") as batch:
        batch.add_column(sa.Column("autoencoder_mse", sa.Float))
        batch.add_column(sa.Column("autoencoder_sigma", sa.Float))
        batch.add_column(sa.Column("n_stamps", sa.Integer))
        batch.add_column(sa.Column("galaxies_status", sa.String(16)))
        batch.add_column(sa.Column("galaxies_reason", sa.Text))
        batch.add_column(sa.Column("n_galaxies", sa.Integer))
        batch.add_column(sa.Column("n_galaxy_anomalies", sa.Integer))
    op.create_table(
        "galaxies",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("exposure_id", sa.String(128), sa.ForeignKey("exposures.id", ondelete="CASCADE"), nullable=False),
        sa.Column("idx", sa.Integer, nullable=False),
        sa.Column("instrument", sa.String(64)),
        sa.Column("band", sa.String(32)),
        sa.Column("ccd", sa.String(64)),
        sa.Column("x", sa.Float, nullable=False),
        sa.Column("y", sa.Float, nullable=False),
        *(sa.Column(score, sa.Float) for score in SCORES),
        *(sa.Column(f"{score}_sigma", sa.Float) for score in SCORES),
        sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("exposure_id", "idx", name="uq_galaxies_exposure_idx"),
    )
    for score in SCORES:
        op.create_index(f"ix_galaxies_{score}_sigma_id", "galaxies", [f"{score}_sigma", "id"])
        op.create_index(f"ix_galaxies_instrument_band_{score}_sigma_id", "galaxies",
                        ["instrument", "band", f"{score}_sigma", "id"])
    op.create_table(
        "galaxy_score_stats",
        sa.Column("instrument", sa.String(64), primary_key=True),
        sa.Column("band", sa.String(32), primary_key=True),
        sa.Column("score", sa.String(8), primary_key=True),
        sa.Column("n", sa.Float, nullable=False),
        sa.Column("mean", sa.Float, nullable=False),
        sa.Column("m2", sa.Float, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("galaxy_score_stats")
    for score in SCORES:
        op.drop_index(f"ix_galaxies_instrument_band_{score}_sigma_id", table_name="galaxies")
        op.drop_index(f"ix_galaxies_{score}_sigma_id", table_name="galaxies")
    op.drop_table("galaxies")
    with op.batch_alter_table("exposures") as batch:
        for column in ("n_galaxy_anomalies", "n_galaxies", "galaxies_reason", "galaxies_status", "n_stamps",
                       "autoencoder_sigma", "autoencoder_mse"):
            batch.drop_column(column)
