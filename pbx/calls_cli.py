"""``pbx calls``: the call records, filtered, as JSON lines or CSV, without SQL (issue 19).

The filters and the query are the call-history panel's own (``pbx.panel.history_query``: the same
parsing of dates, numbers, extensions and results, the same keyset pages over the same indexes),
run here on a read-only connection to ``<data_dir>/pbx.sqlite3`` (or, with ``[storage] database``,
a read-only transaction in PostgreSQL), so the command can run next to the server. Newest
first; ``--limit 0`` lists every match (read in pages, never all at once).
"""

from __future__ import annotations

import argparse
import csv
import json
import sqlite3
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TextIO
from zoneinfo import ZoneInfo

from pbx.call.record import CallRecord
from pbx.config.load import load_config
from pbx.config.model import ConfigSnapshot, TenantConfig
from pbx.config.problems import ConfigError
from pbx.panel.history import RECORDINGS_FOLDER, record_from_row
from pbx.panel.history_query import (
    DISPOSITIONS,
    MAX_PAGE_SIZE,
    Cursor,
    HistoryFilter,
    page_query,
    parse_filter,
)

DATABASE_NAME = "pbx.sqlite3"
FIELDS = (
    "id",
    "tenant",
    "started_at",
    "answered_at",
    "ended_at",
    "caller",
    "called",
    "disposition",
    "answered_by",
    "talk_seconds",
    "forwarding",
    "recording",
)


def add_arguments(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--tenant", help="the tenant's ID (needed when there are several)")
    cmd.add_argument("--from", dest="date_from", default="", help="first day, YYYY-MM-DD")
    cmd.add_argument("--to", dest="date_to", default="", help="last day, YYYY-MM-DD")
    cmd.add_argument("--number", default="", help="a phone number: caller, called or answered")
    cmd.add_argument("--extension", default="", help="an extension: caller, called or answered")
    cmd.add_argument("--disposition", default="", choices=("", *DISPOSITIONS))
    cmd.add_argument("--limit", type=int, default=50, help="at most this many (0: all)")
    cmd.add_argument("--format", choices=("json", "csv"), default="json")


def _tenant(snapshot: ConfigSnapshot, wanted: str | None) -> TenantConfig:
    if wanted is not None:
        if wanted not in snapshot.tenants:
            known = ", ".join(sorted(snapshot.tenants))
            raise LookupError(f"--tenant: no tenant {wanted!r} (tenants: {known})")
        return snapshot.tenants[wanted]  # type: ignore[index]
    if len(snapshot.tenants) != 1:
        known = ", ".join(sorted(snapshot.tenants))
        raise LookupError(f"--tenant: give one of {known}")
    return next(iter(snapshot.tenants.values()))


def records(
    database: Path, tenant: TenantConfig, flt: HistoryFilter, limit: int
) -> Iterator[CallRecord]:
    """The tenant's matching records, newest first, at most ``limit`` (0: all)."""
    connection = sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True)
    try:

        def query(sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
            return connection.execute(sql, params).fetchall()

        yield from _pages(query, "sqlite", tenant, flt, limit)
    finally:
        connection.close()


def records_postgres(
    url: str, tenant: TenantConfig, flt: HistoryFilter, limit: int
) -> Iterator[CallRecord]:
    """``records`` from the shared PostgreSQL store (``[storage] database``)."""
    import psycopg

    from pbx.store_pg import CONNECT_TIMEOUT_SECONDS, to_pyformat

    with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_SECONDS) as connection:
        connection.read_only = True

        def query(sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
            return connection.execute(to_pyformat(sql), params).fetchall()

        yield from _pages(query, "postgresql", tenant, flt, limit)


def _pages(
    query: Callable[[str, tuple[Any, ...]], list[tuple[Any, ...]]],
    dialect: Literal["sqlite", "postgresql"],
    tenant: TenantConfig,
    flt: HistoryFilter,
    limit: int,
) -> Iterator[CallRecord]:
    after: Cursor | None = None
    left = limit or None
    while True:
        size = min(MAX_PAGE_SIZE, left) if left is not None else MAX_PAGE_SIZE
        page = page_query(tenant.id, flt, tenant.timezone, after, size, dialect)
        rows = query(page.sql, page.params)
        for row in rows:
            yield record_from_row(row)
        if left is not None:
            left -= len(rows)
            if left <= 0:
                return
        if len(rows) < size:
            return
        last = record_from_row(rows[-1])
        after = Cursor(last.started_at, last.id)


def as_fields(record: CallRecord, zone: ZoneInfo, recordings: Path) -> dict[str, Any]:
    """One record as plain values: times in the tenant's zone (ISO 8601), the recording's path."""

    def when(value: float | None) -> str | None:
        return datetime.fromtimestamp(value, zone).isoformat() if value is not None else None

    talk = None
    if record.answered_at is not None and record.ended_at is not None:
        talk = round(record.ended_at - record.answered_at, 1)
    recording = str(recordings / record.recording_path) if record.recording_path else None
    return {
        "id": record.id,
        "tenant": record.tenant,
        "started_at": when(record.started_at),
        "answered_at": when(record.answered_at),
        "ended_at": when(record.ended_at),
        "caller": record.caller,
        "called": record.called,
        "disposition": record.disposition,
        "answered_by": record.answered_by,
        "talk_seconds": talk,
        "forwarding": list(record.forwarding),
        "recording": recording,
    }


def write(rows: Iterator[dict[str, Any]], kind: str, out: TextIO) -> int:
    count = 0
    if kind == "csv":
        writer = csv.DictWriter(out, FIELDS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            row["forwarding"] = json.dumps(row["forwarding"], ensure_ascii=False)
            writer.writerow(row)
            count += 1
    else:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


def main(args: argparse.Namespace) -> int:
    try:
        snapshot = load_config(args.config)
        tenant = _tenant(snapshot, args.tenant)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    except (OSError, LookupError) as exc:
        print(f"pbx calls: {exc}", file=sys.stderr)
        return 1
    flt, errors = parse_filter(
        {
            "from": args.date_from,
            "to": args.date_to,
            "number": args.number,
            "extension": args.extension,
            "disposition": args.disposition,
        }
    )
    if errors or args.limit < 0:
        for error in errors:
            print(f"pbx calls: --{error.field}: {error.code.replace('_', ' ')}", file=sys.stderr)
        if args.limit < 0:
            print("pbx calls: --limit: 0 or more", file=sys.stderr)
        return 2
    data_dir = snapshot.server.storage.data_dir
    zone = ZoneInfo(tenant.timezone)
    recordings = data_dir / RECORDINGS_FOLDER
    url = snapshot.server.storage.database
    if url is not None:  # issue #20: the shared PostgreSQL store
        import psycopg

        from pbx.store import describe_url

        found = records_postgres(url, tenant, flt, args.limit)
        try:
            write((as_fields(r, zone, recordings) for r in found), args.format, sys.stdout)
            sys.stdout.flush()
        except psycopg.Error as exc:
            print(f"pbx calls: {describe_url(url)}: {exc}", file=sys.stderr)
            return 1
        return 0
    database = data_dir / DATABASE_NAME
    if not database.exists():
        print(f"pbx calls: no database yet at {database}", file=sys.stderr)
        return 1
    rows = (as_fields(r, zone, recordings) for r in records(database, tenant, flt, args.limit))
    try:
        write(rows, args.format, sys.stdout)
        sys.stdout.flush()
    except sqlite3.Error as exc:
        print(f"pbx calls: {database}: {exc}", file=sys.stderr)
        return 1
    return 0
