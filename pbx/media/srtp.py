"""SRTP and SRTCP for one relay leg, with libsrtp (through ``pylibsrtp``; issue #18).

Adapter: the crypto is libsrtp's, never ours. A leg whose party declared an SDES key
(``pbx.media.sdes.Crypto``) gets an ``SrtpLeg``: ``unprotect`` / ``unprotect_rtcp`` check and
decrypt what the party sends (with its key), ``protect`` / ``protect_rtcp`` encrypt what the
relay sends it (with our key for that leg, in the suite the party chose). Packets that fail the
check raise ``SrtpError``; the relay drops and counts them. Repeated packets we relay (the far
side's duplicates) are allowed on the sending side, so a duplicate is not an error there.
"""

from __future__ import annotations

from pylibsrtp import Error as SrtpError
from pylibsrtp import Policy, Session

from pbx.media.sdes import KEY_SALT_LENGTH, Crypto
from pbx.sip.entropy import token_bytes

__all__ = ["SrtpError", "SrtpLeg", "new_key"]

_PROFILES = {
    "AES_CM_128_HMAC_SHA1_80": Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
}


def new_key() -> bytes:
    """A fresh master key and salt (30 octets) from the operating system's CSPRNG (through the
    process's pool, ``pbx.sip.entropy``: each byte is used once)."""
    return token_bytes(KEY_SALT_LENGTH)


class SrtpLeg:
    """The two libsrtp sessions of one leg: the party's (inbound) and ours (outbound)."""

    __slots__ = ("_rx", "_tx", "protect", "protect_rtcp", "theirs", "unprotect", "unprotect_rtcp")

    def __init__(self, theirs: Crypto, our_key: bytes) -> None:
        profile = _PROFILES[theirs.suite]
        inbound = Policy(
            key=theirs.key_salt, ssrc_type=Policy.SSRC_ANY_INBOUND, srtp_profile=profile
        )
        outbound = Policy(key=our_key, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile)
        outbound.allow_repeat_tx = True
        self.theirs = theirs
        self._rx = Session(inbound)
        self._tx = Session(outbound)
        # Bound methods, looked up once: the relay's hot path calls them per packet.
        self.unprotect = self._rx.unprotect
        self.unprotect_rtcp = self._rx.unprotect_rtcp
        self.protect = self._tx.protect
        self.protect_rtcp = self._tx.protect_rtcp
