"""``mlcomp db``: the store's schema."""
from __future__ import annotations

import click

from mlcomp.db import make_engine, upgrade
from mlcomp.settings import Settings

__all__ = ["db"]


@click.group()
def db():
    """Manage the database."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Alembic revision to upgrade to.")
def db_upgrade(revision):
    """Brings the database of MLCOMP_DB_URL (default SQLite under MLCOMP_ROOT) to REVISION."""
    settings = Settings.from_env()
    engine = make_engine(settings.db_url)
    try:
        upgrade(engine, revision)
    finally:
        engine.dispose()
    click.echo(f"database {engine.url.render_as_string(hide_password=True)} upgraded to {revision}")
