"""The call engine's per-call boundary: an action that fails is logged, and the actions after it
(in the same batch) are still carried out, so one broken step cannot leave a caller unanswered."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from structlog.testing import capture_logs

from pbx.b2bua import CallEngine
from pbx.call import core as callcore
from pbx.call.core import Peer
from pbx.clock import FakeClock, Instant
from pbx.media.relay import RelayCounters
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


@dataclass
class NowMedia:
    """A media plane whose ``open_now`` opens at once (the built-in relay), answers None (it
    must be asked over the network: rtpengine), or raises ``fails``."""

    ready: bool
    fails: Exception | None = None
    spawned: list[Any] = field(default_factory=list)
    prompts: dict[str, Any] = field(default_factory=dict)
    counters: RelayCounters = field(default_factory=RelayCounters)

    def open_now(self, call_id: str, *args: object) -> tuple[int, int] | None:
        if self.fails is not None:
            raise self.fails
        return (40000, 40002) if self.ready else None

    def srtp_keys(self, call_id: str) -> tuple[bytes, bytes]:
        return (b"a" * 30, b"b" * 30)

    def media_host(self, call_id: str) -> str:
        return ""

    def spawn(self, coro: Any) -> None:
        self.spawned.append(coro)
        coro.close()  # never run: the test only sees that a task was asked for


@dataclass
class MediaCore(ScriptedCore):
    """Asks for media; once told it is ready, answers the caller (the next batch)."""

    handled: list[object] = field(default_factory=list)
    answer: Any = None
    refusal: Any = None
    snapshot: Any = None

    def handle(self, event: object, now: Instant) -> None:
        self.handled.append(event)
        if isinstance(event, callcore.MediaReady):
            self.batch.append(self.answer)
        elif isinstance(event, callcore.MediaFailed):
            self.batch.append(self.refusal)


def media_engine(
    ready: bool, fails: Exception | None = None
) -> tuple[CallEngine, MediaCore, NowMedia, BrokenSip]:
    request = parse_message(INVITE)
    assert isinstance(request, SipRequest)
    key = server_transaction_key(request)
    headers = (request.via, request.from_, request.to, request.call_id, request.cseq)
    answer = callcore.Respond(key, SipResponse(180, "Ringing", *headers))
    refusal = callcore.Respond(key, SipResponse(503, "Service Unavailable", *headers))
    sip = BrokenSip()
    sip.media_bind_host = lambda: "127.0.0.1"  # type: ignore[attr-defined]
    media = NowMedia(ready, fails)
    engine = CallEngine(sip, None, None, None, Registry(), FakeClock(), media)  # type: ignore[arg-type]
    snapshot = type("Snapshot", (), {"server": type("Server", (), {"media": None})()})()
    core = MediaCore([callcore.OpenMedia("")], answer=answer, refusal=refusal, snapshot=snapshot)
    return engine, core, media, sip


@pytest.mark.asyncio
async def test_media_opened_at_once_feeds_the_core_in_the_same_step() -> None:
    # The built-in relay opens at once: the core hears MediaReady and its next actions (here,
    # answering the caller) run in the same step, with no task.
    engine, core, media, sip = media_engine(ready=True)
    engine._run(core, callcore.TimerFired(), engine.clock.now())  # type: ignore[arg-type]
    ready = [e for e in core.handled if isinstance(e, callcore.MediaReady)]
    assert [(r.a_port, r.b_port) for r in ready] == [(40000, 40002)]
    assert [r.status for _, r in sip.responded] == [180]
    assert media.spawned == []


@pytest.mark.asyncio
async def test_media_asked_over_the_network_is_opened_by_a_task() -> None:
    engine, core, media, sip = media_engine(ready=False)
    engine._run(core, callcore.TimerFired(), engine.clock.now())  # type: ignore[arg-type]
    assert len(media.spawned) == 1
    assert not [e for e in core.handled if isinstance(e, callcore.MediaReady)]
    assert sip.responded == []


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("error", "logged"),
    [(OSError(98, "Address in use"), "media_unavailable"), (KeyError("x"), "media_open_failed")],
)
async def test_media_that_cannot_be_opened_at_once_fails_the_call_in_the_same_step(
    error: Exception, logged: str
) -> None:
    # The relay's ports could not be bound (or something unexpected broke): the core hears
    # MediaFailed in the same step and refuses the caller; the server goes on.
    engine, core, media, sip = media_engine(ready=True, fails=error)
    with capture_logs() as logs:
        engine._run(core, callcore.TimerFired(), engine.clock.now())  # type: ignore[arg-type]
    failed = [e for e in core.handled if isinstance(e, callcore.MediaFailed)]
    assert len(failed) == 1
    assert str(error) in failed[0].reason
    assert [r.status for _, r in sip.responded] == [503]
    assert media.spawned == []
    assert [entry["event"] for entry in logs if entry["event"].startswith("media_")] == [logged]


@dataclass
class EndedCore(ScriptedCore):
    """An ended call as ``_ended`` and ``_forget`` see it: its ids and its dialogs."""

    a_key: Any = None
    a_invite: Any = None
    answered_by: str | None = None
    dialogs: tuple[Any, ...] = ()

    def dialog_ids(self) -> list[Any]:
        return list(self.dialogs)


@pytest.mark.asyncio
async def test_ended_calls_dialogs_are_forgotten_32_s_later_oldest_first_by_one_timer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A crossing BYE or a retransmission still finds an ended call for FORGET_DIALOGS_SECONDS;
    # then its dialogs are forgotten. The ended calls wait in one queue with one loop timer
    # (for its oldest), not a timer each (issue #21: at 500 calls/s, 16,000 of them).
    from pbx import b2bua

    loop = asyncio.get_running_loop()
    t = 1000.0
    monkeypatch.setattr(loop, "time", lambda: t)
    request = parse_message(INVITE)
    assert isinstance(request, SipRequest)
    engine = CallEngine(BrokenSip(), None, None, None, Registry(), FakeClock())  # type: ignore[arg-type]
    cores = [
        EndedCore([], id=f"call-{n}", a_invite=request, dialogs=(f"dialog-{n}a", f"dialog-{n}b"))
        for n in (1, 2)
    ]
    for n, core in enumerate(cores):
        t = 1000.0 + 10 * n  # the second ends 10 s after the first
        for dialog in core.dialogs:
            engine.dialogs[dialog] = core  # type: ignore[assignment]
        engine.calls[core.id] = core  # type: ignore[assignment]
        engine._ended(core, callcore.CallEnded("answered", (), 1.0), engine.clock.now())  # type: ignore[arg-type]
    assert engine.calls == {}
    timer = engine._forget_timer
    assert timer is not None
    assert timer.when() == 1000.0 + b2bua.FORGET_DIALOGS_SECONDS
    t = 1000.0 + b2bua.FORGET_DIALOGS_SECONDS - 0.01  # early (a loop timer may fire early)
    engine._forget_due()
    assert set(engine.dialogs) == {"dialog-1a", "dialog-1b", "dialog-2a", "dialog-2b"}  # type: ignore[comparison-overlap]
    t = 1000.0 + b2bua.FORGET_DIALOGS_SECONDS
    engine._forget_due()
    assert set(engine.dialogs) == {"dialog-2a", "dialog-2b"}  # type: ignore[comparison-overlap]
    timer = engine._forget_timer
    assert timer is not None
    assert timer.when() == 1010.0 + b2bua.FORGET_DIALOGS_SECONDS
    t = 1010.0 + b2bua.FORGET_DIALOGS_SECONDS
    engine._forget_due()
    assert engine.dialogs == {}
    assert engine._forget_timer is None
    await engine.stop()
