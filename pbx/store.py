"""The store: registrations, call records, bans, the control panel's tables.

Two backends behind one ``Store`` (issue #20): SQLite, the embedded default, one database file,
``<data_dir>/pbx.sqlite3``, in WAL mode (commits on the loop's thread, reads and whatever may
wait through aiosqlite: ``SqliteBackend``); or PostgreSQL (psycopg 3, async, in
``pbx.store_pg``) when ``[storage] database = "postgresql://..."`` is set, shared by several
nodes. Both have a ``schema_version`` table and run the same ``_MIGRATIONS``: each step is
written once, in SQLite's dialect, and ``postgres_statements`` rewrites its few SQLite-only words
for PostgreSQL (``tests/test_store_dialects.py`` checks both give the same tables, columns and
indexes). Statements use ``?`` placeholders on both (``pbx.store_pg`` rewrites them).
Everything is written by a single writer task that commits in groups (DESIGN section 3,
"Durability"):

- registrations are written through: ``save_binding`` / ``delete_binding`` return once their
  change is committed; writes that arrive while a commit runs share the next one;
- call records (``record_call`` / ``close_call``) are not awaited by the call engine: they wait
  up to ``commit_interval`` (0.2 s) for company and are committed together, so each is durable
  within a second of the call's end. The returned future resolves when the row is committed.

At start-up, the call records a crash left open are closed with the hang-up cause ``crash``
(answered calls stay ``answered``, others ``failed``), ending at the last instant known for them
(the answer or the last heartbeat, ``touch_open_calls``), and their recordings are kept playable
(not when another process, such as ``pbx panel``, opens the database beside a running server:
``recover_calls=False``). On PostgreSQL, shared by several nodes, a node closes and touches
only the open records of its own name (``node``, issue #20). Reads (``load_bindings``,
``calls``) go straight to the connection.

Times are POSIX seconds (``time.time()``), as in the cores.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import sqlite3
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import aiosqlite
import structlog

from pbx.call.record import DISPOSITIONS as DISPOSITIONS
from pbx.call.record import ENDED_BY, HANGUP_CAUSES
from pbx.call.record import CallRecord as CallRecord
from pbx.call.record import Disposition as Disposition
from pbx.call.record import Json as Json
from pbx.clock import Clock
from pbx.config.model import Extension, TenantId
from pbx.errors import PbxError
from pbx.media.wav import repair_wav
from pbx.registrar import Binding
from pbx.sip.message import Params, SipUri
from pbx.sip.parse import parse_uri
from pbx.system_clock import SystemClock

DATABASE_NAME = "pbx.sqlite3"
SCHEMA_VERSION = 6
SLOW_COMMIT_SECONDS = 0.1  # a commit this slow is logged
MAX_HELD_CALL_RECORDS = 10_000  # call records kept in memory while the database is unreachable
# How often the server moves the last instant known of its calls in progress (``touch_open_calls``)
CALL_HEARTBEAT_SECONDS = 5.0
Dialect = Literal["sqlite", "postgresql"]


log = structlog.get_logger("pbx.store")

# Each entry upgrades the schema from version N-1 to N (index N-1). Append, never edit.
_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE registrations (
        tenant TEXT NOT NULL,
        extension TEXT NOT NULL,
        contact_key TEXT NOT NULL,
        contact TEXT NOT NULL,
        contact_params TEXT NOT NULL,
        source_host TEXT NOT NULL,
        source_port INTEGER NOT NULL,
        transport TEXT NOT NULL,
        connection_id TEXT,
        call_id TEXT NOT NULL,
        cseq INTEGER NOT NULL,
        registered_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        user_agent TEXT,
        PRIMARY KEY (tenant, extension, contact_key)
    ) WITHOUT ROWID;
    CREATE INDEX registrations_by_expiry ON registrations (expires_at);
    CREATE TABLE call_records (
        id TEXT PRIMARY KEY,
        tenant TEXT,
        started_at REAL NOT NULL,
        answered_at REAL,
        ended_at REAL,
        last_event_at REAL NOT NULL,
        caller TEXT NOT NULL,
        called TEXT NOT NULL,
        disposition TEXT CHECK (disposition IN
            ('answered', 'busy', 'no_answer', 'cancelled', 'failed')),
        answered_by TEXT,
        forwarding TEXT NOT NULL DEFAULT '[]',
        trace TEXT NOT NULL DEFAULT '[]',
        recording_path TEXT
    );
    CREATE INDEX call_records_by_start ON call_records (started_at);
    CREATE INDEX call_records_open ON call_records (id) WHERE ended_at IS NULL;
    CREATE INDEX call_records_by_recording ON call_records (recording_path)
        WHERE recording_path IS NOT NULL;
    CREATE TABLE bans (
        host TEXT PRIMARY KEY,
        until REAL NOT NULL
    );
    """,
    # 2: the control panel (pbx/panel/accounts.py). No foreign keys (they are not enforced
    # here, and a violation would fail a whole group commit): sessions are deleted with their
    # account in the same commit. Panel writes share commits with registrations, so they are
    # written never to break a constraint (ON CONFLICT DO NOTHING, checked values).
    """
    CREATE TABLE panel_accounts (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL COLLATE NOCASE UNIQUE,
        role TEXT NOT NULL CHECK (role IN ('operator', 'tenant_admin')),
        tenant TEXT CHECK ((role = 'tenant_admin') = (tenant IS NOT NULL)),
        password_hash TEXT NOT NULL,
        created_at REAL NOT NULL,
        disabled INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX panel_accounts_by_tenant ON panel_accounts (tenant) WHERE tenant IS NOT NULL;
    CREATE TABLE panel_sessions (
        token_hash TEXT PRIMARY KEY,
        account_id INTEGER NOT NULL,
        csrf_token TEXT NOT NULL,
        created_at REAL NOT NULL,
        last_seen_at REAL NOT NULL,
        expires_at REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX panel_sessions_by_account ON panel_sessions (account_id);
    CREATE INDEX panel_sessions_by_expiry ON panel_sessions (expires_at);
    CREATE TABLE panel_audit (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        actor TEXT NOT NULL,
        role TEXT NOT NULL,
        tenant TEXT,
        action TEXT NOT NULL,
        target TEXT NOT NULL DEFAULT '',
        detail TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX panel_audit_by_at ON panel_audit (at);
    CREATE INDEX panel_audit_by_tenant ON panel_audit (tenant, at);
    CREATE TABLE number_pool (
        number TEXT PRIMARY KEY,
        note TEXT NOT NULL DEFAULT '',
        added_at REAL NOT NULL
    ) WITHOUT ROWID;
    """,
    # 3: the panel's call history (pbx/panel/history_query.py). Every page of a tenant's
    # history is read newest first by (started_at, id) through one of these, filtered by at
    # most one equality beside the tenant: none, the disposition, or a party (caller, called,
    # answered_by; a party filter reads the three indexes and merges them).
    """
    CREATE INDEX call_records_by_tenant ON call_records (tenant, started_at DESC, id DESC);
    CREATE INDEX call_records_by_tenant_disposition
        ON call_records (tenant, disposition, started_at DESC, id DESC);
    CREATE INDEX call_records_by_tenant_caller
        ON call_records (tenant, caller, started_at DESC, id DESC);
    CREATE INDEX call_records_by_tenant_called
        ON call_records (tenant, called, started_at DESC, id DESC);
    CREATE INDEX call_records_by_tenant_answered_by
        ON call_records (tenant, answered_by, started_at DESC, id DESC)
        WHERE answered_by IS NOT NULL;
    """,
    # 4 (issue #20): a binding's Path (RFC 3327) from a trusted edge, as a JSON array.
    """
    ALTER TABLE registrations ADD COLUMN path TEXT NOT NULL DEFAULT '[]'
    """,
    # 5 (issue #20): the node that wrote a binding or a call record. A node closes only its own
    # open call records at start-up (other nodes' calls share the table); a binding of another
    # node is read without its TCP connection id (that connection is not ours).
    """
    ALTER TABLE registrations ADD COLUMN node TEXT;
    ALTER TABLE call_records ADD COLUMN node TEXT;
    CREATE INDEX call_records_open_by_node ON call_records (node) WHERE ended_at IS NULL;
    """,
    # 6: records others can match and read (issue 16): why the call ended, which side ended it,
    # and each leg's SIP Call-ID. Rows written before have NULLs (shown as unknown).
    """
    ALTER TABLE call_records ADD COLUMN hangup_cause TEXT;
    ALTER TABLE call_records ADD COLUMN ended_by TEXT;
    ALTER TABLE call_records ADD COLUMN caller_call_id TEXT;
    ALTER TABLE call_records ADD COLUMN callee_call_id TEXT;
    """,
)


