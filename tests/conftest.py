"""Fixtures shared across folders: a private PostgreSQL server (issue #20's shared store).

One server per test session, started on first use only (``pbx.pg_local``: initdb into a temp
folder, a Unix socket there, run as the ``postgres`` user when we are root) and stopped by pid
at the end, even when tests fail. Each test gets a database of its own.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import pytest

from pbx.pg_local import LocalPostgres

_names = itertools.count(1)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[LocalPostgres]:
    with LocalPostgres() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: LocalPostgres) -> Callable[[], str]:
    """Makes a fresh, empty database and returns its URL (as often as called)."""

    def make() -> str:
        return postgres_server.create_database(f"t{next(_names)}")

    return make
