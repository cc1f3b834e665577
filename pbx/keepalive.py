"""Keep-alive checks of registered contacts ("qualify"): when to probe, and what an answer or
its absence means (RFC 3261 11 OPTIONS used as a ping, RFC 5626 3.5.1 for TCP traffic).

Pure: keys, intervals and ``now`` (monotonic seconds) go in; probes to send and events come out
(aioquic's verbs: ``get_timer``/``handle_timer``, ``probes_to_send``, ``next_event``). The adapter
(``pbx.service``) builds the OPTIONS, sends it statelessly, hands every answer to ``answered``
and turns the events into the registrar's reachability marks.

The rules (docs/design.md 3, "Keep-alive checks"):

- A contact is probed every ``interval`` seconds (the tenant's ``qualify_seconds``) at a phase
  taken from a hash of its key: ten thousand contacts are spread evenly over the interval instead
  of firing together, and a contact keeps its phase across refreshes and restarts.
- A contact registered just now is probed ``FIRST_PROBE_SECONDS`` later, so that a phone that
  vanishes right after registering has answered (or not) once already.
- A probe not answered within ``probe_timeout(interval)`` is sent once more (one retry, same
  Call-ID and branch: a retransmission). Unanswered again, the contact has stopped answering:
  ``ContactStoppedAnswering`` -- but only for a contact that answered a probe before. A client
  that never answers OPTIONS at all (pyVoIP 1.6) is judged by its registration alone, so it
  still gets its calls.
- Any answer counts, whatever its status (404, 405, 501 too: the phone is there), and so does
  any traffic on the contact's TCP connection while a probe is out (a CRLF pong, a request).
  A contact that stopped answering and answers again: ``ContactAnsweredAgain``.
- Probes go on while a contact is down, so it comes back as soon as it answers.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Hashable
from dataclasses import dataclass
from hashlib import blake2s

from pbx.immutable import immutable

FIRST_PROBE_SECONDS = 1.0
MAX_PROBE_TIMEOUT = 4.0
_HASH_SCALE = float(2**64)


def probe_timeout(interval: float) -> float:
    """How long a probe waits for its answer before the retry (and the retry before giving up):
    a quarter of the interval, at most ``MAX_PROBE_TIMEOUT`` (a phone answers in milliseconds;
    4 s covers a congested uplink). A silent contact is down ``interval + 2 * timeout`` at most
    after it last answered."""
    return min(MAX_PROBE_TIMEOUT, interval / 4.0)


def probe_phase(key: Hashable, interval: float) -> float:
    """The contact's offset within the interval: a stable hash of its key (not Python's
    ``hash``, which changes per process)."""
    digest = blake2s(repr(key).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _HASH_SCALE * interval


@immutable
class Probe:
    """Send an OPTIONS to this contact; ``token`` goes in its Call-ID (the same for the retry)."""

    key: Hashable
    token: str
    attempt: int  # 1, or 2 for the retry


@immutable
class ContactStoppedAnswering:
    """A contact that had answered left a probe and its retry unanswered."""

    key: Hashable


@immutable
class ContactAnsweredAgain:
    """A contact reported as stopped answered (or its TCP connection carried traffic)."""

    key: Hashable


KeepAliveEvent = ContactStoppedAnswering | ContactAnsweredAgain


@dataclass(slots=True)
class _Contact:
    key: Hashable
    interval: float
    phase: float
    connection_id: str | None
    due: float = 0.0  # the next probe, or the deadline of the one out
    token: str | None = None  # the probe out, if any
    attempt: int = 0
    answered_once: bool = False
    down: bool = False


class KeepAlive:
    """The keep-alive schedule of every tracked contact (see the module docstring)."""

    def __init__(self, token_prefix: str = "qualify-") -> None:
        self._prefix = token_prefix
        self._contacts: dict[Hashable, _Contact] = {}
        self._by_token: dict[str, Hashable] = {}
        self._by_connection: dict[str, set[Hashable]] = {}
        self._heap: list[tuple[float, int, Hashable]] = []
        self._seq = 0
        self._probes: list[Probe] = []
        self._events: list[KeepAliveEvent] = []
        self.probes_sent = 0

    # -- what the registrar tells it ---------------------------------------------------------
    def track(
        self,
        key: Hashable,
        interval: float,
        now: float,
        *,
        connection_id: str | None = None,
        fresh: bool = True,
    ) -> None:
        """A binding created or refreshed (``fresh``: by a REGISTER just now; else loaded at
        start-up). ``interval`` 0 stops its checks. A refresh proves the phone is there: a
        contact marked down counts as up again (the registrar clears its mark itself)."""
        if interval <= 0:
            self.forget(key)
            return
        contact = self._contacts.get(key)
        if contact is None:
            contact = _Contact(key, interval, probe_phase(key, interval), connection_id)
            self._contacts[key] = contact
            self._index_connection(contact)
            first = now + min(FIRST_PROBE_SECONDS, interval) if fresh else None
            self._schedule(contact, first if first is not None else self._next_slot(contact, now))
            return
        contact.down = False
        if connection_id != contact.connection_id:
            self._unindex_connection(contact)
            contact.connection_id = connection_id
            self._index_connection(contact)
        if interval != contact.interval:
            contact.interval = interval
            contact.phase = probe_phase(key, interval)
            self._drop_token(contact)
            self._schedule(contact, self._next_slot(contact, now))

    def forget(self, key: Hashable) -> None:
        """A binding removed or expired: no more probes (stale heap entries are skipped)."""
        contact = self._contacts.pop(key, None)
        if contact is not None:
            self._drop_token(contact)
            self._unindex_connection(contact)

    def forget_connection(self, connection_id: str) -> list[Hashable]:
        """A TCP connection closed: its contacts can no longer be probed; their keys."""
        keys = list(self._by_connection.get(connection_id, ()))
        for key in keys:
            self.forget(key)
        return keys

    # -- what the network tells it -----------------------------------------------------------
    def answered(self, token: str, now: float) -> bool:
        """Any response to the probe with ``token`` arrived; False when no probe has it."""
        key = self._by_token.get(token)
        if key is None:
            return False
        self._alive(self._contacts[key], now)
        return True

    def heard_on_connection(self, connection_id: str, now: float) -> None:
        """Traffic on a TCP connection: answers the probes out to its contacts."""
        for key in self._by_connection.get(connection_id, ()):
            contact = self._contacts[key]
            if contact.token is not None:
                self._alive(contact, now)

    # -- timers and output -------------------------------------------------------------------
    def get_timer(self) -> float | None:
        """When ``handle_timer`` is next due (stale entries may make it early: harmless)."""
        return self._heap[0][0] if self._heap else None

    def handle_timer(self, now: float) -> None:
        """Send the probes due, retry the unanswered, give up on the twice unanswered."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            due, _, key = heapq.heappop(heap)
            contact = self._contacts.get(key)
            if contact is None or contact.due != due:
                continue  # forgotten or rescheduled
            if contact.token is None:
                self._seq += 1
                contact.token = f"{self._prefix}{self._seq:x}"
                contact.attempt = 1
                self._by_token[contact.token] = key
                self._send(contact, now)
            elif contact.attempt == 1:
                contact.attempt = 2
                self._send(contact, now)
            else:
                self._drop_token(contact)
                if contact.answered_once and not contact.down:
                    contact.down = True
                    self._events.append(ContactStoppedAnswering(key))
                self._schedule(contact, self._next_slot(contact, now))

    def probes_to_send(self) -> list[Probe]:
        probes, self._probes = self._probes, []
        return probes

    def next_event(self) -> KeepAliveEvent | None:
        return self._events.pop(0) if self._events else None

    # -- views -------------------------------------------------------------------------------
    def answered_once(self, key: Hashable) -> bool:
        """Whether the contact ever answered a probe (only those are judged by keep-alives)."""
        contact = self._contacts.get(key)
        return contact is not None and contact.answered_once

    def is_tracked(self, key: Hashable) -> bool:
        return key in self._contacts

    def __len__(self) -> int:
        return len(self._contacts)

    # -- helpers -----------------------------------------------------------------------------
    def _alive(self, contact: _Contact, now: float) -> None:
        self._drop_token(contact)
        contact.answered_once = True
        if contact.down:
            contact.down = False
            self._events.append(ContactAnsweredAgain(contact.key))
        self._schedule(contact, self._next_slot(contact, now))

    def _send(self, contact: _Contact, now: float) -> None:
        assert contact.token is not None
        self._probes.append(Probe(contact.key, contact.token, contact.attempt))
        self.probes_sent += 1
        self._schedule(contact, now + probe_timeout(contact.interval))

    def _next_slot(self, contact: _Contact, now: float) -> float:
        """The first instant of the contact's phase strictly after ``now``."""
        interval = contact.interval
        periods = math.floor((now - contact.phase) / interval) + 1
        return contact.phase + periods * interval

    def _schedule(self, contact: _Contact, due: float) -> None:
        contact.due = due
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, contact.key))

    def _drop_token(self, contact: _Contact) -> None:
        if contact.token is not None:
            self._by_token.pop(contact.token, None)
            contact.token = None
            contact.attempt = 0

    def _index_connection(self, contact: _Contact) -> None:
        if contact.connection_id is not None:
            self._by_connection.setdefault(contact.connection_id, set()).add(contact.key)

    def _unindex_connection(self, contact: _Contact) -> None:
        cid = contact.connection_id
        if cid is None:
            return
        keys = self._by_connection.get(cid)
        if keys is not None:
            keys.discard(contact.key)
            if not keys:
                del self._by_connection[cid]
