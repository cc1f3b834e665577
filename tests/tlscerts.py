"""Test certificates for SIP over TLS, made by Debian's ``openssl`` command in a temp folder."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def openssl() -> str:
    path = shutil.which("openssl")
    assert path is not None, "openssl (Debian package openssl) is needed for the TLS tests"
    return path


def _run(*args: str, cwd: Path) -> None:
    subprocess.run([openssl(), *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def make_certificate(folder: Path, name: str, common_name: str = "pbx.test") -> tuple[Path, Path]:
    """A self-signed P-256 certificate valid for 30 days from now, and its key (PEM)."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    _run(
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "30",
        "-subj",
        f"/CN={common_name}",
        "-addext",
        f"subjectAltName=DNS:{common_name},IP:127.0.0.1",
        "-keyout",
        str(key),
        "-out",
        str(cert),
        cwd=folder,
    )
    return cert, key


_CA_CONFIG = """[ca]
default_ca = CA_default
[CA_default]
database = {db}/index.txt
new_certs_dir = {db}
serial = {db}/serial
default_md = sha256
policy = p
unique_subject = no
[p]
commonName = supplied
"""


def make_expired_certificate(folder: Path, name: str) -> tuple[Path, Path]:
    """A certificate that was valid in January 2020 only, and its key."""
    _, key = make_certificate(folder, f"{name}-seed")
    db = folder / f"{name}-db"
    db.mkdir()
    (db / "index.txt").write_text("")
    (db / "serial").write_text("01\n")
    config = folder / f"{name}-ca.cnf"
    config.write_text(_CA_CONFIG.format(db=db))
    request = folder / f"{name}.csr"
    _run("req", "-new", "-key", str(key), "-subj", "/CN=pbx.test", "-out", str(request), cwd=folder)
    out = folder / f"{name}.crt"
    _run(
        "ca",
        "-batch",
        "-notext",
        "-config",
        str(config),
        "-selfsign",
        "-keyfile",
        str(key),
        "-in",
        str(request),
        "-startdate",
        "20200101000000Z",
        "-enddate",
        "20200201000000Z",
        "-out",
        str(out),
        cwd=folder,
    )
    return out, key
