"""The SQLite writer (issue #21): commits on the loop's thread, never waiting for the disk or
for another process; the WAL checkpointed in aiosqlite's thread."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from pbx.store import DATABASE_NAME, SqliteBackend, Store
from tests.test_store import binding, call

pytestmark = pytest.mark.asyncio


def backend_of(store: Store) -> SqliteBackend:
    backend = store._backend
    assert isinstance(backend, SqliteBackend)
    return backend


async def test_a_commit_runs_on_the_loops_thread_and_is_visible_to_others(tmp_path: Path) -> None:
    path = tmp_path / DATABASE_NAME
    store = await Store.open(path)
    backend = backend_of(store)
    threads: list[str] = []
    assert backend.writer is not None
    backend.writer.set_trace_callback(lambda sql: threads.append(threading.current_thread().name))
    before = backend.sync_commits
    try:
        await store.save_binding(binding())
        assert threads
        assert set(threads) == {threading.current_thread().name}
        assert (backend.sync_commits - before, backend.thread_commits) == (1, 0)
        with sqlite3.connect(path) as other:
            assert other.execute("SELECT count(*) FROM registrations").fetchone() == (1,)
    finally:
        await store.close()


async def test_while_another_process_holds_the_lock_the_commit_waits_in_the_thread(
    tmp_path: Path,
) -> None:
    # Another writer (``pbx panel``, a CLI command) holds the database's write lock. The
    # registration's commit waits for it in aiosqlite's thread: the loop keeps running.
    path = tmp_path / DATABASE_NAME
    store = await Store.open(path)
    backend = backend_of(store)
    other = sqlite3.connect(path, isolation_level=None)
    before = backend.sync_commits
    assert backend.writer is not None
    assert backend.writer.execute("PRAGMA busy_timeout").fetchone() == (0,)  # never waits
    try:
        other.execute("BEGIN IMMEDIATE")
        saving = asyncio.ensure_future(store.save_binding(binding()))
        ticks = 0
        while backend.thread_commits == 0:  # the loop turns while the commit is tried
            await asyncio.sleep(0)
            ticks += 1
            assert ticks < 10_000
        done, _ = await asyncio.wait([saving], timeout=0.05)
        assert not done  # waiting for the lock, in the thread: not failed, not blocking
        other.execute("COMMIT")
        await asyncio.wait_for(saving, 5)
        assert (backend.sync_commits - before, backend.thread_commits) == (0, 1)
        assert other.execute("SELECT count(*) FROM registrations").fetchone() == (1,)
        await store.save_binding(binding("10.0.0.9"))  # the lock is free: on the loop again
        assert backend.sync_commits - before == 1
    finally:
        other.close()
        await store.close()


async def test_a_large_commit_runs_in_the_thread(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / DATABASE_NAME)
    backend = backend_of(store)
    backend.SYNC_ROWS_MAX = 3
    before = backend.sync_commits
    try:
        await asyncio.gather(*(store.record_call(call(f"c{i}")) for i in range(4)))
        assert (backend.sync_commits - before, backend.thread_commits) == (0, 1)
        await asyncio.gather(*(store.record_call(call(f"d{i}")) for i in range(3)))
        assert (backend.sync_commits - before, backend.thread_commits) == (1, 1)
        assert len(await store.calls(limit=10)) == 7
    finally:
        await store.close()


async def test_the_wal_is_checkpointed_into_the_database_file(tmp_path: Path) -> None:
    # The writer never checkpoints itself; a passive checkpoint follows its commits in the
    # thread. The database file alone (its WAL ignored) then holds the row.
    path = tmp_path / DATABASE_NAME
    store = await Store.open(path)
    backend = backend_of(store)
    if backend._checkpoint is not None:  # the one after the start-up's commit
        await backend._checkpoint
    backend.CHECKPOINT_SECONDS = 0.0
    try:
        await store.record_call(call("c1"))
        assert backend._checkpoint is not None
        await backend._checkpoint
        file_only = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
        try:
            rows = file_only.execute("SELECT id FROM call_records").fetchall()
        finally:
            file_only.close()
        assert rows == [("c1",)]
    finally:
        await store.close()


async def test_a_failed_commit_is_rolled_back_and_the_next_one_is_written(
    tmp_path: Path,
) -> None:
    store = await Store.open(tmp_path / DATABASE_NAME)
    backend = backend_of(store)
    try:
        with pytest.raises(sqlite3.IntegrityError):
            await backend.run(
                [
                    ("INSERT INTO bans (host, until) VALUES (?, ?)", [("h1", 1.0)]),
                    ("INSERT INTO bans (host, until) VALUES (?, ?)", [("h1", 2.0)]),
                ]
            )
        assert backend.writer is not None
        assert not backend.writer.in_transaction
        await store.save_ban("h2", 5.0)
        assert await store.load_bans(0.0) == [("h2", 5.0)]
    finally:
        await store.close()
