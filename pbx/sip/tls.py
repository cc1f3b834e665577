"""The server's TLS context for SIP over TLS (RFC 3261 section 26, issue #18).

``server_context`` builds an ``ssl.SSLContext`` from ``[sip] tls_certificate`` / ``tls_key``:
TLS 1.2 or newer, forward-secret AEAD ciphers only for TLS 1.2 (TLS 1.3's suites are all AEAD),
no compression, no client certificate asked for (phones authenticate with digest).

``TlsCredentials`` keeps one live context for the listeners. ``reload`` first checks the new
files on a fresh context (the key matches the certificate, the certificate is valid now) and
only then loads them into the live context: OpenSSL copies the certificate into each connection
when it starts, so connections that are up keep theirs and new ones get the new one. A bad
certificate is refused and the old one stays.
"""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

__all__ = ["CIPHERS", "CertificateProblem", "TlsCredentials", "check_files", "server_context"]

# TLS 1.2 suites (TLS 1.3's are fixed by OpenSSL): ECDHE with AES-GCM or ChaCha20-Poly1305.
CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!MD5:!DSS"


class CertificateProblem(Exception):
    """The certificate or key cannot be used; the message says why, naming the file."""


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    not_before: float
    not_after: float
    subject: str


def _new_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.verify_mode = ssl.CERT_NONE
    return context


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def _describe(certificate: Path) -> CertificateInfo:
    # The first certificate of the file is the server's (a chain follows it). The stdlib has no
    # public x509 parser, so ``cryptography`` reads it (issue #18; design.md 9.3).
    leaf = x509.load_pem_x509_certificate(certificate.read_bytes())
    return CertificateInfo(
        leaf.not_valid_before_utc.timestamp(),
        leaf.not_valid_after_utc.timestamp(),
        leaf.subject.rfc4514_string(),
    )


def check_files(certificate: Path, key: Path, now: float) -> tuple[ssl.SSLContext, CertificateInfo]:
    """A context loaded with these files, or ``CertificateProblem`` saying what is wrong."""
    context = _new_context()
    try:
        context.load_cert_chain(certificate, key)
    except FileNotFoundError as exc:
        raise CertificateProblem(f"{exc.filename}: no such file") from exc
    except ssl.SSLError as exc:
        raise CertificateProblem(
            f"{certificate} / {key}: not a PEM certificate and its private key ({exc.reason})"
        ) from exc
    except OSError as exc:
        raise CertificateProblem(f"{certificate} / {key}: {exc}") from exc
    try:
        info = _describe(certificate)
    except (OSError, ValueError) as exc:
        raise CertificateProblem(f"{certificate}: unreadable certificate ({exc})") from exc
    if info.not_after <= now:
        raise CertificateProblem(f"{certificate}: expired on {_utc(info.not_after)}")
    if info.not_before > now:
        raise CertificateProblem(f"{certificate}: not valid before {_utc(info.not_before)}")
    return context, info


def server_context(certificate: Path, key: Path, now: float) -> ssl.SSLContext:
    """The listeners' context (raises ``CertificateProblem``)."""
    return check_files(certificate, key, now)[0]


class TlsCredentials:
    """The live context of the ``tls:`` listeners and the files it was loaded from."""

    def __init__(self, certificate: Path, key: Path, now: float) -> None:
        self.context, self.info = check_files(certificate, key, now)
        self.files = (certificate, key)

    def reload(self, certificate: Path, key: Path, now: float) -> bool:
        """Load new files into the live context; False when they are the ones in use.

        Raises ``CertificateProblem`` (the live context is then untouched)."""
        _, info = check_files(certificate, key, now)
        # Checked: loading into the live context cannot fail half-way for these files.
        self.context.load_cert_chain(certificate, key)
        changed = (certificate, key) != self.files or info != self.info
        self.files = (certificate, key)
        self.info = info
        return changed
