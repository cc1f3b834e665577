"""The panel's records in the server's database: accounts, sessions, the audit log, the pool.

An adapter over ``pbx.store.Store`` (tables of schema migration 2). Writes go through the
store's single writer and share its group commits with registrations, so each one is written
never to break a constraint: values are checked here first, inserts that may collide use
``ON CONFLICT DO NOTHING`` and read the rowcount. Statements that must land together (an account
and its sessions) are queued without an ``await`` between them, which puts them in one commit.

Sessions: the browser holds a random token (32 bytes, URL-safe); the database keeps only its
SHA-256, so a copy of the database signs nobody in. A session ends after ``idle_seconds``
without a request or ``max_seconds`` after sign-in, whichever comes first, or when its account
is disabled or deleted.

Times are POSIX seconds, passed in.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias, cast

from pbx.errors import PbxError
from pbx.store import Store

Role = Literal["operator", "tenant_admin"]
ROLES: tuple[Role, ...] = ("operator", "tenant_admin")
Json: TypeAlias = str | int | float | bool | list["Json"] | dict[str, "Json"] | None

TOKEN_BYTES = 32
SESSION_REFRESH_SECONDS = 60.0  # last_seen_at is written at most this often per session
_ACCOUNT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")


class AccountExists(PbxError):
    """An account with this name (compared without case) already exists."""

    def __init__(self, name: str) -> None:
        super().__init__(f"an account named {name!r} already exists")
        self.name = name


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    name: str
    role: Role
    tenant: str | None  # the tenant an admin manages; None for an operator
    created_at: float
    disabled: bool


@dataclass(frozen=True, slots=True)
class Session:
    token_hash: str  # SHA-256 (hex) of the browser's token
    account: Account
    csrf_token: str
    created_at: float
    last_seen_at: float
    expires_at: float  # the absolute end (sign-in + max_seconds)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: float
    actor: str  # the account name (or "cli:<user>" for the command line)
    role: str
    tenant: str | None  # the tenant concerned; None for service-wide actions
    action: str
    target: str
    detail: dict[str, Json]


@dataclass(frozen=True, slots=True)
class PoolNumber:
    number: str
    note: str
    added_at: float


def account_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a panel account, or None when it can."""
    if not _ACCOUNT_NAME.fullmatch(name):
        return (
            "an account name has 1-64 characters: ASCII letters, digits and . _ @ + -,"
            " starting with a letter or digit"
        )
    return None


def token_hash(token: str) -> str:
    """What the database keeps of a session token: its SHA-256, in hex."""
    return hashlib.sha256(token.encode()).hexdigest()


_ACCOUNT_COLUMNS = "id, name, role, tenant, created_at, disabled"
_SESSION_COLUMNS = (
    "s.token_hash, s.csrf_token, s.created_at, s.last_seen_at, s.expires_at,"
    " a.id, a.name, a.role, a.tenant, a.created_at, a.disabled"
)
_AUDIT_COLUMNS = "id, at, actor, role, tenant, action, target, detail"


