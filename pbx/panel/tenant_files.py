"""Tenant files edited by the control panel, and the writer that saves them (docs/design.md 5).

The tenant files stay the single source of truth: admins keep them in git and edit them by hand
too, so an edit from the panel changes only what it must. Every edit parses the text with tomlkit,
changes the few items concerned and renders the document again: comments, blank lines, key order,
quoting and alignment of everything else come back byte for byte. The edits are pure functions
(text in, text out); they do not validate the rules (``pbx.config.load.load_config`` does, before
a save) beyond what they need to find their way.

Where comments go. tomlkit keeps the lines between the last key of a table and the next header
(blank lines, comments) inside the *earlier* table. We read that gap in three parts: comment
lines directly under the keys belong to the table above, comment lines directly above the next
header belong to the entry below (above the first entry of a section they describe the section),
and the rest stays between the two. So removing an entry takes its own comments with it and
keeps every other comment where it was; adding an entry after the last one of a section puts
it before the comments that introduce the next section.

``TenantWriter`` is the only part that touches the disk: a save is refused when the file changed
since it was read (``StaleFile``), the previous version is kept in a history folder, and the new
text replaces the file atomically (temp file, fsync, ``os.replace``, fsync of the folder). It uses
no threads and no event loop; the caller serialises saves.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import tomllib
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import tomlkit
from tomlkit.container import Container
from tomlkit.exceptions import TOMLKitError
from tomlkit.items import AoT, Comment, InlineTable, Item, Null, Table, Whitespace
from tomlkit.toml_document import TOMLDocument

from pbx.errors import PbxError
from pbx.numbers import normalize_number
from pbx.sip.digest import Algorithm, compute_ha1

__all__ = [
    "PasswordRequired",
    "StaleFile",
    "TenantFileError",
    "TenantText",
    "TenantWriter",
    "UnknownVersion",
    "UserEdit",
    "UserExists",
    "UserNotFound",
    "Version",
    "file_digest",
    "new_tenant",
    "put_user",
    "read_tenant",
    "remove_user",
    "set_limits",
    "set_numbers",
]

# The conventional key order of each table (config/README.md, acme.toml); keys an edit adds are
# placed after the nearest key that comes before them in this order.
_LIMIT_KEYS = ("max_users", "recording_users", "international_calls")
_USER_KEYS = (
    "extension",
    "password",
    "password_ha1_md5",
    "password_ha1_sha256",
    "name",
    "department",
    "caller_id",
    "recording",
    "forward",
)
_FORWARD_KEYS = ("busy", "no_answer", "offline")
_HA1_KEYS: dict[str, Algorithm] = {"password_ha1_md5": "MD5", "password_ha1_sha256": "SHA-256"}


# --------------------------------------------------------------------------------------------
# Errors


class TenantFileError(PbxError):
    """A tenant file cannot be edited or saved as asked."""


class UserNotFound(TenantFileError):
    """The user to edit or remove is not in the file."""

    def __init__(self, extension: str) -> None:
        super().__init__(f"user {extension} is not in the tenant file")
        self.extension = extension


class UserExists(TenantFileError):
    """Another user of the file already has this extension."""

    def __init__(self, extension: str) -> None:
        super().__init__(f"user {extension} is already in the tenant file")
        self.extension = extension


class PasswordRequired(TenantFileError):
    """The edit needs a new password: a new user, or a new extension with hashed credentials."""

    def __init__(self, extension: str, reason: str) -> None:
        super().__init__(f"user {extension}: a password is required ({reason})")
        self.extension = extension


class StaleFile(TenantFileError):
    """The file changed (or appeared, or went) since the panel read it: the save is refused."""

    def __init__(self, path: Path, expected: str | None, found: str | None) -> None:
        def show(digest: str | None) -> str:
            return "no file" if digest is None else digest[:12]

        super().__init__(
            f"{path} changed since it was read (expected {show(expected)}, found {show(found)})"
        )
        self.path = path
        self.expected = expected
        self.found = found


class UnknownVersion(TenantFileError):
    """No saved version of that name in the tenant's history."""


# --------------------------------------------------------------------------------------------
# Reading


def file_digest(data: bytes) -> str:
    """The SHA-256 of a file's bytes, as lower-case hex (what a save checks for staleness)."""
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class TenantText:
    """A tenant file as read: its text and the digest of its bytes."""

    path: Path
    text: str
    digest: str


