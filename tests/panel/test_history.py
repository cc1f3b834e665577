"""通話履歴: the call history pages, filters, keyset pages, CSV and recordings, in-process."""

from __future__ import annotations

import contextlib
import csv
import io
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from pbx.call.record import CallRecord
from pbx.panel import history
from pbx.panel.history_query import (
    INDEX_ALL,
    INDEX_DISPOSITION,
    INDEX_PARTY,
    Cursor,
    HistoryFilter,
    page_query,
    parse_filter,
)
from pbx.store import Store
from tests.panel.conftest import Panel, sign_in

pytestmark = pytest.mark.asyncio
TOKYO = ZoneInfo("Asia/Tokyo")
WAV = b"RIFF" + (36 + 8000).to_bytes(4, "little") + b"WAVEfmt " + bytes(24) + b"data" + bytes(8004)


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=TOKYO).timestamp()


def record(
    call_id: str,
    started: float,
    *,
    tenant: str = "acme",
    caller: str = "09011112222",
    called: str = "0312345678",
    disposition: str = "answered",
    answered_by: str | None = "1001",
    recording: str | None = None,
    forwarding: tuple[object, ...] = (),
    trace: tuple[object, ...] = (),
    ended: bool = True,
) -> CallRecord:
    answered = started + 5 if disposition == "answered" else None
    return CallRecord(
        id=call_id,
        tenant=tenant,
        started_at=started,
        caller=caller,
        called=called,
        answered_at=answered,
        ended_at=started + 65 if ended else None,
        disposition=disposition if ended else None,  # type: ignore[arg-type]
        answered_by=answered_by if disposition == "answered" else None,
        forwarding=forwarding,  # type: ignore[arg-type]
        trace=trace,  # type: ignore[arg-type]
        recording_path=recording,
    )


async def put(store: Store, *records: CallRecord) -> None:
    for item in records:
        store.record_call(item)
    await store.flush()


@contextlib.asynccontextmanager
async def signed_in(panel: Panel, name: str = "acme-admin") -> AsyncIterator[httpx.AsyncClient]:
    async with panel.client() as client:
        response = await sign_in(client, name)
        assert response.status_code == 303
        yield client


def table_ids(page: str) -> list[str]:
    return re.findall(r'<tr data-call="([^"]+)">', page)


TRACE = (
    "call from 09011112222 via carrier to 0312345678 (tenant acme)",
    "Tue 20:01:00 Asia/Tokyo: number 0312345678 rule 2 (20:00:00-23:59:59) -> 1003",
    "ring 1003 (1 contact), no answer after 20s -> 1004",
    "1003 no answer after 20s -> forward no_answer to 1004",
    "ring 1004 (1 contact)",
    "1004 (1004@acme.example) answered, recording",
    "caller hung up",
)


# --- the list and its filters --------------------------------------------------------------------


async def test_the_list_shows_the_tenants_calls_newest_first(panel: Panel) -> None:
    await put(
        panel.store,
        record("a1", at("2026-11-17 09:00:00")),
        record("a2", at("2026-11-17 10:00:00"), disposition="busy"),
        record("b1", at("2026-11-17 11:00:00"), tenant="beta", called="0698765432"),
    )
    async with signed_in(panel) as client:
        page = await client.get("/t/acme/history")
        assert page.status_code == 200
        assert table_ids(page.text) == ["a2", "a1"]
        assert "2026-11-17 10:00:00" in page.text
        assert "話中" in page.text
        assert "応答" in page.text
        menu = await client.get("/t/acme/")
        assert 'href="/t/acme/history">通話履歴</a>' in menu.text
        assert (await client.get("/t/beta/history")).status_code == 404


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("extension=1001", ["c4", "c2", "c1"]),  # caller, called or answered by
        ("extension=１００２", ["c3", "c2"]),  # full-width digits are folded
        ("number=03-1234-5678", ["c3", "c1"]),
        ("number=%2B81312345678", ["c3", "c1"]),  # +81 is the national 0
        ("disposition=busy", ["c3"]),
        ("extension=1001&disposition=answered", ["c4", "c2", "c1"]),
        ("number=0312345678&extension=1001", ["c1"]),
        ("from=2026-11-18", ["c4", "c3"]),
        ("from=2026-11-17&to=2026-11-17", ["c2", "c1"]),
        ("to=2026-11-17", ["c2", "c1"]),
    ],
)
async def test_filters_pick_the_calls(panel: Panel, query: str, expected: list[str]) -> None:
    await put(
        panel.store,
        record("c1", at("2026-11-17 00:00:00"), answered_by="1001"),
        record("c2", at("2026-11-17 23:59:59"), caller="1001", called="1002", answered_by="1002"),
        record("c3", at("2026-11-18 00:00:00"), caller="1002", disposition="busy"),
        record("c4", at("2026-11-18 12:00:00"), caller="1003", called="1001", answered_by="1001"),
    )
    async with signed_in(panel) as client:
        page = await client.get(f"/t/acme/history?{query}")
        assert page.status_code == 200
        assert table_ids(page.text) == expected


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("from=yesterday", "日付は 2026-01-31 のように入力してください。"),
        ("from=2026-11-18&to=2026-11-17", "終了日は開始日以降の日付を入力してください。"),
        ("number=03x", "電話番号は半角数字で入力してください"),
        ("extension=12345", "内線番号は4桁の半角数字で入力してください。"),
        ("disposition=%3Cscript%3E", "結果を一覧から選んでください。"),
    ],
)
async def test_bad_filters_get_a_message_not_a_500(panel: Panel, query: str, message: str) -> None:
    async with signed_in(panel) as client:
        page = await client.get(f"/t/acme/history?{query}")
        assert page.status_code == 400
        assert message in page.text
        assert "<script>" not in page.text
        csv_page = await client.get(f"/t/acme/history.csv?{query}")
        assert csv_page.status_code == 400


