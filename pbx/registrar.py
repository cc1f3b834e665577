"""The registrar core: REGISTER processing, bindings and presence (RFC 3261 10.3).

Pure: the request, the address-of-record's current bindings, the configuration snapshot, the
source the request really came from and ``now`` go in; a ``RegisterResult`` comes out, holding the
response to send and the binding changes to persist. No asyncio, sockets or clock here. ``now`` is
POSIX seconds (``time.time()``): bindings outlive the process, so they are kept in wall time.

How a REGISTER is served (the adapter's part in brackets):

1. [``SourceGuard.admit``] drop banned or over-rate sources;
2. ``resolve_aor``: the tenant from the To host (its domain, else the default tenant) and the
   extension from the To user; To must be a sip/sips URI (RFC 3261 10.3 step 5, RFC 4475 unksm2);
3. [``DigestAuthenticator.verify``] with realm ``aor.domain`` and ``ha1_lookup(tenant)``;
4. ``process_register``: steps 4, 6, 7 and 8 of RFC 3261 10.3;
5. [``Store.save_binding`` / ``delete_binding``] for ``result.saved`` / ``result.removed``,
   then ``Registrations.apply(result)``, then the response.

Decisions where RFC 3261 leaves a choice:

- Contacts are matched with the URI comparison of 19.1.4, simplified to a key: scheme, user,
  password, host, port and the user/ttl/method/maddr/transport parameters (other URI parameters
  do not make two contacts different).
- A binding remembers the address, port, transport and connection the REGISTER came from, so
  calls reach phones behind NAT whatever their Contact says.
- ``registered_at`` is the time of the last REGISTER that created or refreshed the binding; when
  an extension holds more than ``max_contacts`` bindings, the least recently refreshed go first.
- A Call-ID seen before with a CSeq not higher than the stored one aborts the whole request with
  500 (10.3 step 7: "the update MUST be aborted and the request fails"; 500 as for any failed
  update).
- A malformed Expires value (header or parameter) is ignored, so the next source applies.
- Only sip/sips contacts can be called, so another scheme in Contact is refused with 400.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence, Set
from dataclasses import field
from email.utils import formatdate
from functools import lru_cache
from typing import TypeVar
from urllib.parse import unquote

from pbx.config.model import ConfigSnapshot, Extension, TenantConfig, TenantId
from pbx.errors import RemoteProtocolError
from pbx.immutable import immutable
from pbx.sip.digest import Algorithm, Ha1Lookup, compute_ha1
from pbx.sip.message import Address, NameAddress, Params, SipRequest, SipUri, get_param

# (tenant, extension, contact key): identifies one binding.
BindingKey = tuple[TenantId, Extension, str]
_Name = TypeVar("_Name")

MAX_DELTA_SECONDS = 2**32 - 1  # RFC 3261 20.19
# RFC 3261 19.1.4: these URI parameters, when present in either URI, must match.
_COMPARED_URI_PARAMS = ("user", "ttl", "method", "maddr", "transport")
_COMPARED_URI_PARAM_SET = frozenset(_COMPARED_URI_PARAMS)


@immutable
class Aor:
    """An address-of-record: ``sip:EXT@<tenant domain>``. ``domain`` is also the digest realm."""

    tenant: TenantId
    extension: Extension
    domain: str

    def __str__(self) -> str:
        return f"sip:{self.extension}@{self.domain}"


@immutable
class Source:
    """Where a request really came from (not what its Via or Contact claim)."""

    host: str
    port: int
    transport: str  # "UDP" or "TCP"
    connection_id: str | None = None  # the TCP connection, so calls go back over it
    # issue #20: the Path (RFC 3327) an edge added, when the REGISTER came from a trusted edge.
    path: tuple[str, ...] = ()


@immutable
class Binding:
    """One registered contact of an extension (RFC 3261 10.3)."""

    tenant: TenantId
    extension: Extension
    uri: SipUri  # the Contact URI as given, uri-params kept
    source_host: str
    source_port: int
    transport: str  # "UDP" / "TCP": how the REGISTER arrived
    connection_id: str | None
    call_id: str
    cseq: int
    registered_at: float  # POSIX seconds of the REGISTER that last created/refreshed it
    expires_at: float  # POSIX seconds
    user_agent: str | None = None
    # Contact header params other than expires (q, +sip.instance, reg-id, unknown ones): kept
    # apart from the URI (RFC 4475 cparam01) and given back in the 200 OK.
    contact_params: Params = ()
    # issue #20: the REGISTER's Path (RFC 3327), from a trusted edge: the route set of every
    # request to this binding, sent to its first hop (pbx.sip.edge).
    path: tuple[str, ...] = ()
    # issue #20: the node that holds this phone's registration when it is another node sharing
    # the database (pbx.binding_sync); None: this node's own.
    node: str | None = None
    # The comparison key of ``uri`` (``contact_key``), made once: a REGISTER uses it many times.
    contact_key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "contact_key", contact_key(self.uri))

    @property
    def contact(self) -> str:
        """The Contact URI as a string."""
        return str(self.uri)

    @property
    def key(self) -> BindingKey:
        return (self.tenant, self.extension, self.contact_key)

    @property
    def source(self) -> Address:
        return (self.source_host, self.source_port)

    @property
    def q(self) -> float | None:
        return _parse_q(get_param(self.contact_params, "q"))

    def is_active(self, now: float) -> bool:
        return self.expires_at > now

    def expires_in(self, now: float) -> int:
        """Whole seconds left (at least 1 while active, 0 once expired)."""
        if not self.is_active(now):
            return 0
        return max(1, round(self.expires_at - now))

    def as_contact(self, now: float) -> NameAddress:
        """The Contact value listing this binding in a 200 OK, with its remaining expires."""
        return NameAddress(
            self.uri, None, (*self.contact_params, ("expires", str(self.expires_in(now))))
        )


@immutable
class RegisterResult:
    """What to answer and what to persist. Turn it into a response with ``build_response(req,
    result.status, result.reason, to_tag=..., contact=result.contacts, headers=result.headers)``.
    """

    status: int
    reason: str
    aor: Aor
    headers: tuple[tuple[str, str], ...] = ()  # Min-Expires (423), Date (200)
    contacts: tuple[NameAddress, ...] = ()  # 200: every current binding with its expires
    bindings: tuple[Binding, ...] = ()  # the AOR's bindings after the request
    saved: tuple[Binding, ...] = ()  # created or refreshed: upsert these
    # Gone (removed, dropped over max_contacts, expired): delete these. A refreshed binding is
    # only in ``saved`` (same key), so deletes and upserts never collide.
    removed: tuple[Binding, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status == 200


def contact_key(uri: SipUri) -> str:
    """A comparison key for Contact URIs (RFC 3261 19.1.4, simplified; see module doc)."""
    user = unquote(uri.user) if uri.user is not None else ""
    password = f":{unquote(uri.password)}" if uri.password is not None else ""
    port = f":{uri.port}" if uri.port is not None else ""
    # One pass over the parameters (this runs several times per REGISTER): the first value of
    # each compared parameter, case-insensitive, then written in _COMPARED_URI_PARAMS order.
    found: dict[str, str] = {}
    for name, value in uri.params:
        lname = name.lower()
        if lname in _COMPARED_URI_PARAM_SET and lname not in found:
            found[lname] = (value or "").lower()
    params = "".join(f";{name}={found[name]}" for name in _COMPARED_URI_PARAMS if name in found)
    return f"{uri.scheme}:{user}{password}@{uri.host.lower()}{port}{params}"


@lru_cache(maxsize=4)
def _http_date(second: int) -> str:
    """The Date header value of a POSIX second (RFC 3261 20.17), made once per second."""
    return formatdate(second, usegmt=True)


def resolve_aor(request: SipRequest, config: ConfigSnapshot) -> Aor:
    """The AOR a REGISTER is for, from its To URI (RFC 3261 10.3 step 5).

    Raises ``RemoteProtocolError``: 400 when To is not a sip/sips URI with a user part, 404 when
    no tenant serves the To host (and there is no default tenant). Whether the extension exists
    is not revealed here: that is decided after authentication.
    """
    uri = request.to.uri
    if not isinstance(uri, SipUri):
        raise RemoteProtocolError("the To of a REGISTER must be a sip or sips URI", 400)
    if not uri.user:
        raise RemoteProtocolError("the To URI of a REGISTER has no user part", 400)
    tenant = config.tenant_for_domain(uri.host)
    if tenant is None:
        raise RemoteProtocolError(f"no tenant serves {uri.host}", 404)
    return Aor(tenant.id, Extension(unquote(uri.user)), tenant.domain)


def ha1_lookup(tenant: TenantConfig) -> Ha1Lookup:
    """Digest credentials of ``tenant``'s users: from the clear password or the stored HA1."""

    def lookup(username: str, realm: str, algorithm: Algorithm) -> str | None:
        if realm != tenant.domain:
            return None
        user = tenant.users.get(Extension(username))
        if user is None:
            return None
        if user.password is not None:
            return compute_ha1(algorithm, username, realm, user.password)
        if algorithm == "MD5":
            return user.password_ha1_md5
        return user.password_ha1_sha256

    return lookup