def read_tenant(path: Path) -> TenantText:
    """Read a tenant file (UTF-8, line endings untouched) with the digest a save must quote."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TenantFileError(f"{path} is not UTF-8 text: {exc}") from exc
    return TenantText(path, text, file_digest(data))


# --------------------------------------------------------------------------------------------
# The edits


@dataclass(frozen=True, slots=True)
class UserEdit:
    """One extension user as the panel's form gives it (values already normalised).

    Empty optional fields remove their key. ``password`` None keeps the user's credentials.
    """

    extension: str
    name: str = ""
    department: str = ""
    caller_id: str = ""
    recording: bool = False
    forward_busy: str = ""
    forward_no_answer: str = ""
    forward_offline: str = ""
    password: str | None = None

    @property
    def forward(self) -> dict[str, str]:
        """The non-empty forward targets, in the file's key order."""
        targets = (self.forward_busy, self.forward_no_answer, self.forward_offline)
        return {kind: target for kind, target in zip(_FORWARD_KEYS, targets, strict=True) if target}


def set_limits(
    text: str, *, max_users: int, recording_users: int, international_calls: bool
) -> str:
    """Set ``[limits]``; the table is created after ``[tenant]`` when the file has none."""
    doc = _parse(text)
    values: dict[str, object] = {
        "max_users": max_users,
        "recording_users": recording_users,
        "international_calls": international_calls,
    }
    if "limits" in doc:
        limits = doc.item("limits")
        if not isinstance(limits, Table):
            raise TenantFileError("limits is not a table ([limits])")
        with _TailKept(limits):
            for key, value in values.items():
                _put(limits.value, key, value, _LIMIT_KEYS)
    else:
        limits = tomlkit.table()
        for key, value in values.items():
            _put(limits.value, key, value, _LIMIT_KEYS)
        _insert_section(doc, "limits", limits, after=("tenant",))
    return _render(doc, text)


def set_numbers(text: str, numbers: Sequence[str]) -> str:
    """Make the ``[[numbers]]`` entries exactly ``numbers``.

    Entries of numbers that stay are kept as written, with their comments and in their order;
    new numbers are appended in the order given, after the last ``[[numbers]]`` (or after
    ``[limits]`` when there is none). Numbers are compared normalised (``03-1234-5678``
    is ``0312345678``).
    """
    wanted = list(dict.fromkeys(normalize_number(number) for number in numbers))
    if "" in wanted:
        raise TenantFileError("a phone number is empty")
    doc = _parse(text)
    entries = _entries(doc, "numbers")
    kept: set[str] = set()
    doomed: list[int] = []
    for index, entry in enumerate(entries.body if entries is not None else ()):
        value = entry.value.get("number")
        number = normalize_number(value) if isinstance(value, str) else None
        if number in wanted and number not in kept:
            kept.add(number)
        else:
            doomed.append(index)
    for index in reversed(doomed):
        assert entries is not None
        _remove_entry(doc, "numbers", entries, index)
    for number in wanted:
        if number not in kept:
            table = tomlkit.table()
            _put(table.value, "number", number, ("number",))
            _append_entry(doc, "numbers", table, after=("limits", "tenant"))
    return _render(doc, text)


def put_user(text: str, user: UserEdit, *, replacing: str | None) -> str:
    """Add a user (``replacing`` None) after the last ``[[users]]``, or edit user ``replacing``.

    An edit keeps the entry where it is, with its comments and unknown keys; it may change the
    extension. A given password is stored as ``password_ha1_md5`` and ``password_ha1_sha256``
    (HA1 of extension, the tenant's domain as realm, and the password), never in plain text.
    """
    doc = _parse(text)
    entries = _entries(doc, "users")
    found = _find_user(entries, user.extension)
    if replacing is None:
        if found is not None:
            raise UserExists(user.extension)
        if user.password is None:
            raise PasswordRequired(user.extension, "a new user has no credentials yet")
        table = tomlkit.table()
        _fill_user(table.value, user, _realm(doc))
        _append_entry(doc, "users", table, after=("numbers", "limits", "tenant"))
        return _render(doc, text)
    index = _find_user(entries, replacing)
    if entries is None or index is None:
        raise UserNotFound(replacing)
    if found is not None and found != index:
        raise UserExists(user.extension)
    realm = _realm(doc) if user.password is not None else ""
    entry = entries.body[index]
    with _TailKept(entry):
        _fill_user(entry.value, user, realm)
    return _render(doc, text)