class PanelStore:
    """Accounts, sessions, the audit log and the number pool, in the server's database."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- accounts ------------------------------------------------------------------------------

    async def create_account(
        self, name: str, password_hash: str, role: Role, tenant: str | None, now: float
    ) -> Account:
        """Add an account; raises ``AccountExists`` if the name is taken (in any case)."""
        problem = account_name_problem(name)
        if problem is not None:
            raise ValueError(problem)
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        if (role == "tenant_admin") != (tenant is not None) or tenant == "":
            raise ValueError("a tenant admin needs a tenant; an operator has none")
        if not password_hash:
            raise ValueError("an account needs a password hash")
        inserted = await self.store.write(
            "INSERT INTO panel_accounts (name, role, tenant, password_hash, created_at, disabled)"
            " VALUES (?, ?, ?, ?, ?, 0) ON CONFLICT DO NOTHING",
            (name, role, tenant, password_hash, now),
        )
        if inserted != 1:
            raise AccountExists(name)
        found = await self.find_account(name)
        if found is None:  # deleted again between the commit and this read
            raise AccountExists(name)
        return found[0]

    async def find_account(self, name: str) -> tuple[Account, str] | None:
        """The account named ``name`` (without case) and its password hash, disabled or not."""
        rows = await self.store.fetch(
            f"SELECT {_ACCOUNT_COLUMNS}, password_hash FROM panel_accounts WHERE name = ?",
            (name,),
        )
        if not rows:
            return None
        return _account(rows[0][:6]), str(rows[0][6])

    async def account(self, account_id: int) -> Account | None:
        rows = await self.store.fetch(
            f"SELECT {_ACCOUNT_COLUMNS} FROM panel_accounts WHERE id = ?", (account_id,)
        )
        return _account(rows[0]) if rows else None

    async def accounts(self, tenant: str | None = None) -> list[Account]:
        """Every account by name, or (``tenant`` given) that tenant's admins."""
        where, params = ("WHERE tenant = ?", (tenant,)) if tenant is not None else ("", ())
        rows = await self.store.fetch(
            f"SELECT {_ACCOUNT_COLUMNS} FROM panel_accounts {where} ORDER BY name", params
        )
        return [_account(row) for row in rows]

    async def set_password_hash(self, account_id: int, password_hash: str) -> bool:
        """Replace an account's hash (a new password, or a rehash); False if there is no account.

        Sessions are kept: after a password change, end the others with ``end_sessions_of``.
        """
        if not password_hash:
            raise ValueError("an account needs a password hash")
        changed = await self.store.write(
            "UPDATE panel_accounts SET password_hash = ? WHERE id = ?", (password_hash, account_id)
        )
        return changed == 1

    async def set_disabled(self, account_id: int, disabled: bool) -> bool:
        """Disable (ending its sessions) or enable an account; False if there is no account."""
        changed = self.store.write(
            "UPDATE panel_accounts SET disabled = ? WHERE id = ?", (int(disabled), account_id)
        )
        if disabled:
            await self.store.write("DELETE FROM panel_sessions WHERE account_id = ?", (account_id,))
        return await changed == 1

    async def delete_account(self, account_id: int) -> bool:
        """Delete an account and its sessions (one commit); False if there was none."""
        sessions = self.store.write(
            "DELETE FROM panel_sessions WHERE account_id = ?", (account_id,)
        )
        deleted = self.store.write("DELETE FROM panel_accounts WHERE id = ?", (account_id,))
        await sessions
        return await deleted == 1

    async def delete_tenant_accounts(self, tenant: str) -> int:
        """Delete a tenant's admins and their sessions (one commit); how many accounts."""
        sessions = self.store.write(
            "DELETE FROM panel_sessions WHERE account_id IN"
            " (SELECT id FROM panel_accounts WHERE tenant = ?)",
            (tenant,),
        )
        deleted = self.store.write("DELETE FROM panel_accounts WHERE tenant = ?", (tenant,))
        await sessions
        return await deleted

    # -- sessions ------------------------------------------------------------------------------

    async def new_session(
        self, account: Account, now: float, idle_seconds: float, max_seconds: float
    ) -> tuple[str, Session]:
        """Start a session: the token for the cookie (returned only here) and the session.

        Sessions expired by then, anyone's, are deleted in the same commit.
        """
        if idle_seconds <= 0 or max_seconds <= 0:
            raise ValueError("session lifetimes must be positive")
        token = secrets.token_urlsafe(TOKEN_BYTES)
        session = Session(
            token_hash=token_hash(token),
            account=account,
            csrf_token=secrets.token_urlsafe(TOKEN_BYTES),
            created_at=now,
            last_seen_at=now,
            expires_at=now + max_seconds,
        )
        purged = self.store.write(
            "DELETE FROM panel_sessions WHERE expires_at <= ? OR last_seen_at <= ?",
            (now, now - idle_seconds),
        )
        inserted = self.store.write(
            "INSERT INTO panel_sessions"
            " (token_hash, account_id, csrf_token, created_at, last_seen_at, expires_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (
                session.token_hash,
                account.id,
                session.csrf_token,
                session.created_at,
                session.last_seen_at,
                session.expires_at,
            ),
        )
        await purged
        if await inserted != 1:  # 256 random bits collided: not in this universe
            raise PbxError("a new session token collided with an existing one")
        return token, session

    async def session(self, token: str, now: float, idle_seconds: float) -> Session | None:
        """The live session of ``token``, or None (unknown, expired, or its account disabled).

        An expired session is deleted. ``last_seen_at`` is refreshed at most once a minute.
        """
        hashed = token_hash(token)
        rows = await self.store.fetch(
            f"SELECT {_SESSION_COLUMNS} FROM panel_sessions AS s"
            " LEFT JOIN panel_accounts AS a ON a.id = s.account_id WHERE s.token_hash = ?",
            (hashed,),
        )
        if not rows:
            return None
        row = rows[0]
        last_seen_at, expires_at = float(row[3]), float(row[4])
        gone = row[5] is None or bool(row[10])  # account deleted or disabled
        if gone or now >= expires_at or now - last_seen_at >= idle_seconds:
            await self.store.write("DELETE FROM panel_sessions WHERE token_hash = ?", (hashed,))
            return None
        if now - last_seen_at >= SESSION_REFRESH_SECONDS:
            await self.store.write(
                "UPDATE panel_sessions SET last_seen_at = ? WHERE token_hash = ?"
                " AND last_seen_at < ?",
                (now, hashed, now),
            )
            last_seen_at = now
        return Session(
            token_hash=hashed,
            account=_account(row[5:11]),
            csrf_token=str(row[1]),
            created_at=float(row[2]),
            last_seen_at=last_seen_at,
            expires_at=expires_at,
        )

    async def end_session(self, token: str) -> bool:
        """Sign out: delete the session of ``token``; False if there was none."""
        deleted = await self.store.write(
            "DELETE FROM panel_sessions WHERE token_hash = ?", (token_hash(token),)
        )
        return deleted == 1

    async def end_sessions_of(self, account_id: int) -> int:
        """Sign an account out everywhere; how many sessions ended."""
        return await self.store.write(
            "DELETE FROM panel_sessions WHERE account_id = ?", (account_id,)
        )

    # -- live status: a long-lived event stream checks its session without using it ------------
    async def session_alive(self, hashed: str, now: float) -> bool:
        """Whether the session (by its stored hash) still exists, has not reached its end and
        belongs to an enabled account. Unlike ``session`` this never refreshes ``last_seen_at``:
        a status page left open must not keep its session from going idle."""
        rows = await self.store.fetch(
            "SELECT s.expires_at, a.disabled FROM panel_sessions AS s"
            " JOIN panel_accounts AS a ON a.id = s.account_id WHERE s.token_hash = ?",
            (hashed,),
        )
        return bool(rows) and now < float(rows[0][0]) and not bool(rows[0][1])

    # -- the audit log -------------------------------------------------------------------------

    async def audit(
        self,
        actor: str,
        role: str,
        tenant: str | None,
        action: str,
        target: str,
        detail: dict[str, Json],
        now: float,
    ) -> None:
        """Record that ``actor`` did ``action`` to ``target`` (returns once committed)."""
        await self.store.write(
            "INSERT INTO panel_audit (at, actor, role, tenant, action, target, detail)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                now,
                actor,
                role,
                tenant,
                action,
                target,
                json.dumps(detail, ensure_ascii=False, sort_keys=True),
            ),
        )

    async def audit_log(
        self, *, tenant: str | None = None, limit: int = 100, before_id: int | None = None
    ) -> list[AuditEntry]:
        """The latest entries, newest first: every tenant's, or (``tenant`` given) one tenant's.

        ``before_id`` pages back: the entries older than that one.
        """
        where: list[str] = []
        params: list[Any] = []
        if tenant is not None:
            where.append("tenant = ?")
            params.append(tenant)
        if before_id is not None:
            where.append("(at, id) < (SELECT at, id FROM panel_audit WHERE id = ?)")
            params.append(before_id)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        params.append(max(0, limit))
        rows = await self.store.fetch(
            f"SELECT {_AUDIT_COLUMNS} FROM panel_audit {clause} ORDER BY at DESC, id DESC LIMIT ?",
            tuple(params),
        )
        return [_audit_entry(row) for row in rows]

    # -- the operator's number pool ------------------------------------------------------------

    async def pool_numbers(self) -> list[PoolNumber]:
        """The numbers the operator holds for tenants, in order."""
        rows = await self.store.fetch(
            "SELECT number, note, added_at FROM number_pool ORDER BY number"
        )
        return [PoolNumber(str(r[0]), str(r[1]), float(r[2])) for r in rows]

    async def add_pool_number(self, number: str, note: str, now: float) -> bool:
        """Add a number to the pool; False if it is there already."""
        if not number:
            raise ValueError("a pool number must not be empty")
        inserted = await self.store.write(
            "INSERT INTO number_pool (number, note, added_at) VALUES (?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            (number, note, now),
        )
        return inserted == 1

    async def remove_pool_number(self, number: str) -> bool:
        """Take a number out of the pool; False if it was not there."""
        deleted = await self.store.write("DELETE FROM number_pool WHERE number = ?", (number,))
        return deleted == 1


def _account(row: tuple[Any, ...]) -> Account:
    return Account(
        id=int(row[0]),
        name=str(row[1]),
        role=cast(Role, row[2]),
        tenant=row[3],
        created_at=float(row[4]),
        disabled=bool(row[5]),
    )


def _audit_entry(row: tuple[Any, ...]) -> AuditEntry:
    try:
        detail = json.loads(row[7])
    except ValueError:
        detail = {"unreadable": row[7]}
    if not isinstance(detail, dict):
        detail = {"value": detail}
    return AuditEntry(
        id=int(row[0]),
        at=float(row[1]),
        actor=str(row[2]),
        role=str(row[3]),
        tenant=row[4],
        action=str(row[5]),
        target=str(row[6]),
        detail=detail,
    )