class StoreError(PbxError):
    """The database cannot be used (newer schema, closed store, failed commit)."""


class StoreUnavailable(StoreError):
    """The database cannot be reached now (PostgreSQL down or unreachable); retry later."""


# PostgreSQL's words for SQLite's: types (REAL is 4 bytes there; SQLite's INTEGER is 8), the
# rowid table option, the integer primary key that numbers itself. ``COLLATE NOCASE`` names a
# collation ``pbx.store_pg`` creates (ICU, case-insensitive), so it needs no rewrite.
_POSTGRES_WORDS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"\bINTEGER PRIMARY KEY\b"),
        "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
    ),
    (re.compile(r"\bINTEGER\b"), "BIGINT"),
    (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),
    (re.compile(r"\)\s*WITHOUT ROWID"), ")"),
)


def describe_url(url: str) -> str:
    """A database URL without its password, for logs and messages."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    user = f"{parts.username}@" if parts.username else ""
    return f"{parts.scheme}://{user}{host}{port}{parts.path}"


def migration_statements(step: str, dialect: Dialect) -> list[str]:
    """The statements of one ``_MIGRATIONS`` step in ``dialect``."""
    statements = [part.strip() for part in step.split(";") if part.strip()]
    if dialect == "sqlite":
        return statements
    return [postgres_statement(statement) for statement in statements]


def postgres_statement(statement: str) -> str:
    """One SQLite DDL statement in PostgreSQL's words."""
    for pattern, replacement in _POSTGRES_WORDS:
        statement = pattern.sub(replacement, statement)
    return statement


# One commit's statements: ``(sql, [params, ...])``; ``sql`` None is a barrier (nothing to run).
Plan = Sequence[tuple[str | None, Sequence[tuple[Any, ...]]]]


class Backend(Protocol):
    """One database engine under ``Store``: runs a commit's statements and reads."""

    dialect: Dialect

    @property
    def available(self) -> bool:
        """False while the database cannot be reached (new registrations are refused)."""
        ...

    async def run(self, plan: Plan) -> list[int]:
        """Run ``plan`` in one transaction; the row count of each single statement (-1 for a
        run of several). Raises ``StoreUnavailable`` when the database cannot be reached."""
        ...

    async def fetch(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]: ...

    async def close(self) -> None: ...


