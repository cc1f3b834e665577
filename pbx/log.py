"""structlog set-up: JSON lines, console rendering on a terminal, or journald's own form.

Under systemd (``JOURNAL_STREAM`` names the stderr we write to) a line is
``<PRIORITY>event key=value ...``: journald reads the syslog priority prefix as the line's level
and stamps the time itself, so the line carries no timestamp and no colours. ``--log-json``
keeps JSON lines there too.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

# structlog level -> syslog priority (sd-daemon(3): "<3>" error, "<4>" warning, "<6>" info).
SYSLOG_PRIORITY = {"critical": 2, "error": 3, "warning": 4, "info": 6, "debug": 7}


def writing_to_journal() -> bool:
    """True when stderr is the journal stream systemd gave us (``JOURNAL_STREAM=dev:inode``)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = stream.partition(":")
    if not device.isdigit() or not inode.isdigit():
        return False
    try:
        stat = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return (stat.st_dev, stat.st_ino) == (int(device), int(inode))


_key_values = structlog.processors.KeyValueRenderer(sort_keys=False)


def journald_renderer(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> str:
    """``<6>server_started version=... sip=[...]``: priority prefix, no timestamp, no colours."""
    level = str(event_dict.pop("level", "info"))
    event = str(event_dict.pop("event", ""))
    rest = _key_values(_logger, _name, event_dict)
    return f"<{SYSLOG_PRIORITY.get(level, 6)}>{event}{' ' + rest if rest else ''}"


def configure_logging(level: str = "info", *, json: bool | None = None) -> None:
    """Configure structlog for the process (adapters and the CLI call this; cores never do)."""
    journal = json is None and writing_to_journal()
    if json is None:
        json = not sys.stderr.isatty()
    renderer: structlog.types.Processor
    if journal:
        renderer = journald_renderer
    elif json:
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    stamp: list[structlog.types.Processor] = (
        [] if journal else [structlog.processors.TimeStamper(fmt="iso", utc=True)]
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            *stamp,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