def process_register(
    request: SipRequest,
    aor: Aor,
    bindings: Sequence[Binding],
    *,
    config: ConfigSnapshot,
    source: Source,
    now: float,
    authenticated_user: str | None,
) -> RegisterResult:
    """Serve a REGISTER for ``aor`` whose current bindings are ``bindings`` (RFC 3261 10.3).

    ``authenticated_user`` is the digest username that authenticated the request, or None when
    the caller decided no authentication applies. Expired entries of ``bindings`` are ignored
    and reported in ``removed``.
    """
    # 10.3 step 4: "the registrar MUST determine if the authenticated user is authorized to
    # modify registrations for this address-of-record": here only the extension itself is.
    if authenticated_user is not None and authenticated_user != aor.extension:
        return RegisterResult(403, "Forbidden", aor)
    tenant = config.tenants.get(aor.tenant)
    if tenant is None or aor.extension not in tenant.users:
        return RegisterResult(404, "Not Found", aor)
    settings = config.server.registrar

    active = {b.contact_key: b for b in sorted(bindings, key=_age) if b.is_active(now)}
    expired = tuple(b for b in bindings if not b.is_active(now))
    header_expires = _parse_delta(request.header("Expires"))

    if request.contact_star:
        # 10.3 step 6: "*" only with Expires: 0 and no other Contact, else 400.
        if request.contact or header_expires != 0:
            return RegisterResult(400, "Invalid Request", aor)
        if _out_of_order(request, active.values()):
            return _out_of_order_result(aor)
        removed = (*expired, *active.values())
        return _ok(aor, (), saved=(), removed=removed, now=now)

    if not request.contact:
        # A query: list the bindings (10.3 step 6, last paragraph).
        current = tuple(active.values())
        return _ok(aor, current, saved=(), removed=expired, now=now)

    # Expiration of every contact first: one 423 refuses the whole request.
    wanted: list[tuple[NameAddress, SipUri, int]] = []
    for contact in request.contact:
        if not isinstance(contact.uri, SipUri):
            return RegisterResult(400, "Contact Must Be a SIP URI", aor)
        expires = _parse_delta(contact.param("expires"))
        if expires is None:
            expires = header_expires if header_expires is not None else settings.default_expires
        if 0 < expires < settings.min_expires:
            # 10.3 step 7: 423 with Min-Expires when the interval is too brief.
            headers = (("Min-Expires", str(settings.min_expires)),)
            return RegisterResult(423, "Interval Too Brief", aor, headers=headers)
        wanted.append((contact, contact.uri, min(expires, settings.max_expires)))

    user_agent = request.header("User-Agent")
    work = dict(active)
    touched: set[str] = set()
    for contact, uri, expires in wanted:
        key = contact_key(uri)
        existing = work.get(key)
        if (
            existing is not None
            and key not in touched
            and existing.call_id == request.call_id
            and request.cseq.number <= existing.cseq
        ):
            # 10.3 step 7: same Call-ID, CSeq not higher: "the update MUST be aborted and the
            # request fails". Nothing has been committed yet, so nothing is to be undone.
            return _out_of_order_result(aor)
        touched.add(key)
        if expires == 0:
            work.pop(key, None)
            continue
        work.pop(key, None)  # re-insert: refreshed bindings are the newest
        work[key] = Binding(
            tenant=aor.tenant,
            extension=aor.extension,
            uri=uri,
            source_host=source.host,
            source_port=source.port,
            transport=source.transport.upper(),
            connection_id=source.connection_id,
            call_id=request.call_id,
            cseq=request.cseq.number,
            registered_at=now,
            expires_at=now + expires,
            user_agent=user_agent,
            contact_params=tuple((k, v) for k, v in contact.params if k.lower() != "expires"),
            path=source.path,
        )

    # max_contacts: the least recently refreshed bindings are dropped. ``work`` is ordered from
    # oldest to newest (sorted on input, refreshed ones moved to the end).
    final = list(work.values())
    if len(final) > settings.max_contacts:
        final = final[len(final) - settings.max_contacts :]
    kept = {b.contact_key: b for b in final}
    saved = tuple(b for key, b in kept.items() if key in touched)
    removed = (*expired, *(b for key, b in active.items() if key not in kept))
    return _ok(aor, tuple(final), saved=saved, removed=removed, now=now)


