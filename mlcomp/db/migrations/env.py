"""Alembic environment: runs against the connection mlcomp hands over, or the URL in alembic.ini
(or ``MLCOMP_DB_URL``). Batch mode lets SQLite's limited ALTER TABLE run migrations."""
import os

from alembic import context
from sqlalchemy import pool

from mlcomp.db.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations(connection):
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run_migrations(connection)
elif context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    from mlcomp.db.session import make_engine

    url = os.environ.get("MLCOMP_DB_URL") or config.get_main_option("sqlalchemy.url")
    engine = make_engine(url, poolclass=pool.NullPool)
    with engine.connect() as conn:
        run_migrations(conn)
