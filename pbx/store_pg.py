"""The PostgreSQL backend of ``pbx.store.Store`` (psycopg 3, async), for several nodes.

Two connections, both in autocommit mode: the writer's, whose ``run`` wraps a commit's
statements in one transaction (``executemany`` pipelines a run of rows in one round trip), and
a reader's for ``fetch``, so a read never sees, or waits behind, a commit in progress.

Statements are written once, with SQLite's ``?`` placeholders (``to_pyformat`` turns them into
psycopg's ``%s``); the schema is ``pbx.store._MIGRATIONS`` rewritten by ``postgres_statement``.
Migrations run under an advisory lock, so nodes starting together upgrade the schema once.

Losing the database: a statement that fails because the connection is gone (the server stopped,
restarted or cannot be reached: ``psycopg.OperationalError``) marks the backend unavailable and
raises ``StoreUnavailable``; a task then reconnects every ``retry_interval`` seconds until it
succeeds. Meanwhile ``available`` is False, so the server refuses new registrations (503 with
Retry-After) at once instead of waiting on a dead connection, and the store holds call records
for later (``Store._hold``). Calls in progress do not touch the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from typing import Any

import psycopg
import structlog

from pbx.store import (
    _MIGRATIONS,
    SCHEMA_VERSION,
    Dialect,
    Plan,
    StoreError,
    StoreUnavailable,
    describe_url,
    migration_statements,
)

log = structlog.get_logger("pbx.store")

CONNECT_TIMEOUT_SECONDS = 3
_MIGRATION_LOCK = 0x70627800  # pg_advisory_lock key: "pbx\0"
# SQLite's NOCASE (panel account names, ASCII): ICU's comparison at strength 2 ignores case.
_NOCASE = (
    "CREATE COLLATION IF NOT EXISTS nocase"
    " (provider = icu, locale = 'und-u-ks-level2', deterministic = false)"
)


@functools.lru_cache(maxsize=512)
def to_pyformat(sql: str) -> str:
    """``sql`` with each ``?`` outside quotes as ``%s`` and every literal ``%`` doubled."""
    out: list[str] = []
    quote: str | None = None
    for char in sql:
        if char == "%":
            out.append("%%")
        elif quote is not None:
            out.append(char)
            if char == quote:
                quote = None
        elif char in ("'", '"'):
            quote = char
            out.append(char)
        elif char == "?":
            out.append("%s")
        else:
            out.append(char)
    return "".join(out)


class PostgresBackend:
    dialect: Dialect = "postgresql"

    def __init__(
        self,
        url: str,
        writer: psycopg.AsyncConnection[tuple[Any, ...]],
        reader: psycopg.AsyncConnection[tuple[Any, ...]],
        retry_interval: float,
    ) -> None:
        self.url = url
        self.retry_interval = retry_interval
        self._writer: psycopg.AsyncConnection[tuple[Any, ...]] | None = writer
        self._reader: psycopg.AsyncConnection[tuple[Any, ...]] | None = reader
        self._reconnect: asyncio.Task[None] | None = None
        self._closed = False
        self.outages = 0  # times the database was lost (tests, logs)

    @classmethod
    async def connect(cls, url: str, *, retry_interval: float = 1.0) -> PostgresBackend:
        """Connect, create or upgrade the schema; raises ``StoreError`` if it cannot."""
        try:
            writer = await _connect(url)
            try:
                await _prepare(writer)
                reader = await _connect(url)
            except BaseException:
                await writer.close()
                raise
        except psycopg.Error as exc:
            raise StoreError(f"cannot open {describe_url(url)}: {exc}") from exc
        return cls(url, writer, reader, retry_interval)

    @property
    def available(self) -> bool:
        return self._writer is not None and self._reader is not None

    @property
    def writer_pid(self) -> int | None:
        """The server process of the writer's connection (it sends this node's NOTIFYs)."""
        return self._writer.info.backend_pid if self._writer is not None else None

    async def run(self, plan: Plan) -> list[int]:
        conn = self._writer
        if conn is None:
            raise StoreUnavailable("the database cannot be reached (reconnecting)")
        counts: list[int] = []
        try:
            async with conn.transaction():
                for sql, params in plan:
                    if sql is None:
                        counts.append(0)
                        continue
                    async with conn.cursor() as cursor:
                        if len(params) == 1:
                            await cursor.execute(to_pyformat(sql), params[0])
                            counts.append(cursor.rowcount)
                        else:
                            await cursor.executemany(to_pyformat(sql), params)
                            counts.append(-1)
        except psycopg.OperationalError as exc:
            await self._lost(exc)
            raise StoreUnavailable(f"the database cannot be reached: {exc}") from exc
        return counts

    async def fetch(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        conn = self._reader
        if conn is None:
            raise StoreUnavailable("the database cannot be reached (reconnecting)")
        try:
            async with conn.cursor() as cursor:
                await cursor.execute(to_pyformat(sql), params)
                return await cursor.fetchall()
        except psycopg.OperationalError as exc:
            await self._lost(exc)
            raise StoreUnavailable(f"the database cannot be reached: {exc}") from exc

    async def close(self) -> None:
        self._closed = True
        if self._reconnect is not None:
            self._reconnect.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnect
        for conn in (self._writer, self._reader):
            if conn is not None:
                await conn.close()
        self._writer = self._reader = None

    # -- losing and finding the database -------------------------------------------------------

    async def _lost(self, exc: Exception) -> None:
        if self._writer is None and self._reader is None:
            return
        self.outages += 1
        log.error("database_lost", database=describe_url(self.url), error=str(exc))
        old = (self._writer, self._reader)
        self._writer = self._reader = None
        for conn in old:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
        if not self._closed and (self._reconnect is None or self._reconnect.done()):
            self._reconnect = asyncio.get_running_loop().create_task(
                self._reconnect_loop(), name="pbx-store-reconnect"
            )

    async def _reconnect_loop(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.retry_interval)
            try:
                writer = await _connect(self.url)
            except psycopg.Error:
                continue
            try:
                reader = await _connect(self.url)
            except psycopg.Error:
                await writer.close()
                continue
            self._writer, self._reader = writer, reader
            log.info("database_back", database=describe_url(self.url))
            return


async def _connect(url: str) -> psycopg.AsyncConnection[tuple[Any, ...]]:
    return await psycopg.AsyncConnection.connect(
        url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS
    )


async def _prepare(conn: psycopg.AsyncConnection[tuple[Any, ...]]) -> None:
    """The schema, created or upgraded (one transaction per migration, under a lock)."""
    await conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
    try:
        async with conn.transaction():
            await conn.execute(_NOCASE)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"
            )
        cursor = await conn.execute("SELECT version FROM schema_version")
        rows = await cursor.fetchall()
        version = int(rows[0][0]) if rows else 0
        if version > SCHEMA_VERSION:
            raise StoreError(f"the database has schema {version}, newer than {SCHEMA_VERSION}")
        for target in range(version + 1, SCHEMA_VERSION + 1):
            async with conn.transaction():
                for statement in migration_statements(_MIGRATIONS[target - 1], "postgresql"):
                    await conn.execute(statement)  # DDL: no placeholders, no % to double
                await conn.execute("DELETE FROM schema_version")
                await conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (target,))
            log.info("schema_upgraded", version=target)
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
