"""What one SIP message may cost, checked on the raw bytes before the full parse.

Pure: bytes in, a verdict out. The rate limit (``pbx.security.SourceGuard``) counts messages;
these caps make every message that passes it cheap to parse and cheap to keep, so that a source
under the rate limit cannot exhaust memory or CPU with a few huge ones (issue 17, like
Kamailio's sanity module and max header checks). Each cap and the answer it gets:

==========================  =========  ======================================================
cap                          default    answer
==========================  =========  ======================================================
message size                 65,536 B   513 Message Too Large (RFC 3261 18.1.1, 21.5.14)
header lines                 100        513 Message Too Large (the head, not the body, is big)
values of Via                64         400 Too Many Via Values (RFC 4475 longreq has 30)
values of Contact            64         400 Too Many Contact Values
values of Route              64         400 Too Many Route Values
values of Record-Route       64         400 Too Many Record-Route Values
Request-URI length           1,024 B    414 Request-URI Too Long (RFC 3261 21.4.12)
one header line              4,096 B    400 Header Line Too Long
parameters in one line       64         400 Too Many Parameters
body                         16,384 B   413 Request Entity Too Large (RFC 3261 21.4.11)
==========================  =========  ======================================================

Values are counted by commas (and one per header line), so a quoted comma in a display name
counts too: the count can only be too high, and the caps leave room for that.

Metric labels come from closed sets (``method_label``, ``status_label``): anything a client may
make up is counted as ``other``, so ``/metrics`` cannot grow with what attackers send.
"""

from __future__ import annotations

from typing import Final

from pbx.immutable import immutable

KNOWN_METHODS: Final = frozenset(
    {
        "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "INFO", "UPDATE", "PRACK",
        "MESSAGE", "NOTIFY", "SUBSCRIBE", "REFER", "PUBLISH",
    }
)  # fmt: skip

# Status codes of RFC 3261 section 21 and the common extensions; others count by class.
KNOWN_STATUSES: Final = frozenset(
    {
        100, 180, 181, 182, 183, 199, 200, 202, 204, 300, 301, 302, 305, 380, 400, 401, 402,
        403, 404, 405, 406, 407, 408, 410, 412, 413, 414, 415, 416, 417, 420, 421, 422, 423,
        428, 429, 430, 433, 436, 437, 438, 439, 440, 469, 470, 480, 481, 482, 483, 484, 485,
        486, 487, 488, 489, 491, 493, 494, 500, 501, 502, 503, 504, 505, 513, 555, 580, 600,
        603, 604, 606, 607, 608,
    }
)  # fmt: skip


def method_label(method: str) -> str:
    """The metric label of a request method: itself when known, else ``other``."""
    return method if method in KNOWN_METHODS else "other"


def status_label(status: int) -> str:
    """The metric label of a response status: the code when known, else its class (``4xx``)."""
    if status in KNOWN_STATUSES:
        return str(status)
    if 100 <= status <= 699:
        return f"{status // 100}xx"
    return "other"


@immutable
class MessageCaps:
    """The most one message may hold (see the module docstring for the answers)."""

    max_message_bytes: int = 65_536
    max_header_lines: int = 100
    max_values: int = 64  # per Via, Contact, Route, Record-Route (all lines together)
    max_request_uri_bytes: int = 1_024
    max_header_line_bytes: int = 4_096
    max_params_per_line: int = 64
    max_body_bytes: int = 16_384


@immutable
class CapExceeded:
    """A message over a cap: answer ``status`` (when it can be answered) and log ``what``."""

    status: int
    reason: str
    what: str


# Header names (lower case, compact forms too) whose values are counted.
_COUNTED: Final = {
    "via": "Via",
    "v": "Via",
    "contact": "Contact",
    "m": "Contact",
    "route": "Route",
    "record-route": "Record-Route",
}


def check_caps(data: bytes, caps: MessageCaps) -> CapExceeded | None:
    """The first cap ``data`` exceeds, or None. Linear in the size of the head, no parsing."""
    if len(data) > caps.max_message_bytes:
        return CapExceeded(513, "Message Too Large", f"message of {len(data)} bytes")
    end = data.find(b"\r\n\r\n")
    sep = 4
    if end < 0:
        end, sep = data.find(b"\n\n"), 2
    if end < 0:
        end, sep = len(data), 0
    body = len(data) - end - sep
    if body > caps.max_body_bytes:
        return CapExceeded(413, "Request Entity Too Large", f"body of {body} bytes")
    head = data[:end]
    newlines = head.count(b"\n")
    if newlines > caps.max_header_lines:
        return CapExceeded(513, "Message Too Large", f"{newlines} header lines")
    first = head.find(b"\n")
    start = (head if first < 0 else head[:first]).lstrip(b"\r\n")
    if not start.startswith(b"SIP/"):
        parts = start.split(b" ")
        if len(parts) > 1 and len(parts[1]) > caps.max_request_uri_bytes:
            return CapExceeded(414, "Request-URI Too Long", f"Request-URI of {len(parts[1])} bytes")
    # Whole-head counts bound every per-line cap below: no line is longer than the head, has
    # more ';' than it, and no header has more values than its ',' plus its lines. A usual
    # message ends here, without its lines being split (this runs for every message).
    if (
        len(head) <= caps.max_header_line_bytes
        and head.count(b";") <= caps.max_params_per_line
        and head.count(b",") + newlines + 1 <= caps.max_values
    ):
        return None
    lines = head.split(b"\n")
    counts: dict[str, int] = {}
    name: str | None = None
    for line in lines[1:]:
        if len(line) > caps.max_header_line_bytes:
            return CapExceeded(400, "Header Line Too Long", f"header line of {len(line)} bytes")
        if line.count(b";") > caps.max_params_per_line:
            return CapExceeded(400, "Too Many Parameters", f"{line.count(b';')} parameters")
        if line[:1] in (b" ", b"\t"):
            added = line.count(b",")  # a folded continuation of the line before
        else:
            colon = line.find(b":")
            # A line without a colon is the parser's to answer (malformed).
            raw = line[:colon].strip(b" \t").decode("latin-1").lower() if colon > 0 else ""
            name = _COUNTED.get(raw)
            added = line.count(b",") + 1
        if name is None:
            continue
        counts[name] = counts.get(name, 0) + added
        if counts[name] > caps.max_values:
            return CapExceeded(400, f"Too Many {name} Values", f"over {caps.max_values} {name}")
    return None
