#!/usr/bin/env bash
# Install everything the tests need (SIPp, espeak-ng and sox from Debian; Python deps into .venv),
# then run the linters, the type checker and the whole test suite (with the pure cores' coverage).
source "$(dirname "$0")/_env.sh"
apt_install sip-tester espeak-ng sox
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
