"""HTTP Digest authentication for SIP (RFC 3261 22, RFC 2617, RFC 7616, RFC 8760).

Pure: the current time and the credential lookup are passed in. The server acts as a UAS and
challenges with 401 ``WWW-Authenticate`` (RFC 3261 22.2), one challenge per algorithm in the
configured order (MD5 first by default: SIPp reads only the first challenge, DESIGN section 8).

Nonces need no table to be validated: a nonce is ``random || MAC(secret, random, realm, slot)``
where ``slot`` is the issue time in steps of a tenth of ``nonce_ttl``, and the slot itself is not
in the nonce: verification tries the slots still valid. So a nonce carries nothing readable (it
used to hold the issue time to the millisecond, revealing the server's clock; issue 17 item 7),
and it is accepted for ``nonce_ttl`` plus at most one step. The MAC is keyed BLAKE2s (RFC 7693
2.5, a PRF by design, truncated to 16 bytes) rather than HMAC-SHA256: every authenticated
registration makes one and checks one, and OpenSSL 3's one-shot HMAC costs about 3 µs a call
against 0.5 µs (issue #21). The only state kept is about nonces
that have already authenticated a request, so that a replayed ``Authorization`` is refused:

- with ``qop=auth`` the nonce-count ``nc`` must grow for each nonce (RFC 7616 3.4);
- without ``qop`` (RFC 2069 style, as pyVoIP sends) a nonce authenticates one request only.

That table only grows with *successful* authentications (an attacker without a password cannot
fill it) and is bounded anyway: when an entry is evicted early, every nonce issued up to that
entry's issue time is treated as stale, so eviction can never reopen a replay.

Answers are uniform: an unknown user and a wrong password give the same outcome (``FAILED``), the
same challenge, and comparable work (a dummy HA1 is hashed for unknown users). A nonce the server
never issued (or issued under another secret, before a restart) is answered ``STALE`` before the
response is even looked at, so its answer never depends on the password: no guess can be
checked without a challenge (issue 17, item 7).
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import re
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal, TypeAlias

from pbx.errors import RemoteProtocolError
from pbx.immutable import immutable
from pbx.sip.entropy import token_bytes
from pbx.sip.message import canonical_header_name

Algorithm: TypeAlias = Literal["MD5", "SHA-256"]
ALGORITHMS: tuple[Algorithm, ...] = ("MD5", "SHA-256")

# (username, realm, algorithm) -> lower-case hex HA1 = H(username:realm:password), or None when
# the user is unknown or has no credential usable with that algorithm.
Ha1Lookup: TypeAlias = Callable[[str, str, Algorithm], str | None]

_HASHES: dict[str, Callable[[bytes], str]] = {
    "MD5": lambda data: hashlib.md5(data, usedforsecurity=False).hexdigest(),
    "SHA-256": lambda data: hashlib.sha256(data).hexdigest(),
}

_NONCE_SLOT = struct.Struct(">q")  # MAC input only, never in the nonce
_NONCE_RANDOM = 17  # bytes; with the 16-byte MAC: 33 bytes, 44 base64 chars
_NONCE_MAC = 16
_NONCE_STEPS = 10  # slots per nonce_ttl
_NC = re.compile(r"[0-9a-fA-F]{8}")


def hash_hex(algorithm: Algorithm, text: str) -> str:
    """H(text) as lower-case hex, for ``MD5`` or ``SHA-256``."""
    return _HASHES[algorithm](text.encode("utf-8"))


def compute_ha1(algorithm: Algorithm, username: str, realm: str, password: str) -> str:
    """HA1 = H(username:realm:password) (RFC 7616 3.4.2, non-session algorithms)."""
    return hash_hex(algorithm, f"{username}:{realm}:{password}")


def compute_response(
    algorithm: Algorithm,
    ha1: str,
    *,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
) -> str:
    """The request-digest (RFC 7616 3.4.1; RFC 2069 form when ``qop`` is None)."""
    ha2 = hash_hex(algorithm, f"{method}:{uri}")
    if qop is None:
        return hash_hex(algorithm, f"{ha1}:{nonce}:{ha2}")
    return hash_hex(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


# --- Authorization header parsing (RFC 7616 3.4, RFC 3261 25.1 auth-param) -------------------

_TOKEN = r"[A-Za-z0-9.!%*_+`'~\-]+"
_SCHEME = re.compile(rf"\s*({_TOKEN})(?:\s+|$)")
# Unquoted values are read liberally (anything up to a comma or blank), as some phones write
# ``uri=sip:...`` without quotes.
# A quoted string is matched unrolled ("normal* (escape normal*)*"): far fewer steps than one
# alternation per character. The comma after the parameter (or the end) belongs to the match.
_PARAM = re.compile(
    rf"\s*({_TOKEN})\s*=\s*(?:\"([^\"\\]*(?:\\.[^\"\\]*)*)\"|([^\s,\"]+))\s*(?:,|$)"
)
_UNESCAPE = re.compile(r"\\(.)", re.DOTALL)


@immutable
class AuthorizationHeader:
    """One ``Authorization`` value: its scheme as written, its auth-params (lower-case names)."""

    scheme: str
    params: MappingProxyType[str, str]

    @property
    def is_digest(self) -> bool:
        return self.scheme.lower() == "digest"


def parse_authorization(value: str) -> AuthorizationHeader:
    """Parse ``scheme name=value, name="quoted", ...``; raises RemoteProtocolError if malformed.

    Schemes other than Digest parse too (RFC 4475 regaut01), so the caller can ignore them.
    """
    match = _SCHEME.match(value)
    if match is None:
        raise RemoteProtocolError(f"malformed credentials: {value!r}", 400)
    scheme = match.group(1)
    params: dict[str, str] = {}
    pos = match.end()
    end = len(value)
    while pos < end:
        # One auth-param and the comma after it (or the end): one match per parameter.
        param = _PARAM.match(value, pos)
        if param is None:
            raise RemoteProtocolError(f"malformed auth-param list in {value!r}", 400)
        name, quoted, text = param.groups()
        name = name.lower()
        if quoted is not None:
            text = _UNESCAPE.sub(r"\1", quoted) if "\\" in quoted else quoted
        if name in params:
            raise RemoteProtocolError(f"auth-param {name!r} repeated", 400)
        params[name] = text
        pos = param.end()
    return AuthorizationHeader(scheme, MappingProxyType(params))


@immutable
class DigestCredentials:
    """The Digest fields of an ``Authorization`` header (RFC 7616 3.4)."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"  # as written, upper-cased; absent means MD5 (RFC 7616 3.3)
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None
    opaque: str | None = None
    userhash: bool = False

    @classmethod
    def from_header(cls, header: AuthorizationHeader) -> DigestCredentials:
        """The Digest credentials of ``header``; raises RemoteProtocolError if some are missing."""
        if not header.is_digest:
            raise RemoteProtocolError(f"not Digest credentials: {header.scheme}", 400)
        p = header.params
        missing = [k for k in ("username", "realm", "nonce", "uri", "response") if k not in p]
        if missing:
            raise RemoteProtocolError(f"Digest credentials lack {', '.join(missing)}", 400)
        qop = p.get("qop")
        if qop is not None and ("nc" not in p or "cnonce" not in p):
            raise RemoteProtocolError("Digest credentials with qop lack nc or cnonce", 400)
        return cls(
            username=p["username"],
            realm=p["realm"],
            nonce=p["nonce"],
            uri=p["uri"],
            response=p["response"].lower(),
            algorithm=p.get("algorithm", "MD5").upper(),
            qop=qop.lower() if qop is not None else None,
            nc=p.get("nc"),
            cnonce=p.get("cnonce"),
            opaque=p.get("opaque"),
            userhash=p.get("userhash", "false").lower() == "true",
        )


