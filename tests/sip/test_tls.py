"""SIP over TLS: the server context and certificate checks (pbx.sip.tls), and the transport's TLS
listener over loopback (handshake, framing, keep-alives, handshake time-out, reload)."""

from __future__ import annotations

import asyncio
import ssl
import time
from pathlib import Path

import pytest

from pbx.sip.tls import CertificateProblem, TlsCredentials, check_files, server_context
from pbx.sip.transport import Inbound, SipTransport, TlsSettings
from tests.tlscerts import make_certificate, make_expired_certificate


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    folder = tmp_path_factory.mktemp("certs")
    return {
        "good": make_certificate(folder, "good"),
        "other": make_certificate(folder, "other", "other.test"),
        "expired": make_expired_certificate(folder, "expired"),
    }


def test_context_is_tls12_or_newer_with_aead_ciphers(certs: dict[str, tuple[Path, Path]]) -> None:
    context = server_context(*certs["good"], time.time())
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    names = {c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert names
    assert all("GCM" in n or "CHACHA20" in n for n in names), names
    assert all(n.startswith("ECDHE") for n in names), names


def test_expired_and_not_yet_valid_are_refused(certs: dict[str, tuple[Path, Path]]) -> None:
    with pytest.raises(CertificateProblem, match="expired on 2020-02-01"):
        check_files(*certs["expired"], time.time())
    # The same certificate, asked about a time before it started.
    with pytest.raises(CertificateProblem, match="not valid before 2020-01-01"):
        check_files(*certs["expired"], 1_500_000_000.0)
    # A valid one is refused once its 30 days are over.
    with pytest.raises(CertificateProblem, match="expired"):
        check_files(*certs["good"], time.time() + 31 * 86400)


def test_mismatched_key_missing_and_garbage_files_are_refused(
    certs: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    cert, _ = certs["good"]
    _, other_key = certs["other"]
    with pytest.raises(CertificateProblem, match="not a PEM certificate and its private key"):
        check_files(cert, other_key, time.time())
    with pytest.raises(CertificateProblem, match="no such file"):
        check_files(tmp_path / "nope.crt", other_key, time.time())
    garbage = tmp_path / "garbage.crt"
    garbage.write_text("hello\n")
    with pytest.raises(CertificateProblem):
        check_files(garbage, other_key, time.time())


def test_reload_keeps_the_old_certificate_when_the_new_one_is_bad(
    certs: dict[str, tuple[Path, Path]],
) -> None:
    creds = TlsCredentials(*certs["good"], time.time())
    context = creds.context
    with pytest.raises(CertificateProblem):
        creds.reload(*certs["expired"], time.time())
    with pytest.raises(CertificateProblem):
        creds.reload(certs["good"][0], certs["other"][1], time.time())
    assert creds.files == certs["good"]
    assert "pbx.test" in creds.info.subject
    assert creds.reload(*certs["other"], time.time()) is True
    assert creds.context is context  # the listeners' context, loaded anew
    assert "other.test" in creds.info.subject


def _client_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


OPTIONS = (
    b"OPTIONS sip:pbx.test SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bKx\r\n"
    b"Max-Forwards: 70\r\nFrom: <sip:a@pbx.test>;tag=1\r\nTo: <sip:pbx.test>\r\n"
    b"Call-ID: tls-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
)


async def _tls_transport(
    creds: TlsCredentials, received: list[Inbound], handshake: float = 5.0
) -> tuple[SipTransport, int]:
    transport = SipTransport(received.append, tls=TlsSettings(creds.context, handshake))
    await transport.start([("TLS", "127.0.0.1", 0)])
    listen = transport.listening[0]
    assert listen.transport == "TLS"
    return transport, listen.port


@pytest.mark.asyncio
async def test_tls_listener_frames_messages_answers_pings_and_replies_on_the_connection(
    certs: dict[str, tuple[Path, Path]],
) -> None:
    received: list[Inbound] = []
    transport, port = await _tls_transport(TlsCredentials(*certs["good"], time.time()), received)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=_client_context())
        tls_object = writer.get_extra_info("ssl_object")
        assert tls_object.version() in ("TLSv1.2", "TLSv1.3")
        writer.write(b"\r\n\r\n")  # RFC 5626 ping
        assert await asyncio.wait_for(reader.readexactly(2), 5) == b"\r\n"
        writer.write(OPTIONS[:50])
        writer.write(OPTIONS[50:])
        await writer.drain()
        for _ in range(100):
            if received:
                break
            await asyncio.sleep(0.01)
        [packet] = received
        assert packet.transport == "TLS"
        assert packet.data == OPTIONS
        assert packet.connection_id is not None
        # A reply to the phone goes over its own connection; with none, TLS is not opened.
        assert transport.send(b"SIP/2.0 200 OK\r\n\r\n", packet.source, "TLS")
        assert await asyncio.wait_for(reader.readexactly(18), 5) == b"SIP/2.0 200 OK\r\n\r\n"
        assert not transport.send(b"x", ("127.0.0.1", 9), "TLS")
        writer.close()
    finally:
        await transport.close()


@pytest.mark.asyncio
async def test_plain_bytes_and_stalled_handshakes_are_dropped(
    certs: dict[str, tuple[Path, Path]],
) -> None:
    received: list[Inbound] = []
    creds = TlsCredentials(*certs["good"], time.time())
    transport, port = await _tls_transport(creds, received, handshake=0.5)
    try:
        # Clear-text SIP on the TLS port: the handshake fails, the connection is closed.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(OPTIONS)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        # A client that connects and never speaks is dropped after the handshake time-out.
        started = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert 0.3 < time.monotonic() - started < 4
        writer.close()
        assert received == []
        assert transport.tcp_connection_count == 0
        # ... and the listener still serves.
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=_client_context())
        writer.write(OPTIONS)
        await writer.drain()
        for _ in range(100):
            if received:
                break
            await asyncio.sleep(0.01)
        assert len(received) == 1
        writer.close()
    finally:
        await transport.close()


@pytest.mark.asyncio
async def test_reload_serves_new_connections_with_the_new_certificate_and_keeps_old_ones(
    certs: dict[str, tuple[Path, Path]],
) -> None:
    received: list[Inbound] = []
    creds = TlsCredentials(*certs["good"], time.time())
    transport, port = await _tls_transport(creds, received)
    try:
        _, old_writer = await asyncio.open_connection("127.0.0.1", port, ssl=_client_context())
        creds.reload(*certs["other"], time.time())
        _, new_writer = await asyncio.open_connection("127.0.0.1", port, ssl=_client_context())
        peer_cert = new_writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        assert peer_cert == ssl.PEM_cert_to_DER_cert(certs["other"][0].read_text())
        # The connection made before the reload is still up and delivers.
        old_writer.write(OPTIONS)
        await old_writer.drain()
        for _ in range(100):
            if received:
                break
            await asyncio.sleep(0.01)
        assert len(received) == 1
        assert transport.tcp_connection_count == 2
        old_writer.close()
        new_writer.close()
    finally:
        await transport.close()
