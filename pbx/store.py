"""The SQLite store (aiosqlite): registrations, call records, bans, the control panel's tables.

One database file, ``<data_dir>/pbx.sqlite3``, in WAL mode, with a ``schema_version`` table.
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
``recover_calls=False``). Reads (``load_bindings``, ``calls``) go straight to the connection.

Times are POSIX seconds (``time.time()``), as in the cores.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
SCHEMA_VERSION = 4
SLOW_COMMIT_SECONDS = 0.1
# How often the server moves the last instant known of its calls in progress (``touch_open_calls``)
CALL_HEARTBEAT_SECONDS = 5.0  # a commit this slow is logged


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
    # 4: records others can match and read (issue 16): why the call ended, which side ended it,
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


@dataclass(slots=True)
class _Queue:
    ops: list[_Op] = field(default_factory=list)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    urgent: asyncio.Event = field(default_factory=asyncio.Event)


_UPSERT_BINDING = """
INSERT INTO registrations (tenant, extension, contact_key, contact, contact_params, source_host,
    source_port, transport, connection_id, call_id, cseq, registered_at, expires_at, user_agent)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (tenant, extension, contact_key) DO UPDATE SET
    contact = excluded.contact, contact_params = excluded.contact_params,
    source_host = excluded.source_host, source_port = excluded.source_port,
    transport = excluded.transport, connection_id = excluded.connection_id,
    call_id = excluded.call_id, cseq = excluded.cseq, registered_at = excluded.registered_at,
    expires_at = excluded.expires_at, user_agent = excluded.user_agent
"""
_DELETE_BINDING = """
DELETE FROM registrations WHERE tenant = ? AND extension = ? AND contact_key = ?
"""
_BINDING_COLUMNS = """
tenant, extension, contact, contact_params, source_host, source_port, transport, connection_id,
call_id, cseq, registered_at, expires_at, user_agent
"""
_UPSERT_CALL = """
INSERT INTO call_records (id, tenant, started_at, answered_at, ended_at, last_event_at, caller,
    called, disposition, answered_by, forwarding, trace, recording_path, hangup_cause, ended_by,
    caller_call_id, callee_call_id)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    tenant = excluded.tenant, started_at = excluded.started_at,
    answered_at = excluded.answered_at, ended_at = excluded.ended_at,
    last_event_at = excluded.last_event_at, caller = excluded.caller, called = excluded.called,
    disposition = excluded.disposition, answered_by = excluded.answered_by,
    forwarding = excluded.forwarding, trace = excluded.trace,
    recording_path = excluded.recording_path, hangup_cause = excluded.hangup_cause,
    ended_by = excluded.ended_by, caller_call_id = excluded.caller_call_id,
    callee_call_id = excluded.callee_call_id
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
_CLOSE_CRASHED_CALLS = f"""
UPDATE call_records SET
    disposition = CASE WHEN answered_at IS NULL THEN 'failed' ELSE 'answered' END,
    ended_at = last_event_at, hangup_cause = 'crash', ended_by = 'server',
    trace = json_insert(trace, '$[#]', '{CRASH_TRACE}')
WHERE ended_at IS NULL
"""
_FORGET_RECORDING = "UPDATE call_records SET recording_path = NULL WHERE id = ?"
_TOUCH_OPEN_CALLS = """
UPDATE call_records SET last_event_at = ? WHERE ended_at IS NULL AND last_event_at < ?
"""


