#!/usr/bin/env bash
# Install everything the tests need (SIPp, espeak-ng and sox from Debian; Python deps into .venv),
# then run the linters, the type checker and the whole test suite.
source "$(dirname "$0")/_env.sh"
apt_install sip-tester espeak-ng sox
ensure_venv ".[test]"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
.venv/bin/ruff check pbx tests loadtests
.venv/bin/ruff format --check pbx tests loadtests
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
