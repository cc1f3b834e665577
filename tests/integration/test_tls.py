"""SIP over TLS through the running server (issue #18): REGISTER over a TLS connection, the
binding says TLS, keep-alives, a bad byte stream and a stalled handshake leave the server
serving, a certificate reload that cannot be used is refused and the old one kept."""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import ssl
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import RunningServer, running_server, write_config
from tests.integration.sip_client import Reply, md5, parse_reply
from tests.tlscerts import make_certificate, make_expired_certificate

pytestmark = pytest.mark.integration

TLS_LISTEN = '["udp:127.0.0.1:0", "tcp:127.0.0.1:0", "tls:127.0.0.1:0"]'


def client_context() -> ssl.SSLContext:
    # Not ssl.create_default_context(): it loads the system's CA store (~30 ms), unused here
    # since the test certificate is not verified, and it made every new connection that slow.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class SipTlsClient:
    """One phone on its own TLS connection (requests and answers framed by Content-Length)."""

    def __init__(self, server: tuple[str, int], extension: str, password: str, domain: str):
        self.server, self.extension, self.password, self.domain = (
            server,
            extension,
            password,
            domain,
        )
        raw = socket.create_connection(server, timeout=5)
        self.sock = client_context().wrap_socket(raw)
        self.port = self.sock.getsockname()[1]
        self.call_id = f"{uuid.uuid4().hex}@tls-test"
        self.cseq = 0
        self.buffer = b""

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def request(self, method: str, extra: str = "", expires: int = 3600) -> bytes:
        self.cseq += 1
        return (
            f"{method} sip:{self.domain} SIP/2.0\r\n"
            f"Via: SIP/2.0/TLS 127.0.0.1:{self.port};rport;branch=z9hG4bK{uuid.uuid4().hex}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:{self.extension}@{self.domain}>;tag={uuid.uuid4().hex[:8]}\r\n"
            f"To: <sip:{self.extension}@{self.domain}>\r\n"
            f"Call-ID: {self.call_id}\r\nCSeq: {self.cseq} {method}\r\n"
            f"Contact: <sip:{self.extension}@127.0.0.1:{self.port};transport=tls>\r\n"
            f"Expires: {expires}\r\n{extra}Content-Length: 0\r\n\r\n"
        ).encode()

    def read_message(self) -> bytes:
        while True:
            head, sep, rest = self.buffer.partition(b"\r\n\r\n")
            if sep:
                match = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                length = int(match.group(1)) if match else 0
                if len(rest) >= length:
                    self.buffer = rest[length:]
                    return head + sep + rest[:length]
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buffer += chunk

    def send(self, payload: bytes) -> Reply:
        self.sock.sendall(payload)
        while True:
            reply = parse_reply(self.read_message())
            if reply.status >= 200:
                return reply

    def register(self) -> Reply:
        first = self.send(self.request("REGISTER"))
        if first.status != 401:
            return first
        params = dict(re.findall(r'(\w+)="([^"]*)"', first.all("WWW-Authenticate")[0]))
        uri = f"sip:{self.domain}"
        ha1 = md5(f"{self.extension}:{params['realm']}:{self.password}")
        response = md5(f"{ha1}:{params['nonce']}:00000001:abc:auth:{md5(f'REGISTER:{uri}')}")
        auth = (
            f'Authorization: Digest username="{self.extension}", realm="{params["realm"]}", '
            f'nonce="{params["nonce"]}", uri="{uri}", response="{response}", algorithm=MD5, '
            f'qop=auth, nc=00000001, cnonce="abc", opaque="{params.get("opaque", "")}"\r\n'
        )
        return self.send(self.request("REGISTER", auth))


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("tls")
    make_certificate(root, "sip")
    config = write_config(
        root,
        listen=TLS_LISTEN,
        sip_extra='tls_certificate = "sip.crt"\ntls_key = "sip.key"\ntls_handshake_seconds = 1',
    )
    with running_server(config) as server:
        yield server


def test_register_over_tls_and_the_binding_says_tls(tls_server: RunningServer) -> None:
    phone = SipTlsClient(tls_server.tls, "1001", "secret1001", "acme.example")
    try:
        reply = phone.register()
        assert reply.status == 200
        status, bindings = tls_server.admin_request("GET", "/registrations")
        assert status == 200
        [mine] = [b for b in bindings if b["source"] == f"127.0.0.1:{phone.port}"]
        assert mine["transport"] == "TLS"
        assert mine["encrypted"] is True
        # RFC 5626 keep-alive over TLS: a CRLFCRLF ping gets a CRLF pong.
        phone.sock.sendall(b"\r\n\r\n")
        assert phone.sock.recv(16) == b"\r\n"
    finally:
        phone.close()


def test_plain_bytes_and_a_stalled_handshake_leave_the_server_serving(
    tls_server: RunningServer,
) -> None:
    with socket.create_connection(tls_server.tls, timeout=5) as sock:
        sock.sendall(b"OPTIONS sip:acme.example SIP/2.0\r\n\r\n" * 20)
        with contextlib.suppress(ConnectionResetError):
            while sock.recv(4096):
                pass  # whatever the TLS stack says before it closes (an alert at most)
    started = time.monotonic()
    with socket.create_connection(tls_server.tls, timeout=5) as sock:
        assert sock.recv(16) == b""  # closed by the server once tls_handshake_seconds is over
    assert time.monotonic() - started < 4.5
    phone = SipTlsClient(tls_server.tls, "1002", "secret1002", "acme.example")
    try:
        assert phone.register().status == 200
    finally:
        phone.close()


def _reload(server: RunningServer) -> tuple[int, dict[str, object]]:
    status, body = server.admin_request("POST", "/reload")
    return status, body


def test_a_certificate_reload_that_cannot_be_used_is_refused_and_the_old_one_kept(
    tmp_path: Path,
) -> None:
    cert, key = make_certificate(tmp_path, "sip")
    other_cert, other_key = make_certificate(tmp_path, "other", "other.test")
    expired_cert, expired_key = make_expired_certificate(tmp_path, "expired")
    config = write_config(
        tmp_path, listen=TLS_LISTEN, sip_extra='tls_certificate = "live.crt"\ntls_key = "live.key"'
    )
    live_cert, live_key = tmp_path / "live.crt", tmp_path / "live.key"
    shutil.copy(cert, live_cert)
    shutil.copy(key, live_key)
    original = ssl.PEM_cert_to_DER_cert(cert.read_text())
    with running_server(config) as server:
        phone = SipTlsClient(server.tls, "1001", "secret1001", "acme.example")
        try:
            assert phone.register().status == 200
            for bad_cert, bad_key, why in (
                (expired_cert, expired_key, "expired"),
                (cert, other_key, "not a PEM certificate and its private key"),
            ):
                shutil.copy(bad_cert, live_cert)
                shutil.copy(bad_key, live_key)
                status, body = _reload(server)
                assert status == 409, body
                assert why in str(body["errors"])
                with client_context().wrap_socket(socket.create_connection(server.tls)) as s:
                    assert s.getpeercert(binary_form=True) == original
            # A good new certificate: new connections get it; the phone's stays up.
            shutil.copy(other_cert, live_cert)
            shutil.copy(other_key, live_key)
            status, body = _reload(server)
            assert status == 200, body
            with client_context().wrap_socket(socket.create_connection(server.tls)) as s:
                der = s.getpeercert(binary_form=True)
                assert der == ssl.PEM_cert_to_DER_cert(other_cert.read_text())
            assert phone.register().status == 200
        finally:
            phone.close()
