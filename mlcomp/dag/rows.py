"""Dialect-aware inserts shared by submission and snapshots."""
from __future__ import annotations

from typing import Sequence

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

__all__ = ["insert_ignore"]

_INSERTS = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


def insert_ignore(session: Session, model, rows: Sequence[dict], keys: Sequence[str]) -> None:
    """Inserts ``rows`` into ``model``'s table, skipping those whose ``keys`` already exist
    (``INSERT … ON CONFLICT DO NOTHING``), so two submissions racing on the same project name or
    snapshot blob both succeed.

    Raises:
        NotImplementedError: the database is neither PostgreSQL nor SQLite.
    """
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    if dialect not in _INSERTS:
        raise NotImplementedError(f"insert_ignore supports {', '.join(_INSERTS)}, not {dialect}")
    statement = _INSERTS[dialect](model).on_conflict_do_nothing(index_elements=list(keys))
    session.execute(statement, list(rows))