@immutable
class Presence:
    """Whether an extension can be called now, and which contacts a call would ring."""

    tenant: TenantId
    extension: Extension
    contacts: tuple[Binding, ...]

    @property
    def online(self) -> bool:
        return bool(self.contacts)


def online_contacts(
    bindings: Iterable[Binding],
    now: float,
    *,
    unreachable: Set[BindingKey] = frozenset(),
) -> tuple[Binding, ...]:
    """The contacts a call would ring: unexpired and not marked unreachable.

    Marks come from the keep-alive checks (only while the tenant's ``qualify_seconds`` is on,
    and only for contacts that answered a check before) and from a closed TCP/TLS connection
    (always: nothing can reach that phone until it connects and registers again)."""
    return tuple(b for b in bindings if b.is_active(now) and b.key not in unreachable)


def presence(
    tenant: TenantConfig,
    extension: Extension,
    bindings: Iterable[Binding],
    now: float,
    unreachable: Set[BindingKey] = frozenset(),
) -> Presence:
    """Presence of ``extension`` (DESIGN 3 "offline": no unexpired binding, or none that is
    reachable: see ``online_contacts``)."""
    mine = (b for b in bindings if b.tenant == tenant.id and b.extension == extension)
    return Presence(tenant.id, extension, online_contacts(mine, now, unreachable=unreachable))


