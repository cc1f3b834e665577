#!/usr/bin/env bash
# Install everything the tests need (SIPp, espeak-ng, sox and Chromium from Debian; Python deps
# into .venv), then run the linters, the type checker and the whole test suite (with the pure
# cores' coverage). The browser tests drive Debian's chromium through Playwright by its path:
# Playwright downloads no browser.
source "$(dirname "$0")/_env.sh"
apt_install sip-tester espeak-ng sox chromium baresip-core openssl
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
