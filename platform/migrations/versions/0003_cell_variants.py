"""Cells carry their variant: the labels of the mechanism and task variants and the axis values they stand for."""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.add_column("cells", sa.Column("mechanism_variant", sa.String(200), nullable=False, server_default=""))
    op.add_column("cells", sa.Column("task_variant", sa.String(200), nullable=False, server_default=""))
    op.add_column("cells", sa.Column("axes", sa.JSON, nullable=True))


def downgrade() -> None:
    for column in ("axes", "task_variant", "mechanism_variant"):
        op.drop_column("cells", column)
