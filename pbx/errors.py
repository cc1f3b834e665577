"""The project's error hierarchy (every error derives from PbxError)."""

from __future__ import annotations


class PbxError(Exception):
    """Base of every error the project raises on purpose."""


class ProtocolError(PbxError):
    """A protocol rule was broken; ``status_hint`` is the SIP status to answer with."""

    def __init__(self, message: str, status_hint: int = 400) -> None:
        super().__init__(message)
        self.status_hint = status_hint


class RemoteProtocolError(ProtocolError):
    """The peer sent something malformed or unacceptable."""


class LocalProtocolError(ProtocolError):
    """Our own code misused a protocol API (a bug)."""
