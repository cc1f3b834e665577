"""Issue 17 item 7 (the part left): an INVITE to a domain no tenant serves that carries
credentials gets the same answer as one to a tenant's domain with a wrong password, so neither
a REGISTER nor an INVITE tells tenant domains apart (no domain oracle)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from pbx.b2bua import CallEngine
from pbx.clock import FakeClock
from pbx.config.holder import ConfigHolder
from pbx.config.load import load_config
from pbx.metrics import Registry
from pbx.service import SipService
from pbx.sip.message import SipResponse
from pbx.sip.transport import Inbound
from pbx.store import Store
from tests.integration.harness import DEFAULT_TENANT, write_config
from tests.integration.sip_client import challenge_params, md5
from tests.test_hardening import ATTACKER, request
from tests.test_service import LOCAL, FakeTransport

Service = tuple[SipService, FakeTransport, FakeClock]


@pytest_asyncio.fixture
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    """The service with the real call engine (which authenticates a phone's INVITE); acme is
    not the default tenant, so a domain no tenant serves is nobody's."""
    tenant = DEFAULT_TENANT.replace("default = true", "default = false")
    beta = (
        '[tenant]\ndomain = "beta.example"\ntimezone = "Asia/Tokyo"\n\n'
        "[limits]\nmax_users = 1\nrecording_users = 0\ninternational_calls = false\n"
    )
    tenants = {"acme": tenant, "beta": beta}  # two: neither is the default
    snapshot = load_config(write_config(tmp_path / "pbx", tenants=tenants))
    store = await Store.open_in(snapshot.server.storage.data_dir)
    clock = FakeClock()
    holder = ConfigHolder(snapshot)
    svc = SipService(holder, store, Registry(), clock)
    fake = FakeTransport()
    svc.attach(fake)  # type: ignore[arg-type]
    svc.calls = CallEngine(svc, svc, store, holder, svc.metrics, clock)
    await svc.start()
    try:
        yield svc, fake, clock
    finally:
        await svc.stop()
        await store.close()


def _authorization(challenge: str, uri: str, password: str) -> str:
    params = challenge_params(challenge)
    realm, nonce = params["realm"], params["nonce"]
    ha1 = md5(f"1001:{realm}:{password}")
    ha2 = md5(f"INVITE:{uri}")
    response = md5(f"{ha1}:{nonce}:00000001:0a4f113b:auth:{ha2}")
    return (
        f'Authorization: Digest username="1001", realm="{realm}", nonce="{nonce}", '
        f'uri="{uri}", response="{response}", algorithm=MD5, qop=auth, nc=00000001, '
        f'cnonce="0a4f113b", opaque="{params.get("opaque", "")}"\r\n'
    )


def _invite_with_credentials(svc: Service, domain: str, password: str, n: int) -> SipResponse:
    """Challenge, answer it with ``password``, return the final answer to the second INVITE."""
    sip, fake, clock = svc
    uri = f"sip:0312345678@{domain}"
    first = request("INVITE", uri=uri, to_host=domain, branch=f"z9hG4bK-d{n}a")
    sip.on_inbound(Inbound(first, ATTACKER, LOCAL, "UDP"))
    [challenge] = [r for r in fake.responses() if r.status >= 200]
    assert challenge.status == 401
    header = challenge.header("WWW-Authenticate")
    assert header is not None
    clock.advance(0.1)
    auth = _authorization(header, uri, password)
    second = request("INVITE", uri=uri, to_host=domain, branch=f"z9hG4bK-d{n}b", extra=auth)
    sip.on_inbound(Inbound(second, ATTACKER, LOCAL, "UDP"))
    [final] = [r for r in fake.responses() if r.status >= 200]
    return final


def _shape(resp: SipResponse) -> tuple[int, str, bool, tuple[str, ...]]:
    """What an attacker can compare: status, reason, a challenge, its parameter names."""
    header = resp.header("WWW-Authenticate") or resp.header("Proxy-Authenticate")
    names = tuple(sorted(challenge_params(header))) if header else ()
    stale = "stale" in (header or "").lower()
    return resp.status, resp.reason, stale, names


@pytest.mark.asyncio
async def test_an_invite_with_credentials_to_an_unknown_domain_is_answered_like_a_wrong_password(
    service: Service,
) -> None:
    tenant = _invite_with_credentials(service, "acme.example", "not-the-password", 1)
    unknown = _invite_with_credentials(service, "nobody.example", "secret1001", 2)
    print(f"tenant domain, wrong password: {_shape(tenant)}; unknown domain: {_shape(unknown)}")
    assert _shape(unknown) == _shape(tenant)
    assert tenant.status == 401
    svc = service[0]
    failures = svc.metrics.metrics["pbx_auth_failures_total"].values
    assert sum(failures.values()) == 2  # both count towards the ban
