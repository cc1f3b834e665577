"""The registrar on the running server: SIPp over UDP and TCP, pyVoIP, raw digest exchanges.

Register, refresh, fetch and unregister with SIPp (tests/sipp/register*.xml); a pyVoIP softphone;
bindings kept across a restart; 423 with Min-Expires; replayed and expired credentials; uniform
answers for unknown users and wrong passwords; bans after failed authentications, their release,
and the trunk address that is never banned. Raw requests compute the digest with hashlib, not
with the server's code.
"""

from __future__ import annotations

import hashlib
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import (
    SIPP_DIR,
    RunningServer,
    free_port,
    run_sipp,
    running_server,
    write_config,
)

pytestmark = pytest.mark.integration

DOMAIN = "acme.example"
PASSWORDS = {"1001": "secret1001", "1002": "secret1002", "1003": "secret1003"}
USERS_CSV = SIPP_DIR / "register_users.csv"  # line 1: 1001
TRUNK_HOST = "127.0.0.2"
BAN_AFTER = 3
BAN_SECONDS = 2
SERVER_EXTRA = f"""
[security]
ban_after_failures = {BAN_AFTER}
ban_window_seconds = 60
ban_seconds = {BAN_SECONDS}
max_requests_per_second = 1000
"""
REPLY_TIMEOUT = 5.0


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    config = write_config(tmp_path / "pbx", server_extra=SERVER_EXTRA)
    with running_server(config) as running:
        yield running


# --- helpers ---------------------------------------------------------------------------------


