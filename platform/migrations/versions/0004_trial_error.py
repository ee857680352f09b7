"""A failed trial keeps why it failed (the error's last line) in the store, not only in a Ray session file."""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.add_column("trials", sa.Column("error", sa.Text, nullable=True))


def downgrade() -> None:
    op.drop_column("trials", "error")
