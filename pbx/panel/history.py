"""通話履歴 (call history): the tenant's call records, one call's trace in words, its recording
and a CSV export. Pages go through the panel's ``tenant_route`` (404 for other tenants).

- **Reads only.** Queries are built by ``history_query`` (keyset pages over the indexes of
  schema migration 3) and run through ``Store.fetch``; nothing here writes a call record.
- **Recordings** are found by the call's id in the database, never from the URL: the id must be
  one of the tenant's calls, the call must have ended, and its ``recording_path`` must resolve
  to a file inside ``<data_dir>/recordings``; anything else is 404. Starlette's ``FileResponse``
  answers Range requests (206), so a player can seek.
- **CSV** (UTF-8 with a BOM, so Excel reads Japanese; header in the admin's language) is streamed
  in keyset chunks of ``CSV_CHUNK`` rows, never built in memory. Cells that a spreadsheet would
  read as a formula (``=``, ``+``, ``-``, ``@``) get a leading ``'``.
- **Audit**: viewing changes nothing and is not audited. Taking data out of the panel is: a CSV
  export (``history_export``, with its filter) and a recording download (``recording_download``)
  are written to the audit log; the player's own (range) requests are only logged.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import structlog
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from pbx.call.record import DISPOSITIONS, ENDED_BY, HANGUP_CAUSES, CallRecord
from pbx.config.model import TenantConfig
from pbx.panel.history_query import (
    PAGE_SIZE,
    Cursor,
    FilterError,
    HistoryFilter,
    call_query,
    page_query,
    parse_cursor,
    parse_filter,
    valid_call_id,
)
from pbx.panel.history_words import Lang, forward_words, trace_sentences
from pbx.panel.i18n import translate
from pbx.store import Store

if TYPE_CHECKING:
    from pbx.panel.app import Viewer, _Panel

log = structlog.get_logger("pbx.panel")

CSV_CHUNK = 1000
RECORDINGS_FOLDER = "recordings"
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class CallHistory:
    """The tenant's call records, read through the store's read path."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def page(
        self,
        tenant: str,
        flt: HistoryFilter,
        timezone: str,
        after: Cursor | None = None,
        limit: int = PAGE_SIZE,
    ) -> list[CallRecord]:
        """The ``limit`` newest records matching ``flt`` below ``after``, newest first."""
        query = page_query(tenant, flt, timezone, after, limit, self.store.dialect)
        return [record_from_row(row) for row in await self.store.fetch(query.sql, query.params)]

    async def call(self, tenant: str, call_id: str) -> CallRecord | None:
        sql, params = call_query(tenant, call_id)
        rows = await self.store.fetch(sql, params)
        return record_from_row(rows[0]) if rows else None

    async def chunks(
        self, tenant: str, flt: HistoryFilter, timezone: str, size: int | None = None
    ) -> AsyncIterator[list[CallRecord]]:
        """Every matching record, newest first, ``size`` at a time (keyset, no OFFSET)."""
        size = size or CSV_CHUNK
        after: Cursor | None = None
        while True:
            records = await self.page(tenant, flt, timezone, after, size)
            if records:
                yield records
            if len(records) < size:
                return
            last = records[-1]
            after = Cursor(last.started_at, last.id)


def record_from_row(row: Sequence[Any]) -> CallRecord:
    """A ``call_records`` row (``history_query.COLUMNS``) as a ``CallRecord``."""
    disposition = row[8] if row[8] in DISPOSITIONS else None
    return CallRecord(
        id=row[0],
        tenant=row[1],
        started_at=row[2],
        answered_at=row[3],
        ended_at=row[4],
        last_event_at=row[5],
        caller=row[6],
        called=row[7],
        disposition=disposition,
        answered_by=row[9],
        forwarding=tuple(_json_list(row[10])),
        trace=tuple(_json_list(row[11])),
        recording_path=row[12],
        hangup_cause=row[13] if row[13] in HANGUP_CAUSES else None,
        ended_by=row[14] if row[14] in ENDED_BY else None,
        caller_call_id=row[15],
        callee_call_id=row[16],
    )


def _json_list(text: object) -> list[Any]:
    try:
        value = json.loads(str(text))
    except ValueError:
        return [str(text)]
    return value if isinstance(value, list) else [value]


