"""Sans-IO framing of SIP messages on a byte stream (TCP): RFC 3261 18.3 and RFC 5626 3.5.1.

On a stream "the Content-Length header field MUST be used" (RFC 3261 18.3): a message is its
header block up to the first empty line (CRLF CRLF) plus Content-Length octets of body. A missing,
negative, non-numeric or self-contradicting Content-Length makes the stream unframeable (RFC 4475
3.1.2.3, 3.3.9): ``feed`` raises ``RemoteProtocolError`` and the transport closes the connection.
A message (header block plus body) over ``MAX_MESSAGE_SIZE`` octets raises with status 513, as
soon as that is known; the framer never holds more than that of one unfinished message.

Keep-alives (RFC 5626 3.5.1): a CRLF CRLF between messages is a ping and ``feed`` reports it as
``KEEPALIVE`` (the transport answers with a single CRLF, the pong). A lone CRLF between messages
(a pong, or the stray line ends RFC 3261 7.5 says to ignore) is skipped. Header lines must end in
CRLF here; the datagram parser also accepts bare LF, the stream framer does not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from pbx.errors import RemoteProtocolError
from pbx.sip.parse import MAX_MESSAGE_SIZE

__all__ = ["KEEPALIVE", "KeepAliveReceived", "StreamFramer"]


@dataclass(frozen=True, slots=True)
class KeepAliveReceived:
    """A CRLF CRLF ping arrived between messages; answer it with CRLF (RFC 5626 3.5.1)."""


KEEPALIVE: Final = KeepAliveReceived()

_CRLF2 = b"\r\n\r\n"
_CONTENT_LENGTH_RE = re.compile(rb"(?:^|\r\n)(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*)", re.I)
_FOLD_RE = re.compile(rb"(?<![ \t])[ \t]*\r\n[ \t]+")  # lookbehind: linear on long blank runs
_DIGITS_RE = re.compile(rb"[0-9]{1,9}")


def _content_length(head: bytes) -> int:
    if b"\r\n " in head or b"\r\n\t" in head:
        head = _FOLD_RE.sub(b" ", head)
    values = {v.strip(b" \t") for v in _CONTENT_LENGTH_RE.findall(head)}
    if not values:
        raise RemoteProtocolError("missing Content-Length on a stream transport", 400)
    if len(values) > 1:
        raise RemoteProtocolError("conflicting Content-Length values", 400)
    value = values.pop()
    if not _DIGITS_RE.fullmatch(value):
        if value.isdigit():
            raise RemoteProtocolError("Content-Length too large", 513)
        raise RemoteProtocolError(f"bad Content-Length {value[:20]!r}", 400)
    return int(value)


class StreamFramer:
    """Cuts a TCP byte stream into whole SIP messages and keep-alive pings."""

    def __init__(self, max_message_size: int = MAX_MESSAGE_SIZE) -> None:
        self._max = max_message_size
        self._buf = bytearray()
        self._scanned = 0  # bytes of the current header block already searched for CRLF CRLF
        self._need: int | None = None  # total size of the current message, once its head is read
        # The framing error's message and status, not the error itself: a raised error kept on
        # the framer would hold its traceback, whose frames hold the framer (a cycle only a
        # full collection frees; the server runs none under load, issue #21).
        self._error: tuple[str, int] | None = None

    @property
    def buffered(self) -> int:
        """Octets held of a message not yet complete (pending line ends do not count)."""
        if self._need is None and _CRLF2.startswith(self._buf):
            return 0
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes | KeepAliveReceived]:
        """Add received octets; return the messages and pings completed by them, in order.

        Raises ``RemoteProtocolError`` on a framing error; the framer then refuses further data.
        """
        if self._error is not None:
            raise RemoteProtocolError(*self._error)
        self._buf += data
        try:
            return self._drain()
        except RemoteProtocolError as exc:
            self._error = (str(exc), exc.status_hint)
            self._buf.clear()
            raise

    def _drain(self) -> list[bytes | KeepAliveReceived]:
        out: list[bytes | KeepAliveReceived] = []
        buf = self._buf
        while True:
            if self._need is None:
                if self._scanned == 0:
                    # Between messages: pings and stray CRLFs (RFC 5626 3.5.1, RFC 3261 7.5).
                    while buf[:2] == b"\r\n":
                        if buf[:4] == _CRLF2:
                            out.append(KEEPALIVE)
                            del buf[:4]
                        elif len(buf) < 4 and _CRLF2.startswith(buf):
                            return out  # could still become a ping
                        else:
                            del buf[:2]
                    if buf == b"\r":
                        return out
                end = buf.find(_CRLF2, max(0, self._scanned - 3))
                if end < 0:
                    if len(buf) > self._max:
                        raise RemoteProtocolError("header block over the size limit", 513)
                    self._scanned = len(buf)
                    return out
                total = end + 4 + _content_length(bytes(buf[:end]))
                if total > self._max:
                    raise RemoteProtocolError(f"message of {total} octets is too large", 513)
                self._need = total
            if len(buf) < self._need:
                return out
            out.append(bytes(buf[: self._need]))
            del buf[: self._need]
            self._need = None
            self._scanned = 0
