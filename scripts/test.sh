#!/usr/bin/env bash
# Install everything the tests need (SIPp, espeak-ng, sox, Chromium, and the stock softphones
# baresip and linphone-cli for tests/interop, from Debian; Python deps
# into .venv), then run the linters, the type checker and the whole test suite (with the pure
# cores' coverage). The browser tests drive Debian's chromium through Playwright by its path:
# Playwright downloads no browser.
source "$(dirname "$0")/_env.sh"
# baresip, linphone-cli: the interop, getting-started and TLS/SRTP tests (tests/interop,
# tests/deploy, tests/integration/test_tls_baresip.py); systemd: the unit file is checked by
# systemd-analyze verify; openssl: the TLS tests make their certificates with it; postgresql:
# the shared store's tests start a private server (pbx/pg_local.py); kamailio: the SIP edge of
# scripts/cluster.sh (tests/integration/test_cluster.py); nftables: the relay's kernel fast path
# (tests/media/test_relay_kernel.py loads a private table, as root).
apt_install sip-tester espeak-ng sox chromium baresip linphone-cli systemd openssl postgresql kamailio rtpengine-daemon nftables
ensure_venv ".[test]"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
.venv/bin/ruff check pbx tests loadtests
.venv/bin/ruff format --check pbx tests loadtests
.venv/bin/mypy
# The whole suite also enforces the pure cores' coverage (pyproject.toml [tool.coverage]).
if [ "$#" -eq 0 ]; then
    .venv/bin/python -m pytest --cov-fail-under=90
else
    .venv/bin/python -m pytest "$@"
fi
