"""One driver per sweep name: the driver holding a sweep's lease (host:pid) and its last heartbeat (lease.py)."""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    op.add_column("sweeps", sa.Column("driver", sa.String(200), nullable=True))
    op.add_column("sweeps", sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    for column in ("heartbeat_at", "driver"):
        op.drop_column("sweeps", column)
