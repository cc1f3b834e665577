"""``pbx panel``: the control panel's accounts from the command line.

- ``pbx panel add-operator NAME``: an operator (the service provider: every tenant);
- ``pbx panel add-admin NAME --tenant ID``: a tenant admin (that tenant only);
- ``pbx panel list [--tenant ID]``: the accounts.

The password is read without echo from a terminal (asked twice), or as one line from standard
input when it is piped (``printf '%s\\n' "$PW" | pbx panel add-operator root``). The database is
the one at the configuration's ``[storage] data_dir``; the server may be running meanwhile (WAL:
one writer at a time, readers never blocked), so its open call records are left alone.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from pbx.config.load import ConfigError, load_config
from pbx.config.model import ConfigSnapshot, StorageSettings
from pbx.panel.accounts import (
    Account,
    AccountExists,
    PanelStore,
    Role,
    account_name_problem,
)
from pbx.panel.passwords import hash_password, password_problem
from pbx.store import Store, describe_url


class _Refused(Exception):
    """The command cannot go ahead; the message says why (exit 1)."""


def main(args: argparse.Namespace) -> int:
    """Carry out one ``pbx panel`` subcommand; 0 on success, 1 with a message otherwise."""
    try:
        if args.panel_command == "list":
            return _list(args)
        role: Role = "operator" if args.panel_command == "add-operator" else "tenant_admin"
        return _add(args, role)
    except _Refused as exc:
        sys.stderr.write(f"pbx panel {args.panel_command}: {exc}\n")
        return 1


def _add(args: argparse.Namespace, role: Role) -> int:
    name: str = args.name
    problem = account_name_problem(name)
    if problem is not None:
        raise _Refused(problem)
    snapshot = _load(args.config)
    tenant: str | None = None
    if role == "tenant_admin":
        tenant = args.tenant
        if tenant not in snapshot.tenants:
            known = ", ".join(sorted(snapshot.tenants)) or "none"
            raise _Refused(f"no tenant {tenant!r} in the configuration (tenants: {known})")
    storage = snapshot.server.storage
    # Refuse a taken name before asking for a password.
    if asyncio.run(_find(storage, name)) is not None:
        raise _Refused(f"an account named {name!r} already exists")
    password = _read_password(name, sys.stdin)
    problem = password_problem(password, name)
    if problem is not None:
        raise _Refused(problem)
    account = asyncio.run(_create(storage, name, hash_password(password), role, tenant))
    what = "operator" if role == "operator" else f"tenant admin of {tenant}"
    where = storage.data_dir if storage.database is None else describe_url(storage.database)
    sys.stdout.write(f"created {what} {account.name!r} (account {account.id}) in {where}\n")
    return 0


def _list(args: argparse.Namespace) -> int:
    snapshot = _load(args.config)
    accounts = asyncio.run(_accounts(snapshot.server.storage, args.tenant))
    out = sys.stdout
    if not accounts:
        out.write("no panel accounts\n")
        return 0
    width = max(len(a.name) for a in accounts)
    for a in accounts:
        role = "operator" if a.role == "operator" else f"admin of {a.tenant}"
        created = datetime.fromtimestamp(a.created_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
        disabled = "  (disabled)" if a.disabled else ""
        out.write(f"{a.name:<{width}}  {role:<24}  created {created}{disabled}\n")
    return 0


def _load(config: Path) -> ConfigSnapshot:
    try:
        return load_config(config)
    except ConfigError as exc:
        raise _Refused(f"the configuration cannot be loaded:\n{exc}") from None


def _read_password(name: str, stdin: TextIO) -> str:
    """The new password: typed twice without echo on a terminal, else one line of ``stdin``."""
    if stdin.isatty():
        try:
            first = getpass.getpass(f"Password for {name}: ")
            second = getpass.getpass("Password again: ")
        except EOFError:
            raise _Refused("no password given") from None
        if first != second:
            raise _Refused("the two passwords differ")
        return first
    line = stdin.readline()
    if not line:
        raise _Refused("no password on standard input (one line expected)")
    return line.removesuffix("\n").removesuffix("\r")


def _cli_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):  # no login name (a container without a passwd entry)
        return "cli"


async def _open(storage: StorageSettings) -> Store:
    # Beside a running server: its open call records are calls in progress, not a crash's.
    return await Store.open_storage(storage.data_dir, storage.database, recover_calls=False)


async def _find(storage: StorageSettings, name: str) -> Account | None:
    store = await _open(storage)
    try:
        found = await PanelStore(store).find_account(name)
    finally:
        await store.close()
    return None if found is None else found[0]


async def _create(
    storage: StorageSettings, name: str, password_hash: str, role: Role, tenant: str | None
) -> Account:
    store = await _open(storage)
    try:
        panel = PanelStore(store)
        now = time.time()
        try:
            account = await panel.create_account(name, password_hash, role, tenant, now)
        except AccountExists as exc:
            raise _Refused(str(exc)) from None
        await panel.audit(
            _cli_actor(), "operator", tenant, "account_created", account.name, {"role": role}, now
        )
    finally:
        await store.close()
    return account


async def _accounts(storage: StorageSettings, tenant: str | None) -> list[Account]:
    store = await _open(storage)
    try:
        return await PanelStore(store).accounts(tenant)
    finally:
        await store.close()
