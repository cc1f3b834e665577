"""The SQLite store on real files: bindings, group-committed call records, recovery."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

import pbx.store as store_module
from pbx.config.model import Extension, TenantId
from pbx.media.wav import TELEPHONE_STEREO, build_wav_header, read_wav
from pbx.registrar import Binding
from pbx.sip.message import SipUri
from pbx.store import (
    CRASH_TRACE,
    DATABASE_NAME,
    SCHEMA_VERSION,
    CallRecord,
    Store,
    StoreError,
    _Op,
    _plan,
)

NOW = 1_764_000_000.0


def binding(host: str = "192.168.1.10", *, expires_in: float = 600, ext: str = "1001") -> Binding:
    return Binding(
        tenant=TenantId("acme"),
        extension=Extension(ext),
        uri=SipUri("sip", host, ext, port=5060, params=(("transport", "tcp"), ("ob", None))),
        source_host="198.51.100.7",
        source_port=40123,
        transport="TCP",
        connection_id="tcp-3",
        call_id="reg-1@phone",
        cseq=7,
        registered_at=NOW,
        expires_at=NOW + expires_in,
        user_agent="Phone/2 (日本語)",
        contact_params=(("q", "0.5"), ("+sip.instance", '"<urn:uuid:abc>"'), ("flag", None)),
    )


def call(call_id: str = "c1", **changes: object) -> CallRecord:
    fields: dict[str, object] = {
        "id": call_id,
        "tenant": "acme",
        "started_at": NOW,
        "caller": "09011112222",
        "called": "0312345678",
    }
    fields.update(changes)
    return CallRecord(**fields)  # type: ignore[arg-type]


def raw_rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    """Read with a separate connection: what is really committed on disk."""
    with sqlite3.connect(path) as db:
        return list(db.execute(sql))


@pytest.mark.asyncio
async def test_database_file_is_in_wal_mode_with_a_schema_version(tmp_path: Path) -> None:
    store = await Store.open_in(tmp_path / "data")
    await store.close()
    path = tmp_path / "data" / DATABASE_NAME
    assert raw_rows(path, "PRAGMA journal_mode") == [("wal",)]
    assert raw_rows(path, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]


@pytest.mark.asyncio
async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / DATABASE_NAME
    await (await Store.open(path)).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(StoreError, match="newer"):
        await Store.open(path)


@pytest.mark.asyncio
async def test_bindings_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / DATABASE_NAME
    store = await Store.open(path)
    b1, b2 = binding(), binding("10.0.0.2")
    await store.save_binding(b1)
    await store.save_binding(b2)
    # Write-through: committed once the await returns, visible to another connection.
    assert len(raw_rows(path, "SELECT * FROM registrations")) == 2
    await store.close()

    reopened = await Store.open(path)
    loaded = await reopened.load_bindings(NOW + 1)
    await reopened.close()
    assert sorted(loaded, key=lambda b: b.contact) == sorted([b1, b2], key=lambda b: b.contact)


@pytest.mark.asyncio
async def test_bindings_keep_their_own_params_and_path_when_json_is_reused(
    tmp_path: Path,
) -> None:
    # The JSON of contact params and Path is made once per distinct value (issue #21): each
    # binding must still get back exactly its own, including after a value was seen before.
    store = await Store.open(tmp_path / DATABASE_NAME)
    plain = replace(binding("10.0.0.1"), contact_params=())
    weighted = replace(binding("10.0.0.2"), contact_params=(("q", "0.7"),))
    routed = replace(binding("10.0.0.3"), path=("<sip:edge1.example;lr>",))
    again = replace(binding("10.0.0.4"), contact_params=(("q", "0.7"),), path=())
    for b in (plain, weighted, routed, again):
        await store.save_binding(b)
    by_contact = {b.contact: b for b in await store.load_bindings(NOW + 1)}
    await store.close()
    for b in (plain, weighted, routed, again):
        assert by_contact[b.contact].contact_params == b.contact_params
        assert by_contact[b.contact].path == b.path


@pytest.mark.asyncio
async def test_refresh_and_delete_are_written_through(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / DATABASE_NAME)
    first = binding()
    await store.save_binding(first)
    refreshed = replace(first, expires_at=NOW + 900, cseq=8)
    await store.save_binding(refreshed)
    assert await store.load_bindings(NOW) == [refreshed]
    await store.delete_binding(refreshed)
    assert await store.load_bindings(NOW) == []
    await store.close()


@pytest.mark.asyncio
async def test_apply_bindings_deletes_then_saves_in_one_commit(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / DATABASE_NAME)
    old = binding("10.0.0.1")
    await store.save_binding(old)
    commits = store.stats.commits
    new = [binding("10.0.0.2"), binding("10.0.0.3")]
    await store.apply_bindings(saved=new, removed=[old])
    assert store.stats.commits == commits + 1
    assert {b.contact for b in await store.load_bindings(NOW)} == {b.contact for b in new}
    await store.close()


@pytest.mark.asyncio
async def test_writes_of_one_commit_to_the_same_row_keep_the_last(tmp_path: Path) -> None:
    """Writes queued together share a commit and are merged per row (``_plan``): the order of
    writes to one row still decides, across registrations of one burst."""
    path = tmp_path / DATABASE_NAME
    store = await Store.open(path)
    kept, dropped = binding("10.0.0.1"), binding("10.0.0.2")
    refreshed = replace(kept, cseq=8, expires_at=NOW + 900)
    await store.save_binding(dropped)
    commits = store.stats.commits
    futures = [
        store.write_bindings(saved=[kept], removed=[]),
        store.write_bindings(saved=[], removed=[kept]),  # then gone ...
        store.write_bindings(saved=[refreshed], removed=[dropped]),  # ... and back, refreshed
        store.write_bindings(saved=[dropped], removed=[]),  # dropped comes back too
        store.write_bindings(saved=[], removed=[dropped]),  # and goes for good
    ]
    await asyncio.gather(*futures)
    assert store.stats.commits == commits + 1
    rows = raw_rows(path, "SELECT contact, cseq, expires_at FROM registrations")
    assert rows == [(kept.contact, 8, NOW + 900)]
    await store.close()


@pytest.mark.asyncio
async def test_a_call_record_written_again_in_one_commit_is_formatted_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record's row values are made at commit time, for the write kept (issue 21): a call
    written when it starts, when it is answered and when it ends within one commit interval
    formats one row, the last."""
    made: list[str | None] = []
    real = store_module._call_params

    def counting(record: CallRecord, node: str | None) -> tuple[object, ...]:
        made.append(record.disposition)
        return real(record, node)

    monkeypatch.setattr(store_module, "_call_params", counting)
    path = tmp_path / DATABASE_NAME
    store = await Store.open(path)
    store.record_call(call("c1"))
    store.record_call(call("c1", answered_at=NOW + 1))
    closed = call("c1", answered_at=NOW + 1, ended_at=NOW + 5, disposition="answered")
    await store.close_call(closed)
    assert made == ["answered"]
    rows = raw_rows(path, "SELECT answered_at, ended_at, disposition FROM call_records")
    assert rows == [(NOW + 1, NOW + 5, "answered")]
    await store.close()


