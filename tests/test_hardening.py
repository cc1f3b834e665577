"""Issue 17 without sockets: what one message, one source or one log line may cost.

The caps, the cost-charged limiter and the log limiter are pure; the service is driven through
``on_inbound`` with a fake transport (tests/test_service.py) and a fake clock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
import structlog

from pbx.clock import FakeClock
from pbx.config.holder import ConfigHolder
from pbx.config.load import load_config
from pbx.config.model import SecuritySettings
from pbx.fdlimit import MIN_RESERVE, tcp_connection_budget
from pbx.loglimit import LogLimiter, truncate
from pbx.metrics import Registry
from pbx.security import SourceBanned, SourceGuard, Verdict, cost_of
from pbx.service import SipService
from pbx.sip.limits import KNOWN_METHODS, MessageCaps, check_caps, method_label, status_label
from pbx.sip.message import SipRequest
from pbx.sip.transaction import ServerKey
from pbx.sip.transport import Inbound
from pbx.store import Store
from tests.integration.harness import DEFAULT_TENANT, write_config
from tests.test_service import LOCAL, FakeTransport

ATTACKER = ("127.0.0.3", 5099)
CAPS = MessageCaps()


def request(
    method: str = "OPTIONS",
    *,
    uri: str = "sip:1001@acme.example",
    extra: str = "",
    body: str = "",
    to_host: str = "acme.example",
    branch: str = "z9hG4bK-h1",
) -> bytes:
    return (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.3:5099;branch={branch}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:1001@{to_host}>;tag=ft\r\n"
        f"To: <sip:1001@{to_host}>\r\n"
        f"Call-ID: h-{branch}\r\n"
        f"CSeq: 1 {method}\r\n"
        "Contact: <sip:1001@127.0.0.3:5099>\r\n"
        f"{extra}Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


# -- caps: the answer for each, before parsing ------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "status", "reason"),
    [
        ("Contact: " + ", ".join(f"<sip:{i}@h>" for i in range(4000)) + "\r\n", 400, "Line"),
        ("Contact: " + ", ".join(f"<sip:{i}@h>" for i in range(100)) + "\r\n", 400, "Contact"),
        ("".join(f"Contact: <sip:{i}@h>\r\n" for i in range(70)), 400, "Contact"),
        ("".join(f"Via: SIP/2.0/UDP h{i};branch=z9hG4bK{i}\r\n" for i in range(70)), 400, "Via"),
        ("".join(f"Record-Route: <sip:p{i};lr>\r\n" for i in range(70)), 400, "Record-Route"),
        ("".join(f"X-H{i}: v\r\n" for i in range(120)), 513, None),
        ("X-P: a" + ";p" * 100 + "\r\n", 400, "Parameters"),
    ],
)
def test_each_cap_gets_its_answer(extra: str, status: int, reason: str | None) -> None:
    exceeded = check_caps(request(extra=extra), CAPS)
    assert exceeded is not None
    assert exceeded.status == status
    if reason is not None:
        assert reason in exceeded.reason


def test_uri_and_body_caps_and_an_ordinary_message_passes() -> None:
    assert check_caps(request(), CAPS) is None
    long_uri = check_caps(request(uri="sip:" + "1" * 2000 + "@acme.example"), CAPS)
    assert long_uri is not None
    assert long_uri.status == 414
    big_body = check_caps(request(body="v=0\r\n" + "a=x\r\n" * 4000), CAPS)
    assert big_body is not None
    assert big_body.status == 413
    # Folded continuation lines count their commas with the header they continue.
    folded = "Via: SIP/2.0/UDP a;branch=z9hG4bKa\r\n" + " ,SIP/2.0/UDP b\r\n" * 70
    exceeded = check_caps(request(extra=folded), CAPS)
    assert exceeded is not None
    assert exceeded.reason == "Too Many Via Values"


@pytest.mark.parametrize(
    "extra",
    [
        # Over the whole-head bounds of the quick check, within every per-line cap.
        "".join(f"X-P{i}: a;b;c\r\n" for i in range(40)),  # 120 ';' in all, 3 per line
        "Subject: " + ", ".join("x" * 5 for _ in range(200)) + "\r\n",  # commas, not counted
        "".join(f"Contact: <sip:{i}@h>\r\n" for i in range(60)),  # 60 values: under 64
        "X-Long: " + "a" * 3000 + "\r\n" + "X-Long2: " + "b" * 3000 + "\r\n",  # head > 4 KB
    ],
)
def test_heads_beyond_the_quick_bounds_still_pass_when_no_line_exceeds_a_cap(extra: str) -> None:
    assert check_caps(request(extra=extra), CAPS) is None


def test_metric_labels_come_from_a_closed_set() -> None:
    assert method_label("INVITE") == "INVITE"
    assert method_label("XYZZY") == "other"
    assert status_label(200) == "200"
    assert status_label(299) == "2xx"
    assert status_label(42) == "other"


# -- the limiter charges by cost; trunks are limited; floods end in a ban --------------------


def test_big_messages_cost_more_tokens() -> None:
    assert cost_of(400) == 1.0
    assert cost_of(1500) == 1.0
    assert cost_of(1501) == 2.0
    assert cost_of(65_536) == 44.0
    guard = SourceGuard(SecuritySettings(max_requests_per_second=50))
    allowed = sum(
        guard.admit("203.0.113.9", 1000.0 + i / 40, 44.0) is Verdict.ALLOWED for i in range(1200)
    )
    # 30 s at 40 messages/s of 64 KB: about one per second passes, not 40.
    print(f"64 KB messages allowed in 30 s at 40/s: {allowed} of 1200")
    assert allowed <= 40


def test_trunk_addresses_have_their_own_higher_limit() -> None:
    guard = SourceGuard(
        SecuritySettings(max_requests_per_second=5, trunk_max_requests_per_second=100),
        exempt=["192.0.2.1"],
    )
    verdicts = [guard.admit("192.0.2.1", 1000.0) for _ in range(300)]
    assert verdicts.count(Verdict.ALLOWED) == 100
    for _ in range(30):
        guard.record_failure("192.0.2.1", 1000.0)
    assert guard.admit("192.0.2.1", 1002.0) is Verdict.ALLOWED  # never banned


def test_a_source_throttled_for_a_minute_is_banned() -> None:
    guard = SourceGuard(SecuritySettings(max_requests_per_second=5, ban_seconds=600))
    host = "198.51.100.7"
    banned_at = None
    for tick in range(0, 900):  # 10 requests a second (twice the limit) for 90 s
        now = 1000.0 + tick / 10
        if guard.admit(host, now) is Verdict.BANNED and banned_at is None:
            banned_at = now - 1000.0
    events = []
    while (event := guard.next_event()) is not None:
        events.append(event)
    bans = [e for e in events if isinstance(e, SourceBanned)]
    print(f"banned after {banned_at} s of flooding")
    assert len(bans) == 1
    assert bans[0].reason == "throttled"
    assert banned_at is not None
    assert 45 <= banned_at <= 70
    # A phone retrying now and then is never escalated.
    calm = SourceGuard(SecuritySettings(max_requests_per_second=5))
    for second in range(0, 600, 15):  # a short burst every 15 s
        for _ in range(8):
            calm.admit("198.51.100.8", 1000.0 + second)
    assert not calm.bans()


# -- the log limiter ----------------------------------------------------------------------------


def test_log_lines_are_truncated_and_rate_limited_per_source() -> None:
    limiter = LogLimiter(burst=5, rate=0.5)
    allowed = [limiter.allow("127.0.0.3", 1000.0) for _ in range(100)]
    assert allowed[:5] == [0, 0, 0, 0, 0]
    assert allowed[5:] == [None] * 95
    assert limiter.allow("127.0.0.4", 1000.0) == 0  # another source has its own budget
    assert limiter.allow("127.0.0.3", 1002.0) == 95  # the next line carries the count
    assert limiter.suppressed_total == 95
    text = truncate("x" * 10_000)
    assert len(text) < 200
    assert text.endswith("(+9840 chars)")


def test_the_log_limiter_is_bounded_in_memory() -> None:
    limiter = LogLimiter(max_sources=100)
    for i in range(1000):
        limiter.allow(f"10.0.{i // 256}.{i % 256}", 1000.0)
    assert len(limiter) == 100


def test_the_tcp_budget_keeps_a_reserve_of_descriptors() -> None:
    assert tcp_connection_budget(10_000, 1024) == 1024 - 256
    assert tcp_connection_budget(10_000, 300) == 300 - MIN_RESERVE
    assert tcp_connection_budget(10_000, 1_048_576) == 10_000


# -- the service ----------------------------------------------------------------------------------


class _NoCalls:
    """A call engine that must not be reached (the service answers first)."""

    def __init__(self) -> None:
        self.requests: list[SipRequest] = []

    def on_request(
        self, key: ServerKey, request: SipRequest, inbound: Inbound, now: object
    ) -> None:
        self.requests.append(request)

    def on_ack(self, request: SipRequest, inbound: Inbound, now: object) -> None:
        pass

    def on_cancel(self, invite_key: ServerKey, cancel: SipRequest, now: object) -> None:
        pass


@pytest_asyncio.fixture
async def service(tmp_path: Path) -> AsyncIterator[tuple[SipService, FakeTransport, FakeClock]]:
    # Two tenants, neither the default: a REGISTER to an unknown domain is nobody's.
    tenant = DEFAULT_TENANT.replace("default = true", "default = false")
    beta = (
        '[tenant]\ndomain = "beta.example"\ntimezone = "Asia/Tokyo"\n\n'
        "[limits]\nmax_users = 1\nrecording_users = 0\ninternational_calls = false\n"
    )
    tenants = {"acme": tenant, "beta": beta}
    snapshot = load_config(write_config(tmp_path / "pbx", tenants=tenants))
    store = await Store.open_in(snapshot.server.storage.data_dir)
    clock = FakeClock()
    svc = SipService(ConfigHolder(snapshot), store, Registry(), clock)
    fake = FakeTransport()
    svc.attach(fake)  # type: ignore[arg-type]
    svc.calls = _NoCalls()
    await svc.start()
    try:
        yield svc, fake, clock
    finally:
        await svc.stop()
        await store.close()


Service = tuple[SipService, FakeTransport, FakeClock]


@pytest.mark.asyncio
async def test_made_up_methods_do_not_grow_the_metrics(service: Service) -> None:
    svc, _, clock = service
    for i in range(500):
        clock.advance(0.05)
        svc.on_inbound(Inbound(request(f"X{i}", branch=f"z9hG4bK-m{i}"), ATTACKER, LOCAL, "UDP"))
    series = svc.metrics.metrics["pbx_sip_messages_in_total"].values
    text = svc.metrics.render()
    print(
        f"pbx_sip_messages_in_total series after 500 made-up methods: {len(series)}; "
        f"/metrics {len(text)} bytes"
    )
    assert len(series) <= len(KNOWN_METHODS) + 1
    assert series[(("method", "other"),)] == 500


@pytest.mark.asyncio
async def test_a_message_over_a_cap_is_answered_without_a_transaction(service: Service) -> None:
    svc, fake, _ = service
    contacts = ", ".join(f"<sip:{i}@127.0.0.3:5099>" for i in range(1000))
    svc.on_inbound(Inbound(request(extra=f"Contact: {contacts}\r\n"), ATTACKER, LOCAL, "UDP"))
    (answer,) = fake.responses()
    assert answer.status == 400
    assert len(svc.table) == 0


@pytest.mark.asyncio
async def test_an_invite_without_credentials_is_challenged_statelessly(service: Service) -> None:
    svc, fake, _ = service
    invite = request("INVITE", uri="sip:0312345678@acme.example")
    svc.on_inbound(Inbound(invite, ATTACKER, LOCAL, "UDP"))
    svc.on_inbound(Inbound(invite, ATTACKER, LOCAL, "UDP"))  # its retransmission
    first, again = fake.responses()
    assert (first.status, again.status) == (401, 401)
    assert again.to.tag == first.to.tag
    # No server transaction: nothing retransmits the 401 to a (possibly spoofed) source.
    print(f"transactions after two unauthenticated INVITEs: {len(svc.table)}")
    assert len(svc.table) == 0
    assert svc.table.next_deadline() is None


@pytest.mark.asyncio
async def test_an_unknown_domain_is_answered_like_a_tenant_domain(service: Service) -> None:
    svc, fake, _ = service
    svc.on_inbound(Inbound(request("REGISTER", uri="sip:acme.example"), ATTACKER, LOCAL, "UDP"))
    other = request("REGISTER", uri="sip:nobody.example", to_host="nobody.example", branch="z2")
    svc.on_inbound(Inbound(other, ATTACKER, LOCAL, "UDP"))
    tenant, unknown = fake.responses()
    print(f"tenant domain: {tenant.status}, unknown domain: {unknown.status}")
    assert tenant.status == unknown.status == 401
    assert tenant.header("WWW-Authenticate") is not None
    assert unknown.header("WWW-Authenticate") is not None


@pytest.mark.asyncio
async def test_bad_input_logs_are_bounded_per_source(service: Service) -> None:
    svc, _, clock = service
    bad = request(extra="Bad Header Line " + "x" * 3000 + "\r\n")
    with structlog.testing.capture_logs() as logs:
        for _ in range(200):
            clock.advance(0.02)  # 50/s: under the rate limit
            svc.on_inbound(Inbound(bad, ATTACKER, LOCAL, "UDP"))
    lines = [entry for entry in logs if entry["event"] == "malformed_message"]
    logged = sum(len(repr(entry)) for entry in lines)
    sent = 200 * len(bad)
    print(f"log bytes per attack byte: {logged / sent:.4f} ({len(lines)} lines)")
    assert len(lines) <= 10
    assert all(len(repr(entry)) < 600 for entry in lines)
    assert logged / sent < 0.01


def test_no_rfc4475_torture_message_is_over_a_cap() -> None:
    # The caps bound attacks, not odd but valid messages (longreq holds 30 Via values).
    data = Path(__file__).parent / "sip" / "data" / "rfc4475"
    over = {p.stem: check_caps(p.read_bytes(), CAPS) for p in sorted(data.glob("*.dat"))}
    assert len(over) == 49
    assert {name: cap for name, cap in over.items() if cap is not None} == {}
