"""The call history's filters and page queries, as plain values and SQL text (no I/O).

A page is the newest ``limit`` call records of one tenant that match the filters, read by
keyset: ordered by ``(started_at, id)`` descending, the next page starts strictly below the last
row of this one (``Cursor``), so a deep page costs what the first one does (no ``OFFSET``).

On SQLite every query names the index it reads (``INDEXED BY``, schema migration 3 in
``pbx.store``): if SQLite could not use it the statement fails instead of scanning the table.
PostgreSQL has no such clause (``dialect="postgresql"`` leaves it out): its planner picks the same
indexes from the same shapes (``tests/test_store_postgres.py`` reads the plan). Which index:

- a party filter (a number or an extension, matched against ``caller``, ``called`` and
  ``answered_by``): the three party indexes, each read for at most ``limit`` rows, merged;
- else a disposition filter: ``(tenant, disposition, started_at, id)``;
- else ``(tenant, started_at, id)``.

The date range is a range on ``started_at`` inside whichever index is read; the filters not
served by the index are checked on the rows the index yields. Dates are the tenant's local days
(``Asia/Tokyo`` by default): ``date_from`` from 0:00 and ``date_to`` through 23:59:59.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pbx.errors import PbxError

PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
Disposition = Literal["answered", "busy", "no_answer", "cancelled", "failed"]
DISPOSITIONS: tuple[Disposition, ...] = ("answered", "busy", "no_answer", "cancelled", "failed")
PARTY_COLUMNS = ("caller", "called", "answered_by")
COLUMNS = (
    "id, tenant, started_at, answered_at, ended_at, last_event_at, caller, called, disposition,"
    " answered_by, forwarding, trace, recording_path, hangup_cause, ended_by, caller_call_id,"
    " callee_call_id"
)
INDEX_ALL = "call_records_by_tenant"
INDEX_DISPOSITION = "call_records_by_tenant_disposition"
INDEX_PARTY = {
    "caller": "call_records_by_tenant_caller",
    "called": "call_records_by_tenant_called",
    "answered_by": "call_records_by_tenant_answered_by",
}
_EXTENSION = re.compile(r"[0-9]{4}")
_NUMBER = re.compile(r"\+?[0-9]{3,20}")
_CALL_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CURSOR = re.compile(r"([0-9]{1,12}(?:\.[0-9]{1,9})?)~([A-Za-z0-9_-]{1,64})")


class FilterError(PbxError):
    """A filter the admin typed cannot be used; ``field`` names it, ``code`` says why."""

    def __init__(self, field: str, code: str) -> None:
        super().__init__(f"{field}: {code}")
        self.field = field
        self.code = code


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page ends: the next page holds the rows strictly older than this one."""

    started_at: float
    id: str

    def encode(self) -> str:
        return f"{self.started_at!r}~{self.id}"


@dataclass(frozen=True, slots=True)
class HistoryFilter:
    """What the admin asked to see (all optional); dates are the tenant's local days."""

    date_from: date | None = None
    date_to: date | None = None
    number: str | None = None  # a phone number: caller, called or answered by (forwarded out)
    extension: str | None = None  # an extension: caller, called or answered_by
    disposition: Disposition | None = None

    def query_params(self) -> dict[str, str]:
        """The filter as the query string of the page (and of its CSV)."""
        out = {
            "from": self.date_from.isoformat() if self.date_from else "",
            "to": self.date_to.isoformat() if self.date_to else "",
            "number": self.number or "",
            "extension": self.extension or "",
            "disposition": self.disposition or "",
        }
        return {key: value for key, value in out.items() if value}


@dataclass(frozen=True, slots=True)
class PageQuery:
    sql: str
    params: tuple[Any, ...]
    index: str  # the index (or, for a party filter, the first of three) the query reads


def parse_filter(params: dict[str, str]) -> tuple[HistoryFilter, list[FilterError]]:
    """The filter in a page's query string; every unusable field is reported (and left out)."""
    errors: list[FilterError] = []
    values: dict[str, Any] = {}
    for key, name in (("from", "date_from"), ("to", "date_to")):
        text = _fold(params.get(key, ""))
        if not text:
            continue
        try:
            values[name] = date.fromisoformat(text.replace("/", "-"))
        except ValueError:
            errors.append(FilterError(key, "bad_date"))
    if (
        values.get("date_from")
        and values.get("date_to")
        and values["date_from"] > values["date_to"]
    ):
        errors.append(FilterError("to", "date_order"))
        values.pop("date_to")
    number = _fold(params.get("number", "")).replace("-", "").replace(" ", "")
    if number:
        if _NUMBER.fullmatch(number):
            values["number"] = "0" + number[3:] if number.startswith("+81") else number
        else:
            errors.append(FilterError("number", "bad_number"))
    extension = _fold(params.get("extension", ""))
    if extension:
        if _EXTENSION.fullmatch(extension):
            values["extension"] = extension
        else:
            errors.append(FilterError("extension", "bad_extension"))
    disposition = params.get("disposition", "")
    if disposition:
        if disposition in DISPOSITIONS:
            values["disposition"] = disposition
        else:
            errors.append(FilterError("disposition", "bad_disposition"))
    return HistoryFilter(**values), errors


