"""A tenant's encryption policy (issue #18): ``[tenant] encryption = "require"``.

Pure. A requiring tenant's users must register and call over TLS (else 403, with the reason in
the status line) and offer SRTP media: an audio stream ``RTP/SAVP`` with a usable ``a=crypto``
line (else 488). Checked before any digest challenge, so no credentials are asked for over a
clear-text transport. Calls from the trunk keep the trunk's own (plain) setting; the tenant's
phones, all on TLS, are offered SRTP on their legs.
"""

from __future__ import annotations

from pbx.call.admission import Admitted, NeedsAuthentication, Refused
from pbx.config.model import TenantConfig
from pbx.errors import RemoteProtocolError
from pbx.media.sdp import audio_stream, parse_sdp

TLS_REQUIRED = "TLS Required"
SRTP_REQUIRED = "SRTP Required"


def register_refusal(tenant: TenantConfig, transport: str) -> Refused | None:
    """403 for a REGISTER of a requiring tenant's user that did not come over TLS."""
    if tenant.encryption == "require" and transport != "TLS":
        return Refused(403, TLS_REQUIRED)
    return None


def call_refusal(tenant: TenantConfig, transport: str, body: bytes) -> Refused | None:
    """403 for a requiring tenant's call not over TLS; 488 for its offer without SRTP."""
    if tenant.encryption != "require":
        return None
    if transport != "TLS":
        return Refused(403, TLS_REQUIRED)
    if not body:
        return Refused(488, SRTP_REQUIRED)  # no offer to see: the answer could not be SRTP
    try:
        stream = audio_stream(parse_sdp(body))
    except RemoteProtocolError:
        return None  # the call engine answers an unreadable offer itself
    if stream is None or stream.crypto is None:
        return Refused(488, SRTP_REQUIRED)
    return None


def admit_encrypted(
    admission: Admitted | NeedsAuthentication | Refused, transport: str, body: bytes
) -> Admitted | NeedsAuthentication | Refused:
    """``admit_invite``'s answer, or the refusal of a requiring tenant's phone call that is
    not over TLS or offers no SRTP (before any challenge: no credentials asked in clear)."""
    if isinstance(admission, NeedsAuthentication):
        return call_refusal(admission.tenant, transport, body) or admission
    return admission


def encryption_note(
    caller_tls: bool, caller_srtp: bool, callee_tls: bool, callee_srtp: bool
) -> str:
    """The call record's trace line saying how each leg was protected, once answered."""

    def leg(tls: bool, srtp: bool) -> str:
        return f"{'TLS' if tls else 'clear'} signalling, {'SRTP' if srtp else 'RTP'} media"

    return (
        f"encryption: caller {leg(caller_tls, caller_srtp)}; callee {leg(callee_tls, callee_srtp)}"
    )


def call_encryption(
    caller_tls: bool, caller_srtp: bool, callee: tuple[bool, bool] | None
) -> dict[str, object]:
    """``GET /calls``'s ``encryption`` field: how each side of a call in progress is protected.

    ``callee`` is ``(tls, srtp)`` of the answered leg, ``None`` while the call rings (or plays
    the 009608 announcement: the other side is the PBX itself)."""

    def side(tls: bool, srtp: bool) -> dict[str, object]:
        return {"tls": tls, "srtp": srtp, "encrypted": tls and srtp}

    return {
        "caller": side(caller_tls, caller_srtp),
        "callee": side(*callee) if callee is not None else None,
    }
