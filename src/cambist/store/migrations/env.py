"""Alembic environment for Cambist.

:func:`cambist.store.db.migrate` builds the Alembic config in code (no
``alembic.ini``): ``script_location`` is this folder and ``sqlalchemy.url`` a
synchronous URL. Logging is left exactly as the host process configured it:
``logging.config.fileConfig`` is never called, so no existing logger is
disabled by a migration.

On PostgreSQL the whole upgrade runs in one transaction that first takes a
transaction-scoped advisory lock, so processes starting together (``cambist
up`` and gateways on the same database) migrate one at a time: the first
applies the revisions, the others then find the schema current.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool, text

from cambist.store.schema import metadata

config = context.config
target_metadata = metadata

# pg_advisory_xact_lock key: the ASCII bytes "CAMBIST1" as one bigint
_PG_MIGRATION_LOCK = 0x43414D4249535431


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("alembic config has no sqlalchemy.url; use cambist.store.db.migrate")
    return url


def run_migrations_offline() -> None:
    """Emit the migration SQL without a database connection."""
    url = _url()
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations on a live connection."""
    engine = create_engine(_url(), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                render_as_batch=connection.dialect.name == "sqlite",
            )
            with context.begin_transaction():
                if connection.dialect.name == "postgresql":
                    connection.execute(text("SELECT pg_advisory_xact_lock(:k)"),
                                       {"k": _PG_MIGRATION_LOCK})
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