@pytest.mark.asyncio
async def test_a_record_whose_row_cannot_be_made_fails_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = store_module._call_params

    def failing(record: CallRecord, node: str | None) -> tuple[object, ...]:
        if record.id == "bad":
            raise ValueError("no row for this one")
        return real(record, node)

    monkeypatch.setattr(store_module, "_call_params", failing)
    path = tmp_path / DATABASE_NAME
    store = await Store.open(path)
    bad = store.record_call(call("bad"))
    good = store.record_call(call("good"))
    await store.flush()
    with pytest.raises(StoreError, match="no row for this one"):
        await bad
    await good
    assert raw_rows(path, "SELECT id FROM call_records") == [("good",)]
    await store.close()


def test_plan_merges_row_writes_between_ordered_statements() -> None:
    """``_plan``: the last write of each row wins, row writes are grouped by SQL, and a statement
    without a row (a purge, a flush) keeps its place: writes before it are not moved after it."""

    def op(sql: str | None, row: str | None) -> _Op:
        return _Op(sql, (row,), None, True, 0.0, row)

    a1, b1, a2 = op("UPSERT", "a"), op("DELETE", "b"), op("DELETE", "a")
    purge = op("PURGE", None)
    c1, a3, c2 = op("UPSERT", "c"), op("UPSERT", "a"), op("DELETE", "c")
    plan = _plan([a1, b1, a2, purge, c1, a3, c2])
    # Row writes commute, so the order inside a segment (between ordered statements) is free.
    runs = [(sql, tuple(sorted(str(o.row) for o in run))) for sql, run in plan]
    cut = runs.index(("PURGE", ("None",)))
    assert set(runs[:cut]) == {("DELETE", ("a", "b"))}
    assert set(runs[cut + 1 :]) == {("UPSERT", ("a",)), ("DELETE", ("c",))}
    assert len(runs) == 4
    # a1 was overwritten by a2, c1 by c2, within the commit.
    assert {id(o) for _, run in plan for o in run} == {id(x) for x in (b1, a2, purge, a3, c2)}