# --- what a row shows -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallRow:
    """One call as the pages and the CSV show it (text already in the admin's language)."""

    id: str
    started: str  # local time of the tenant
    caller: str
    called: str
    disposition: str
    answered_by: str
    talk_seconds: int | None
    talk: str
    ring: str
    forwards: tuple[str, ...]
    recorded: bool
    in_progress: bool
    cause: str = ""  # issue 16: why the call ended, who ended it, each leg's SIP Call-ID
    ended_by: str = ""
    caller_call_id: str = ""
    callee_call_id: str = ""


def call_row(record: CallRecord, timezone: str, lang: Lang) -> CallRow:
    zone = ZoneInfo(timezone)
    started = datetime.fromtimestamp(record.started_at, zone).strftime("%Y-%m-%d %H:%M:%S")
    talk_seconds = None
    if record.answered_at is not None and record.ended_at is not None:
        talk_seconds = max(0, round(record.ended_at - record.answered_at))
    rang_until = record.answered_at if record.answered_at is not None else record.ended_at
    ring = _duration(rang_until - record.started_at) if rang_until is not None else ""
    if record.disposition is not None:
        disposition = translate(lang, "history.disposition_" + record.disposition)
    else:
        disposition = translate(lang, "history.in_progress")
    return CallRow(
        id=record.id,
        started=started,
        caller=record.caller,
        called=record.called,
        disposition=disposition,
        answered_by=record.answered_by or "",
        talk_seconds=talk_seconds,
        talk=_duration(talk_seconds) if talk_seconds is not None else "",
        ring=ring,
        forwards=tuple(forward_words(record.forwarding, lang)),
        recorded=record.recording_path is not None and record.ended_at is not None,
        in_progress=record.ended_at is None,
        **_hangup_words(record, lang),
    )


def _hangup_words(record: CallRecord, lang: Lang) -> dict[str, str]:
    """The issue 16 columns of a row (empty while the call is in progress)."""
    if record.ended_at is None:
        cause = by = ""
    else:
        unknown = translate(lang, "hangup.unknown")
        cause = (
            translate(lang, f"hangup.cause_{record.hangup_cause}")
            if record.hangup_cause
            else unknown
        )
        by = translate(lang, f"hangup.by_{record.ended_by}") if record.ended_by else unknown
    return {
        "cause": cause,
        "ended_by": by,
        "caller_call_id": record.caller_call_id or "",
        "callee_call_id": record.callee_call_id or "",
    }


def _duration(seconds: float) -> str:
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


CSV_COLUMNS = (
    "history.started",
    "history.caller",
    "history.called",
    "history.disposition",
    "history.answered_by",
    "history.talk_seconds",
    "history.forwards",
    "history.recording",
    "history.call_id",
    "hangup.cause",
    "hangup.ended_by",
    "hangup.caller_call_id",
    "hangup.callee_call_id",
)


def csv_header(lang: Lang) -> bytes:
    """The first bytes of an export: the BOM and the header row in ``lang``."""
    return "\ufeff".encode() + _csv_lines([[translate(lang, key) for key in CSV_COLUMNS]])


def csv_rows(rows: Sequence[CallRow], lang: Lang) -> bytes:
    yes = translate(lang, "history.recorded")
    return _csv_lines(
        [
            [
                row.started,
                row.caller,
                row.called,
                row.disposition,
                row.answered_by,
                "" if row.talk_seconds is None else str(row.talk_seconds),
                " / ".join(row.forwards),
                yes if row.recorded else "",
                row.id,
                row.cause,
                row.ended_by,
                row.caller_call_id,
                row.callee_call_id,
            ]
            for row in rows
        ]
    )


