"""Two ``pbx run`` nodes on one PostgreSQL (issue #20): a phone registered on one is
known to the other within a second, and its unregister too (no edge in front: the nodes share
only the database)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.harness import running_server, write_config
from tests.integration.test_registrar import (
    PASSWORDS,
    SERVER_EXTRA,
    RawPhone,
    registrations,
    wait_for,
)

pytestmark = pytest.mark.integration


def test_a_phone_registered_on_node_a_is_known_to_node_b_and_its_unregister_too(
    tmp_path: Path, postgres_url: Callable[[], str]
) -> None:
    url = postgres_url()
    configs = [
        write_config(
            tmp_path / name,
            server_extra=SERVER_EXTRA + f'\n[storage]\ndatabase = "{url}"\nnode = "{name}"\n',
        )
        for name in ("a", "b")
    ]
    for config in configs:  # one [storage] table: the harness's data_dir line joins ours
        text = config.read_text(encoding="utf-8")
        text = text.replace('[storage]\ndata_dir = "data"\n', "", 1)
        config.write_text(text.replace("[storage]\n", '[storage]\ndata_dir = "data"\n'))
    with running_server(configs[0]) as a, running_server(configs[1]) as b:
        assert [e["node"] for e in (*a.events("server_started"), *b.events("server_started"))] == [
            "a",
            "b",
        ]
        phone = RawPhone(a)
        try:
            assert phone.register_with_digest("1001", PASSWORDS["1001"]).status == 200
            registered = time.monotonic()
            seen = wait_for(lambda: registrations(b, "1001"), timeout=1.0, interval=0.02)
            assert seen, "node b did not learn of the binding within a second"
            assert time.monotonic() - registered < 1.0
            (on_a,), (on_b,) = registrations(a, "1001"), seen
            for field in ("contact", "source", "transport", "registered_at"):
                assert on_b[field] == on_a[field], field
            assert (on_a["node"], on_b["node"]) == (None, "a")
            assert phone.register_with_digest("1001", PASSWORDS["1001"], expires=0).status == 200
            assert wait_for(lambda: not registrations(b, "1001"), timeout=1.0, interval=0.02)
        finally:
            phone.close()