def authorization_values(headers: Iterable[tuple[str, str]], *, proxy: bool = False) -> list[str]:
    """Every ``Authorization`` (or ``Proxy-Authorization``) value, unsplit, in order.

    These headers carry commas inside one value, so they are never split (RFC 3261 7.3.1).
    """
    want = "proxy-authorization" if proxy else "authorization"
    return [value for name, value in headers if canonical_header_name(name) == want]


# --- Outcomes ------------------------------------------------------------------------------


class AuthOutcome(enum.Enum):
    OK = "ok"
    # No usable credentials for this realm (none, another scheme, another realm): challenge.
    # Not a failed authentication.
    MISSING = "missing"
    # The response is right but the nonce is expired, foreign or already used: challenge again
    # with stale=true (RFC 7616 3.3) so the client retries without asking its user.
    STALE = "stale"
    # Wrong password, unknown user, malformed or unsupported credentials: challenge again; this
    # counts as a failed authentication for the abuse defences.
    FAILED = "failed"


@immutable
class AuthResult:
    """What ``DigestAuthenticator.verify`` decided, with a snake_case reason for the logs."""

    outcome: AuthOutcome
    reason: str
    username: str | None = None
    algorithm: Algorithm | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is AuthOutcome.OK

    @property
    def stale(self) -> bool:
        return self.outcome is AuthOutcome.STALE

    @property
    def failed(self) -> bool:
        """Whether this counts as a failed authentication (SourceGuard.record_failure)."""
        return self.outcome is AuthOutcome.FAILED