def _csv_lines(rows: Sequence[Sequence[str]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerows([[_cell(value) for value in row] for row in rows])
    return out.getvalue().encode("utf-8")


def _cell(value: str) -> str:
    """A cell a spreadsheet will not run as a formula (OWASP "CSV injection")."""
    return "'" + value if value.startswith(_FORMULA_START) else value


# --- the pages --------------------------------------------------------------------------------


def routes(panel: _Panel) -> list[BaseRoute]:
    """The call history's routes, each behind the panel's tenant check."""
    pages = HistoryPages(panel)
    return [
        Route("/t/{tenant}/history", panel.tenant_route(pages.list_page)),
        Route("/t/{tenant}/history.csv", panel.tenant_route(pages.export_csv)),
        Route("/t/{tenant}/history/{call_id}", panel.tenant_route(pages.call_page)),
        Route("/t/{tenant}/history/{call_id}/recording", panel.tenant_route(pages.recording)),
    ]


class HistoryPages:
    def __init__(self, panel: _Panel) -> None:
        self.panel = panel
        self.history = CallHistory(panel.deps.accounts.store)

    def recordings_root(self) -> Path:
        data_dir = self.panel.deps.data_dir or self.panel.deps.current().server.storage.data_dir
        return data_dir / RECORDINGS_FOLDER

    def _filter(self, request: Request) -> tuple[HistoryFilter, list[FilterError]]:
        return parse_filter(dict(request.query_params))

    async def list_page(self, request: Request, viewer: Viewer, tenant: TenantConfig) -> Response:
        lang = self.panel.lang(request)
        flt, errors = self._filter(request)
        after = parse_cursor(request.query_params.get("after", ""))
        records = await self.history.page(tenant.id, flt, tenant.timezone, after, PAGE_SIZE + 1)
        more = len(records) > PAGE_SIZE
        records = records[:PAGE_SIZE]
        older = None
        if more:
            last = records[-1]
            older = urlencode(
                {**flt.query_params(), "after": Cursor(last.started_at, last.id).encode()}
            )
        field_errors = {e.field: translate(lang, "history." + e.code) for e in errors}
        return self.panel.render(
            request,
            "history.html",
            viewer,
            400 if errors else 200,
            tenant=tenant,
            rows=[call_row(r, tenant.timezone, lang) for r in records],
            values=_form_values(request),
            field_errors=field_errors,
            dispositions=[(d, translate(lang, "history.disposition_" + d)) for d in DISPOSITIONS],
            query=urlencode(flt.query_params()),
            older=older,
            deep=after is not None,
        )

    async def call_page(self, request: Request, viewer: Viewer, tenant: TenantConfig) -> Response:
        lang = self.panel.lang(request)
        record = await self._record(request, tenant)
        return self.panel.render(
            request,
            "history_call.html",
            viewer,
            tenant=tenant,
            row=call_row(record, tenant.timezone, lang),
            sentences=trace_sentences(record.trace, lang),
            trace=[str(line) for line in record.trace],
        )

    async def recording(self, request: Request, viewer: Viewer, tenant: TenantConfig) -> Response:
        record = await self._record(request, tenant)
        if record.recording_path is None or record.ended_at is None:
            raise HTTPException(404)
        path = await asyncio.to_thread(
            recording_file, record.recording_path, self.recordings_root()
        )
        if path is None:
            log.warning("panel_recording_outside", call_id=record.id, path=record.recording_path)
            raise HTTPException(404)
        download = request.query_params.get("download") == "1"
        if download:
            await self.panel.audit(viewer, tenant.id, "recording_download", record.id, {})
        log.info(
            "panel_recording_served",
            account=viewer.account.name,
            tenant=tenant.id,
            call_id=record.id,
            range=request.headers.get("range", ""),
        )
        return FileResponse(
            path,
            media_type="audio/wav",
            filename=f"{record.id}.wav" if download else None,
        )

    async def export_csv(self, request: Request, viewer: Viewer, tenant: TenantConfig) -> Response:
        lang = self.panel.lang(request)
        flt, errors = self._filter(request)
        if errors:
            return await self.list_page(request, viewer, tenant)
        await self.panel.audit(
            viewer, tenant.id, "history_export", "", {"filter": dict(flt.query_params())}
        )

        async def body() -> AsyncIterator[bytes]:
            yield csv_header(lang)
            async for records in self.history.chunks(tenant.id, flt, tenant.timezone):
                yield csv_rows([call_row(r, tenant.timezone, lang) for r in records], lang)

        name = f"history-{tenant.id}.csv"
        return StreamingResponse(
            body(),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="{name}"'},
        )

    async def _record(self, request: Request, tenant: TenantConfig) -> CallRecord:
        call_id = request.path_params["call_id"]
        if not valid_call_id(call_id):
            raise HTTPException(404)
        record = await self.history.call(tenant.id, call_id)
        if record is None:
            raise HTTPException(404)
        return record


def recording_file(recording_path: str, root: Path) -> Path | None:
    """The recording's file if it resolves (links followed) to a file inside ``root``."""
    path = Path(recording_path).resolve()
    if path.is_relative_to(root.resolve()) and path.is_file():
        return path
    return None


def _form_values(request: Request) -> dict[str, str]:
    params = request.query_params
    return {
        key: str(params.get(key, ""))[:40]
        for key in ("from", "to", "number", "extension", "disposition")
    }