@pytest.mark.asyncio
async def test_expired_bindings_are_not_loaded_and_are_purged(tmp_path: Path) -> None:
    path = tmp_path / DATABASE_NAME
    store = await Store.open(path)
    await store.save_binding(binding("10.0.0.1", expires_in=60))
    await store.save_binding(binding("10.0.0.2", expires_in=600))
    assert [b.uri.host for b in await store.load_bindings(NOW + 60)] == ["10.0.0.2"]
    assert await store.purge_expired(NOW + 60) == 1
    assert len(raw_rows(path, "SELECT * FROM registrations")) == 1
    await store.close()


@pytest.mark.asyncio
async def test_call_records_are_group_committed_within_a_second(tmp_path: Path) -> None:
    path = tmp_path / DATABASE_NAME
    store = await Store.open(path, commit_interval=0.2)
    loop = asyncio.get_running_loop()
    for i in range(50):
        store.record_call(call(f"c{i}"))
    started = loop.time()
    done = [
        store.close_call(
            call(
                f"c{i}",
                answered_at=NOW + 1,
                ended_at=NOW + 30,
                disposition="answered",
                answered_by="1001",
                forwarding=({"from": "1002", "reason": "busy"},),
                trace=("rule 1 matched", "ring 1001,1002"),
                recording_path=f"rec/c{i}.wav",
            )
        )
        for i in range(50)
    ]
    await asyncio.wait_for(asyncio.gather(*done), timeout=1.0)
    assert loop.time() - started < 1.0
    # 100 writes, committed together rather than one by one.
    assert store.stats.commits <= 2
    rows = raw_rows(path, "SELECT disposition, ended_at FROM call_records")
    assert len(rows) == 50
    assert set(rows) == {("answered", NOW + 30)}
    record = await store.call("c7")
    assert record is not None
    assert record.forwarding == ({"from": "1002", "reason": "busy"},)
    assert record.trace == ("rule 1 matched", "ring 1001,1002")
    assert record.recording_path == "rec/c7.wav"
    await store.close()


@pytest.mark.asyncio
async def test_a_registration_does_not_wait_for_the_call_record_window(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / DATABASE_NAME, commit_interval=0.8)
    loop = asyncio.get_running_loop()
    pending = store.record_call(call())
    started = loop.time()
    await store.save_binding(binding())
    assert loop.time() - started < 0.5
    assert pending.done()  # it rode along in the same commit
    await store.close()


@pytest.mark.asyncio
async def test_flush_commits_everything_queued(tmp_path: Path) -> None:
    path = tmp_path / DATABASE_NAME
    store = await Store.open(path, commit_interval=0.8)
    store.record_call(call("a"))
    store.close_call(call("b", ended_at=NOW + 5, disposition="busy"))
    await store.flush()
    assert len(raw_rows(path, "SELECT id FROM call_records")) == 2
    await store.close()


@pytest.mark.asyncio
async def test_close_commits_what_is_queued(tmp_path: Path) -> None:
    path = tmp_path / DATABASE_NAME
    store = await Store.open(path, commit_interval=0.8)
    store.close_call(call("late", ended_at=NOW + 5, disposition="no_answer"))
    await store.close()
    assert raw_rows(path, "SELECT id, disposition FROM call_records") == [("late", "no_answer")]
    with pytest.raises(StoreError):
        store.record_call(call("after"))


@pytest.mark.asyncio
async def test_crash_open_rows_are_closed_at_start_up(tmp_path: Path) -> None:
    path = tmp_path / DATABASE_NAME
    store = await Store.open(path)
    store.record_call(call("ringing"))
    store.record_call(call("talking", answered_at=NOW + 3, last_event_at=NOW + 40))
    store.close_call(call("done", ended_at=NOW + 9, disposition="cancelled"))
    await store.flush()
    await store.close()  # the process dies with two calls still open

    reopened = await Store.open(path)
    assert reopened.recovered_calls == 2
    by_id = {r.id: r for r in await reopened.calls()}
    assert (by_id["ringing"].disposition, by_id["ringing"].ended_at) == ("failed", NOW)
    # An answered call stays answered: a crash is told from a failure by its cause.
    talking = by_id["talking"]
    assert (talking.disposition, talking.ended_at) == ("answered", NOW + 40)
    assert (talking.hangup_cause, talking.ended_by) == ("crash", "server")
    assert talking.trace[-1] == CRASH_TRACE
    assert (by_id["done"].disposition, by_id["done"].ended_at) == ("cancelled", NOW + 9)
    assert by_id["done"].hangup_cause is None
    await reopened.close()