class Registrations:
    """Every binding in memory, by AOR (a pure container the adapter keeps next to the store).

    TCP bindings are also indexed by their connection and by the addresses a send to them
    goes to, so a closed connection or a failed send finds its bindings without a scan of
    every binding (a mass reconnect of TCP phones would otherwise cost bindings x bindings).
    """

    def __init__(self, bindings: Iterable[Binding] = ()) -> None:
        self._by_aor: dict[tuple[TenantId, Extension], dict[str, Binding]] = {}
        # TCP bindings: by connection id, and by source and Contact address (insertion-ordered
        # dicts as ordered sets of binding keys).
        self._by_connection: dict[str, dict[BindingKey, None]] = {}
        self._by_stream_address: dict[Address, dict[BindingKey, None]] = {}
        self.unreachable: set[BindingKey] = set()
        for binding in bindings:
            self._put(binding)

    def bindings_of(self, tenant: TenantId, extension: Extension) -> tuple[Binding, ...]:
        """The AOR's bindings (expired ones included until ``expire`` runs)."""
        return tuple(self._by_aor.get((tenant, extension), {}).values())

    def apply(self, result: RegisterResult) -> None:
        """Take in the changes of a processed REGISTER."""
        for binding in result.removed:
            self._drop(binding)
        for binding in result.saved:
            self._put(binding)
            self.unreachable.discard(binding.key)

    def expire(self, now: float) -> list[Binding]:
        """Remove and return the bindings expired at ``now``."""
        gone = [b for b in self if not b.is_active(now)]
        for binding in gone:
            self._drop(binding)
        return gone

    def remove(self, binding: Binding) -> None:
        """Forget one binding (its user was removed from the configuration)."""
        self._drop(binding)

    def mark_reachable(self, key: BindingKey, reachable: bool) -> None:
        """Record a keep-alive answer (or its absence, or a lost TCP connection)."""
        if reachable:
            self.unreachable.discard(key)
        else:
            self.unreachable.add(key)

    def on_connection(self, connection_id: str) -> list[Binding]:
        """The bindings that were registered over a TCP connection (to mark them unreachable)."""
        return self._resolve(self._by_connection.get(connection_id))

    def stream_contacts_at(self, destination: Address) -> list[Binding]:
        """The TCP bindings a send to ``destination`` was for: registered from it, or with
        their Contact at it (a TCP connect or send to it failed)."""
        return self._resolve(self._by_stream_address.get(destination))

    def _resolve(self, keys: dict[BindingKey, None] | None) -> list[Binding]:
        if not keys:
            return []
        found = (self.get(key) for key in keys)
        return [binding for binding in found if binding is not None]

    def get(self, key: BindingKey) -> Binding | None:
        """One binding by its key (expired ones included until ``expire`` runs)."""
        return self._by_aor.get((key[0], key[1]), {}).get(key[2])

    def presence(self, tenant: TenantConfig, extension: Extension, now: float) -> Presence:
        """Which contacts of ``extension`` a call would ring now (the routing core's question:
        ``presence(...).online`` False is "offline", the offline forward applies)."""
        return presence(
            tenant, extension, self.bindings_of(tenant.id, extension), now, self.unreachable
        )

    def reachable_contacts(
        self, tenant: TenantConfig, extension: Extension, now: float
    ) -> tuple[Binding, ...]:
        """The extension's contacts that are registered and reachable now."""
        return self.presence(tenant, extension, now).contacts

    def is_offline(self, tenant: TenantConfig, extension: Extension, now: float) -> bool:
        """No reachable contact: the extension is offline to routing."""
        return not self.presence(tenant, extension, now).online

    def contact_failed(self, key: BindingKey) -> bool:
        """A transport failure reaching a contact (a TCP connect refused, a send that failed):
        mark it unreachable at once, as a closed connection is. True when it was reachable.
        (The call engine's hook for RFC 3261 8.1.3.1 transport errors; a REGISTER refresh or
        an answered keep-alive clears the mark.)"""
        if self.get(key) is None or key in self.unreachable:
            return False
        self.unreachable.add(key)
        return True

    # -- issue #20: bindings shared across nodes ------------------------------------
    def aors(self) -> list[tuple[TenantId, Extension]]:
        """Every AOR holding a binding in memory."""
        return list(self._by_aor)

    def replace_aor(
        self, tenant: TenantId, extension: Extension, bindings: Iterable[Binding]
    ) -> tuple[tuple[Binding, ...], tuple[Binding, ...]]:
        """Make the AOR's bindings exactly ``bindings`` (as the shared database has them);
        ``(new or changed, gone)``. An unchanged binding keeps its reachability mark."""
        old = dict(self._by_aor.get((tenant, extension), {}))
        new = {b.contact_key: b for b in bindings}
        gone = tuple(b for key, b in old.items() if key not in new)
        changed = tuple(b for key, b in new.items() if old.get(key) != b)
        for binding in gone:
            self._drop(binding)
        for binding in changed:
            previous = old.get(binding.contact_key)
            if previous is not None:
                self._drop(previous)
            self._put(binding)
        return changed, gone

    def __iter__(self) -> Iterator[Binding]:
        for per_aor in list(self._by_aor.values()):
            yield from list(per_aor.values())

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_aor.values())

    def _put(self, binding: Binding) -> None:
        per_aor = self._by_aor.setdefault((binding.tenant, binding.extension), {})
        old = per_aor.pop(binding.contact_key, None)
        if old is not None:
            self._unindex(old)
        per_aor[binding.contact_key] = binding
        if binding.transport == "TCP":
            key = binding.key
            if binding.connection_id is not None:
                self._by_connection.setdefault(binding.connection_id, {})[key] = None
            for address in _stream_addresses(binding):
                self._by_stream_address.setdefault(address, {})[key] = None

    def _drop(self, binding: Binding) -> None:
        aor = (binding.tenant, binding.extension)
        per_aor = self._by_aor.get(aor)
        if per_aor is None:
            return
        if per_aor.get(binding.contact_key) == binding:
            del per_aor[binding.contact_key]
            self.unreachable.discard(binding.key)
            self._unindex(binding)
        if not per_aor:
            del self._by_aor[aor]

    def _unindex(self, binding: Binding) -> None:
        if binding.transport != "TCP":
            return
        key = binding.key
        if binding.connection_id is not None:
            _discard(self._by_connection, binding.connection_id, key)
        for address in _stream_addresses(binding):
            _discard(self._by_stream_address, address, key)


