"""``pbx storage migrate-to postgresql://...``: move an SQLite deployment to PostgreSQL (issue #20).

Stop the server first (its writes after the copy would be lost), then::

    pbx storage migrate-to postgresql://pbx@db.example/pbx --config /etc/pbx/pbx.toml

The SQLite database at ``[storage] data_dir`` is opened (and upgraded to the current schema, as
the server would), the PostgreSQL database is created or upgraded with the same migrations, and
every table of the schema is copied in one transaction: registrations, call records, bans, the
panel's accounts, sessions, audit log and number pool. Tables are listed from SQLite's own
catalogue, so a table added by a later migration is copied without a change here. The numbered
tables' sequences are moved past the copied ids. The target must be empty (a second run, or a
database another deployment uses, is refused: nothing is merged). The SQLite file is left as it
was; once the copy is done, set ``[storage] database`` to the URL and start the server.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
from pathlib import Path
from typing import Any

from pbx.config.load import load_config
from pbx.config.problems import ConfigError
from pbx.store import DATABASE_NAME, SCHEMA_VERSION, Store, StoreError, describe_url

BATCH_ROWS = 1000
# Tables whose integer key numbers itself (PostgreSQL: an identity column with a sequence).
NUMBERED = ("panel_accounts", "panel_audit")


class MigrationRefused(Exception):
    """The copy cannot be made: the message says why."""


def add_arguments(cmd: argparse.ArgumentParser) -> None:
    sub = cmd.add_subparsers(dest="storage_command", required=True)
    migrate = sub.add_parser(
        "migrate-to", help="copy the SQLite database into an empty PostgreSQL database"
    )
    migrate.add_argument("--config", type=Path, default=Path("config/pbx.toml"))
    migrate.add_argument("url", help="postgresql://USER@HOST:PORT/DATABASE")


async def _upgrade(source: Path, url: str) -> None:
    """Both schemas at the current version, as the server would leave them at start."""
    await (await Store.open(source, recover_calls=False)).close()
    await (await Store.open_url(url)).close()


def migrate(source: Path, url: str) -> dict[str, int]:
    """Copy every table of ``source`` (SQLite) into ``url``; the rows copied per table."""
    if not source.exists():
        raise MigrationRefused(f"no SQLite database at {source}")
    asyncio.run(_upgrade(source, url))
    import psycopg

    from pbx.store_pg import CONNECT_TIMEOUT_SECONDS, to_pyformat

    lite = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)
    copied: dict[str, int] = {}
    try:
        tables = [
            str(row[0])
            for row in lite.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
                " AND name NOT LIKE 'sqlite_%' AND name != 'schema_version' ORDER BY name"
            )
        ]
        with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_SECONDS) as pg:
            version = pg.execute("SELECT version FROM schema_version").fetchall()
            if [tuple(v) for v in version] != [(SCHEMA_VERSION,)]:
                raise MigrationRefused(f"the target's schema is {version}, not {SCHEMA_VERSION}")
            with pg.transaction():
                for table in tables:
                    count = pg.execute(f'SELECT count(*) FROM "{table}"').fetchone()
                    if count is not None and count[0]:
                        raise MigrationRefused(
                            f"{describe_url(url)} already holds rows in {table}:"
                            " the target must be empty (nothing is merged)"
                        )
                    copied[table] = _copy(lite, pg, table, to_pyformat)
                for table in NUMBERED:
                    if table in tables:
                        pg.execute(
                            "SELECT setval(pg_get_serial_sequence(%s, 'id'),"
                            f" coalesce((SELECT max(id) FROM {table}), 0) + 1, false)",
                            (table,),
                        )
    finally:
        lite.close()
    return copied


def _copy(lite: sqlite3.Connection, pg: Any, table: str, to_pyformat: Any) -> int:
    columns = [str(row[1]) for row in lite.execute(f'PRAGMA table_info("{table}")')]
    names = ", ".join(f'"{c}"' for c in columns)
    insert = to_pyformat(
        f'INSERT INTO "{table}" ({names}) VALUES ({", ".join("?" for _ in columns)})'
    )
    # Columns whose key numbers itself take the copied value as given.
    if table in NUMBERED:
        insert = insert.replace(") VALUES (", ") OVERRIDING SYSTEM VALUE VALUES (", 1)
    cursor = lite.execute(f'SELECT {names} FROM "{table}"')
    total = 0
    with pg.cursor() as out:
        while rows := cursor.fetchmany(BATCH_ROWS):
            out.executemany(insert, rows)
            total += len(rows)
    return total


def main(args: argparse.Namespace) -> int:
    try:
        snapshot = load_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    source = snapshot.server.storage.data_dir / DATABASE_NAME
    try:
        copied = migrate(source, args.url)
    except (MigrationRefused, StoreError) as exc:
        print(f"pbx storage migrate-to: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # psycopg's errors: the copy was rolled back
        print(f"pbx storage migrate-to: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    for table, count in copied.items():
        print(f"{table}: {count} rows")
    print(
        f"copied {sum(copied.values())} rows from {source} to {describe_url(args.url)};"
        f' now set [storage] database = "{describe_url(args.url)}" (with its credentials)'
        " and start the server"
    )
    return 0