@pytest.mark.asyncio
async def test_recovery_keeps_the_answer_and_the_recording_and_fixes_the_wav(
    tmp_path: Path,
) -> None:
    path = tmp_path / DATABASE_NAME
    wav = tmp_path / "recordings" / "rec.wav"
    wav.parent.mkdir()
    frames = bytes(range(256)) * 64  # 16384 bytes: 4096 stereo frames
    # As a kill between the recorder's two writes leaves it: frames on disk past the header's
    # sizes, and half a frame at the end.
    wav.write_bytes(build_wav_header(TELEPHONE_STEREO, 4000) + frames + b"\x01\x02")
    store = await Store.open(path)
    store.record_call(
        call(
            "rec",
            answered_at=NOW + 2,
            answered_by="1001",
            recording_path=str(wav),
            trace=("rule 1 rings 1001",),
            caller_call_id="a@carrier",
            callee_call_id="b@pbx",
        )
    )
    store.record_call(call("lost", answered_at=NOW + 2, recording_path=str(wav) + ".gone"))
    await store.flush()
    await store.close()

    reopened = await Store.open(path)
    assert reopened.recovered_calls == 2
    by_id = {r.id: r for r in await reopened.calls()}
    rec = by_id["rec"]
    assert (rec.disposition, rec.answered_at, rec.answered_by) == ("answered", NOW + 2, "1001")
    assert (rec.recording_path, rec.hangup_cause) == (str(wav), "crash")
    assert (rec.caller_call_id, rec.callee_call_id) == ("a@carrier", "b@pbx")
    assert rec.trace == ("rule 1 rings 1001", CRASH_TRACE)
    audio = read_wav(wav, TELEPHONE_STEREO)
    assert audio.frames == frames  # every whole frame on disk, the torn one cut off
    assert by_id["lost"].recording_path is None  # never created: not linked
    await reopened.close()


@pytest.mark.asyncio
async def test_the_heartbeat_moves_only_open_calls_forward(tmp_path: Path) -> None:
    path = tmp_path / DATABASE_NAME
    store = await Store.open(path)
    store.record_call(call("open", answered_at=NOW + 1))
    store.close_call(call("done", ended_at=NOW + 5, disposition="busy"))
    store.touch_open_calls(NOW + 30)
    await store.flush()
    await store.close()
    reopened = await Store.open(path)
    by_id = {r.id: r for r in await reopened.calls()}
    assert (by_id["open"].ended_at, by_id["open"].last_event_at) == (NOW + 30, NOW + 30)
    assert by_id["done"].last_event_at == NOW + 5
    await reopened.close()


@pytest.mark.asyncio
async def test_close_call_requires_an_end_and_disposition(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / DATABASE_NAME)
    with pytest.raises(ValueError, match="ended_at"):
        store.close_call(call())
    await store.close()


@pytest.mark.asyncio
async def test_calls_lists_newest_first_per_tenant(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / DATABASE_NAME)
    store.record_call(call("a", started_at=NOW))
    store.record_call(call("b", started_at=NOW + 10))
    store.record_call(call("x", started_at=NOW + 5, tenant="other"))
    await store.flush()
    assert [r.id for r in await store.calls()] == ["b", "x", "a"]
    assert [r.id for r in await store.calls(tenant="acme", limit=1)] == ["b"]
    await store.close()


@pytest.mark.asyncio
async def test_bans_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / DATABASE_NAME
    store = await Store.open(path)
    await store.save_ban("203.0.113.66", NOW + 600)
    await store.save_ban("203.0.113.67", NOW + 10)
    await store.save_ban("203.0.113.68", NOW + 600)
    await store.delete_ban("203.0.113.68")
    await store.close()
    reopened = await Store.open(path)
    assert await reopened.load_bans(NOW + 20) == [("203.0.113.66", NOW + 600)]
    await reopened.close()


@pytest.mark.asyncio
async def test_a_failed_commit_fails_its_writers_but_not_the_store(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / DATABASE_NAME)
    bad = CallRecord(id="bad", tenant="acme", started_at=NOW, caller=None, called="x")  # type: ignore[arg-type]
    with pytest.raises(StoreError, match="commit failed"):
        await store.record_call(bad)
    assert store.stats.failed_commits == 1
    await store.save_binding(binding())
    assert len(await store.load_bindings(NOW)) == 1
    await store.close()


@pytest.mark.asyncio
async def test_a_burst_of_registrations_is_committed_in_order_in_few_commits(
    tmp_path: Path,
) -> None:
    store = await Store.open(tmp_path / DATABASE_NAME)
    bindings = [binding(f"10.0.1.{i}") for i in range(200)]
    first = bindings[0]
    refreshed = replace(first, expires_at=NOW + 900, cseq=9)
    # The same binding twice in one burst: the later write must win (statement order kept).
    await asyncio.gather(*(store.save_binding(b) for b in [*bindings, refreshed]))
    assert store.stats.commits <= 3
    loaded = {b.contact: b for b in await store.load_bindings(NOW)}
    assert len(loaded) == 200
    assert loaded[first.contact] == refreshed
    await store.close()
