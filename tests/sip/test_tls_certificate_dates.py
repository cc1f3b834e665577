"""Certificate dates are read with ``cryptography`` (a supported x509 parser), not the stdlib's
private test helper: the leaf of a chain file is the one checked, garbage is refused by name."""

from __future__ import annotations

import inspect
import time
from pathlib import Path

import pytest

import pbx.sip.tls
from pbx.sip.tls import CertificateProblem, check_files
from tests.tlscerts import make_certificate, make_expired_certificate


def test_the_leaf_of_a_chain_file_is_the_one_dated(tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path, "leaf", "leaf.test")
    expired, _ = make_expired_certificate(tmp_path, "old")
    chain = tmp_path / "chain.crt"
    chain.write_text(cert.read_text() + expired.read_text())  # leaf first, then an "issuer"
    now = time.time()
    _, info = check_files(chain, key, now)
    assert info.subject == "CN=leaf.test"
    assert now - 120 < info.not_before <= now
    assert info.not_after - info.not_before == pytest.approx(30 * 86400, abs=1)
    # The expired one as the leaf (its key is the seed's): its own dates, to the second.
    with pytest.raises(CertificateProblem, match=r"expired on 2020-02-01 00:00:00 UTC"):
        check_files(expired, tmp_path / "old-seed.key", now)


def test_no_private_ssl_api_is_used() -> None:
    source = inspect.getsource(pbx.sip.tls)
    assert "_test_decode_cert" not in source
    assert "ssl._ssl" not in source