class SqliteBackend:
    """SQLite in WAL mode: commits run on the event loop's thread, reads in aiosqlite's.

    A commit is written synchronously by a second connection (``writer``), owned by the loop's
    thread: about 20 µs per row, so a busy commit (200 call records) holds the loop ~4 ms.
    Through aiosqlite's thread it cost more than that in CPU (issue #21, measured ~10-15 % of a
    call's CPU): ``sqlite3`` releases and retakes the GIL at every step of every statement, and
    each handover between the two threads is a futex wake and a context switch.

    The loop thread never waits for the disk or for another process:
    - the writer has ``busy_timeout=0``: when another process (``pbx panel``, a CLI command)
      holds the write lock, the commit is run through aiosqlite's thread instead, which waits
      for it (``busy_timeout=5000``), as every commit did before;
    - so does a plan of more than ``SYNC_ROWS_MAX`` rows (call records held while the database
      was down), so the loop is never held for long;
    - the writer never checkpoints (``wal_autocheckpoint=0``): after a commit, at most once a
      ``CHECKPOINT_SECONDS``, a passive checkpoint (copying the WAL into the database and its
      fsync) runs in aiosqlite's thread; the WAL holds about that long of writes.
    """

    dialect: Dialect = "sqlite"
    SYNC_ROWS_MAX = 1000
    CHECKPOINT_SECONDS = 1.0

    def __init__(self, db: aiosqlite.Connection, writer: sqlite3.Connection | None = None) -> None:
        self.db = db
        self.writer = writer
        self.sync_commits = 0  # commits run on the loop's thread
        self.thread_commits = 0  # commits run in aiosqlite's thread (busy, large, no writer)
        self._checkpoint: asyncio.Task[None] | None = None
        self._checkpointed_at = -1e9

    @property
    def available(self) -> bool:
        return True

    @classmethod
    async def connect(cls, path: Path) -> SqliteBackend:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path, isolation_level=None)
        writer: sqlite3.Connection | None = None
        try:
            await _prepare(db)
            writer = sqlite3.connect(path, isolation_level=None)
            for pragma in ("synchronous=NORMAL", "busy_timeout=0", "wal_autocheckpoint=0"):
                writer.execute(f"PRAGMA {pragma}")
        except BaseException:
            if writer is not None:
                writer.close()
            await db.close()
            raise
        return cls(db, writer)

    async def run(self, plan: Plan) -> list[int]:
        writer = self.writer
        if writer is not None and sum(len(params) for _, params in plan) <= self.SYNC_ROWS_MAX:
            try:
                writer.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                # The primary code: SQLITE_BUSY_RECOVERY, _SNAPSHOT, _TIMEOUT are busy too.
                if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                    raise
            else:
                counts = _run_in_transaction(writer, plan)
                self.sync_commits += 1
                self._maybe_checkpoint()
                return counts
        self.thread_commits += 1
        return await self._run_in_thread(plan)

    async def _run_in_thread(self, plan: Plan) -> list[int]:
        counts: list[int] = []
        db = self.db
        try:
            await db.execute("BEGIN IMMEDIATE")
            for sql, params in plan:
                if sql is None:
                    counts.append(0)
                elif len(params) == 1:
                    cursor = await db.execute(sql, params[0])
                    counts.append(cursor.rowcount)
                    await cursor.close()
                else:
                    cursor = await db.executemany(sql, params)
                    await cursor.close()
                    counts.append(-1)
            await db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                try:
                    await db.execute("ROLLBACK")
                except Exception:
                    log.error("store_rollback_failed", exc_info=True)
            raise
        return counts

    def _maybe_checkpoint(self) -> None:
        now = asyncio.get_running_loop().time()
        if self._checkpoint is None and now - self._checkpointed_at >= self.CHECKPOINT_SECONDS:
            self._checkpointed_at = now
            self._checkpoint = asyncio.create_task(self._run_checkpoint())

    async def _run_checkpoint(self) -> None:
        try:
            await self.db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except Exception:
            # Not fatal: the next one copies what this one did not.
            log.warning("store_checkpoint_failed", exc_info=True)
        finally:
            self._checkpoint = None

    async def fetch(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        rows = await self.db.execute_fetchall(sql, params)
        return [tuple(row) for row in rows]

    async def close(self) -> None:
        if self._checkpoint is not None:
            await asyncio.gather(self._checkpoint, return_exceptions=True)
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        # The last connection closed checkpoints the WAL into the database.
        await self.db.close()


def _run_in_transaction(conn: sqlite3.Connection, plan: Plan) -> list[int]:
    """``plan`` in the transaction ``conn`` has begun: committed, or rolled back and raised."""
    counts: list[int] = []
    try:
        for sql, params in plan:
            if sql is None:
                counts.append(0)
            elif len(params) == 1:
                counts.append(conn.execute(sql, params[0]).rowcount)
            else:
                conn.executemany(sql, params)
                counts.append(-1)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except Exception:
                log.error("store_rollback_failed", exc_info=True)
        raise
    return counts


@dataclass(slots=True)
class StoreStats:
    commits: int = 0
    statements: int = 0
    failed_commits: int = 0


@dataclass(slots=True)
class _Op:
    sql: str | None  # None: a barrier (flush)
    params: tuple[Any, ...]
    future: asyncio.Future[int] | None  # None: another op of the same commit reports
    urgent: bool
    enqueued_at: float
    # The one row this op writes whole (an upsert or delete by primary key), or None: another
    # statement, which keeps its place in the commit (see ``_plan``).
    row: Hashable | None = None
    # Parameters computed at commit time, for the ops kept (a call's record is written up to
    # three times within one commit interval and only the last write is run: issue 21).
    make_params: Callable[[], tuple[Any, ...]] | None = None

    def values(self) -> tuple[Any, ...]:
        return self.params if self.make_params is None else self.make_params()


@dataclass(slots=True)
class _Queue:
    ops: list[_Op] = field(default_factory=list)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    urgent: asyncio.Event = field(default_factory=asyncio.Event)


_UPSERT_BINDING = """
INSERT INTO registrations (tenant, extension, contact_key, contact, contact_params, source_host,
    source_port, transport, connection_id, call_id, cseq, registered_at, expires_at, user_agent,
    path, node)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (tenant, extension, contact_key) DO UPDATE SET
    contact = excluded.contact, contact_params = excluded.contact_params,
    source_host = excluded.source_host, source_port = excluded.source_port,
    transport = excluded.transport, connection_id = excluded.connection_id,
    call_id = excluded.call_id, cseq = excluded.cseq, registered_at = excluded.registered_at,
    expires_at = excluded.expires_at, user_agent = excluded.user_agent, path = excluded.path,
    node = excluded.node
"""
_DELETE_BINDING = """
DELETE FROM registrations WHERE tenant = ? AND extension = ? AND contact_key = ?
"""
# issue #20: binding changes are announced to every node (payload "<tenant>/<extension>").
BINDINGS_CHANNEL = "pbx_bindings"
_NOTIFY_BINDINGS = f"SELECT pg_notify('{BINDINGS_CHANNEL}', aor) FROM unnest(?::text[]) AS aor"
_BINDING_COLUMNS = """
tenant, extension, contact, contact_params, source_host, source_port, transport, connection_id,
call_id, cseq, registered_at, expires_at, user_agent, path, node
"""
_UPSERT_CALL = """
INSERT INTO call_records (id, tenant, started_at, answered_at, ended_at, last_event_at, caller,
    called, disposition, answered_by, forwarding, trace, recording_path, node, hangup_cause,
    ended_by, caller_call_id, callee_call_id)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    tenant = excluded.tenant, started_at = excluded.started_at,
    answered_at = excluded.answered_at, ended_at = excluded.ended_at,
    last_event_at = excluded.last_event_at, caller = excluded.caller, called = excluded.called,
    disposition = excluded.disposition, answered_by = excluded.answered_by,
    forwarding = excluded.forwarding, trace = excluded.trace,
    recording_path = excluded.recording_path, node = excluded.node,
    hangup_cause = excluded.hangup_cause, ended_by = excluded.ended_by,
    caller_call_id = excluded.caller_call_id, callee_call_id = excluded.callee_call_id
"""
_CALL_COLUMNS = """
id, tenant, started_at, answered_at, ended_at, last_event_at, caller, called, disposition,
answered_by, forwarding, trace, recording_path, hangup_cause, ended_by, caller_call_id,
callee_call_id
"""
# A crash left these rows open: the call ended, as far as anyone can know, at its last event
# (the answer, or the last heartbeat of ``touch_open_calls``). Everything known is kept: an
# answered call stays answered, with its answerer and recording; the cause says it was a crash.
CRASH_TRACE = "closed at start-up: the server stopped without ending the call"
_CRASHED_RECORDINGS = """
SELECT id, recording_path FROM call_records WHERE ended_at IS NULL AND recording_path IS NOT NULL
"""
_CLOSE_CRASHED_CALLS_SET = """
UPDATE call_records SET
    disposition = CASE WHEN answered_at IS NULL THEN 'failed' ELSE 'answered' END,
    ended_at = last_event_at, hangup_cause = 'crash', ended_by = 'server',
"""
# The trace gets one more line; JSON in a TEXT column is appended to in each dialect's words.
_APPEND_CRASH_TRACE: dict[Dialect, str] = {
    "sqlite": f"trace = json_insert(trace, '$[#]', '{CRASH_TRACE}')",
    "postgresql": f"trace = (trace::jsonb || to_jsonb('{CRASH_TRACE}'::text))::text",
}
_FORGET_RECORDING = "UPDATE call_records SET recording_path = NULL WHERE id = ?"
_TOUCH_OPEN_CALLS = """
UPDATE call_records SET last_event_at = ? WHERE ended_at IS NULL AND last_event_at < ?
"""


class Store:
    """The database, its writer task and the queries the server needs."""

    def __init__(
        self,
        backend: Backend,
        path: Path | None,
        commit_interval: float,
        clock: Clock | None = None,
        retry_interval: float = 1.0,
        node: str | None = None,
    ) -> None:
        self._backend = backend
        # issue #20: this node's identity (``[storage] node``), written beside its bindings and
        # call records; None: a tool beside the server (it writes no rows of its own).
        self.node = node
        # Binding writes per AOR (``write_bindings``) in flight now, and the sets watching which
        # AORs get written: ``pbx.binding_sync`` reads them so a reload never undoes a write that
        # is in memory but not yet committed.
        self._bindings_in_flight: dict[tuple[str, str], int] = {}
        self._binding_watchers: list[set[tuple[str, str]]] = []
        # Monotonic readings must be the loop's (group-commit deadlines go to timeout_at).
        self.clock: Clock = clock or SystemClock()
        self.path = path  # the SQLite file; None for PostgreSQL
        self.commit_interval = commit_interval
        self.retry_interval = retry_interval  # between attempts to write held call records
        self.stats = StoreStats()
        self.recovered_calls = 0  # open call records closed at start-up
        self._queue = _Queue()
        self._closing = False
        self._writer: asyncio.Task[None] | None = None
        # The loop the writer runs in (``asyncio.get_running_loop`` is a system call a time).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._retry_at = 0.0  # monotonic: held call records wait until then (database down)

    @property
    def dialect(self) -> Dialect:
        return self._backend.dialect

    @property
    def available(self) -> bool:
        """False while the database cannot be reached: refuse what must be stored now."""
        return self._backend.available

    # -- life cycle --------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        commit_interval: float = 0.2,
        recover_calls: bool = True,
        clock: Clock | None = None,
        node: str | None = None,
    ) -> Store:
        """Open (creating or upgrading) the SQLite database at ``path`` and start the writer.

        ``recover_calls=False`` leaves open call records alone: the server may be running and
        those calls are in progress (a command-line tool opening the database beside it).
        """
        _check_interval(commit_interval)
        backend = await SqliteBackend.connect(path)
        return await cls._start(backend, path, commit_interval, recover_calls, clock, node=node)

    @classmethod
    async def open_url(
        cls,
        url: str,
        *,
        commit_interval: float = 0.2,
        clock: Clock | None = None,
        retry_interval: float = 1.0,
        node: str | None = None,
        recover_calls: bool = True,
    ) -> Store:
        """Open (creating or upgrading the schema of) the PostgreSQL database at ``url``.

        Other nodes share the call records table and theirs are in progress: at start-up, only
        the open records of ``node`` are closed (none when ``node`` is None or
        ``recover_calls`` is False).
        """
        from pbx.store_pg import PostgresBackend  # psycopg is imported only when used

        _check_interval(commit_interval)
        backend = await PostgresBackend.connect(url, retry_interval=retry_interval)
        return await cls._start(
            backend,
            None,
            commit_interval,
            recover_calls and node is not None,
            clock,
            retry_interval,
            node=node,
        )

    @classmethod
    async def open_storage(
        cls,
        data_dir: Path,
        database: str | None,
        *,
        commit_interval: float = 0.2,
        recover_calls: bool = True,
        clock: Clock | None = None,
        node: str | None = None,
    ) -> Store:
        """The store ``[storage]`` names: ``database`` (PostgreSQL) or SQLite in ``data_dir``."""
        if database:
            return await cls.open_url(
                database,
                commit_interval=commit_interval,
                clock=clock,
                node=node,
                recover_calls=recover_calls,
            )
        return await cls.open(
            data_dir / DATABASE_NAME,
            commit_interval=commit_interval,
            recover_calls=recover_calls,
            clock=clock,
            node=node,
        )

    @classmethod
    async def _start(
        cls,
        backend: Backend,
        path: Path | None,
        commit_interval: float,
        recover_calls: bool,
        clock: Clock | None,
        retry_interval: float = 1.0,
        *,
        node: str | None = None,
    ) -> Store:
        try:
            store = cls(backend, path, commit_interval, clock, retry_interval, node)
            if recover_calls:
                store.recovered_calls = await _recover_calls(backend, node)
        except BaseException:
            await backend.close()
            raise
        store._loop = asyncio.get_running_loop()
        store._writer = store._loop.create_task(store._run(), name="pbx-store")
        if store.recovered_calls:
            log.warning(
                "call_records_recovered", count=store.recovered_calls, path=str(path), node=node
            )
        return store

    @classmethod
    async def open_in(
        cls, data_dir: Path, *, commit_interval: float = 0.2, recover_calls: bool = True
    ) -> Store:
        """Open ``<data_dir>/pbx.sqlite3`` (``[storage] data_dir``)."""
        return await cls.open(
            data_dir / DATABASE_NAME, commit_interval=commit_interval, recover_calls=recover_calls
        )

    async def close(self) -> None:
        """Commit what is queued, stop the writer and close the database."""
        if self._closing:
            return
        self._closing = True
        self._queue.wakeup.set()
        self._queue.urgent.set()
        if self._writer is not None:
            await self._writer
        await self._backend.close()

    async def flush(self) -> None:
        """Return once everything queued before this call is committed."""
        await self._submit(None, (), urgent=True)

    # -- registrations (write-through) --------------------------------------------------

    async def save_binding(self, binding: Binding) -> None:
        """Insert or refresh a binding; returns once committed."""
        await self.write_bindings((binding,), ())

    async def delete_binding(self, binding: Binding) -> None:
        """Remove a binding; returns once committed."""
        await self.write_bindings((), (binding,))

    async def apply_bindings(self, saved: Sequence[Binding], removed: Sequence[Binding]) -> None:
        """Persist a ``RegisterResult``'s changes, deletes first, in one commit."""
        await self.write_bindings(saved, removed)

    def write_bindings(
        self, saved: Sequence[Binding], removed: Sequence[Binding]
    ) -> asyncio.Future[int]:
        """``apply_bindings`` without a coroutine: the returned future resolves (or fails) once
        the changes are committed. They are queued together, so one commit takes them all, and
        only the last carries the future."""
        ops: list[tuple[str, tuple[Any, ...], Hashable]] = []
        for binding in removed:
            row = _binding_row(binding)
            ops.append((_DELETE_BINDING, row[1:], row))
        ops.extend(
            (_UPSERT_BINDING, _binding_params(b, b.node or self.node), _binding_row(b))
            for b in saved
        )
        if not ops:
            nothing: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            nothing.set_result(0)
            return nothing
        aors = {(str(b.tenant), str(b.extension)) for b in (*removed, *saved)}
        for sql, params, key in ops[:-1]:
            self._enqueue(sql, params, None, urgent=True, row=key)
        sql, params, key = ops[-1]
        future = self._submit(sql, params, urgent=True, row=key)
        for aor in aors:
            self._bindings_in_flight[aor] = self._bindings_in_flight.get(aor, 0) + 1
        for watcher in self._binding_watchers:
            watcher.update(aors)
        future.add_done_callback(lambda _f: self._bindings_settled(aors))
        return future

    def _bindings_settled(self, aors: set[tuple[str, str]]) -> None:
        for aor in aors:
            left = self._bindings_in_flight.get(aor, 0) - 1
            if left > 0:
                self._bindings_in_flight[aor] = left
            else:
                self._bindings_in_flight.pop(aor, None)

    def bindings_in_flight(self) -> set[tuple[str, str]]:
        """The AORs whose binding writes are queued or being committed now."""
        return set(self._bindings_in_flight)

    def watch_binding_writes(self) -> set[tuple[str, str]]:
        """A set that gathers every AOR written from now on, until ``unwatch_binding_writes``."""
        watcher: set[tuple[str, str]] = set()
        self._binding_watchers.append(watcher)
        return watcher

    def unwatch_binding_writes(self, watcher: set[tuple[str, str]]) -> None:
        self._binding_watchers = [w for w in self._binding_watchers if w is not watcher]

    @property
    def writer_session(self) -> int | None:
        """The PostgreSQL backend pid of the writer's connection (its notifications' sender)."""
        pid: int | None = getattr(self._backend, "writer_pid", None)
        return pid

    async def load_aor_bindings(
        self, aors: Sequence[tuple[str, str]], now: float
    ) -> dict[tuple[str, str], list[Binding]]:
        """The unexpired bindings of each AOR in ``aors`` (``pbx.binding_sync``)."""
        out: dict[tuple[str, str], list[Binding]] = {aor: [] for aor in aors}
        for start in range(0, len(aors), 500):
            chunk = aors[start : start + 500]
            where = " OR ".join("(tenant = ? AND extension = ?)" for _ in chunk)
            sql = (
                f"SELECT {_BINDING_COLUMNS} FROM registrations"
                f" WHERE expires_at > ? AND ({where}) ORDER BY registered_at"
            )
            params = (now, *(part for aor in chunk for part in aor))
            for binding in self._bindings_from_rows(await self._backend.fetch(sql, params)):
                out.setdefault((binding.tenant, binding.extension), []).append(binding)
        return out

    async def load_bindings(self, now: float) -> list[Binding]:
        """Every unexpired binding (start-up)."""
        sql = (
            f"SELECT {_BINDING_COLUMNS} FROM registrations WHERE expires_at > ?"
            " ORDER BY registered_at"
        )
        return self._bindings_from_rows(await self._backend.fetch(sql, (now,)))

    def _bindings_from_rows(self, rows: Sequence[tuple[Any, ...]]) -> list[Binding]:
        out: list[Binding] = []
        for row in rows:
            binding = _binding_from_row(tuple(row))
            if binding is None:
                log.warning("registration_row_unreadable", row=tuple(row))
                continue
            node = row[14]
            if node is not None and self.node is not None and node != self.node:
                # Another node's: its TCP/TLS connection is not ours to send over. Without an
                # edge, the phone is reached by its address; with the edge (Path), through the
                # edge (docs/design.md 10.8).
                binding = dataclasses.replace(binding, connection_id=None, node=str(node))
            out.append(binding)
        return out

    async def purge_expired(self, now: float) -> int:
        """Delete the bindings expired at ``now``; how many were deleted."""
        sql = "DELETE FROM registrations WHERE expires_at <= ?"
        return await self._submit(sql, (now,), urgent=True)

    # -- call records (group commit) ---------------------------------------------------

    def record_call(self, record: CallRecord) -> asyncio.Future[int]:
        """Write (insert or update) a call record; the future resolves once it is committed.

        The call engine need not await it: it is committed within ``commit_interval``.
        """
        return self._submit(
            _UPSERT_CALL,
            (),
            urgent=False,
            row=("call_records", record.id),
            make_params=partial(_call_params, record, self.node),
        )

    def close_call(self, record: CallRecord) -> asyncio.Future[int]:
        """Write the final row of a call (``ended_at`` and ``disposition`` set)."""
        if record.ended_at is None or record.disposition not in DISPOSITIONS:
            raise ValueError("a closed call record needs ended_at and a disposition")
        return self._submit(
            _UPSERT_CALL,
            (),
            urgent=False,
            row=("call_records", record.id),
            make_params=partial(_call_params, record, self.node),
        )

    def touch_open_calls(self, now: float) -> asyncio.Future[int]:
        """Move the last instant known of every call in progress to ``now`` (a heartbeat every
        ``CALL_HEARTBEAT_SECONDS``): a crash then closes them at most that long before it."""
        if self.dialect == "postgresql":  # a shared table: only this node's calls (issue #20)
            sql = _TOUCH_OPEN_CALLS.rstrip() + " AND node = ?"
            return self._submit(sql, (now, now, self.node), urgent=False)
        return self._submit(_TOUCH_OPEN_CALLS, (now, now), urgent=False)

    async def calls(self, *, limit: int = 100, tenant: str | None = None) -> list[CallRecord]:
        """The most recent call records, newest first (admin ``GET /calls``)."""
        where, params = ("WHERE tenant = ?", (tenant, limit)) if tenant else ("", (limit,))
        sql = f"SELECT {_CALL_COLUMNS} FROM call_records {where} ORDER BY started_at DESC LIMIT ?"
        rows = await self._backend.fetch(sql, params)
        return [_call_from_row(tuple(row)) for row in rows]

    async def call(self, call_id: str) -> CallRecord | None:
        sql = f"SELECT {_CALL_COLUMNS} FROM call_records WHERE id = ?"
        rows = await self._backend.fetch(sql, (call_id,))
        return _call_from_row(tuple(rows[0])) if rows else None

    # -- bans ---------------------------------------------------------------------------

    async def save_ban(self, host: str, until: float) -> None:
        sql = (
            "INSERT INTO bans (host, until) VALUES (?, ?)"
            " ON CONFLICT (host) DO UPDATE SET until = excluded.until"
        )
        await self._submit(sql, (host, until), urgent=True, row=("bans", host))

    async def delete_ban(self, host: str) -> None:
        await self._submit(
            "DELETE FROM bans WHERE host = ?", (host,), urgent=True, row=("bans", host)
        )

    async def load_bans(self, now: float) -> list[tuple[str, float]]:
        """The bans still running at ``now``, as ``(host, until)``."""
        rows = await self._backend.fetch(
            "SELECT host, until FROM bans WHERE until > ? ORDER BY host", (now,)
        )
        return [(str(r[0]), float(r[1])) for r in rows]

    # -- any statement (the control panel) -----------------------------------------------

    def write(self, sql: str, params: tuple[Any, ...] = ()) -> asyncio.Future[int]:
        """Run one statement in the writer's next commit (urgent); the future gives its rowcount.

        The statement shares its commit with registrations: if it fails, the whole commit
        fails. Write only what cannot break a constraint (``INSERT ... ON CONFLICT DO NOTHING``
        and the rowcount, values checked first). Writes queued together, without an ``await``
        between them, are committed together, in order.
        """
        return self._submit(sql, params, urgent=True)

    async def fetch(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """The rows of one query, read straight from the connection."""
        return await self._backend.fetch(sql, params)

    # -- the writer ---------------------------------------------------------------------

    def _submit(
        self,
        sql: str | None,
        params: tuple[Any, ...],
        *,
        urgent: bool,
        row: Hashable | None = None,
        make_params: Callable[[], tuple[Any, ...]] | None = None,
    ) -> asyncio.Future[int]:
        future: asyncio.Future[int] = (self._loop or asyncio.get_running_loop()).create_future()
        # Nobody has to await a call record: never let an unretrieved failure warn at exit.
        future.add_done_callback(_consume)
        self._enqueue(sql, params, future, urgent=urgent, row=row, make_params=make_params)
        return future

    def _enqueue(
        self,
        sql: str | None,
        params: tuple[Any, ...],
        future: asyncio.Future[int] | None,
        *,
        urgent: bool,
        row: Hashable | None = None,
        make_params: Callable[[], tuple[Any, ...]] | None = None,
    ) -> None:
        if self._closing:
            raise StoreError("the store is closed")
        queue = self._queue
        op = _Op(sql, params, future, urgent, self.clock.monotonic(), row, make_params)
        queue.ops.append(op)
        queue.wakeup.set()
        if urgent:
            queue.urgent.set()

    async def _run(self) -> None:
        queue = self._queue
        while True:
            if not queue.ops:
                if self._closing:
                    return
                queue.wakeup.clear()
                await queue.wakeup.wait()
                continue
            if not self._closing and not any(op.urgent for op in queue.ops):
                # Group commit: let lazy writes gather for up to commit_interval, unless an
                # urgent one (a registration, a flush) turns up first.
                # Call records held while the database was down wait for the next attempt.
                deadline = max(queue.ops[0].enqueued_at + self.commit_interval, self._retry_at)
                if deadline > self.clock.monotonic():
                    try:
                        async with asyncio.timeout_at(deadline):
                            await queue.urgent.wait()
                    except TimeoutError:
                        pass
            batch, queue.ops = queue.ops, []
            queue.wakeup.clear()
            queue.urgent.clear()
            await self._commit(batch)

    async def _commit(self, batch: list[_Op]) -> None:
        # Each database call is a round trip (to aiosqlite's thread, or to PostgreSQL), so a
        # commit runs as few statements as it can (``_plan``): a busy batch costs a handful of
        # round trips instead of two per row. A statement that shares its run, or was
        # superseded, reports a row count of -1 (nobody awaits the count of an upsert); one
        # alone reports its own.
        plan = _plan(batch)
        statements: list[tuple[str | None, Sequence[tuple[Any, ...]]]] = [
            (sql, _values(run)) for sql, run in plan
        ]
        if self.dialect == "postgresql":
            # issue #20: every node hears of the AORs whose bindings changed (pbx.binding_sync),
            # in the same transaction, so a failed commit tells nobody; one statement for all.
            aors = sorted({aor for op in batch if (aor := _binding_aor(op.row)) is not None})
            if aors:
                statements.append((_NOTIFY_BINDINGS, [(aors,)]))
        started = self.clock.monotonic()
        try:
            results = await self._backend.run(statements)
        except Exception as exc:
            # The adapter boundary: a failed commit fails its writers, never the writer task.
            self.stats.failed_commits += 1
            if isinstance(exc, StoreUnavailable) and not self._closing:
                # The database is unreachable: registrations fail now (503 upstream); call
                # records are held and written once it is back (up to MAX_HELD_CALL_RECORDS).
                self._hold(batch)
                return
            log.error("store_commit_failed", ops=len(batch), exc_info=True)
            error = exc if isinstance(exc, StoreError) else StoreError(f"commit failed: {exc}")
            for op in batch:
                if op.future is not None and not op.future.done():
                    op.future.set_exception(error)
            return
        counts = {id(run[0]): count for (_sql, run), count in zip(plan, results, strict=False)}
        self.stats.commits += 1
        self.stats.statements += len(batch)
        took = self.clock.monotonic() - started
        if took >= SLOW_COMMIT_SECONDS:
            # Registrations wait for their commit: a phone retransmits after 0.5 s.
            log.warning("store_commit_slow", seconds=round(took, 3), ops=len(batch))
        for op in batch:
            if op.future is not None and not op.future.done():
                op.future.set_result(counts.get(id(op), -1))

    def _hold(self, batch: list[_Op]) -> None:
        """Fail a batch's urgent writes (the database is unreachable); keep its call records."""
        error = StoreUnavailable("the database cannot be reached")
        held: list[_Op] = []
        for op in batch:
            if not op.urgent and op.sql is not None and len(held) < MAX_HELD_CALL_RECORDS:
                held.append(op)
            elif op.future is not None and not op.future.done():
                op.future.set_exception(error)
        if held:
            log.warning("call_records_held", count=len(held))
            self._queue.ops[:0] = held
            self._queue.wakeup.set()
        self._retry_at = self.clock.monotonic() + self.retry_interval


def _values(run: list[_Op]) -> list[tuple[Any, ...]]:
    """The parameters of a run's ops; an op whose parameters cannot be made fails alone."""
    values: list[tuple[Any, ...]] = []
    for op in run:
        try:
            values.append(op.values())
        except Exception as exc:
            log.error("store_params_failed", sql=op.sql, exc_info=True)
            if op.future is not None and not op.future.done():
                op.future.set_exception(StoreError(f"cannot write: {exc}"))
    return values


def _check_interval(commit_interval: float) -> None:
    if not 0 <= commit_interval <= 0.8:
        raise ValueError("commit_interval must keep commits within a second (0-0.8 s)")


# --- helpers ----------------------------------------------------------------------------------


def _plan(batch: Sequence[_Op]) -> list[tuple[str | None, list[_Op]]]:
    """The statements of one commit, as runs of ops with the same SQL.

    Between two ops without a ``row`` (which run in their place), the row writes are merged:
    only the last write of each row is kept, since an earlier one would be overwritten within
    the same commit, and the kept ones are grouped by SQL, since writes to distinct rows
    commute. A burst of registrations that each delete one binding and upsert another is then
    two ``executemany`` calls, not two statements per registration.
    """
    runs: list[tuple[str | None, list[_Op]]] = []
    last: dict[Hashable, _Op] = {}

    def close_segment() -> None:
        by_sql: dict[str | None, list[_Op]] = {}
        for op in last.values():
            by_sql.setdefault(op.sql, []).append(op)
        runs.extend(by_sql.items())
        last.clear()

    for op in batch:
        if op.row is None:
            close_segment()
            runs.append((op.sql, [op]))
        else:
            last[op.row] = op
    close_segment()
    return runs


async def _prepare(db: aiosqlite.Connection) -> None:
    """WAL mode and the schema, created or upgraded (one transaction per migration)."""
    cursor = await db.execute("PRAGMA journal_mode=WAL")
    row = await cursor.fetchone()
    await cursor.close()
    if row is None or str(row[0]).lower() != "wal":
        raise StoreError(f"cannot switch the database to WAL mode (got {row!r})")
    # WAL + NORMAL: a commit is durable against a process crash without an fsync each time.
    await db.execute("PRAGMA synchronous=NORMAL")
    await db.execute("PRAGMA busy_timeout=5000")
    await db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    rows = list(await db.execute_fetchall("SELECT version FROM schema_version"))
    version = int(rows[0][0]) if rows else 0
    if version > SCHEMA_VERSION:
        raise StoreError(f"the database has schema {version}, newer than {SCHEMA_VERSION}")
    for target in range(version + 1, SCHEMA_VERSION + 1):
        await db.execute("BEGIN IMMEDIATE")
        try:
            for statement in migration_statements(_MIGRATIONS[target - 1], "sqlite"):
                await db.execute(statement)
            await db.execute("DELETE FROM schema_version")
            await db.execute("INSERT INTO schema_version (version) VALUES (?)", (target,))
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise


async def _recover_calls(backend: Backend, node: str | None) -> int:
    """Close the call records a crash left open; how many. A recording the crash cut short
    gets its WAV header's sizes fixed (the recorder rewrites them at every flush, but a kill
    between the frames and the header leaves them short), one that was never created is
    unlinked from its row. On PostgreSQL (shared by several nodes) only this node's rows."""
    mine, params = ("", ()) if backend.dialect == "sqlite" else (" AND node = ?", (node,))
    forget: list[tuple[Any, ...]] = []
    for call_id, path in await backend.fetch(_CRASHED_RECORDINGS.rstrip() + mine, params):
        kept = await asyncio.to_thread(repair_wav, Path(path))
        log.warning("recording_recovered", call=call_id, path=path, kept=kept)
        if not kept:
            forget.append((call_id,))
    close = (
        _CLOSE_CRASHED_CALLS_SET
        + _APPEND_CRASH_TRACE[backend.dialect]
        + "\nWHERE ended_at IS NULL"
        + mine
    )
    plan: list[tuple[str | None, Sequence[tuple[Any, ...]]]] = [(close, [params])]
    if forget:
        plan.append((_FORGET_RECORDING, forget))
    counts = await backend.run(plan)
    return counts[0]


def _consume(future: asyncio.Future[int]) -> None:
    if not future.cancelled():
        future.exception()


def _binding_aor(row: Hashable | None) -> str | None:
    """``<tenant>/<extension>`` of a registrations row key (``_binding_row``), else None."""
    if isinstance(row, tuple) and len(row) == 4 and row[0] == "registrations":
        return f"{row[1]}/{row[2]}"
    return None


def _binding_row(binding: Binding) -> tuple[str, str, str, str]:
    """The registrations row of ``binding``: the table, then its primary key."""
    return ("registrations", binding.tenant, binding.extension, binding.contact_key)


def _binding_params(binding: Binding, node: str | None) -> tuple[Any, ...]:
    return (
        binding.tenant,
        binding.extension,
        binding.contact_key,
        binding.contact,
        _json_params(binding.contact_params),
        binding.source_host,
        binding.source_port,
        binding.transport,
        binding.connection_id,
        binding.call_id,
        binding.cseq,
        binding.registered_at,
        binding.expires_at,
        binding.user_agent,
        _json_path(binding.path),
        node,
    )


# A binding's contact params and Path are the same few values across phones and refreshes
# (most often none): their JSON is made once per distinct value, not once per registration.
@lru_cache(maxsize=256)
def _json_params(params: Params) -> str:
    return json.dumps([list(p) for p in params])


@lru_cache(maxsize=256)
def _json_path(path: tuple[str, ...]) -> str:
    return json.dumps(list(path))


def _call_params(record: CallRecord, node: str | None) -> tuple[Any, ...]:
    known = [t for t in (record.started_at, record.answered_at, record.ended_at) if t is not None]
    last = record.last_event_at if record.last_event_at is not None else max(known)
    return (
        record.id,
        record.tenant,
        record.started_at,
        record.answered_at,
        record.ended_at,
        last,
        record.caller,
        record.called,
        record.disposition,
        record.answered_by,
        json.dumps(list(record.forwarding), ensure_ascii=False),
        json.dumps(list(record.trace), ensure_ascii=False),
        record.recording_path,
        node,
        record.hangup_cause,
        record.ended_by,
        record.caller_call_id,
        record.callee_call_id,
    )


def _call_from_row(row: tuple[Any, ...]) -> CallRecord:
    disposition = row[8]
    return CallRecord(
        id=row[0],
        tenant=row[1],
        started_at=row[2],
        answered_at=row[3],
        ended_at=row[4],
        last_event_at=row[5],
        caller=row[6],
        called=row[7],
        disposition=disposition if disposition in DISPOSITIONS else None,
        answered_by=row[9],
        forwarding=tuple(json.loads(row[10])),
        trace=tuple(json.loads(row[11])),
        recording_path=row[12],
        hangup_cause=row[13] if row[13] in HANGUP_CAUSES else None,
        ended_by=row[14] if row[14] in ENDED_BY else None,
        caller_call_id=row[15],
        callee_call_id=row[16],
    )


def _binding_from_row(row: tuple[Any, ...]) -> Binding | None:
    try:
        uri = parse_uri(row[2])
        params: Params = tuple(
            (str(k), None if v is None else str(v)) for k, v in json.loads(row[3])
        )
        path = tuple(str(hop) for hop in json.loads(row[13]))
    except (PbxError, ValueError, TypeError):
        return None
    if not isinstance(uri, SipUri):
        return None
    return Binding(
        tenant=TenantId(row[0]),
        extension=Extension(row[1]),
        uri=uri,
        contact_params=params,
        source_host=row[4],
        source_port=row[5],
        transport=row[6],
        connection_id=row[7],
        call_id=row[8],
        cseq=row[9],
        registered_at=row[10],
        expires_at=row[11],
        user_agent=row[12],
        path=path,
    )
