"""登録状況 says which devices are encrypted (issue #18): a device registered over TLS gets the
暗号化(TLS) badge, one over UDP/TCP says 暗号化なし; the JSON API carries the same flag."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pbx.panel.status import TenantBindings, build_status, status_json
from tests.panel.conftest import sign_in
from tests.panel.test_live import LivePanel, live_panel  # noqa: F401 (the fixture)
from tests.panel.test_status import NOW, binding, row, tenant


def test_a_device_on_tls_is_encrypted_and_one_on_udp_or_tcp_is_not() -> None:
    registered = TenantBindings(
        (
            binding("1001", port=5061, transport="TLS", registered_at=NOW - 20),
            binding("1001", port=5060, transport="UDP", registered_at=NOW - 10),
            binding("1001", port=5062, transport="TCP", registered_at=NOW),
        )
    )
    view = build_status(tenant("1001"), registered, (), NOW)
    devices = row(view, "1001").devices
    assert [(d.transport, d.encrypted) for d in devices] == [
        ("TLS", True),
        ("UDP", False),
        ("TCP", False),
    ]
    api = status_json(view)
    assert [d["encrypted"] for d in api["users"][0]["devices"]] == [True, False, False]


@pytest.mark.asyncio
async def test_the_status_page_shows_the_badge_in_japanese_and_english(
    live_panel: LivePanel,  # noqa: F811
) -> None:
    now = live_panel.panel.clock()
    live_panel.live.register("acme", "1001", now - 5)  # a desk phone over UDP
    live_panel.live.register("acme", "1001", now)  # and an app over TLS
    bindings = live_panel.live.bindings["acme"]
    bindings[1] = replace(bindings[1], transport="TLS", source_port=5061, call_id="app")
    async with live_panel.panel.client() as client:
        await sign_in(client, "acme-admin")
        page = (await client.get("/t/acme/status")).text
        udp, tls = page.split('<ul class="devices">')[1].split("</ul>")[0].split("<li>")[1:]
        assert "192.0.2.7:5060 UDP" in udp
        assert 'data-encrypted="false"' in udp
        assert "暗号化なし" in udp
        assert "192.0.2.7:5061 TLS" in tls
        assert 'data-encrypted="true"' in tls
        assert "暗号化(TLS)" in tls
        await client.get("/lang/en")
        page = (await client.get("/t/acme/status")).text
        assert "Encrypted (TLS)" in page
        assert "Not encrypted" in page
        api = (await client.get("/t/acme/api/status")).json()
        assert [d["encrypted"] for d in api["users"][0]["devices"]] == [False, True]
