"""The narrow interfaces the call engine is built with (injected at construction).

Typing only: ``SipService`` is the ``SipPort`` and the ``LineDirectory``, ``Store`` keeps the
``CallRecords``, ``ConfigHolder`` is the ``ConfigSource``. The engine reaches no further.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

from pbx.call.record import CallRecord
from pbx.config.model import ConfigSnapshot, Extension, TenantConfig
from pbx.registrar import Presence
from pbx.sip.dialog import SipTimerValues
from pbx.sip.message import Address, SipMessage, SipRequest, SipResponse
from pbx.sip.transaction import ServerKey, TxEvent

if TYPE_CHECKING:  # the transport is an adapter; only its value type is named here
    from pbx.sip.transport import Inbound


class SipPort(Protocol):
    """What the engine needs of the SIP edge: answers, client transactions, digest checks and
    our own addresses."""

    @property
    def timers(self) -> SipTimerValues: ...

    def respond(self, key: ServerKey, response: SipResponse) -> None: ...

    def send_request(
        self,
        request: SipRequest,
        destination: Address,
        callback: Callable[[TxEvent], None],
        *,
        reliable: bool = False,
    ) -> object: ...

    def send_stateless(self, msg: SipMessage, destination: Address) -> None: ...

    def flush(self) -> None: ...

    def authenticate(
        self, key: ServerKey, req: SipRequest, packet: Inbound, tenant: TenantConfig, wall: float
    ) -> str | None: ...

    def local_address(
        self, dest_host: str, reliable: bool, secure: bool = False
    ) -> tuple[str, int]: ...

    def media_bind_host(self) -> str: ...

    def connection_alive(self, connection_id: str | None) -> bool: ...


class LineDirectory(Protocol):
    """Who is registered: the contacts a call to an extension would ring."""

    def presence(self, tenant: TenantConfig, extension: Extension, wall: float) -> Presence: ...


class CallRecords(Protocol):
    """Where call records go; the awaitable resolves once the row is committed."""

    def record_call(self, record: CallRecord) -> Awaitable[int]: ...

    def close_call(self, record: CallRecord) -> Awaitable[int]: ...


class ConfigSource(Protocol):
    """The configuration in force (a new call takes it once)."""

    @property
    def current(self) -> ConfigSnapshot: ...