def remove_user(text: str, extension: str) -> str:
    """Remove user ``extension`` and the comment lines directly above its ``[[users]]``."""
    doc = _parse(text)
    entries = _entries(doc, "users")
    index = _find_user(entries, extension)
    if entries is None or index is None:
        raise UserNotFound(extension)
    _remove_entry(doc, "users", entries, index)
    return _render(doc, text)


_NEW_TENANT = """\
# Tenant file: the file name is the tenant's id. Set-up order of the control panel:
# usage limits -> phone numbers -> extension users -> inbound settings.

[tenant]
domain = ""                      # SIP domain and digest realm
timezone = ""
default = false                  # phones registering to the server's address belong here
qualify_seconds = 30             # keep-alive OPTIONS to phones every 30 s; 0 = off
forward_caller_id = "original"   # forwarded calls show the caller ("original") or the user ("user")

[limits]
max_users = 0                    # the most extension users (billed on this)
recording_users = 0              # how many users may have recording ON
international_calls = false      # OFF by default
"""
_COMMENT_OFFSET = 33  # where the comments of _NEW_TENANT start, as in config/tenants/acme.toml


def new_tenant(
    domain: str,
    *,
    timezone: str = "Asia/Tokyo",
    default: bool = False,
    max_users: int = 10,
    recording_users: int = 0,
) -> str:
    """The text of a new tenant file: commented ``[tenant]`` and ``[limits]``, no users yet."""
    doc = _parse(_NEW_TENANT)
    tenant = doc.item("tenant")
    limits = doc.item("limits")
    assert isinstance(tenant, Table)
    assert isinstance(limits, Table)
    _put(tenant.value, "domain", domain, ())
    _put(tenant.value, "timezone", timezone, ())
    _put(tenant.value, "default", default, ())
    _put(limits.value, "max_users", max_users, ())
    _put(limits.value, "recording_users", recording_users, ())
    for table in (tenant, limits):
        for key, item in table.value.body:
            if key is not None and item.trivia.comment:
                width = len(key.as_string() + key.sep + item.as_string())
                item.trivia.comment_ws = " " * max(1, _COMMENT_OFFSET - width)
    return _render(doc)


# --------------------------------------------------------------------------------------------
# Document helpers


def _parse(text: str) -> TOMLDocument:
    try:
        return tomlkit.parse(text)
    except TOMLKitError as exc:
        raise TenantFileError(f"the tenant file is not valid TOML: {exc}") from exc


def _render(doc: TOMLDocument, original: str = "") -> str:
    text = doc.as_string()
    if "\r\n" in original and original.count("\n") == original.count("\r\n"):
        # A file written with CRLF line ends keeps them on the lines an edit adds.
        text = _LONE_LF.sub("\r\n", text)
    # A safety net: an edit must never produce text that a TOML reader refuses.
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # pragma: no cover - a bug in the edits
        raise TenantFileError(f"the edit produced invalid TOML: {exc}") from exc
    return text


def _realm(doc: TOMLDocument) -> str:
    """The digest realm: the ``[tenant]`` domain as the loader reads it."""
    tenant = doc.get("tenant")
    domain = tenant.get("domain") if isinstance(tenant, Mapping) else None
    if not isinstance(domain, str) or not domain.strip():
        raise TenantFileError("[tenant] domain is missing: it is the realm of the passwords")
    return domain.lower().rstrip(".")


def _entries(doc: TOMLDocument, key: str) -> AoT | None:
    if key not in doc:
        return None
    item = doc.item(key)
    if not isinstance(item, AoT):
        raise TenantFileError(
            f"{key} is not one block of [[{key}]] entries (written otherwise, or split up by "
            "other tables)"
        )
    return item


def _same_extension(a: str, b: str) -> bool:
    # The loader folds full-width digits (with a warning): an entry written "１００１" is 1001.
    return unicodedata.normalize("NFKC", a).strip() == unicodedata.normalize("NFKC", b).strip()


def _find_user(entries: AoT | None, extension: str) -> int | None:
    for index, entry in enumerate(entries.body if entries is not None else ()):
        value = entry.value.get("extension")
        if isinstance(value, str) and _same_extension(value, extension):
            return index
    return None


def _item(value: object) -> Item:
    """A new tomlkit item; forward targets become ``{ busy = "1002", ... }`` as in acme.toml."""
    if not isinstance(value, dict):
        return tomlkit.item(value)
    table = tomlkit.inline_table()
    for position, (key, target) in enumerate(value.items()):
        item = tomlkit.item(target)
        if position == 0:
            item.trivia.indent = " "
        table.append(key, item)
    table.append(None, Whitespace(" "))
    return table