def wait_for(condition: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    """Poll ``condition`` until it returns something truthy; that value, or None at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def registrations(server: RunningServer, extension: str | None = None) -> list[dict[str, Any]]:
    status, rows = server.admin_request("GET", "/registrations")
    assert status == 200, rows
    return [row for row in rows if extension is None or row["extension"] == extension]


@dataclass
class Reply:
    status: int
    reason: str
    headers: list[tuple[str, str]]

    @classmethod
    def parse(cls, data: bytes) -> Reply:
        head = data.split(b"\r\n\r\n", 1)[0].decode()
        first, *lines = head.split("\r\n")
        _, status, reason = first.split(" ", 2)
        headers = [(n.strip(), v.strip()) for n, v in (line.split(":", 1) for line in lines)]
        return cls(int(status), reason, headers)

    def all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]

    def one(self, name: str) -> str:
        values = self.all(name)
        assert len(values) == 1, (name, self.headers)
        return values[0]

    @property
    def challenge(self) -> dict[str, str]:
        """The auth-params of the first WWW-Authenticate (the one SIPp and pyVoIP read)."""
        return dict(re.findall(r'(\w+)="?([^",]*)"?', self.all("WWW-Authenticate")[0]))


def digest_authorization(
    user: str,
    password: str,
    challenge: dict[str, str],
    *,
    uri: str = f"sip:{DOMAIN}",
    qop: bool = False,
    nc: int = 1,
) -> str:
    """An MD5 Authorization value, computed here (RFC 2617 3.2.2; RFC 2069 form without qop)."""

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    ha1 = md5(f"{user}:{challenge['realm']}:{password}")
    ha2 = md5(f"REGISTER:{uri}")
    nonce = challenge["nonce"]
    fields = (
        f'Digest username="{user}", realm="{challenge["realm"]}", nonce="{nonce}", uri="{uri}", '
        f'algorithm=MD5, opaque="{challenge["opaque"]}"'
    )
    if not qop:
        return f'{fields}, response="{md5(f"{ha1}:{nonce}:{ha2}")}"'
    cnonce = uuid.uuid4().hex[:16]
    response = md5(f"{ha1}:{nonce}:{nc:08x}:{cnonce}:auth:{ha2}")
    return f'{fields}, qop=auth, nc={nc:08x}, cnonce="{cnonce}", response="{response}"'


class RawPhone:
    """A UDP socket on a loopback address that sends hand-written requests to the server."""

    def __init__(self, server: RunningServer, host: str = "127.0.0.1") -> None:
        self.server = server
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.host, self.port = self.sock.getsockname()
        self.call_id = f"{uuid.uuid4().hex}@{host}"
        self.tag = uuid.uuid4().hex[:10]
        self.cseq = 0

    def close(self) -> None:
        self.sock.close()

    def register(self, user: str, *, authorization: str | None = None, expires: int = 600) -> bytes:
        """A REGISTER for ``user`` (new branch, next CSeq of this phone's Call-ID)."""
        self.cseq += 1
        lines = [
            f"REGISTER sip:{DOMAIN} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.host}:{self.port};branch=z9hG4bK{uuid.uuid4().hex};rport",
            "Max-Forwards: 70",
            f"From: <sip:{user}@{DOMAIN}>;tag={self.tag}",
            f"To: <sip:{user}@{DOMAIN}>",
            f"Call-ID: {self.call_id}",
            f"CSeq: {self.cseq} REGISTER",
            f"Contact: <sip:{user}@{self.host}:{self.port}>",
            f"Expires: {expires}",
            *([f"Authorization: {authorization}"] if authorization else []),
            "User-Agent: raw-test",
            "Content-Length: 0",
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def options(self) -> bytes:
        self.cseq += 1
        lines = [
            f"OPTIONS sip:{self.server.udp[0]}:{self.server.udp[1]} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.host}:{self.port};branch=z9hG4bK{uuid.uuid4().hex};rport",
            "Max-Forwards: 70",
            f"From: <sip:probe@{self.host}>;tag={self.tag}",
            f"To: <sip:{self.server.udp[0]}:{self.server.udp[1]}>",
            f"Call-ID: {self.call_id}",
            f"CSeq: {self.cseq} OPTIONS",
            "Content-Length: 0",
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def send(self, payload: bytes, timeout: float = REPLY_TIMEOUT) -> Reply | None:
        """Send and return the final response to this CSeq, or None if none came in time."""
        self.sock.sendto(payload, self.server.udp)
        cseq = f"{self.cseq} "
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data, _ = self.sock.recvfrom(65536)
            except TimeoutError:
                return None
            reply = Reply.parse(data)
            if reply.status >= 200 and reply.one("CSeq").startswith(cseq):
                return reply
        return None

    def expect(self, payload: bytes) -> Reply:
        reply = self.send(payload)
        assert reply is not None, "no answer from the server"
        return reply

    def register_with_digest(self, user: str, password: str, expires: int = 600) -> Reply:
        challenge = self.expect(self.register(user, expires=expires))
        assert challenge.status == 401
        auth = digest_authorization(user, password, challenge.challenge)
        return self.expect(self.register(user, authorization=auth, expires=expires))


@pytest.fixture
def phones() -> Iterator[Callable[..., RawPhone]]:
    made: list[RawPhone] = []

    def make(server: RunningServer, host: str = "127.0.0.1") -> RawPhone:
        made.append(RawPhone(server, host))
        return made[-1]

    yield make
    for phone in made:
        phone.close()


def sipp(
    server: RunningServer,
    scenario: str,
    transport: str,
    workdir: Path,
    keys: dict[str, str],
    port: int | None = None,
) -> dict[str, str]:
    """Run a register scenario with the users CSV; returns what it logged (``name:value``)."""
    log_file = workdir / f"{scenario}.{transport}.{uuid.uuid4().hex[:6]}.log"
    extra = ["-inf", str(USERS_CSV), "-trace_logs", "-log_file", str(log_file)]
    for key, value in keys.items():
        extra += ["-key", key, value]
    if port is not None:
        extra += ["-p", str(port)]  # after the harness's own -p: SIPp keeps the last one
    target = server.udp if transport == "u1" else server.tcp
    result = run_sipp(
        scenario, target, transport=transport, workdir=workdir, timeout=20, extra=extra
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    logged: dict[str, str] = {}
    if log_file.exists():
        for line in log_file.read_text().splitlines():
            name, _, value = line.partition(":")
            logged[name.strip()] = value.strip()
    return logged


# --- 1. SIPp: register, refresh, fetch, unregister (UDP and TCP) ------------------------------


@pytest.mark.parametrize(("transport", "kind"), [("u1", "UDP"), ("t1", "TCP")])
def test_sipp_registers_refreshes_fetches_and_unregisters(
    server: RunningServer, tmp_path: Path, transport: str, kind: str
) -> None:
    port = free_port(socket.SOCK_STREAM if kind == "TCP" else socket.SOCK_DGRAM)
    contact = f"sip:1001@127.0.0.1:{port};transport={kind}"

    # register_flow.xml itself checks: 401 first (MD5 challenge first), then 200 with expires=600.
    logged = sipp(server, "register_flow.xml", transport, tmp_path, {"domain": DOMAIN}, port)
    for step in ("registered", "refreshed", "listed"):
        assert logged[step] == f"<{contact}>;expires=600", (step, logged)

    (row,) = registrations(server, "1001")
    assert row["contact"] == contact
    assert row["source"] == f"127.0.0.1:{port}"
    assert row["transport"] == kind
    assert row["tenant"] == "acme"
    assert 590 <= row["expires_in"] <= 600

    # register_unregister.xml checks the 200 lists no Contact any more.
    sipp(
        server,
        "register_unregister.xml",
        transport,
        tmp_path,
        {"domain": DOMAIN, "contact": contact},
    )
    assert registrations(server, "1001") == []


def test_too_short_expiry_gets_423_with_min_expires(server: RunningServer, tmp_path: Path) -> None:
    logged = sipp(
        server, "register_too_brief.xml", "u1", tmp_path, {"domain": DOMAIN, "expires": "30"}
    )
    assert logged["min_expires"] == "60"
    assert registrations(server) == []


# --- 2. pyVoIP ----------------------------------------------------------------------------------


def test_pyvoip_phone_registers_and_is_listed(server: RunningServer) -> None:
    from pyVoIP.VoIP import PhoneStatus, VoIPPhone

    sip_port = free_port()
    phone = VoIPPhone(
        server.udp[0],
        server.udp[1],
        "1001",
        PASSWORDS["1001"],
        myIP="127.0.0.1",
        sipPort=sip_port,
        rtpPortLow=18300,
        rtpPortHigh=18399,
    )
    phone.sip.register_timeout = 5  # its REGISTER waits (start and stop block on it)
    # start() registers synchronously and retries on failure: run it beside the test.
    starter = threading.Thread(target=phone.start, name="pyvoip-start", daemon=True)
    starter.start()
    try:
        rows = wait_for(lambda: registrations(server, "1001"), timeout=15)
        assert rows, f"pyVoIP did not register: {server.events('auth_failed')}"
        (row,) = rows
        assert row["source"] == f"127.0.0.1:{sip_port}"
        assert row["transport"] == "UDP"
        assert row["tenant"] == "acme"  # the server's address as domain: the default tenant
        assert row["contact"].startswith(f"sip:1001@127.0.0.1:{sip_port}")
        assert row["user_agent"].startswith("pyVoIP")
        starter.join(timeout=10)
        assert phone.get_status() is PhoneStatus.REGISTERED
    finally:
        phone.stop()  # unregisters (Expires: 0), bounded by register_timeout
        starter.join(timeout=10)
    assert not starter.is_alive()
    assert wait_for(lambda: registrations(server, "1001") == [], timeout=5)
    assert server.events("auth_failed") == []


# --- 3. durability, digest rules, uniform answers, bans ---------------------------------------


def test_bindings_survive_a_restart_with_their_remaining_expiry(
    tmp_path: Path, phones: Callable[..., RawPhone]
) -> None:
    config = write_config(tmp_path / "pbx", server_extra=SERVER_EXTRA)
    with running_server(config) as first:
        phone = phones(first)
        assert phone.register_with_digest("1003", PASSWORDS["1003"], expires=600).status == 200
        (before,) = registrations(first, "1003")
    with running_server(config) as second:
        (after,) = registrations(second, "1003")
        listed_at = time.time()
    for field in ("tenant", "contact", "source", "transport", "user_agent", "registered_at"):
        assert after[field] == before[field], field
    assert after["source"] == f"127.0.0.1:{phone.port}"
    # The remaining time, not a fresh 600: counted from the original registration.
    remaining = 600 - (listed_at - before["registered_at"])
    assert abs(after["expires_in"] - remaining) <= 1.5


def test_replayed_authorization_is_refused(
    server: RunningServer, phones: Callable[..., RawPhone]
) -> None:
    phone = phones(server)
    challenge = phone.expect(phone.register("1002")).challenge
    # Without qop (RFC 2069, as pyVoIP sends): a nonce authenticates one request only.
    auth = digest_authorization("1002", PASSWORDS["1002"], challenge)
    assert phone.expect(phone.register("1002", authorization=auth)).status == 200
    replay = phone.expect(phone.register("1002", authorization=auth))
    assert replay.status == 401
    assert "stale=true" in replay.all("WWW-Authenticate")[0]

    # With qop=auth: the same nonce-count again is refused, a higher one is accepted.
    challenge = replay.challenge
    auth = digest_authorization("1002", PASSWORDS["1002"], challenge, qop=True, nc=1)
    assert phone.expect(phone.register("1002", authorization=auth)).status == 200
    assert phone.expect(phone.register("1002", authorization=auth)).status == 401
    other = phones(server, "127.0.0.4")  # nor from anywhere else
    assert other.expect(other.register("1002", authorization=auth)).status == 401
    auth = digest_authorization("1002", PASSWORDS["1002"], challenge, qop=True, nc=2)
    assert phone.expect(phone.register("1002", authorization=auth)).status == 200
    # A replay is not a password guess: it never counts towards a ban.
    assert server.events("auth_failed") == []


def test_expired_nonce_is_challenged_again_with_stale_true(
    tmp_path: Path, phones: Callable[..., RawPhone]
) -> None:
    extra = SERVER_EXTRA + "\n[auth]\nnonce_seconds = 1\n"
    with running_server(write_config(tmp_path / "pbx", server_extra=extra)) as server:
        phone = phones(server)
        old = phone.expect(phone.register("1003")).challenge
        fresh = phone.expect(phone.register("1003")).challenge
        # Answering a fresh nonce at once works (the control)...
        auth = digest_authorization("1003", PASSWORDS["1003"], fresh)
        assert phone.expect(phone.register("1003", authorization=auth)).status == 200
        # ...and the same right answer to a nonce older than nonce_seconds is stale. Waiting
        # out the one-second nonce lifetime is the condition under test, not a synchronisation.
        time.sleep(1.3)
        late = phone.expect(
            phone.register("1003", authorization=digest_authorization("1003", "secret1003", old))
        )
        assert late.status == 401
        assert all("stale=true" in value for value in late.all("WWW-Authenticate"))
        retry = digest_authorization("1003", PASSWORDS["1003"], late.challenge)
        assert phone.expect(phone.register("1003", authorization=retry)).status == 200
        assert server.events("auth_failed") == []


def _normalised(reply: Reply, user: str) -> list[tuple[str, str]]:
    """Headers with what differs by construction blanked: the nonce, tags, branch, user."""
    out = []
    for name, value in reply.headers:
        value = re.sub(r'nonce="[^"]*"', 'nonce="N"', value)
        value = re.sub(r"tag=[^;,\s]+", "tag=T", value)
        value = re.sub(r"branch=[^;,\s]+", "branch=B", value)
        value = value.replace(f"sip:{user}@", "sip:USER@")
        if name.lower() == "date":
            value = "X"
        out.append((name, value))
    return out


def test_unknown_extension_and_wrong_password_get_identical_answers(
    server: RunningServer, phones: Callable[..., RawPhone]
) -> None:
    answers = {}
    phone = phones(server, "127.0.0.6")  # one socket, same Call-ID and CSeq numbers for both
    for user, password in (("1999", "whatever"), ("1001", "not-the-password")):
        phone.cseq = 0
        first = phone.expect(phone.register(user))
        auth = digest_authorization(user, password, first.challenge)
        second = phone.expect(phone.register(user, authorization=auth))
        answers[user] = (first, second)
    (unknown_first, unknown), (wrong_first, wrong) = answers["1999"], answers["1001"]
    assert (unknown.status, unknown.reason) == (wrong.status, wrong.reason) == (401, "Unauthorized")
    assert [n for n, _ in unknown.headers] == [n for n, _ in wrong.headers]
    assert _normalised(unknown, "1999") == _normalised(wrong, "1001")
    assert _normalised(unknown_first, "1999") == _normalised(wrong_first, "1001")
    assert unknown.challenge["nonce"] != wrong.challenge["nonce"]
    reasons = sorted(event["reason"] for event in server.wait_for_events("auth_failed", 2))
    assert reasons == ["unknown_user", "wrong_password"]  # told apart only in the server's log


def _fail_auth(phone: RawPhone, times: int) -> list[Reply | None]:
    challenge = phone.expect(phone.register("1001")).challenge
    replies = []
    for _ in range(times):
        auth = digest_authorization("1001", "wrong-guess", challenge)
        reply = phone.send(phone.register("1001", authorization=auth))
        replies.append(reply)
        if reply is not None:
            challenge = reply.challenge
    return replies


def test_source_is_banned_after_failures_then_released(
    server: RunningServer, phones: Callable[..., RawPhone]
) -> None:
    attacker = phones(server, "127.0.0.5")
    replies = _fail_auth(attacker, BAN_AFTER)
    assert [r.status if r else None for r in replies] == [401] * BAN_AFTER
    banned_at = time.monotonic()

    assert attacker.send(attacker.options(), timeout=1.0) is None
    assert attacker.send(attacker.register("1001"), timeout=0.5) is None
    bystander = phones(server, "127.0.0.3")
    answer = bystander.send(bystander.options())
    assert answer is not None
    assert answer.status == 200
    _, status = server.admin_request("GET", "/status")
    assert [ban["host"] for ban in status["bans"]] == ["127.0.0.5"]

    def answered() -> Reply | None:
        return attacker.send(attacker.options(), timeout=0.3)

    released = wait_for(answered, timeout=BAN_SECONDS + 8, interval=0)
    assert released is not None, "the ban was never lifted"
    assert released.status == 200
    assert time.monotonic() - banned_at >= BAN_SECONDS - 0.5
    assert [e["host"] for e in server.events("source_banned")] == ["127.0.0.5"]


def test_trunk_address_is_never_banned(
    server: RunningServer, phones: Callable[..., RawPhone]
) -> None:
    trunk = phones(server, TRUNK_HOST)  # any port of the trunk's address is the trunk
    replies = _fail_auth(trunk, BAN_AFTER + 1)
    assert [r.status if r else None for r in replies] == [401] * (BAN_AFTER + 1)
    answer = trunk.send(trunk.options())
    assert answer is not None
    assert answer.status == 200
    _, status = server.admin_request("GET", "/status")
    assert status["bans"] == []
    assert server.events("source_banned") == []
