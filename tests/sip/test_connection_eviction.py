"""At the TCP connection cap a newcomer evicts the oldest connection no request was
authenticated over; trusted ones (a phone's, our own to a trunk) are never evicted. The
transport keeps the untrusted ones apart, oldest first, so finding the victim does not pass
over every trusted connection. Driven without sockets: connections are admitted as
``connection_made`` admits them."""

from __future__ import annotations

from pbx.sip.transport import SipTransport, TcpLimits, _TcpConnection

LOCAL = ("127.0.0.1", 5060)


def _connect(transport: SipTransport, n: int) -> _TcpConnection | None:
    conn = _TcpConnection(transport, LOCAL)
    conn.peer = (f"192.0.2.{n}", 40000 + n)
    return conn if transport._admit(conn) else None


def test_the_oldest_untrusted_connection_is_evicted_and_trusted_ones_never() -> None:
    transport = SipTransport(lambda _: None, TcpLimits(max_connections=4))
    closed: list[int] = []
    transport.on_connection_closed = closed.append
    phone, first, second, third = (_connect(transport, n) for n in range(4))
    assert phone is not None
    assert first is not None
    assert second is not None
    assert third is not None
    transport.trust(phone.id)  # a REGISTER authenticated over it
    transport.trust(second.id)
    # Full: the newcomer takes the place of the oldest untrusted one, not of the phone's.
    newcomer = _connect(transport, 4)
    assert newcomer is not None
    assert closed == [first.id]
    assert not transport.connection_alive(first.id)
    # Then the next oldest untrusted: the newcomer's elder, not the trusted second.
    assert _connect(transport, 5) is not None
    assert closed == [first.id, third.id]
    # A connection that closed on its own is never picked (nor counted) again.
    transport._forget(newcomer)
    assert closed == [first.id, third.id, newcomer.id]
    assert _connect(transport, 6) is not None  # a free slot: no eviction
    assert transport.evicted == 2
    assert transport.tcp_connection_count == 4


def test_with_every_connection_trusted_a_newcomer_is_refused() -> None:
    transport = SipTransport(lambda _: None, TcpLimits(max_connections=2))
    for n in range(2):
        conn = _connect(transport, n)
        assert conn is not None
        transport.trust(conn.id)
    assert _connect(transport, 2) is None
    assert transport.evicted == 0
    assert transport.tcp_connection_count == 2
