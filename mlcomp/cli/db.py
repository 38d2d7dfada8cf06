"""``mlcomp db``: the store's schema."""
from __future__ import annotations

import click

from mlcomp.db import make_engine, upgrade
from mlcomp.errors import ConfigError
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
    from alembic.util import CommandError

    try:
        upgrade(engine, revision)
    except CommandError as e:
        raise ConfigError(f"db upgrade --revision {revision!r}: {e}; allowed: 'head' or a revision of "
                          f"the migrations") from None
    finally:
        engine.dispose()
    click.echo(f"database {engine.url.render_as_string(hide_password=True)} upgraded to {revision}")