def _stream_addresses(binding: Binding) -> tuple[Address, ...]:
    """Where a send to a TCP binding goes: its source, or its Contact's host and port."""
    source = binding.source
    contact = (binding.uri.host.strip("[]"), binding.uri.port or 5060)
    return (source,) if contact == source else (source, contact)


def _discard(index: dict[_Name, dict[BindingKey, None]], name: _Name, key: BindingKey) -> None:
    keys = index.get(name)
    if keys is not None:
        keys.pop(key, None)
        if not keys:
            del index[name]


# --- helpers ------------------------------------------------------------------------------


def _age(binding: Binding) -> tuple[float, float]:
    return (binding.registered_at, binding.expires_at)


def _parse_delta(text: str | None) -> int | None:
    """delta-seconds (RFC 3261 20.19, 20.10); values above 2**32-1 are taken as 2**32-1."""
    if text is None:
        return None
    text = text.strip()
    if not text.isdigit() or not text.isascii():
        return None
    return min(int(text), MAX_DELTA_SECONDS)


def _parse_q(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and 0.0 <= value <= 1.0 else None


def _out_of_order(request: SipRequest, bindings: Iterable[Binding]) -> bool:
    return any(b.call_id == request.call_id and request.cseq.number <= b.cseq for b in bindings)


def _out_of_order_result(aor: Aor) -> RegisterResult:
    return RegisterResult(500, "Server Internal Error", aor)


def _ok(
    aor: Aor,
    bindings: tuple[Binding, ...],
    *,
    saved: tuple[Binding, ...],
    removed: tuple[Binding, ...],
    now: float,
) -> RegisterResult:
    # 10.3 step 8: the 200 lists every current binding with its expires; it SHOULD carry Date.
    return RegisterResult(
        200,
        "OK",
        aor,
        headers=(("Date", _http_date(int(now))),),
        contacts=tuple(b.as_contact(now) for b in bindings),
        bindings=bindings,
        saved=saved,
        removed=removed,
    )
