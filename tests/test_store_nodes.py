"""Several nodes on one PostgreSQL (issue #20): shared bindings, crash recovery per node.

Two ``Store`` + ``Registrations`` + ``BindingSync`` "nodes" on one database of the session's
private server (``tests/conftest.py``). Waits are on ``BindingSync.applied`` under a one-second
timeout, never on a sleep.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import pytest_asyncio

from pbx.binding_sync import BindingSync
from pbx.config.load import load_config
from pbx.config.messages import render_problem
from pbx.config.model import Extension, TenantId
from pbx.config.problems import ConfigError
from pbx.node import NODE_FILE, node_identity
from pbx.pg_local import LocalPostgres
from pbx.registrar import Binding, Registrations
from pbx.store import _UPSERT_BINDING, Store, _binding_params
from tests.integration.harness import write_config
from tests.test_store import NOW, binding, call

ACME, EXT = TenantId("acme"), Extension("1001")


@dataclass
class Node:
    name: str
    store: Store
    registrations: Registrations
    sync: BindingSync

    def contacts(self, ext: str = "1001") -> tuple[Binding, ...]:
        return self.registrations.bindings_of(ACME, Extension(ext))

    async def register(self, *bindings: Binding) -> None:
        """What the service does: memory first, then the write-through commit."""
        for b in bindings:
            self.registrations.replace_aor(
                b.tenant, b.extension, (*self.registrations.bindings_of(b.tenant, b.extension), b)
            )
        await self.store.apply_bindings(bindings, ())

    async def unregister(self, b: Binding) -> None:
        self.registrations.remove(b)
        await self.store.apply_bindings((), (b,))

    async def until(self, predicate: Callable[[], bool], seconds: float = 1.0) -> None:
        async with asyncio.timeout(seconds):
            while not predicate():
                self.sync.applied.clear()
                await self.sync.applied.wait()


def _getter(registrations: Registrations) -> Callable[[], Registrations]:
    return lambda: registrations


def _wall() -> float:
    return NOW  # the bindings of tests.test_store are unexpired at NOW


@pytest_asyncio.fixture
async def two_nodes(postgres_url: Callable[[], str]) -> AsyncIterator[tuple[Node, Node]]:
    url = postgres_url()
    nodes: list[Node] = []
    try:
        for name in ("a", "b"):
            store = await Store.open_url(url, node=name, retry_interval=0.05)
            registrations = Registrations(await store.load_bindings(NOW))
            node = Node(
                name,
                store,
                registrations,
                BindingSync(url, store, _getter(registrations), _wall, retry_interval=0.05),
            )
            nodes.append(node)
            await node.sync.start()
        for node in nodes:  # the first full reload, after LISTEN
            await node.until(lambda node=node: node.sync.reloads >= 1)  # type: ignore[misc]
        yield nodes[0], nodes[1]
    finally:
        for node in nodes:
            await node.sync.close()
            await node.store.close()


@pytest.mark.asyncio
async def test_a_binding_saved_on_node_a_appears_on_node_b_and_an_unregister_disappears(
    two_nodes: tuple[Node, Node],
) -> None:
    a, b = two_nodes
    phone = binding("192.168.1.10")  # registered over TCP connection "tcp-3" of node a
    started = time.monotonic()
    await a.register(phone)
    await b.until(lambda: len(b.contacts()) == 1)
    took = time.monotonic() - started
    (mirrored,) = b.contacts()
    # Node b cannot send over node a's connection: reached by its address (docs/design.md 10.6).
    assert (mirrored.connection_id, mirrored.node) == (None, "a")
    assert (mirrored.uri, mirrored.source, mirrored.expires_at, mirrored.contact_params) == (
        phone.uri,
        phone.source,
        phone.expires_at,
        phone.contact_params,
    )
    assert a.contacts() == (phone,)  # node a keeps its own connection
    assert phone.node is None  # ours
    assert took < 1.0
    # A second phone of the same extension on node b: node a sees both.
    desk = binding("192.168.1.11")
    await b.register(desk)
    await a.until(lambda: len(a.contacts()) == 2)
    assert {c.uri.host for c in a.contacts()} == {"192.168.1.10", "192.168.1.11"}
    assert a.registrations.get(phone.key) == phone
    # Unregistered on node a: gone from node b too, node b's own phone stays.
    await a.unregister(phone)
    await b.until(lambda: len(b.contacts()) == 1)
    assert [c.uri.host for c in b.contacts()] == ["192.168.1.11"]


@pytest.mark.asyncio
async def test_node_b_reloads_everything_after_its_connection_is_cut_and_restored(
    two_nodes: tuple[Node, Node], postgres_server: LocalPostgres
) -> None:
    a, b = two_nodes
    gone = binding("192.168.1.10", ext="1002")
    await a.register(gone)
    await b.until(lambda: len(b.contacts("1002")) == 1)
    # Changes b never hears of (written without a NOTIFY, as if sent while b was away): a new
    # binding, and the deletion of one b holds.
    missed = binding("192.168.1.20")
    await a.store.write(_UPSERT_BINDING, _binding_params(missed, "a"))
    await a.store.write("DELETE FROM registrations WHERE extension = '1002'")
    assert b.contacts() == ()
    reloads = b.sync.reloads
    with psycopg.connect(postgres_server.url(), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (b.sync.listener_pid,))
    await b.until(lambda: b.sync.reloads > reloads)
    assert [c.uri.host for c in b.contacts()] == ["192.168.1.20"]
    assert b.contacts("1002") == ()
    assert b.sync.connected
    # And it listens again.
    await a.register(binding("192.168.1.21", ext="1003"))
    await b.until(lambda: len(b.contacts("1003")) == 1)


@pytest.mark.asyncio
async def test_a_reload_never_undoes_a_write_still_in_flight(
    two_nodes: tuple[Node, Node], postgres_server: LocalPostgres
) -> None:
    a, b = two_nodes
    desk = binding("192.168.1.11")
    await a.store.write(_UPSERT_BINDING, _binding_params(desk, "a"))  # announced below
    url = b.sync.url
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as locker:
        # Node b's next commit waits behind this lock (reads do not).
        await locker.execute("BEGIN")
        await locker.execute("LOCK TABLE registrations IN SHARE ROW EXCLUSIVE MODE")
        mine = binding("192.168.1.30")  # node b's REGISTER: in memory, its commit waiting
        b.registrations.replace_aor(ACME, EXT, (mine,))
        pending = b.store.write_bindings((mine,), ())
        assert (ACME, EXT) in b.store.bindings_in_flight()
        reloads = b.sync.applied
        reloads.clear()
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as other:
            await other.execute("SELECT pg_notify('pbx_bindings', 'acme/1001')")  # node a's
        async with asyncio.timeout(1):
            await reloads.wait()
        # The table does not hold node b's binding yet: the AOR was left as memory has it.
        assert b.contacts() == (mine,)
        assert not pending.done()
        await locker.execute("COMMIT")
    await pending
    await b.until(lambda: len(b.contacts()) == 2)
    assert b.registrations.get(mine.key) == mine
    assert b.store.bindings_in_flight() == set()


# -- crash recovery per node -------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_node_closes_only_its_own_open_call_records_at_start_up(
    postgres_url: Callable[[], str],
) -> None:
    url = postgres_url()
    a = await Store.open_url(url, node="a")
    b = await Store.open_url(url, node="b")
    a.record_call(call("on-a", last_event_at=NOW + 4))
    b.record_call(call("on-b"))
    await a.flush()
    await b.flush()
    await a.close()  # node a "crashes" (its call stays open); node b is still running
    panel = await Store.open_url(url, recover_calls=False, node="a")  # a tool beside it
    assert panel.recovered_calls == 0
    await panel.close()
    restarted = await Store.open_url(url, node="a")
    try:
        assert restarted.recovered_calls == 1
        on_a, on_b = await restarted.call("on-a"), await restarted.call("on-b")
        assert on_a is not None
        assert on_b is not None
        assert (on_a.disposition, on_a.ended_at) == ("failed", NOW + 4)
        assert (on_b.disposition, on_b.ended_at) == (None, None)  # node b's call goes on
        rows = await restarted.fetch("SELECT id, node FROM call_records ORDER BY id")
        assert rows == [("on-a", "a"), ("on-b", "b")]
    finally:
        await restarted.close()
        await b.close()


# -- the node's name ---------------------------------------------------------------------------


def test_storage_node_is_read_from_pbx_toml_and_a_bad_one_named_in_both_languages(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path / "pbx")
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace('data_dir = "data"', 'data_dir = "data"\nnode = "pbx-1:5060"'))
    assert load_config(config).server.storage.node == "pbx-1:5060"
    config.write_text(text.replace('data_dir = "data"', 'data_dir = "data"\nnode = "a b"'))
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    (problem,) = caught.value.problems
    assert problem.field == "node"
    assert "not a node name" in render_problem(problem, "en")
    assert "ノード名" in render_problem(problem, "ja")
    assert load_config(write_config(tmp_path / "other")).server.storage.node is None


def test_without_a_node_name_one_is_made_once_and_kept_in_data_dir(tmp_path: Path) -> None:
    storage = load_config(write_config(tmp_path / "pbx")).server.storage
    first = node_identity(storage)
    assert (storage.data_dir / NODE_FILE).read_text().strip() == first
    assert node_identity(storage) == first  # a restart keeps it
    other = load_config(write_config(tmp_path / "other")).server.storage
    assert node_identity(other) != first


# -- the registrar: a write that fails leaves nothing in memory (no sockets) --------------------


@pytest.mark.asyncio
async def test_a_register_refused_503_mid_flight_leaves_memory_as_the_database_has_it(
    postgres_server: LocalPostgres, tmp_path: Path
) -> None:
    from pbx.config.holder import ConfigHolder
    from pbx.metrics import Registry
    from pbx.service import SipService
    from pbx.sip.transport import Inbound
    from tests.test_service import LOCAL, PHONE, FakeTransport, answer, register

    snapshot = load_config(write_config(tmp_path / "pbx"))
    url = postgres_server.create_database("undo")
    store = await Store.open_url(url, retry_interval=0.05, node="a")
    svc = SipService(ConfigHolder(snapshot), store, Registry())
    fake = FakeTransport()
    svc.attach(fake)  # type: ignore[arg-type]
    await svc.start()
    cseq = iter(range(1, 100))

    async def register_once() -> int:
        n = next(cseq)
        svc.on_inbound(Inbound(register(n, branch=f"z9hG4bK-{n}"), PHONE, LOCAL, "UDP"))
        (challenge,) = fake.responses()
        n = next(cseq)
        request = register(n, branch=f"z9hG4bK-{n}", authorization=answer(challenge, n))
        svc.on_inbound(Inbound(request, PHONE, LOCAL, "UDP"))
        async with asyncio.timeout(2):
            while not fake.sent:  # noqa: ASYNC110 (the commit's outcome: no event to wait on)
                await asyncio.sleep(0.01)
        (response,) = fake.responses()
        return response.status

    def cut() -> None:
        with psycopg.connect(postgres_server.url(), autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'undo'"
            )

    async def back() -> None:
        async with asyncio.timeout(2):
            while not store.available:  # noqa: ASYNC110 (the store reconnects: no event)
                await asyncio.sleep(0.01)

    try:
        cut()
        assert await register_once() == 503  # a new binding whose write failed
        assert svc.registrations.bindings_of(ACME, EXT) == ()
        await back()
        assert await register_once() == 200
        (stored,) = svc.registrations.bindings_of(ACME, EXT)
        cut()
        assert await register_once() == 503  # a refresh whose write failed
        assert svc.registrations.bindings_of(ACME, EXT) == (stored,)  # the committed one
        await back()
        assert await store.load_bindings(stored.registered_at) == [stored]
    finally:
        await svc.stop()
        await store.close()


# -- keep-alive: a node probes only the phones registered through it (no sockets) ---------------


@pytest.mark.asyncio
async def test_a_node_probes_its_own_contacts_not_those_of_another_node(tmp_path: Path) -> None:
    import dataclasses

    from pbx.clock import FakeClock
    from pbx.config.holder import ConfigHolder
    from pbx.metrics import Registry
    from pbx.service import SipService
    from tests.integration.harness import DEFAULT_TENANT
    from tests.test_service_keepalive import ProbeTransport

    tenant = DEFAULT_TENANT.replace("qualify_seconds = 0\n", "qualify_seconds = 2\n")
    snapshot = load_config(write_config(tmp_path / "pbx", tenants={"acme": tenant}))
    store = await Store.open_in(snapshot.server.storage.data_dir)
    svc = SipService(ConfigHolder(snapshot), store, Registry(), FakeClock())
    svc.attach(ProbeTransport())  # type: ignore[arg-type]
    await svc.start()
    try:
        theirs = dataclasses.replace(binding("192.168.1.10"), node="b", connection_id=None)
        ours = binding("192.168.1.11")
        changed, gone = svc.registrations.replace_aor(ACME, EXT, (theirs, ours))
        svc.shared_bindings_changed(changed, gone)
        assert not svc.keepalive.is_tracked(theirs.key)
        assert svc.keepalive.is_tracked(ours.key)
        await svc.config_changed(snapshot, snapshot)  # a reload tracks every binding anew
        assert not svc.keepalive.is_tracked(theirs.key)
        # The phone moves to this node (its next REGISTER came here): checked from now on.
        mine_now = dataclasses.replace(theirs, node=None)
        changed, gone = svc.registrations.replace_aor(ACME, EXT, (mine_now, ours))
        svc.shared_bindings_changed(changed, gone)
        assert svc.keepalive.is_tracked(mine_now.key)
    finally:
        await svc.stop()
        await store.close()