def parse_cursor(text: str) -> Cursor | None:
    """A page's ``after`` parameter, or None when it is missing or not one of ours."""
    match = _CURSOR.fullmatch(text)
    if match is None:
        return None
    return Cursor(float(match.group(1)), match.group(2))


def valid_call_id(text: str) -> bool:
    """Whether ``text`` can be a call id at all (ids are looked up, never used as paths)."""
    return _CALL_ID.fullmatch(text) is not None


def time_range(flt: HistoryFilter, timezone: str) -> tuple[float | None, float | None]:
    """The filter's days as POSIX seconds ``[start, end)`` in the tenant's time zone."""
    zone = ZoneInfo(timezone)
    start = end = None
    if flt.date_from is not None:
        start = datetime.combine(flt.date_from, time(0), zone).timestamp()
    if flt.date_to is not None:
        end = datetime.combine(flt.date_to + timedelta(days=1), time(0), zone).timestamp()
    return start, end


def page_query(
    tenant: str,
    flt: HistoryFilter,
    timezone: str,
    after: Cursor | None = None,
    limit: int = PAGE_SIZE,
    dialect: Literal["sqlite", "postgresql"] = "sqlite",
) -> PageQuery:
    """The SQL of one page: the ``limit`` newest matching rows below ``after``."""

    def indexed_by(index: str) -> str:
        return f" INDEXED BY {index}" if dialect == "sqlite" else ""

    if not 1 <= limit <= MAX_PAGE_SIZE + 1:
        raise ValueError("limit out of range")
    start, end = time_range(flt, timezone)
    # Conditions every index reads as a range after its equality columns.
    common: list[str] = []
    common_params: list[Any] = []
    if start is not None:
        common.append("started_at >= ?")
        common_params.append(start)
    if end is not None:
        common.append("started_at < ?")
        common_params.append(end)
    if after is not None:
        # started_at <= x is the index range; the ties at x are cut by id.
        common.append("started_at <= ? AND (started_at < ? OR id < ?)")
        common_params += [after.started_at, after.started_at, after.id]
    parties = [p for p in (flt.number, flt.extension) if p is not None]
    order = "ORDER BY started_at DESC, id DESC LIMIT ?"
    if not parties:
        where = ["tenant = ?"]
        params: list[Any] = [tenant]
        index = INDEX_ALL
        if flt.disposition is not None:
            where.append("disposition = ?")
            params.append(flt.disposition)
            index = INDEX_DISPOSITION
        sql = (
            f"SELECT {COLUMNS} FROM call_records{indexed_by(index)}"
            f" WHERE {' AND '.join(where + common)} {order}"
        )
        return PageQuery(sql, (*params, *common_params, limit), index)
    # A party: the union of the three indexes, each read for at most ``limit`` rows.
    first, others = parties[0], parties[1:]
    residual: list[str] = []
    residual_params: list[Any] = []
    for other in others:
        residual.append("? IN (caller, called, answered_by)")
        residual_params.append(other)
    if flt.disposition is not None:
        residual.append("disposition = ?")
        residual_params.append(flt.disposition)
    parts: list[str] = []
    params = []
    for column in PARTY_COLUMNS:
        where = [f"tenant = ? AND {column} = ?", *common, *residual]
        parts.append(
            f"SELECT * FROM (SELECT {COLUMNS} FROM call_records{indexed_by(INDEX_PARTY[column])}"
            f" WHERE {' AND '.join(where)} {order}) AS by_{column}"
        )
        params += [tenant, first, *common_params, *residual_params, limit]
    sql = f"SELECT {COLUMNS} FROM ({' UNION '.join(parts)}) AS parties {order}"
    return PageQuery(sql, (*params, limit), INDEX_PARTY["caller"])


def call_query(tenant: str, call_id: str) -> tuple[str, tuple[Any, ...]]:
    """One call of the tenant by its id (the primary key)."""
    return f"SELECT {COLUMNS} FROM call_records WHERE id = ? AND tenant = ?", (call_id, tenant)


def _fold(text: str) -> str:
    """Full-width digits and punctuation typed by the admin, as half-width."""
    return unicodedata.normalize("NFKC", text).strip()
