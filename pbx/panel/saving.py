"""One save from the panel: edit the tenant file, validate it like ``check-config``, write, reload.

The tenant files stay the single source of truth (admins may keep them in git), so a save is:

1. read the tenant file and refuse the save if it changed since the form was shown (its digest,
   carried by the form, differs: another admin saved, or someone edited the file by hand);
2. apply the edit to the text with tomlkit (comments and key order kept: ``tenant_files``);
3. validate the whole configuration with that text in place of the file, by the same loader
   ``pbx check-config`` and ``pbx reload`` use; any problem refuses the save and nothing changes;
4. write the file atomically, keeping the previous version (``TenantWriter``), and reload the
   running server exactly as ``pbx reload`` does.

Steps 1-3 are CPU work that grows with the tenant (tomlkit parses a 9,000-user file in seconds),
so they run in a worker process: the event loop keeps serving calls meanwhile. Saves are
serialised by one lock; the writer checks the digest again under it, so a hand edit made while
a save was being validated is still caught.
"""

from __future__ import annotations

import asyncio
import difflib
import re
import tomllib
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pbx.config.build import build_server
from pbx.config.load import load_config
from pbx.config.model import TenantId
from pbx.config.problems import ConfigError, ConfigProblem
from pbx.errors import PbxError
from pbx.panel.incoming_files import (  # 着信設定 (inbound rules)
    PutIncoming,
    RemoveIncoming,
    RuleNotFound,
    put_incoming,
    remove_incoming,
)
from pbx.panel.tenant_files import (
    PasswordRequired,
    StaleFile,
    TenantWriter,
    UserEdit,
    UserExists,
    UserNotFound,
    file_digest,
    new_tenant,
    put_user,
    remove_user,
    set_limits,
    set_numbers,
)

# How much of a file's diff an audit entry keeps.
MAX_DIFF_LINES = 200
_SECRET_LINE = re.compile(r"^([+-]\s*password[a-z0-9_]*\s*=\s*).*$")


# --- edits: plain data, so they can cross into the worker process and into the audit log -----


@dataclass(frozen=True, slots=True)
class SetLimits:
    max_users: int
    recording_users: int
    international_calls: bool


@dataclass(frozen=True, slots=True)
class SetNumbers:
    numbers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PutUser:
    user: UserEdit
    replacing: str | None  # None: a new user


@dataclass(frozen=True, slots=True)
class RemoveUser:
    extension: str


@dataclass(frozen=True, slots=True)
class CreateTenant:
    domain: str


@dataclass(frozen=True, slots=True)
class RemoveTenant:
    pass


@dataclass(frozen=True, slots=True)
class RestoreText:
    """Put back a previous version of the file (its text, read from the history)."""

    text: str
    version_name: str


Edit = (
    SetLimits
    | SetNumbers
    | PutUser
    | RemoveUser
    | CreateTenant
    | RemoveTenant
    | RestoreText
    | PutIncoming  # 着信設定: a number's rules (pbx.panel.incoming_files)
    | RemoveIncoming
)


def apply_edit(text: str | None, edit: Edit) -> str | None:
    """The tenant file's new text after ``edit`` (None: the file is removed). Pure."""
    if isinstance(edit, CreateTenant):
        return new_tenant(edit.domain)
    if isinstance(edit, RemoveTenant):
        return None
    if isinstance(edit, RestoreText):
        return edit.text
    if text is None:
        raise PbxError("the tenant file does not exist")
    if isinstance(edit, SetLimits):
        return set_limits(
            text,
            max_users=edit.max_users,
            recording_users=edit.recording_users,
            international_calls=edit.international_calls,
        )
    if isinstance(edit, SetNumbers):
        return set_numbers(text, edit.numbers)
    if isinstance(edit, PutUser):
        return put_user(text, edit.user, replacing=edit.replacing)
    if isinstance(edit, PutIncoming):
        return put_incoming(text, edit)
    if isinstance(edit, RemoveIncoming):
        return remove_incoming(text, edit)
    return remove_user(text, edit.extension)


def redacted_diff(old: str | None, new: str | None, name: str) -> list[str]:
    """A unified diff for the audit log, with credential values (HA1 hashes are
    password-equivalent for digest authentication) replaced by ``***``."""
    lines = difflib.unified_diff(
        (old or "").splitlines(),
        (new or "").splitlines(),
        fromfile=f"a/{name}",
        tofile=f"b/{name}",
        lineterm="",
        n=1,
    )
    out = [_SECRET_LINE.sub(r"\1***", line) for line in lines]
    if len(out) > MAX_DIFF_LINES:
        out = [*out[:MAX_DIFF_LINES], f"... {len(out) - MAX_DIFF_LINES} more lines"]
    return out


def edit_error_code(exc: PbxError) -> str:
    """A stable name for why an edit could not be applied (the panel shows it translated)."""
    if isinstance(exc, UserExists):
        return "user_exists"
    if isinstance(exc, UserNotFound):
        return "user_missing"
    if isinstance(exc, PasswordRequired):
        return "password_required"
    if isinstance(exc, RuleNotFound):
        return "rule_missing"
    return ""


# --- step 1-3, in the worker process -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Prepared:
    """What the worker found: the new text, or why not."""

    outcome: Literal["ok", "stale", "invalid"]
    old_text: str | None = None
    new_text: str | None = None
    old_digest: str | None = None
    problems: tuple[ConfigProblem, ...] = ()
    error: str = ""  # an edit that could not be applied (e.g. the user is gone)
    error_code: str = ""  # the same as a code the panel translates (``edit_error_code``)


