"""Alembic's entry point: migrations always run on the connection `upgrade()` hands over (no alembic.ini)."""

from alembic import context

from amlab.platform.migrations import VERSION_TABLE

context.configure(connection=context.config.attributes["connection"], version_table=VERSION_TABLE)
with context.begin_transaction():
    context.run_migrations()