@dataclass(slots=True)
class _NonceUse:
    issued_at: float
    last_nc: int  # -1: used once without qop (single use)


class DigestAuthenticator:
    """Digest challenges and verification for one server (RFC 3261 22.4, RFC 7616 3.3-3.4).

    ``secret`` keys the nonce MAC (random per process is fine: after a restart old nonces are
    answered with stale=true). ``now`` is any clock in seconds, used consistently by the caller.
    """

    def __init__(
        self,
        secret: bytes,
        algorithms: Sequence[Algorithm] = ALGORITHMS,
        nonce_ttl: float = 300.0,
        *,
        max_tracked_nonces: int = 65536,
        random_bytes: Callable[[int], bytes] = token_bytes,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("the nonce secret must be at least 16 bytes")
        if not algorithms or any(a not in _HASHES for a in algorithms):
            raise ValueError(f"algorithms must be a non-empty subset of {ALGORITHMS}")
        self._secret = secret
        # The nonce MAC's key: BLAKE2s takes at most 32 key bytes, so the secret (of any
        # length) is hashed into one.
        self._mac_key = hashlib.blake2s(secret, person=b"nonce").digest()
        self.algorithms: tuple[Algorithm, ...] = tuple(dict.fromkeys(algorithms))
        self.nonce_ttl = nonce_ttl
        self._max_tracked = max_tracked_nonces
        self._random_bytes = random_bytes
        self._opaque = hmac.new(secret, b"opaque", hashlib.sha256).hexdigest()[:32]
        self._dummy_key = hmac.new(secret, b"unknown-user", hashlib.sha256).hexdigest()
        # nonce -> how it has been used; insertion order ~ first use order.
        self._used: OrderedDict[str, _NonceUse] = OrderedDict()
        # Nonces issued at or before this instant and no longer tracked are treated as stale.
        self._evicted_up_to = float("-inf")

    # -- challenges ---------------------------------------------------------------------

    def make_nonce(self, realm: str, now: float) -> str:
        """A fresh server nonce for ``realm``, valid for ``nonce_ttl`` seconds from ``now``
        (and at most a tenth of that more)."""
        body = self._random_bytes(_NONCE_RANDOM)
        mac = self._mac(realm, body, self._slot(now))
        return base64.urlsafe_b64encode(body + mac).decode("ascii")

    def challenge(
        self,
        realm: str,
        now: float,
        *,
        stale: bool = False,
        algorithms: Sequence[Algorithm] | None = None,
    ) -> list[str]:
        """``WWW-Authenticate`` values, one per algorithm in offer order (RFC 3261 22.4):
        ``algorithms`` (a tenant's own list), else the server's.

        One nonce serves all of them: a client that answers one challenge's algorithm with
        another challenge's nonce (pyVoIP keeps the last header) still authenticates.
        """
        nonce = self.make_nonce(realm, now)
        tail = ", stale=true" if stale else ""
        return [
            f'Digest realm="{_quote(realm)}", nonce="{nonce}", opaque="{self._opaque}", '
            f'algorithm={algorithm}, qop="auth"{tail}'
            for algorithm in (algorithms or self.algorithms)
        ]

    # -- verification --------------------------------------------------------------------

    def verify(
        self,
        method: str,
        authorization: str | Sequence[str] | None,
        realm: str,
        lookup_ha1: Ha1Lookup,
        now: float,
        *,
        algorithms: Sequence[Algorithm] | None = None,
    ) -> AuthResult:
        """Check the credentials of a request for ``realm`` (RFC 3261 22.4, RFC 7616 3.4.1);
        only an algorithm offered (``algorithms``, else the server's) is accepted.

        ``authorization``: the request's Authorization value(s) (``authorization_values``).
        Values in other schemes or for other realms are ignored (RFC 4475 regaut01).
        On ``OK`` the nonce is marked used, so the same credentials are refused next time.
        """
        values = [authorization] if isinstance(authorization, str) else list(authorization or ())
        creds: DigestCredentials | None = None
        saw_digest = False
        for value in values:
            try:
                header = parse_authorization(value)
            except RemoteProtocolError:
                return AuthResult(AuthOutcome.FAILED, "malformed")
            if not header.is_digest:
                continue
            saw_digest = True
            if header.params.get("realm") != realm:
                continue
            try:
                creds = DigestCredentials.from_header(header)
            except RemoteProtocolError:
                return AuthResult(AuthOutcome.FAILED, "malformed")
            break
        if creds is None:
            return AuthResult(AuthOutcome.MISSING, "realm_mismatch" if saw_digest else "none")
        return self._verify(method, creds, lookup_ha1, now, algorithms or self.algorithms)

    def _verify(
        self,
        method: str,
        creds: DigestCredentials,
        lookup_ha1: Ha1Lookup,
        now: float,
        algorithms: Sequence[Algorithm],
    ) -> AuthResult:
        user = creds.username
        if creds.algorithm not in algorithms:
            return AuthResult(AuthOutcome.FAILED, "unsupported_algorithm", user)
        algorithm: Algorithm = "MD5" if creds.algorithm == "MD5" else "SHA-256"
        if creds.qop is not None and creds.qop != "auth":
            return AuthResult(AuthOutcome.FAILED, "unsupported_qop", user, algorithm)
        if creds.userhash:
            return AuthResult(AuthOutcome.FAILED, "userhash_unsupported", user, algorithm)
        nc_value: int | None = None
        if creds.qop is not None:
            if creds.nc is None or not _NC.fullmatch(creds.nc):
                return AuthResult(AuthOutcome.FAILED, "malformed", user, algorithm)
            nc_value = int(creds.nc, 16)

        # A nonce we never issued: the same answer whatever the password (no oracle), and
        # stale rather than failed (a phone holding a nonce from before a restart retries).
        issued_at = self._nonce_issued_at(creds.nonce, creds.realm, now)
        if issued_at is None:
            return AuthResult(AuthOutcome.STALE, "nonce_unknown", user, algorithm)

        # Same work whether or not the user exists: an unknown user gets a dummy HA1 that no
        # password can match, and the response is computed and compared all the same.
        known_ha1 = lookup_ha1(user, creds.realm, algorithm)
        ha1 = known_ha1 if known_ha1 is not None else self._dummy_ha1(algorithm, creds)
        expected = compute_response(
            algorithm,
            ha1.lower(),
            method=method,
            uri=creds.uri,
            nonce=creds.nonce,
            qop=creds.qop,
            nc=creds.nc,
            cnonce=creds.cnonce,
        )
        matches = hmac.compare_digest(expected, creds.response)
        if known_ha1 is None:
            return AuthResult(AuthOutcome.FAILED, "unknown_user", user, algorithm)
        if not matches:
            return AuthResult(AuthOutcome.FAILED, "wrong_password", user, algorithm)

        # The password is right; from here on the worst answer is "stale" (RFC 7616 3.3).
        self._forget_expired(now)
        if self._expired(issued_at, now):
            return AuthResult(AuthOutcome.STALE, "nonce_expired", user, algorithm)
        use = self._used.get(creds.nonce)
        if use is None:
            if issued_at <= self._evicted_up_to:
                return AuthResult(AuthOutcome.STALE, "nonce_evicted", user, algorithm)
            self._track(creds.nonce, _NonceUse(issued_at, -1 if nc_value is None else nc_value))
            return AuthResult(AuthOutcome.OK, "ok", user, algorithm)
        # A nonce already used: without qop never again (single use); with qop only if nc grows.
        if nc_value is None or use.last_nc < 0:
            return AuthResult(AuthOutcome.STALE, "nonce_reused", user, algorithm)
        if nc_value <= use.last_nc:
            return AuthResult(AuthOutcome.STALE, "nc_not_increasing", user, algorithm)
        use.last_nc = nc_value
        return AuthResult(AuthOutcome.OK, "ok", user, algorithm)

    @property
    def tracked_nonces(self) -> int:
        """How many used nonces are remembered (bounded by ``max_tracked_nonces``)."""
        return len(self._used)

    # -- internals ----------------------------------------------------------------------

    @property
    def _step(self) -> float:
        return max(self.nonce_ttl / _NONCE_STEPS, 1e-3)

    def _slot(self, now: float) -> int:
        return int(now // self._step)

    def _expired(self, issued_at: float, now: float) -> bool:
        """Whether a nonce of the slot starting at ``issued_at`` is no longer accepted."""
        return now - issued_at >= self.nonce_ttl + self._step

    def _mac(self, realm: str, body: bytes, slot: int) -> bytes:
        msg = body + _NONCE_SLOT.pack(slot) + realm.encode("utf-8")
        return hashlib.blake2s(msg, key=self._mac_key, digest_size=_NONCE_MAC).digest()

    def _nonce_issued_at(self, nonce: str, realm: str, now: float) -> float | None:
        """The start of the slot a nonce of ours for ``realm`` was issued in, when it is one of
        the slots still accepted, or one just expired (so that an expired nonce is told from a
        forged one); None if it is not one of ours."""
        try:
            raw = base64.urlsafe_b64decode(nonce.encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            return None
        if len(raw) != _NONCE_RANDOM + _NONCE_MAC:
            return None
        body, mac = raw[:_NONCE_RANDOM], raw[_NONCE_RANDOM:]
        current = self._slot(now)
        for slot in range(current, current - 2 * _NONCE_STEPS - 2, -1):
            if hmac.compare_digest(mac, self._mac(realm, body, slot)):
                return slot * self._step
        return None

    def _dummy_ha1(self, algorithm: Algorithm, creds: DigestCredentials) -> str:
        return compute_ha1(algorithm, creds.username, creds.realm, self._dummy_key)

    def _track(self, nonce: str, use: _NonceUse) -> None:
        self._used[nonce] = use
        while len(self._used) > self._max_tracked:
            _, evicted = self._used.popitem(last=False)
            self._evicted_up_to = max(self._evicted_up_to, evicted.issued_at)

    def _forget_expired(self, now: float) -> None:
        # Entries are in first-use order, which roughly follows issue order; an expired nonce is
        # refused as expired anyway, so dropping its entry loses nothing.
        while self._used:
            nonce, use = next(iter(self._used.items()))
            if not self._expired(use.issued_at, now):
                break
            del self._used[nonce]


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')
