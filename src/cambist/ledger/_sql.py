"""Small SQL helpers shared by the ledger modules (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import Insert

__all__ = ["insert_ignore"]


def insert_ignore(conn: AsyncConnection, table: Table, conflict: Sequence[str]) -> Insert:
    """An ``INSERT ... ON CONFLICT (conflict) DO NOTHING`` for the connection's
    dialect: the unique constraint, not a prior SELECT, decides who wins, so it
    is safe under concurrent writers."""
    dialect = conn.dialect.name
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=list(conflict))
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=list(conflict))
    raise ValueError(f"the ledger supports SQLite and PostgreSQL databases, not {dialect}; "
                     "set CAMBIST_DATABASE_URL to one of them")