def _unchanged(current: Item, value: object) -> bool:
    plain = current.unwrap()
    return type(plain) is type(value) and bool(plain == value)


def _put(container: Container, key: str, value: object, order: Sequence[str]) -> None:
    """Set ``key``: in place when present (its comment kept), else after its predecessor.

    An unchanged value is left exactly as written (quoting, spacing, key order in an inline table).
    """
    if key in container:
        current = container.item(key)
        if isinstance(current, Item) and _unchanged(current, value):
            return
        if isinstance(current, (InlineTable, Table, AoT)) or not isinstance(current, Item):
            # A [users.forward] sub-table or a dotted key: replaced by one plain key.
            container.remove(key)
        else:
            width = len(current.as_string())
            container[key] = new = _item(value)  # tomlkit keeps the position and the comment
            if new.trivia.comment:
                # Keep the comment in its column (acme.toml aligns them).
                spaces = len(new.trivia.comment_ws) + width - len(new.as_string())
                new.trivia.comment_ws = " " * max(1, spaces)
            return
    new = _item(value)
    body = container.body
    earlier = set(order[: order.index(key)]) if key in order else set()
    later = set(order[order.index(key) + 1 :]) if key in order else set()
    position: int | None = None
    for index, (name, _) in enumerate(body):
        if name is not None and name.key in earlier:
            position = index + 1
    if position is None:
        for index, (name, item) in enumerate(body):
            if name is not None and (name.key in later or isinstance(item, (Table, AoT))):
                position = index
                break
    if position is None or position >= len(body):
        # Nothing comes after it: make sure the line before ends, then add at the end.
        container.append(key, new)
    else:
        # tomlkit offers no public "insert at"; _insert_at keeps its key index consistent.
        container._insert_at(position, key, new)


def _drop(container: Container, key: str) -> None:
    if key in container:
        container.remove(key)


def _fill_user(container: Container, user: UserEdit, realm: str) -> None:
    current = container.get("extension")
    renamed = isinstance(current, str) and not _same_extension(current, user.extension)
    plain = container.get("password")
    if user.password is None and renamed and not (isinstance(plain, str) and plain):
        raise PasswordRequired(
            user.extension,
            "the stored password hashes include the old extension; set a new password",
        )
    _put(container, "extension", user.extension, _USER_KEYS)
    if user.password is not None:
        for key, algorithm in _HA1_KEYS.items():
            ha1 = compute_ha1(algorithm, user.extension, realm, user.password)
            _put(container, key, ha1, _USER_KEYS)
        _drop(container, "password")
    elif renamed:
        # Kept plain password: hashes next to it (an invalid file anyway) would be stale now.
        for key in _HA1_KEYS:
            _drop(container, key)
    for key, value in (
        ("name", user.name),
        ("department", user.department),
        ("caller_id", user.caller_id),
    ):
        if value:
            _put(container, key, value, _USER_KEYS)
        else:
            _drop(container, key)
    if user.recording:
        _put(container, "recording", True, _USER_KEYS)
    else:
        _drop(container, "recording")
    forward = user.forward
    if forward:
        _put(container, "forward", forward, _USER_KEYS)
    else:
        _drop(container, "forward")


# --------------------------------------------------------------------------------------------
# Gaps: the lines between one table's last key and the next header (see the module docstring)


def _tail_owner(item: Item) -> Container:
    """The container whose trailing lines come right before the header that follows ``item``."""
    if isinstance(item, AoT):
        return _tail_owner(item.body[-1])
    if not isinstance(item, Table):
        raise TenantFileError("the tenant file has keys outside any table")
    container = item.value
    for name, child in reversed(container.body):
        if name is not None:
            if isinstance(child, (Table, AoT)):
                return _tail_owner(child)
            break
    return container


def _take_tail(container: Container) -> list[Item]:
    body = container.body
    end = len(body)
    while end and body[end - 1][0] is None:
        end -= 1
    tail = [item for _, item in body[end:] if not isinstance(item, Null)]
    # Trailing items have no key, so cutting them leaves tomlkit's key index intact.
    del body[end:]
    return tail


def _give_tail(container: Container, items: Sequence[Item]) -> None:
    body = container.body
    if items and body and body[-1][0] is not None:
        last = body[-1][1]
        if not isinstance(last, (Table, AoT)) and not last.trivia.trail.endswith("\n"):
            last.trivia.trail += "\n"
    body.extend((None, item) for item in items)


