"""A minimal UDP SIP user agent for integration tests: REGISTER with MD5 digest (qop=auth).

Deliberately independent of the project's own parser and digest code, so tests check the server
against a second implementation. Loopback only.
"""

from __future__ import annotations

import hashlib
import re
import socket
import uuid
from dataclasses import dataclass, field


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


@dataclass
class Reply:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    raw: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


def parse_reply(data: bytes) -> Reply:
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    lines = head.split("\r\n")
    _, status, reason = [*lines[0].split(" ", 2), ""][:3]
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    return Reply(int(status), reason, headers, data)


def challenge_params(value: str) -> dict[str, str]:
    return {k.lower(): v.strip('"') for k, v in re.findall(r'(\w+)=("[^"]*"|[^,\s]+)', value)}


@dataclass
class SipUdpClient:
    """One phone: a UDP socket on a loopback address, registering to ``server``."""

    server: tuple[str, int]
    extension: str
    password: str
    domain: str
    host: str = "127.0.0.1"
    call_id: str = field(default_factory=lambda: f"{uuid.uuid4().hex}@test")
    cseq: int = 0

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((self.host, 0))
        self.sock.settimeout(5.0)
        self.port = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> SipUdpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, extra: str = "", *, expires: int | None = 3600) -> bytes:
        self.cseq += 1
        contact = f"Contact: <sip:{self.extension}@{self.host}:{self.port}>\r\n"
        if expires is not None:
            contact += f"Expires: {expires}\r\n"
        uri = f"sip:{self.domain}"
        return (
            f"{method} {uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {self.host}:{self.port};rport;branch=z9hG4bK{uuid.uuid4().hex}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:{self.extension}@{self.domain}>;tag={uuid.uuid4().hex[:8]}\r\n"
            f"To: <sip:{self.extension}@{self.domain}>\r\n"
            f"Call-ID: {self.call_id}\r\n"
            f"CSeq: {self.cseq} {method}\r\n"
            f"{contact}{extra}"
            "Content-Length: 0\r\n\r\n"
        ).encode()

    def send(self, payload: bytes) -> Reply:
        """Send and return the first final response (100s skipped)."""
        self.sock.sendto(payload, self.server)
        while True:
            data, _ = self.sock.recvfrom(65536)
            reply = parse_reply(data)
            if reply.status >= 200:
                return reply

    def authorization(self, challenge: str, method: str, password: str | None = None) -> str:
        params = challenge_params(challenge)
        realm, nonce = params["realm"], params["nonce"]
        uri = f"sip:{self.domain}"
        ha1 = md5(f"{self.extension}:{realm}:{password or self.password}")
        ha2 = md5(f"{method}:{uri}")
        cnonce, nc = uuid.uuid4().hex[:16], "00000001"
        response = md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
        return (
            f'Authorization: Digest username="{self.extension}", realm="{realm}", '
            f'nonce="{nonce}", uri="{uri}", response="{response}", algorithm=MD5, '
            f'qop=auth, nc={nc}, cnonce="{cnonce}", opaque="{params.get("opaque", "")}"\r\n'
        )

    def register(self, *, expires: int = 3600, password: str | None = None) -> Reply:
        """REGISTER, answer the (first, MD5) challenge, return the final answer."""
        first = self.send(self.request("REGISTER", expires=expires))
        if first.status != 401:
            return first
        challenge = first.all("WWW-Authenticate")[0]
        auth = self.authorization(challenge, "REGISTER", password)
        return self.send(self.request("REGISTER", auth, expires=expires))
