"""Who may place a call: the checks on a new INVITE before a call exists (RFC 3261 8.2, 16.3).

Pure: a request, the configuration snapshot and the source address in, an answer out. A trunk
is trusted by its address (docs/design.md section 3); a phone must then authenticate (digest, done
by the service, which keeps the nonces) as the user its From names.
"""

from __future__ import annotations

from pbx.config.model import ConfigSnapshot, Extension, TenantConfig
from pbx.immutable import immutable
from pbx.numbers import classify_number
from pbx.routing.model import FromExtension, FromTrunk
from pbx.sip.message import NameAddress, SipRequest, SipUri


@immutable
class Refused:
    """Answer the INVITE with ``status`` (and ``reason``); no call is made."""

    status: int
    reason: str | None = None


@immutable
class Admitted:
    """A call may start: where it comes from, its tenant, and what the record shows."""

    origin: FromTrunk | FromExtension
    tenant: TenantConfig | None
    caller: str
    dialled: str


@immutable
class NeedsAuthentication:
    """A phone's call: authenticate it against ``tenant``, then ``identify`` the user."""

    tenant: TenantConfig
    dialled: str


def admit_invite(
    snapshot: ConfigSnapshot, req: SipRequest, source_host: str
) -> Admitted | NeedsAuthentication | Refused:
    """The first checks of a new INVITE: hop count, Contact, the number, trunk or phone."""
    if req.max_forwards is not None and req.max_forwards <= 0:
        return Refused(483)
    if not req.contact:
        return Refused(400, "Missing Contact")
    dialled = dialled_number(req)
    if dialled is None:
        return Refused(404)
    trunk = snapshot.trunk_for_host(source_host)
    if trunk is not None:
        caller = user_of(req.from_) or None
        origin = FromTrunk(trunk.name, caller, prior_hops=len(req.header_values("Diversion")))
        tenant = snapshot.tenant_for_number(classify_number(dialled).digits)
        return Admitted(origin, tenant, caller or "anonymous", dialled)
    phone_tenant = tenant_of(snapshot, req)
    if phone_tenant is None:
        return Refused(404)
    return NeedsAuthentication(phone_tenant, dialled)


def identify(pending: NeedsAuthentication, req: SipRequest, username: str) -> Admitted | Refused:
    """The authenticated ``username`` must be the From user and one of the tenant's users."""
    if username != user_of(req.from_) or Extension(username) not in pending.tenant.users:
        return Refused(403)
    origin = FromExtension(pending.tenant.id, Extension(username))
    return Admitted(origin, pending.tenant, username, pending.dialled)


def user_of(address: NameAddress) -> str:
    """The user part of a From/To URI (a tel: URI's number)."""
    uri = address.uri
    if isinstance(uri, SipUri):
        return uri.user or ""
    return str(getattr(uri, "number", "") or "")


def dialled_number(req: SipRequest) -> str | None:
    """The number a Request-URI dials, without user parameters; None if it names none."""
    uri = req.uri
    user: str | None = None
    if isinstance(uri, SipUri):
        user = uri.user
    elif hasattr(uri, "number"):
        user = uri.number
    if not user:
        return None
    return user.split(";", 1)[0]


def tenant_of(snapshot: ConfigSnapshot, req: SipRequest) -> TenantConfig | None:
    """The phone's tenant: the first of From, To and Request-URI hosts naming a tenant domain;
    else the default tenant."""
    for uri in (req.from_.uri, req.to.uri, req.uri):
        if isinstance(uri, SipUri):
            tid = snapshot.tenant_by_domain.get(uri.host.lower())
            if tid is not None:
                return snapshot.tenants[tid]
    return snapshot.tenant_for_domain("")
