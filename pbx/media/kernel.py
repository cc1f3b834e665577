"""The relay's kernel fast path: nftables forwards the packets of latched calls (issue #21;
docs/design.md 9.15; ``[media] kernel_forwarding = true``).

Adapter (asyncio, subprocesses). The relay (``MediaSession``) says at each tick which of its
channels the kernel may forward (``want``: a ``Flow``, or None); one task runs ``nft`` with
the batched changes (``pbx.media.kernelflows.FlowTable``), one transaction at a time, and lists
the flows' packet counters every ``poll_seconds``. What the kernel forwarded is added to the
channels' counts (``Channel.kernel_received``), so the session's inactivity timer and its
statistics go on as before; the packet metrics add the forwarder's own totals
(``rtp_forwarded``), which also hold what was counted after a session had closed. A flow that
forwarded nothing between two listings is taken back (its party fell silent, moved, or is on
hold): the relay reads its packets again, so the latching rules and the inactivity timer see
them. A flow being removed has its counter read first, so no packet is left uncounted.

What stays in user space (``MediaSession`` decides): RTCP (a packet every few seconds, which
would fall silent between two listings and come back, again and again), sessions with one leg
(the PBX answering itself), SRTP, a party whose SDP is not applied yet, IPv6, and parties on
other hosts when this host does not forward IP packets (``net.ipv4.ip_forward`` is 0: the
kernel would drop them). What the kernel forwards is not parsed: the RTP loss count covers the
packets the relay read itself (a stream restarts each time a channel comes back).

A recorded channel is forwarded as a copied flow (``Flow.copy``): the kernel also sends a copy
of each packet to one socket of the forwarder's, the *copies socket*, whatever the call (the
copy's source port says which: ``pbx.media.kernelflows``). The forwarder reads it every
``COPY_INTERVAL`` while some flow is copied, everything queued at once, rather than on each
wake-up (at 300 recorded calls that took the relay process from 38 % of a core to 27-30 %;
docs/design.md 9.16). Each copy is counted on its channel (so the loss count goes on) and
handed to the channel's tap (the recorder, with the time of the read as its arrival: at most
``COPY_INTERVAL`` late, well within the recorder's jitter allowance), and nothing is sent. A
copy read after its flow was taken back is still only a copy, so a packet never reaches a party
twice. The flow's counter still finds silence; its packets are not added to the channel a
second time (``rtp_copied``).

When ``nft`` is missing or refuses (no ``CAP_NET_ADMIN``), the relay stays in user space and
says so once (``kernel_forwarding_unavailable``). The table is this process's
(``pbx_relay_<pid>``); a table left by a process that is gone is removed at start, and ours at
``close``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import structlog

from pbx.media.kernelflows import (
    Address,
    Flow,
    FlowTable,
    parse_counters,
    parse_element_counters,
    stale_tables,
    table_name,
    table_script,
)
from pbx.media.latch import Channel

log = structlog.get_logger("pbx.media.kernel")

IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
NFT_TIMEOUT = 10.0
# How often the copies socket is read, the copies read per turn of the event loop at most (the
# rest are read in the next turn), and the socket's receive buffer: at 1,000 recorded calls,
# 100,000 copies a second arrive there, 1,000 between two reads (about 1 kB each in the buffer).
COPY_INTERVAL = 0.01
COPY_BATCH = 4096
COPY_RCVBUF = 8 * 1024 * 1024
MAX_DATAGRAM = 65535
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # Linux


class Tapped(Protocol):
    """Where a channel's copies go: its ``tap`` (the relay's receiving side of a channel)."""

    tap: Callable[[tuple[float, bytes]], object] | None


class KernelForwarder:
    """Hands latched flows to nftables and reads their counters (module docstring)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        table: str | None = None,
        poll_seconds: float = 2.0,
        batch_seconds: float = 0.05,
        nft: str = "nft",
    ) -> None:
        self._loop = loop
        self.flows = FlowTable(table or table_name(os.getpid()))
        self.poll_seconds = poll_seconds
        # Changes wanted within this long of the last batch wait for the next one: at 80 new
        # calls a second, one nft run per tick's worth rather than one per call.
        self.batch_seconds = batch_seconds
        self._nft = nft
        self.active = False  # the table is loaded: flows may be handed over
        self.ended = False  # it never will be (nft failed) or no longer is (closed)
        self.forwards_ip = _ip_forward()
        self._channels: dict[int, Channel] = {}  # each wanted or installed port's channel
        # The copies socket, and for each port whose flow is or was copied, its channel and
        # tap; a port no longer copied stays until a listing has passed (its late copies).
        self._copies: socket.socket | None = None
        self._copied: dict[int, tuple[Channel, Tapped]] = {}
        self._retiring: set[int] = set()
        self._copies_timer: asyncio.TimerHandle | None = None
        self._sources: dict[str, str] = {}  # our address towards each destination
        self._addresses: dict[str, bool] = {}  # _forwardable's answers
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._started = asyncio.Event()  # the table is loaded, or it never will be
        self._task: asyncio.Task[None] | None = None
        # RTP packets the kernel forwarded over every flow, live or gone (the relay's metrics),
        # and of those, the ones it also copied to the relay (which counted them itself).
        self.rtp_forwarded = 0
        self.rtp_copied = 0

    def start(self) -> None:
        """Load the table and start serving the relay's wishes (in the background)."""
        if self._task is None:
            self._task = self._loop.create_task(self._run())

    @property
    def table(self) -> str:
        return self.flows.table

    @property
    def copies_port(self) -> int | None:
        """The port the kernel sends the copied flows' copies to (None before the start)."""
        return None if self._copies is None else int(self._copies.getsockname()[1])

    def flow(
        self,
        source: Address,
        port: int,
        out_port: int,
        dest: Address,
        host: str,
        *,
        copy: bool = False,
    ) -> Flow | None:
        """The flow for a latched channel, or None if the kernel cannot forward it: IPv6, or a
        party on another host while this host does not forward IP packets."""
        if not (self._forwardable(source[0]) and self._forwardable(dest[0])):
            return None
        local = host if host not in ("", "0.0.0.0") else self._source_towards(dest[0])
        if local is None or not self._forwardable(local):
            return None
        return Flow(source, port, out_port, dest, local, copy)

    def _forwardable(self, address: str) -> bool:
        """Whether the kernel may forward packets from and to ``address``: IPv4, and on this
        host (loopback) unless this host forwards IP packets. Remembered per address."""
        known = self._addresses.get(address)
        if known is None:
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                known = False
            else:
                known = ip.version == 4 and (self.forwards_ip or ip.is_loopback)
            if len(self._addresses) > 65536:
                self._addresses.clear()
            self._addresses[address] = known
        return known

    def want(
        self, port: int, flow: Flow | None, channel: Channel, tapped: Tapped | None = None
    ) -> None:
        """Forward ``flow`` for ``port`` in the kernel (None: take it back; at once for the
        relay, which then reads the channel's packets again, and for the kernel with the next
        batch). A copied flow's copies are handed to ``tapped.tap``."""
        if not self.active or self.flows.wanted.get(port) == flow:
            return
        self.flows.want(port, flow)
        if flow is None:
            channel.offloaded = False
        else:
            self._channels[port] = channel
            if flow.copy:
                if tapped is None:
                    raise ValueError("a copied flow needs where its copies go")
                self._copied[port] = (channel, tapped)
                self._retiring.discard(port)
                if self._copies_timer is None:
                    self._copies_timer = self._loop.call_later(COPY_INTERVAL, self._read_copies)
        self._idle.clear()
        self._wake.set()

    async def started(self) -> bool:
        """Wait until the table is loaded (True) or nft has refused it (False)."""
        await self._started.wait()
        return self.active

    async def settled(self) -> None:
        """Wait until the kernel holds what is wanted (for tests and benchmarks)."""
        await self._idle.wait()

    async def poll_now(self) -> None:
        """List the counters at once (for tests)."""
        await self._poll()

    def close(self) -> None:
        """Stop, and remove the table (synchronously: at shutdown)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._close_copies()
        was_active, self.active, self.ended = self.active, False, True
        self._idle.set()
        self._started.set()
        if was_active:
            try:
                subprocess.run(
                    [self._nft, "delete", "table", "ip", self.table],
                    capture_output=True,
                    timeout=NFT_TIMEOUT,
                    check=False,
                )
            except (OSError, subprocess.SubprocessError) as exc:
                log.warning("kernel_table_not_removed", table=self.table, error=str(exc))
            for channel in self._channels.values():
                channel.offloaded = False
        self._channels.clear()

    async def _run(self) -> None:
        try:
            await self._load()
        except _NftError as exc:
            self.ended = True
            self._close_copies()  # never read: not left bound on every address
            self._idle.set()
            self._started.set()
            log.warning("kernel_forwarding_unavailable", error=str(exc))
            return
        self.active = True
        self._started.set()
        log.info("kernel_forwarding_ready", table=self.table, other_hosts=self.forwards_ip)
        if not self.forwards_ip:
            log.warning(
                "kernel_forwarding_local_only",
                reason="net.ipv4.ip_forward is 0: calls with a party on another host stay with "
                "the relay",
            )
        loop = self._loop
        next_poll = loop.time() + self.poll_seconds
        last_batch = -self.batch_seconds
        while True:
            if not self.flows.pending:
                self._idle.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, next_poll - loop.time()))
            self._wake.clear()
            try:
                if self.flows.pending:
                    await asyncio.sleep(max(0.0, last_batch + self.batch_seconds - loop.time()))
                    last_batch = loop.time()
                    await self._apply()
                if loop.time() >= next_poll:
                    next_poll = loop.time() + self.poll_seconds
                    await self._poll()
            except _NftError as exc:
                log.warning("kernel_forwarding_failed", error=str(exc))
                await self._reset()
            except Exception:  # a bug: logged, and the kernel emptied rather than left stale
                log.exception("kernel_forwarding_failed")
                await self._reset()

    async def _load(self) -> None:
        listing = await self._run_nft(["-j", "list", "tables"])
        alive = {int(p) for p in os.listdir("/proc") if p.isdigit()}
        script = "".join(f"delete table ip {name}\n" for name in stale_tables(listing, alive))
        copies = self._open_copies()
        await self._run_nft(["-f", "-"], script + table_script(self.table, copies))

    def _open_copies(self) -> int:
        """Bind the copies socket (every address, so copies of calls on any of ours arrive;
        the table drops whatever else is sent to it); its port. Its buffer is set past the
        host's ``net.core.rmem_max`` (``SO_RCVBUFFORCE``: the forwarder has ``CAP_NET_ADMIN``)."""
        if self._copies is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, COPY_RCVBUF)
                except OSError:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, COPY_RCVBUF)
                sock.bind(("0.0.0.0", 0))
                sock.setblocking(False)
            except OSError as exc:
                sock.close()
                raise _NftError(f"copies socket: {exc}") from None
            self._copies = sock
        return int(self._copies.getsockname()[1])

    def _close_copies(self) -> None:
        if self._copies_timer is not None:
            self._copies_timer.cancel()
            self._copies_timer = None
        if self._copies is not None:
            self._copies.close()
            self._copies = None
        self._copied.clear()

    def _read_copies(self) -> None:
        """The copies of the recorded calls' packets: counted on their channels and handed to
        their taps; every ``COPY_INTERVAL`` while a flow is copied (module docstring)."""
        self._copies_timer = None
        sock, copied = self._copies, self._copied
        if sock is None:
            return
        if copied:  # the next read; sooner if this one leaves copies queued
            self._copies_timer = self._loop.call_later(COPY_INTERVAL, self._read_copies)
        now = self._loop.time()
        for _ in range(COPY_BATCH):
            try:
                data, addr = sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # nothing a copy could be at fault for; read again next time
                return
            target = copied.get(addr[1])
            if target is None:
                continue  # a copy of a flow long gone
            channel, tapped = target
            channel.received += 1
            channel.relayed += 1
            channel.latest = data
            tap = tapped.tap
            if tap is not None:
                tap((now, data))
        # A full batch: the rest in the next turn of the loop, after what else is due.
        if self._copies_timer is not None:
            self._copies_timer.cancel()
        self._copies_timer = self._loop.call_later(0, self._read_copies)

    async def _apply(self) -> None:
        removed, added = self.flows.changes()
        # One run: the counters of the flows going away (their last packets), then the change.
        text = await self._run_nft(["-f", "-"], self.flows.script(removed, added))
        if removed:
            self._credit(*self.flows.count(parse_element_counters(text), silence=False))
        self.flows.applied(removed, added)
        for flow in added:
            if self.flows.wanted.get(flow.port) == flow:
                self._channels[flow.port].hand_to_kernel(copied=flow.copy)
        for flow in removed:
            if flow.port not in self.flows.wanted and flow.port not in self.flows.installed:
                self._channels.pop(flow.port, None)

    async def _poll(self) -> None:
        # The ports copied no longer since the last listing: their late copies have been read.
        flows = self.flows
        copied = {p for p, f in flows.wanted.items() if f.copy}
        copied.update(p for p, f in flows.installed.items() if f.copy)
        for port in self._retiring - copied:
            self._copied.pop(port, None)
        self._retiring = set(self._copied) - copied
        if not flows.installed:
            return
        listing = await self._run_nft(["-j", "list", "set", "ip", self.table, "flows"])
        self._credit(*self.flows.count(parse_counters(listing)))

    def _credit(self, moved: dict[int, int], silent: list[int]) -> None:
        installed = self.flows.installed
        for port, packets in moved.items():
            self.rtp_forwarded += packets
            if installed[port].copy:
                self.rtp_copied += packets  # the relay counted their copies
                continue
            channel = self._channels.get(port)
            if channel is not None:
                channel.kernel_received += packets
        for port in silent:
            channel = self._channels.get(port)
            if channel is not None:
                self.want(port, None, channel)  # back to the relay: it sees what happens next

    async def _reset(self) -> None:
        """After a failed batch: empty the table; everything wanted is added again."""
        try:
            await self._run_nft(["-f", "-"], self.flows.flush_script())
        except _NftError as exc:
            log.warning("kernel_forwarding_failed", error=str(exc))
        self.flows.lost()
        for port, channel in self._channels.items():
            if port not in self.flows.wanted:
                channel.offloaded = False
        self._wake.set()

    async def _run_nft(self, args: list[str], script: str | None = None) -> str:
        """Run nft in a worker thread. The standard library's ``subprocess`` starts it with
        ``vfork``: 0.2 ms of the server's CPU whatever its size, where the event loop's own
        subprocesses (uvloop's ``fork``) cost 7.6 ms at 300 MB and 15 ms at 800 MB, with the
        loop stopped meanwhile."""
        command = " ".join([self._nft, *args[:3]])
        try:
            done = await asyncio.to_thread(
                subprocess.run,
                [self._nft, *args],
                input=script.encode() if script is not None else None,
                stdin=None if script is not None else subprocess.DEVNULL,
                capture_output=True,
                timeout=NFT_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise _NftError(f"{command}: no answer in {NFT_TIMEOUT:g} s") from None
        except OSError as exc:
            raise _NftError(f"{command}: {exc}") from None
        if done.returncode != 0:
            lines = done.stderr.decode(errors="replace").strip().splitlines()
            detail = lines[0] if lines else f"exit status {done.returncode}"
            raise _NftError(f"{command}: {detail}")
        return str(done.stdout.decode(errors="replace"))

    def _source_towards(self, address: str) -> str | None:
        """Our address for packets to ``address`` (the kernel's choice, as for the relay's
        own sockets bound to every address); asked once per destination address."""
        local = self._sources.get(address)
        if local is None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                try:
                    probe.connect((address, 9))  # no packet is sent: a route lookup
                except OSError:
                    return None
                local = str(probe.getsockname()[0])
            if len(self._sources) > 4096:
                self._sources.clear()
            self._sources[address] = local
        return local


class _NftError(Exception):
    pass


def _ip_forward() -> bool:
    try:
        return IP_FORWARD.read_text().strip() == "1"
    except OSError:
        return False