class _TailKept:
    """Keeps a table's trailing lines after it while its keys are edited."""

    def __init__(self, table: Table) -> None:
        self._table = table
        self._tail: list[Item] = []

    def __enter__(self) -> None:
        self._tail = _take_tail(_tail_owner(self._table))

    def __exit__(self, *exc: object) -> None:
        _give_tail(_tail_owner(self._table), self._tail)


@dataclass(slots=True)
class _Gap:
    below: list[Item]  # comment lines right under the keys: the table above's
    middle: list[Item]  # blank lines and free-standing comments
    above: list[Item]  # comment lines right above the next header: the entry below's


def _split(tail: list[Item]) -> _Gap:
    start = 0
    while start < len(tail) and isinstance(tail[start], Comment):
        start += 1
    end = len(tail)
    while end > start and isinstance(tail[end - 1], Comment):
        end -= 1
    return _Gap(tail[:start], tail[start:end], tail[end:])


def _has_comment(items: Sequence[Item]) -> bool:
    return any(isinstance(item, Comment) for item in items)


def _body_index(doc: TOMLDocument, item: Item) -> int:
    for index, (_, candidate) in enumerate(doc.body):
        if candidate is item:
            return index
    raise TenantFileError("internal: item not in the document")  # pragma: no cover


def _preceding_owner(doc: TOMLDocument, entries: AoT, index: int) -> Container:
    """The container holding the lines above entry ``index`` (its header's gap)."""
    if index > 0:
        return _tail_owner(entries.body[index - 1])
    for name, item in reversed(doc.body[: _body_index(doc, entries)]):
        if name is not None:
            return _tail_owner(item)
    raise TenantFileError(
        f"the [[{entries.name}]] entries come first in the file; put [tenant] at the top"
    )


def _remove_entry(doc: TOMLDocument, key: str, entries: AoT, index: int) -> None:
    previous = _preceding_owner(doc, entries, index)
    before = _split(_take_tail(previous))
    after = _split(_take_tail(_tail_owner(entries.body[index])))
    # Comments right above the first entry describe the section: they stay.
    first = before.middle + (before.above if index == 0 else [])
    second = after.middle + after.above
    if not _has_comment(first):
        rest = second
    elif not _has_comment(second):
        rest = first
    else:
        rest = first + second
    _give_tail(previous, before.below + rest)
    if len(entries) == 1:
        doc.remove(key)
    else:
        del entries[index]


def _separator(entries: AoT) -> list[Item]:
    """The blank lines the section puts between two entries (one by default)."""
    if len(entries) < 2:
        return [Whitespace("\n")]
    tail = _split(_peek_tail(_tail_owner(entries.body[-2])))
    blank: list[Item] = []
    for item in tail.middle:
        if not isinstance(item, Whitespace):
            break
        blank.append(Whitespace(item.s))
    return blank


def _peek_tail(container: Container) -> list[Item]:
    tail = _take_tail(container)
    _give_tail(container, tail)
    return tail


def _append_entry(doc: TOMLDocument, key: str, table: Table, *, after: Sequence[str]) -> None:
    """Append ``table`` to ``[[key]]``; a new section goes after the first of ``after`` found."""
    entries = _entries(doc, key)
    if entries is None or len(entries) == 0:
        new = tomlkit.aot()
        new.append(table)
        _insert_section(doc, key, new, after=after)
        return
    owner = _tail_owner(entries.body[-1])
    gap = _split(_take_tail(owner))
    _give_tail(owner, gap.below + _separator(entries))
    entries.append(table)
    table.trivia.indent = ""
    _give_tail(_tail_owner(table), gap.middle + gap.above)


def _insert_section(
    doc: TOMLDocument, key: str, item: Table | AoT, *, after: Sequence[str]
) -> None:
    """Insert a new table or array of tables right after the first of the ``after`` sections."""
    anchor: Item | None = None
    for name in after:
        if name in doc:
            candidate = doc.item(name)
            if isinstance(candidate, (Table, AoT)):
                anchor = candidate
                break
    if anchor is None:
        raise TenantFileError(f"the tenant file has no {' or '.join(after)} section")
    owner = _tail_owner(anchor)
    gap = _split(_take_tail(owner))
    _give_tail(owner, [*gap.below, Whitespace("\n")])
    position = _body_index(doc, anchor) + 1
    if position < len(doc.body):
        doc._insert_at(position, key, item)
    else:
        doc.append(key, item)
    for table in item.body if isinstance(item, AoT) else (item,):
        table.trivia.indent = ""
    _give_tail(_tail_owner(item), gap.middle + gap.above)


