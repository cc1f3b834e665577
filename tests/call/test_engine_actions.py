"""The call engine's per-call boundary: an action that fails is logged, and the actions after it
(in the same batch) are still carried out, so one broken step cannot leave a caller unanswered."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from structlog.testing import capture_logs

from pbx.b2bua import CallEngine
from pbx.call import core as callcore
from pbx.call.core import Peer
from pbx.clock import FakeClock, Instant
from pbx.metrics import Registry
from pbx.sip.message import SipRequest, SipResponse
from pbx.sip.parse import parse_message
from pbx.sip.transaction import server_transaction_key

INVITE = (
    b"INVITE sip:1001@acme.example SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-engine\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:1002@acme.example>;tag=a\r\n"
    b"To: <sip:1001@acme.example>\r\n"
    b"Call-ID: engine-1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Content-Length: 0\r\n\r\n"
)


@dataclass
class BrokenSip:
    """A SIP port whose requests fail to go out; responses are collected."""

    responded: list[tuple[Any, SipResponse]] = field(default_factory=list)

    def respond(self, key: Any, response: SipResponse) -> None:
        self.responded.append((key, response))

    def send_request(self, *args: object, **kwargs: object) -> None:
        raise OSError("network is unreachable")

    def flush(self) -> None:
        pass


@dataclass
class ScriptedCore:
    """Stands in for a CallCore: hands out one batch of actions, then nothing."""

    batch: list[Any]
    id: str = "call-1"
    ended: bool = False

    def handle(self, event: object, now: Instant) -> None:
        pass

    def take_actions(self) -> list[Any]:
        batch, self.batch = self.batch, []
        return batch

    def get_timer(self) -> float | None:
        return None


@pytest.mark.asyncio
async def test_a_failing_action_is_logged_and_the_rest_of_its_batch_still_runs() -> None:
    request = parse_message(INVITE)
    assert isinstance(request, SipRequest)
    response = SipResponse(
        480,
        "Temporarily Unavailable",
        request.via,
        request.from_,
        request.to,
        request.call_id,
        request.cseq,
    )
    sip = BrokenSip()
    clock = FakeClock()
    engine = CallEngine(sip, None, None, None, Registry(), clock)  # type: ignore[arg-type]
    key = server_transaction_key(request)
    core = ScriptedCore(
        [
            callcore.SendRequest(request, Peer(("127.0.0.1", 5080), False)),
            callcore.Respond(key, response),
        ]
    )
    with capture_logs() as logs:
        engine._run(core, callcore.TimerFired(), clock.now())  # type: ignore[arg-type]
    assert [r.status for _, r in sip.responded] == [480]
    failures = [entry for entry in logs if entry["event"] == "call_action_failed"]
    assert [entry["action"] for entry in failures] == ["SendRequest"]
