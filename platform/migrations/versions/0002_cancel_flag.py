"""`amctl cancel` becomes a flag beside the status (0.1.0 wrote a status, CANCELLING, that no reader accepted)."""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.add_column("sweeps", sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()))


def downgrade() -> None:
    op.drop_column("sweeps", "cancel_requested")
