"""The store as release 0.1.0 created it: sweeps, cells, trials and their status transitions."""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    now = sa.DateTime(timezone=True)
    op.create_table(
        "sweeps",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("config_hash", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("mlflow_run_id", sa.String(64)),
        sa.Column("created_at", now, nullable=False),
        sa.Column("updated_at", now, nullable=False),
    )
    op.create_table(
        "transitions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("entity", sa.String(8), nullable=False),
        sa.Column("entity_id", sa.Integer, nullable=False, index=True),
        sa.Column("old", sa.String(16)),
        sa.Column("new", sa.String(16), nullable=False),
        sa.Column("at", now, nullable=False),
    )
    op.create_table(
        "cells",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("sweep_id", sa.Integer, sa.ForeignKey("sweeps.id"), nullable=False),
        sa.Column("mechanism", sa.String(64), nullable=False),
        sa.Column("task", sa.String(64), nullable=False),
        sa.Column("config_hash", sa.String(64), nullable=False, index=True),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("mlflow_run_id", sa.String(64)),
        sa.Column("metric", sa.String(64)),
        sa.Column("higher_is_better", sa.Boolean),
        sa.Column("value", sa.Float),
        sa.Column("per_seed", sa.JSON),
        sa.Column("best_params", sa.JSON),
        sa.Column("params_count", sa.Integer),
        sa.Column("state_size", sa.Integer),
        sa.Column("updated_at", now, nullable=False),
        sa.UniqueConstraint("sweep_id", "config_hash"),
    )
    op.create_table(
        "trials",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("cell_id", sa.Integer, sa.ForeignKey("cells.id"), nullable=False),
        sa.Column("trial_key", sa.String(128), nullable=False),
        sa.Column("phase", sa.String(16), nullable=False),
        sa.Column("seed", sa.Integer, nullable=False),
        sa.Column("early_stopped", sa.Boolean, nullable=False),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("config_hash", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("mlflow_run_id", sa.String(64)),
        sa.Column("steps_done", sa.Integer, nullable=False),
        sa.Column("value", sa.Float),
        sa.Column("metrics", sa.JSON),
        sa.Column("started_at", now),
        sa.Column("ended_at", now),
        sa.UniqueConstraint("cell_id", "trial_key"),
    )


def downgrade() -> None:
    for table in ("trials", "cells", "transitions", "sweeps"):
        op.drop_table(table)