# --------------------------------------------------------------------------------------------
# Saving


_LONE_LF = re.compile(r"(?<!\r)\n")
_STAMP_FORMAT = "%Y%m%dT%H%M%S.%fZ"
_VERSION_NAME = re.compile(r"(?P<stamp>\d{8}T\d{6}\.\d{6}Z)-(?P<digest>[0-9a-f]{12})\.toml")
_TENANT_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


@dataclass(frozen=True, slots=True)
class Version:
    """A saved earlier version of a tenant file: when it was replaced, its digest's first 12."""

    stamp: datetime
    digest: str
    path: Path

    @property
    def name(self) -> str:
        return self.path.name


class TenantWriter:
    """Saves tenant files atomically, refusing stale saves and keeping the versions replaced.

    History: ``history_dir/<tenant id>/<UTC stamp>-<digest[:12]>.toml``, the newest ``keep``.
    """

    def __init__(self, history_dir: Path, keep: int = 50) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.history_dir = Path(history_dir)
        self.keep = keep

    def write(self, path: Path, text: str, *, expected_digest: str | None, now: float) -> str:
        """Replace ``path`` with ``text`` if it still has ``expected_digest``; the new digest.

        ``expected_digest`` None: the file must not exist yet (a new tenant).
        """
        path = Path(path)
        previous = self._check(path, expected_digest)
        data = text.encode("utf-8")
        digest = file_digest(data)
        if previous is not None:
            if digest == expected_digest:
                return digest  # nothing changed: no write, no history entry
            self._archive(path, previous, now)
        _write_atomically(path, data, mode=_mode_of(path))
        return digest

    def remove(self, path: Path, *, expected_digest: str, now: float) -> None:
        """Move ``path`` into the history if it still has ``expected_digest``."""
        path = Path(path)
        previous = self._check(path, expected_digest)
        assert previous is not None
        self._archive(path, previous, now)
        path.unlink()
        _fsync_folder(path.parent)

    def versions(self, tenant_id: str) -> list[Version]:
        """The saved versions of a tenant, newest first."""
        folder = self._folder(tenant_id)
        if not folder.is_dir():
            return []
        found = []
        for child in folder.iterdir():
            match = _VERSION_NAME.fullmatch(child.name)
            if match is None or not child.is_file():
                continue
            stamp = datetime.strptime(match["stamp"], _STAMP_FORMAT).replace(tzinfo=UTC)
            found.append(Version(stamp, match["digest"], child))
        found.sort(key=lambda version: version.name, reverse=True)
        return found

    def read_version(self, tenant_id: str, name: str) -> str:
        """The text of one saved version; only names listed by ``versions`` are accepted."""
        for version in self.versions(tenant_id):
            if version.name == name:
                return version.path.read_bytes().decode("utf-8")
        raise UnknownVersion(f"tenant {tenant_id} has no saved version {name!r}")

    # -- internals ---------------------------------------------------------------------------

    def _folder(self, tenant_id: str) -> Path:
        if not _TENANT_ID.fullmatch(tenant_id):
            raise TenantFileError(f"not a tenant id: {tenant_id!r}")
        return self.history_dir / tenant_id

    def _check(self, path: Path, expected: str | None) -> bytes | None:
        """The file's current bytes (None: no file) after checking them against ``expected``."""
        try:
            current: bytes | None = path.read_bytes()
        except FileNotFoundError:
            current = None
        found = None if current is None else file_digest(current)
        if found != expected:
            raise StaleFile(path, expected, found)
        return current

    def _archive(self, path: Path, data: bytes, now: float) -> None:
        folder = self._folder(path.stem)
        folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.fromtimestamp(now, UTC).strftime(_STAMP_FORMAT)
        _write_atomically(folder / f"{stamp}-{file_digest(data)[:12]}.toml", data, mode=None)
        for old in self.versions(path.stem)[self.keep :]:
            old.path.unlink()
        _fsync_folder(folder)


def _mode_of(path: Path) -> int | None:
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        return None


def _write_atomically(path: Path, data: bytes, *, mode: int | None) -> None:
    """Write a temp file beside ``path``, fsync it, rename it over ``path``, fsync the folder.

    A crash leaves either the old file or the new one, never a mix. A new file gets mode 0600
    (it holds credentials); a replaced file keeps its mode.
    """
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        if mode is not None:
            os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    # The rename is durable only once the folder's entry is on disk (POSIX; no-op elsewhere).
    if not hasattr(os, "O_DIRECTORY"):  # pragma: no cover - Windows
        return
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