def prepare_save(
    config_path: Path, tenant_path: Path, edit: Edit, expected_digest: str | None
) -> Prepared:
    """Read, check the digest, edit and validate. Runs in a worker process; no writes."""
    try:
        raw: bytes | None = tenant_path.read_bytes()
    except FileNotFoundError:
        raw = None
    current = file_digest(raw) if raw is not None else None
    if current != expected_digest:
        return Prepared("stale", old_digest=current)
    old_text = raw.decode("utf-8") if raw is not None else None
    try:
        new_text = apply_edit(old_text, edit)
    except PbxError as exc:
        return Prepared(
            "invalid",
            old_text=old_text,
            old_digest=current,
            error=str(exc),
            error_code=edit_error_code(exc),
        )
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        return Prepared("invalid", old_text=old_text, old_digest=current, error=str(exc))
    override = new_text.encode("utf-8") if new_text is not None else None
    try:
        load_config(config_path, overrides={tenant_path: override})
    except ConfigError as exc:
        return Prepared(
            "invalid",
            old_text=old_text,
            new_text=new_text,
            old_digest=current,
            problems=tuple(exc.problems),
        )
    except OSError as exc:
        return Prepared("invalid", old_text=old_text, old_digest=current, error=str(exc))
    return Prepared("ok", old_text=old_text, new_text=new_text, old_digest=current)


# --- the saver (event loop side) ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReloadOutcome:
    ok: bool
    version: int
    errors: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SaveOutcome:
    outcome: Literal["saved", "stale", "invalid", "reload_failed"]
    version: int = 0
    own_problems: tuple[ConfigProblem, ...] = ()  # problems in this tenant's file
    other_problems: tuple[ConfigProblem, ...] = ()  # problems elsewhere (shown to operators)
    error: str = ""
    error_code: str = ""  # see ``edit_error_code``
    diff: tuple[str, ...] = field(default_factory=tuple)
    digest: str | None = None  # the file's digest after the save


def tenants_dir(config_path: Path) -> Path:
    """The folder of the tenant files, as the config loader reads it from pbx.toml."""
    return build_server(config_path, config_path.read_bytes()).tenants_dir


def same_file(a: str | Path, b: Path) -> bool:
    try:
        return Path(a).resolve() == b.resolve()
    except OSError:
        return False


class TenantSaver:
    """Serialises saves; validates in ``executor`` (a worker process), writes, reloads."""

    def __init__(
        self,
        config_path: Path,
        writer: TenantWriter,
        reload: Callable[[], Awaitable[ReloadOutcome]],
        executor: Executor | None = None,
    ) -> None:
        self.config_path = config_path
        self.writer = writer
        self._reload = reload
        self._executor = executor
        self._lock = asyncio.Lock()

    def tenant_path(self, tenant: TenantId) -> Path:
        return tenants_dir(self.config_path) / f"{tenant}.toml"

    def current_digest(self, tenant: TenantId) -> str | None:
        """The tenant file's digest now (None: no such file); forms carry it."""
        try:
            return file_digest(self.tenant_path(tenant).read_bytes())
        except FileNotFoundError:
            return None

    async def save(
        self, tenant: TenantId, edit: Edit, expected_digest: str | None, now: float
    ) -> SaveOutcome:
        path = self.tenant_path(tenant)
        loop = asyncio.get_running_loop()
        async with self._lock:
            prepared = await loop.run_in_executor(
                self._executor, prepare_save, self.config_path, path, edit, expected_digest
            )
            if prepared.outcome == "stale":
                return SaveOutcome("stale")
            if prepared.outcome == "invalid":
                own = tuple(p for p in prepared.problems if same_file(p.file, path))
                other = tuple(p for p in prepared.problems if not same_file(p.file, path))
                return SaveOutcome(
                    "invalid",
                    own_problems=own,
                    other_problems=other,
                    error=prepared.error,
                    error_code=prepared.error_code,
                )
            try:
                if prepared.new_text is None:
                    if prepared.old_digest is not None:
                        await asyncio.to_thread(
                            self.writer.remove, path, expected_digest=prepared.old_digest, now=now
                        )
                    digest = None
                else:
                    digest = await asyncio.to_thread(
                        self.writer.write,
                        path,
                        prepared.new_text,
                        expected_digest=prepared.old_digest,
                        now=now,
                    )
            except StaleFile:
                return SaveOutcome("stale")
            diff = tuple(redacted_diff(prepared.old_text, prepared.new_text, path.name))
            reloaded = await self._reload()
            if not reloaded.ok:
                # Validated a moment ago, so another file changed in between: put this one
                # back, so that a refused reload leaves the disk as it found it.
                await asyncio.to_thread(self._put_back, path, prepared.old_text, digest, now)
                return SaveOutcome(
                    "reload_failed",
                    version=reloaded.version,
                    error="; ".join(reloaded.errors),
                    diff=diff,
                    digest=digest,
                )
            return SaveOutcome("saved", version=reloaded.version, diff=diff, digest=digest)

    def _put_back(self, path: Path, old_text: str | None, digest: str | None, now: float) -> None:
        if old_text is None:
            if digest is not None:  # the save created the file
                self.writer.remove(path, expected_digest=digest, now=now)
        else:
            self.writer.write(path, old_text, expected_digest=digest, now=now)