class Store:
    """The database, its writer task and the queries the server needs."""

    def __init__(
        self,
        db: aiosqlite.Connection,
        path: Path,
        commit_interval: float,
        clock: Clock | None = None,
    ) -> None:
        self._db = db
        # Monotonic readings must be the loop's (group-commit deadlines go to timeout_at).
        self.clock: Clock = clock or SystemClock()
        self.path = path
        self.commit_interval = commit_interval
        self.stats = StoreStats()
        self.recovered_calls = 0  # open call records closed at start-up
        self._queue = _Queue()
        self._closing = False
        self._writer: asyncio.Task[None] | None = None

    # -- life cycle --------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        commit_interval: float = 0.2,
        recover_calls: bool = True,
        clock: Clock | None = None,
    ) -> Store:
        """Open (creating or upgrading) the database at ``path`` and start the writer.

        ``recover_calls=False`` leaves open call records alone: the server may be running and
        those calls are in progress (a command-line tool opening the database beside it).
        """
        if not 0 <= commit_interval <= 0.8:
            raise ValueError("commit_interval must keep commits within a second (0-0.8 s)")
        path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path, isolation_level=None)
        try:
            await _prepare(db)
            store = cls(db, path, commit_interval, clock)
            if recover_calls:
                store.recovered_calls = await _recover_calls(db)
        except BaseException:
            await db.close()
            raise
        store._writer = asyncio.get_running_loop().create_task(store._run(), name="pbx-store")
        if store.recovered_calls:
            log.warning("call_records_recovered", count=store.recovered_calls, path=str(path))
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
        await self._db.close()

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
        ops.extend((_UPSERT_BINDING, _binding_params(b), _binding_row(b)) for b in saved)
        if not ops:
            nothing: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            nothing.set_result(0)
            return nothing
        for sql, params, key in ops[:-1]:
            self._enqueue(sql, params, None, urgent=True, row=key)
        sql, params, key = ops[-1]
        return self._submit(sql, params, urgent=True, row=key)

    async def load_bindings(self, now: float) -> list[Binding]:
        """Every unexpired binding (start-up)."""
        sql = (
            f"SELECT {_BINDING_COLUMNS} FROM registrations WHERE expires_at > ?"
            " ORDER BY registered_at"
        )
        rows = await self._db.execute_fetchall(sql, (now,))
        out: list[Binding] = []
        for row in rows:
            binding = _binding_from_row(tuple(row))
            if binding is None:
                log.warning("registration_row_unreadable", row=tuple(row))
                continue
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
            _UPSERT_CALL, _call_params(record), urgent=False, row=("call_records", record.id)
        )

    def close_call(self, record: CallRecord) -> asyncio.Future[int]:
        """Write the final row of a call (``ended_at`` and ``disposition`` set)."""
        if record.ended_at is None or record.disposition not in DISPOSITIONS:
            raise ValueError("a closed call record needs ended_at and a disposition")
        return self._submit(
            _UPSERT_CALL, _call_params(record), urgent=False, row=("call_records", record.id)
        )

    def touch_open_calls(self, now: float) -> asyncio.Future[int]:
        """Move the last instant known of every call in progress to ``now`` (a heartbeat every
        ``CALL_HEARTBEAT_SECONDS``): a crash then closes them at most that long before it."""
        return self._submit(_TOUCH_OPEN_CALLS, (now, now), urgent=False)

    async def calls(self, *, limit: int = 100, tenant: str | None = None) -> list[CallRecord]:
        """The most recent call records, newest first (admin ``GET /calls``)."""
        where, params = ("WHERE tenant = ?", (tenant, limit)) if tenant else ("", (limit,))
        sql = f"SELECT {_CALL_COLUMNS} FROM call_records {where} ORDER BY started_at DESC LIMIT ?"
        rows = await self._db.execute_fetchall(sql, params)
        return [_call_from_row(tuple(row)) for row in rows]

    async def call(self, call_id: str) -> CallRecord | None:
        sql = f"SELECT {_CALL_COLUMNS} FROM call_records WHERE id = ?"
        rows = list(await self._db.execute_fetchall(sql, (call_id,)))
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
        rows = await self._db.execute_fetchall(
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
        rows = await self._db.execute_fetchall(sql, params)
        return [tuple(row) for row in rows]

    # -- the writer ---------------------------------------------------------------------

    def _submit(
        self,
        sql: str | None,
        params: tuple[Any, ...],
        *,
        urgent: bool,
        row: Hashable | None = None,
    ) -> asyncio.Future[int]:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        # Nobody has to await a call record: never let an unretrieved failure warn at exit.
        future.add_done_callback(_consume)
        self._enqueue(sql, params, future, urgent=urgent, row=row)
        return future

    def _enqueue(
        self,
        sql: str | None,
        params: tuple[Any, ...],
        future: asyncio.Future[int] | None,
        *,
        urgent: bool,
        row: Hashable | None = None,
    ) -> None:
        if self._closing:
            raise StoreError("the store is closed")
        queue = self._queue
        queue.ops.append(_Op(sql, params, future, urgent, self.clock.monotonic(), row))
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
                deadline = queue.ops[0].enqueued_at + self.commit_interval
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
        # Each aiosqlite call is a round trip to the database thread, so a commit runs as few
        # statements as it can (``_plan``): a busy batch costs a handful of round trips instead of
        # two per row. A statement that shares its run, or was superseded, reports a row count of
        # -1 (nobody awaits the count of an upsert); one alone reports its own.
        counts: dict[int, int] = {}
        started = self.clock.monotonic()
        try:
            await self._db.execute("BEGIN IMMEDIATE")
            for sql, run in _plan(batch):
                if sql is None:
                    counts[id(run[0])] = 0
                elif len(run) == 1:
                    cursor = await self._db.execute(sql, run[0].params)
                    counts[id(run[0])] = cursor.rowcount
                    await cursor.close()
                else:
                    cursor = await self._db.executemany(sql, [op.params for op in run])
                    await cursor.close()
            await self._db.execute("COMMIT")
        except Exception as exc:
            # The adapter boundary: a failed commit fails its writers, never the writer task.
            self.stats.failed_commits += 1
            log.error("store_commit_failed", ops=len(batch), exc_info=True)
            if self._db.in_transaction:
                try:
                    await self._db.execute("ROLLBACK")
                except Exception:
                    log.error("store_rollback_failed", exc_info=True)
            error = StoreError(f"commit failed: {exc}")
            for op in batch:
                if op.future is not None and not op.future.done():
                    op.future.set_exception(error)
            return
        self.stats.commits += 1
        self.stats.statements += len(batch)
        took = self.clock.monotonic() - started
        if took >= SLOW_COMMIT_SECONDS:
            # Registrations wait for their commit: a phone retransmits after 0.5 s.
            log.warning("store_commit_slow", seconds=round(took, 3), ops=len(batch))
        for op in batch:
            if op.future is not None and not op.future.done():
                op.future.set_result(counts.get(id(op), -1))


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
            for statement in _MIGRATIONS[target - 1].split(";"):
                if statement.strip():
                    await db.execute(statement)
            await db.execute("DELETE FROM schema_version")
            await db.execute("INSERT INTO schema_version (version) VALUES (?)", (target,))
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise


async def _recover_calls(db: aiosqlite.Connection) -> int:
    """Close the call records a crash left open; how many. A recording the crash cut short
    gets its WAV header's sizes fixed (the recorder rewrites them at every flush, but a kill
    between the frames and the header leaves them short), one that was never created is
    unlinked from its row."""
    recordings = [tuple(r) for r in await db.execute_fetchall(_CRASHED_RECORDINGS)]
    for call_id, path in recordings:
        kept = await asyncio.to_thread(repair_wav, Path(path))
        log.warning("recording_recovered", call=call_id, path=path, kept=kept)
        if not kept:
            await db.execute(_FORGET_RECORDING, (call_id,))
    cursor = await db.execute(_CLOSE_CRASHED_CALLS)
    count = cursor.rowcount
    await cursor.close()
    return count


def _consume(future: asyncio.Future[int]) -> None:
    if not future.cancelled():
        future.exception()


def _binding_row(binding: Binding) -> tuple[str, str, str, str]:
    """The registrations row of ``binding``: the table, then its primary key."""
    return ("registrations", binding.tenant, binding.extension, binding.contact_key)


def _binding_params(binding: Binding) -> tuple[Any, ...]:
    return (
        binding.tenant,
        binding.extension,
        binding.contact_key,
        binding.contact,
        json.dumps([list(p) for p in binding.contact_params]),
        binding.source_host,
        binding.source_port,
        binding.transport,
        binding.connection_id,
        binding.call_id,
        binding.cseq,
        binding.registered_at,
        binding.expires_at,
        binding.user_agent,
    )


def _call_params(record: CallRecord) -> tuple[Any, ...]:
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
    )