async def test_keyset_pages_walk_every_call_once_in_order(panel: Panel) -> None:
    # 130 calls, ten of them sharing each started_at: ties are broken by id.
    start = at("2026-11-01 09:00:00")
    records = [record(f"k{i:03d}", start + (i // 10)) for i in range(130)]
    await put(panel.store, *records)
    expected = [r.id for r in sorted(records, key=lambda r: (r.started_at, r.id), reverse=True)]
    seen: list[str] = []
    async with signed_in(panel) as client:
        url = "/t/acme/history"
        pages = 0
        while url:
            page = await client.get(url)
            assert page.status_code == 200
            seen += table_ids(page.text)
            pages += 1
            older = re.search(r'id="history-older" href="([^"]+)"', page.text)
            url = older.group(1).replace("&amp;", "&") if older else ""
    assert pages == 3
    assert seen == expected


async def test_an_unknown_cursor_is_the_first_page(panel: Panel) -> None:
    await put(panel.store, record("x1", at("2026-11-01 09:00:00")))
    async with signed_in(panel) as client:
        page = await client.get("/t/acme/history?after=../../etc")
        assert table_ids(page.text) == ["x1"]


@pytest.mark.parametrize(
    ("flt", "indexes"),
    [
        (HistoryFilter(), {INDEX_ALL}),
        (HistoryFilter(disposition="no_answer"), {INDEX_DISPOSITION}),
        (parse_filter({"from": "2026-01-01", "to": "2026-01-31"})[0], {INDEX_ALL}),
        (HistoryFilter(extension="1001"), set(INDEX_PARTY.values())),
        (
            HistoryFilter(number="0312345678", extension="1001", disposition="busy"),
            set(INDEX_PARTY.values()),
        ),
    ],
)
async def test_every_page_query_searches_an_index_never_scans_the_table(
    panel: Panel, flt: HistoryFilter, indexes: set[str]
) -> None:
    await put(panel.store, *(record(f"p{i}", at("2026-11-01 09:00:00") + i) for i in range(50)))
    await panel.store.fetch("ANALYZE")
    for after in (None, Cursor(at("2026-11-01 09:00:30"), "p30")):
        query = page_query("acme", flt, "Asia/Tokyo", after, 51)
        plan = [
            str(row[3])
            for row in await panel.store.fetch("EXPLAIN QUERY PLAN " + query.sql, query.params)
        ]
        reads = [line for line in plan if "call_records" in line]
        assert reads, plan
        assert all(line.startswith("SEARCH call_records USING INDEX") for line in reads), plan
        assert {line.split()[4] for line in reads} == indexes
        # The newest-first order comes from the index itself (the party merge sorts <= 3 pages).
        assert ("USE TEMP B-TREE FOR ORDER BY" in plan) == (indexes == set(INDEX_PARTY.values()))


# --- one call, its recording ---------------------------------------------------------------------


def recordings(panel: Panel) -> Path:
    folder = panel.root / "data" / "recordings"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


async def test_a_calls_page_says_its_trace_and_offers_the_recording(panel: Panel) -> None:
    wav = recordings(panel) / "r1.wav"
    wav.write_bytes(WAV)
    forwarding = ({"from": "1003", "reason": "no-answer", "to": "1004"},)
    await put(
        panel.store,
        record(
            "r1",
            at("2026-11-17 20:01:00"),
            answered_by="1004",
            recording=str(wav),
            forwarding=forwarding,
            trace=TRACE,
        ),
    )
    async with signed_in(panel) as client:
        page = await client.get("/t/acme/history/r1")
        assert page.status_code == 200
        text = page.text
        assert "火曜日 20:01:00: 0312345678 の着信設定 ルール2" in text
        assert "1003 が 20 秒以内に応答しなかったため 1004 へ転送(無応答時転送)" in text
        assert '<audio controls preload="metadata" src="/t/acme/history/r1/recording"' in text
        assert "1003 → 1004 (無応答時転送)" in text
        await client.get("/lang/en")
        client.cookies.set("pbx_lang", "en")
        english = (await client.get("/t/acme/history/r1")).text
        assert (
            "20:01:00 on a Tuesday: rule 2 of 0312345678 (20:00:00-23:59:59) rings 1003" in english
        )
        assert "1003 did not answer in 20 s; forwarded to 1004" in english


async def test_the_recording_is_served_with_ranges_and_downloads_are_audited(panel: Panel) -> None:
    wav = recordings(panel) / "r2.wav"
    wav.write_bytes(WAV)
    await put(panel.store, record("r2", at("2026-11-17 20:01:00"), recording=str(wav)))
    async with signed_in(panel) as client:
        whole = await client.get("/t/acme/history/r2/recording")
        assert whole.status_code == 200
        assert whole.headers["content-type"] == "audio/wav"
        assert whole.headers["accept-ranges"] == "bytes"
        assert whole.content == WAV
        assert "attachment" not in whole.headers.get("content-disposition", "")
        part = await client.get("/t/acme/history/r2/recording", headers={"Range": "bytes=44-99"})
        assert part.status_code == 206
        assert part.headers["content-range"] == f"bytes 44-99/{len(WAV)}"
        assert part.content == WAV[44:100]
        assert await panel.accounts.audit_log(tenant="acme") == []
        download = await client.get("/t/acme/history/r2/recording?download=1")
        assert download.status_code == 200
        assert download.headers["content-disposition"].startswith("attachment")
        assert 'filename="r2.wav"' in download.headers["content-disposition"]
    entries = await panel.accounts.audit_log(tenant="acme")
    assert [(e.actor, e.action, e.target) for e in entries] == [
        ("acme-admin", "recording_download", "r2")
    ]


async def test_another_tenants_admin_gets_404_for_the_call_and_its_recording(panel: Panel) -> None:
    wav = recordings(panel) / "r3.wav"
    wav.write_bytes(WAV)
    await put(panel.store, record("r3", at("2026-11-17 20:01:00"), recording=str(wav)))
    async with signed_in(panel, "beta-admin") as client:
        for path in ("/t/acme/history/r3", "/t/acme/history/r3/recording", "/t/acme/history.csv"):
            assert (await client.get(path)).status_code == 404, path
        # Through its own tenant's URL, the other tenant's call id is unknown.
        for path in ("/t/beta/history/r3", "/t/beta/history/r3/recording"):
            assert (await client.get(path)).status_code == 404, path
    async with signed_in(panel, "op") as client:
        assert (await client.get("/t/acme/history/r3/recording")).status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/t/acme/history/nope/recording",
        "/t/acme/history/../recording",
        "/t/acme/history/%2e%2e/recording",
        "/t/acme/history/..%2F..%2Fpbx.toml/recording",
        "/t/acme/history/%2Fetc%2Fpasswd/recording",
        "/t/acme/history/r4.wav/recording",
        "/t/acme/history/outside/recording",
        "/t/acme/history/dotdot/recording",
        "/t/acme/history/absolute/recording",
        "/t/acme/history/open/recording",
        "/t/acme/history/norec/recording",
        "/t/acme/history/gone/recording",
    ],
)
async def test_path_tricks_and_unknown_ids_get_404(panel: Panel, path: str) -> None:
    folder = recordings(panel)
    (folder / "r4.wav").write_bytes(WAV)
    (panel.root / "data" / "secret.wav").write_bytes(WAV)
    started = at("2026-11-17 20:01:00")
    await put(
        panel.store,
        record("outside", started, recording=str(panel.root / "data" / "secret.wav")),
        record("dotdot", started, recording=str(folder / ".." / "secret.wav")),
        record("absolute", started, recording="/etc/passwd"),
        record("open", started, recording=str(folder / "r4.wav"), ended=False),
        record("norec", started),
        record("gone", started, recording=str(folder / "missing.wav")),
    )
    async with signed_in(panel) as client:
        response = await client.get(path)
        assert response.status_code == 404
        assert b"RIFF" not in response.content


# --- CSV ------------------------------------------------------------------------------------------


def read_csv(body: bytes) -> list[list[str]]:
    assert body.startswith(b"\xef\xbb\xbf")
    return list(csv.reader(io.StringIO(body.decode("utf-8-sig"), newline="")))


async def test_csv_has_a_bom_a_header_in_the_admins_language_and_escapes(panel: Panel) -> None:
    await put(
        panel.store,
        replace(
            record(
                "v1",
                at("2026-11-17 09:00:00"),
                caller='=HYPERLINK("x"),"1"',
                forwarding=({"from": "1003", "reason": "no-answer", "to": "1004"},),
            ),
            hangup_cause="crash",
            ended_by="server",
            caller_call_id="a1@carrier",
            callee_call_id="b1@pbx",
        ),
        record("v2", at("2026-11-17 10:00:00"), caller="佐藤\n携帯", disposition="no_answer"),
    )
    async with signed_in(panel) as client:
        response = await client.get("/t/acme/history.csv")
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/csv; charset=utf-8"
        assert response.headers["content-disposition"] == 'attachment; filename="history-acme.csv"'
        rows = read_csv(response.content)
        assert rows[0] == [
            "日時",
            "発信者",
            "着信番号・内線",
            "結果",
            "応答者",
            "通話時間(秒)",
            "転送",
            "録音",
            "通話ID",
            "終了理由",
            "終了した側",
            "発信側SIP Call-ID",
            "着信側SIP Call-ID",
        ]
        assert rows[1][9:] == ["不明", "不明", "", ""]  # written before schema 4
        assert rows[2][9:] == [
            "サーバー異常終了(再起動時に記録)",
            "サーバー",
            "a1@carrier",
            "b1@pbx",
        ]
        assert rows[1][:4] == ["2026-11-17 10:00:00", "佐藤\n携帯", "0312345678", "無応答"]
        assert rows[2][1] == '\'=HYPERLINK("x"),"1"'
        assert rows[2][5] == "60"
        assert rows[2][6] == "1003 → 1004 (無応答時転送)"
        client.cookies.set("pbx_lang", "en")
        english = read_csv((await client.get("/t/acme/history.csv?disposition=no_answer")).content)
        assert english[0][:4] == ["Time", "Caller", "Number or extension called", "Result"]
        assert [row[8] for row in english[1:]] == ["v2"]
        assert english[0][9:11] == ["Why it ended", "Ended by"]
    entries = await panel.accounts.audit_log(tenant="acme")
    assert [(e.action, e.detail) for e in entries] == [
        ("history_export", {"filter": {"disposition": "no_answer"}}),
        ("history_export", {"filter": {}}),
    ]


async def test_csv_is_streamed_in_keyset_chunks(
    panel: Panel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(history, "CSV_CHUNK", 7)
    start = at("2026-11-01 09:00:00")
    await put(panel.store, *(record(f"s{i:02d}", start + i // 3) for i in range(30)))
    reads: list[int] = []
    page = history.CallHistory.page

    async def counted(
        self: history.CallHistory, *args: object, **kwargs: object
    ) -> list[CallRecord]:
        records = await page(self, *args, **kwargs)  # type: ignore[arg-type]
        reads.append(len(records))
        return records

    monkeypatch.setattr(history.CallHistory, "page", counted)
    async with signed_in(panel) as client:
        body = (await client.get("/t/acme/history.csv")).content
    rows = read_csv(body)
    assert len(rows) == 31
    assert [row[8] for row in rows[1:]] == [f"s{i:02d}" for i in reversed(range(30))]
    assert reads == [7, 7, 7, 7, 2]  # one keyset read per chunk, never the whole set
