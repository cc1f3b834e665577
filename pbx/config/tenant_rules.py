"""A tenant file (``tenants/<id>.toml``): every rule of the control-panel manual and DESIGN 2-3.

``TenantLoader`` checks one tenant's tables (limits, numbers, users, forwarding, incoming rules)
and builds its ``TenantConfig``; the checks across tenants (a number or domain used twice, two
defaults) are the builder's. Every problem names the file, the entity in the admin's terms
("user 1001", "incoming rule #2 (number 0312345678)") and the field.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
import zoneinfo
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import time
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, cast

from pbx.config.cycles import simple_cycles
from pbx.config.model import (
    DEFAULT_QUALIFY_SECONDS,
    WEEKDAYS,
    DayName,
    Extension,
    ForwardCallerId,
    Forwarding,
    IncomingRule,
    PhoneNumber,
    ServerConfig,
    TenantConfig,
    TenantId,
    TenantLimits,
    UserConfig,
)
from pbx.config.server_rules import read_algorithms
from pbx.config.tables import Sink, TableReader, show, type_name, valid_domain
from pbx.numbers import AFTER_HOURS_TARGET, NumberKind, classify_number, normalize_number

DAY_KINDS: tuple[DayName, ...] = (*WEEKDAYS, "holiday")
SECONDS_PER_DAY = 86_400
LAST_SECOND = SECONDS_PER_DAY - 1

_EXTENSION = re.compile(r"[0-8][0-9]{3}")
_DID = re.compile(r"0[1-9][0-9]{8,9}")
_TIME = re.compile(r"([0-9]{1,2}):([0-9]{2})(?::([0-9]{2}))?")
_HEX = re.compile(r"[0-9a-fA-F]+")
_FORWARD_KINDS = ("busy", "no_answer", "offline")
_HA1_FIELDS = {"password_ha1_md5": ("MD5", 32), "password_ha1_sha256": ("SHA-256", 64)}
# At most this many forwarding cycles are listed per tenant.
_MAX_CYCLES_REPORTED = 50


_TENANT_TOP_KEYS = ("tenant", "limits", "numbers", "users", "incoming")
_TENANT_KEYS = (
    "domain",
    "timezone",
    "default",
    "qualify_seconds",
    "forward_caller_id",
    "auth_algorithms",  # issue 15: SHA-256 per tenant (absent: [auth] algorithms)
    "encryption",  # issue 18: "allow" or "require" SIP over TLS and SRTP
)
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
_INCOMING_KEYS = ("number", "targets", "days", "start", "end")


@dataclass(slots=True)
class _UserDraft:
    position: int
    entity: str
    extension: Extension | None
    reader: TableReader
    config: UserConfig | None = None
    forward_raw: dict[str, tuple[str, TableReader]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Window:
    """The when of one incoming rule (kept for overlap/gap checks even if its targets are bad)."""

    entity: str
    number: PhoneNumber
    days: frozenset[DayName]
    start: int  # seconds since midnight, inclusive
    end: int


class _TimeError(ValueError):
    """Why a text is not a time of day: a code of the catalog (``time.*``)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def _parse_time(text: str, *, is_end: bool) -> int:
    """Seconds since midnight; an end without seconds means :59. Raises ``_TimeError``."""
    match = _TIME.fullmatch(text)
    if match is None:
        raise _TimeError("time.format")
    hours, minutes = int(match[1]), int(match[2])
    seconds = (59 if is_end else 0) if match[3] is None else int(match[3])
    if hours > 23 or minutes > 59 or seconds > 59:
        raise _TimeError("time.invalid_past_midnight" if hours >= 24 else "time.invalid")
    return hours * 3600 + minutes * 60 + seconds


def _midnight_split(start: int, end: int, end_value: object) -> tuple[str, str]:
    """The two rules the manual writes for a window crossing midnight (issue 19): an end typed
    without seconds before the start is the moment the window stops, so 18:00-9:00 splits into
    ``18:00:00-23:59:59`` and ``0:00:00-8:59:59`` (as the panel's split does); an end with
    seconds is inclusive as always."""
    typed = _TIME.fullmatch(end_value) if isinstance(end_value, str) else None
    stop = end - 59 - 1 if typed is not None and typed[3] is None else end
    if stop < 0:  # an end of "0:00": read as through 0:00:59, as without the split
        stop = end
    evening = f"{_clock(start)}-23:59:59"
    return evening, f"0:00:00-{stop // 3600}:{stop % 3600 // 60:02d}:{stop % 60:02d}"


def _clock(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _as_time(seconds: int) -> time:
    return time(seconds // 3600, seconds % 3600 // 60, seconds % 60)


def _day_list(days: Iterable[DayName]) -> str:
    """Days in week order, consecutive weekdays compacted: "mon-fri", "sat-sun", "holiday"."""
    chosen = set(days)
    parts: list[str] = []
    run: list[DayName] = []
    for day in WEEKDAYS:
        if day in chosen:
            run.append(day)
            continue
        if run:
            parts.append(run[0] if len(run) == 1 else f"{run[0]}-{run[-1]}")
            run = []
    if run:
        parts.append(run[0] if len(run) == 1 else f"{run[0]}-{run[-1]}")
    if "holiday" in chosen:
        parts.append("holiday")
    return ", ".join(parts)


def _gaps(windows: Sequence[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """The seconds of a day that none of the inclusive windows covers."""
    result: list[tuple[int, int]] = []
    cursor = 0
    for start, end in sorted(windows):
        if start > cursor:
            result.append((cursor, start - 1))
        cursor = max(cursor, end + 1)
    if cursor <= LAST_SECOND:
        result.append((cursor, LAST_SECOND))
    return tuple(result)


def _describe_gaps(by_day: Mapping[DayName, tuple[tuple[int, int], ...]]) -> str:
    """E.g. "sat-sun all day, mon-fri 20:00:00-23:59:59" (all-day gaps first)."""
    groups: dict[tuple[tuple[int, int], ...], list[DayName]] = {}
    for day in DAY_KINDS:
        spans = by_day.get(day)
        if spans:
            groups.setdefault(spans, []).append(day)
    whole = ((0, LAST_SECOND),)
    ordered = sorted(
        groups.items(), key=lambda item: (item[0] != whole, DAY_KINDS.index(item[1][0]))
    )
    parts = []
    for spans, days in ordered:
        if spans == whole:
            parts.append(f"{_day_list(days)} all day")
        else:
            ranges = " and ".join(f"{_clock(a)}-{_clock(b)}" for a, b in spans)
            parts.append(f"{_day_list(days)} {ranges}")
    return ", ".join(parts)


class TenantLoader:
    """Validates one tenant file; the result feeds the cross-tenant checks."""

    def __init__(
        self, sink: Sink, file: str, tenant_id: TenantId, path: Path, server: ServerConfig
    ) -> None:
        self.sink = sink
        self.file = file
        self.id = tenant_id
        self.path = path
        self.server = server
        self.entity = f"tenant {tenant_id}"
        self.international = False
        self.auth_algorithms: tuple[Literal["MD5", "SHA-256"], ...] = ()
        self.numbers: list[PhoneNumber] = []
        self.users: dict[Extension, _UserDraft] = {}  # valid, unique extensions
        self.drafts: list[_UserDraft] = []  # every [[users]] table, valid or not

    def load(self, data: Mapping[str, Any]) -> TenantConfig:
        """Check the parsed tenant file and build its ``TenantConfig`` (problems go to the sink)."""
        top = TableReader(self.sink, self.file, "", data, _TENANT_TOP_KEYS)
        ten = TableReader(self.sink, self.file, self.entity, top.table_("tenant"), _TENANT_KEYS)
        domain = self._domain(ten)
        timezone = ten.text("timezone") or "Asia/Tokyo"
        try:
            zoneinfo.ZoneInfo(timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            ten.error("timezone", "tenant.timezone_unknown", value=timezone)
            timezone = "Asia/Tokyo"
        default = ten.boolean("default", False)
        qualify = ten.integer("qualify_seconds", DEFAULT_QUALIFY_SECONDS, minimum=0)
        self.auth_algorithms = read_algorithms(ten, "auth_algorithms")
        fcid = ten.text("forward_caller_id") or "original"
        if fcid not in ("original", "user"):
            ten.error("forward_caller_id", "tenant.forward_caller_id_invalid", value=fcid)
            fcid = "original"
        encryption = ten.text("encryption") or "allow"
        if encryption not in ("allow", "require"):
            ten.error("encryption", "tenant.encryption_invalid", value=encryption)
            encryption = "allow"
        elif encryption == "require" and self.server.media.engine == "rtpengine":
            # SRTP is the built-in relay's (docs/design.md 10.7): the promise could not be kept.
            ten.error("encryption", "tenant.encryption_rtpengine")

        lim = TableReader(
            self.sink, self.file, self.entity, top.table_("limits"), _LIMIT_KEYS, "limits."
        )
        max_users = lim.required_integer("max_users")
        recording_users = lim.integer("recording_users", 0, minimum=0)
        self.international = lim.boolean("international_calls", False)
        limits = TenantLimits(
            max_users=max_users if max_users is not None else 0,
            recording_users=recording_users,
            international_calls=self.international,
        )

        self._numbers(top)
        self._users(top)
        self._check_limits(lim, max_users, recording_users)
        self._forwards()
        self._cycles()
        rules = self._incoming(top)

        users = {ext: draft.config for ext, draft in self.users.items() if draft.config is not None}
        return TenantConfig(
            id=self.id,
            path=self.path,
            domain=domain,
            timezone=timezone,
            default=default,
            qualify_seconds=qualify,
            auth_algorithms=self.auth_algorithms,
            forward_caller_id=cast(ForwardCallerId, fcid),
            encryption=cast(Literal["allow", "require"], encryption),
            limits=limits,
            numbers=tuple(self.numbers),
            users=MappingProxyType(users),
            incoming=tuple(rules),
        )

    # -- [tenant] ---------------------------------------------------------------------------

    def _domain(self, ten: TableReader) -> str:
        domain = ten.text("domain", required=True)
        if domain is None:
            return ""
        lowered = domain.lower().rstrip(".")
        if not valid_domain(lowered):
            ten.error("domain", "tenant.domain_invalid", value=domain)
            return ""
        return lowered

    # -- [[numbers]] -------------------------------------------------------------------------

    def _number(self, reader: TableReader, key: str, raw: str) -> PhoneNumber | None:
        """A DID written by the admin: folded, ``+81`` to ``0``, must be a national number."""
        digits = normalize_number(reader.fold(key, raw))
        if not _DID.fullmatch(digits):
            reader.error(key, "number.invalid", value=raw)
            return None
        return PhoneNumber(digits)

    def _numbers(self, top: TableReader) -> None:
        seen: dict[PhoneNumber, int] = {}
        for position, entry in enumerate(top.tables("numbers"), start=1):
            if entry is None:
                continue
            raw = entry.get("number")
            label = (
                f"number {normalize_number(raw)}" if isinstance(raw, str) else f"number #{position}"
            )
            reader = TableReader(self.sink, self.file, label, entry, ("number",))
            text = reader.string("number", required=True)
            if text is None:
                continue
            number = self._number(reader, "number", text)
            if number is None:
                continue
            if number in seen:
                reader.error("number", "number.duplicate", number=number, position=seen[number])
                continue
            seen[number] = position
            self.numbers.append(number)
        if not self.numbers:
            self.sink.warn(self.file, self.entity, "numbers", "tenant.no_numbers")

    # -- [[users]] ---------------------------------------------------------------------------

    def _users(self, top: TableReader) -> None:
        entries = top.tables("users")
        self.user_count = sum(1 for entry in entries if entry is not None)
        first_position: dict[Extension, int] = {}
        for position, entry in enumerate(entries, start=1):
            if entry is None:
                continue
            raw = entry.get("extension")
            shown = unicodedata.normalize("NFKC", raw).strip() if isinstance(raw, str) else ""
            label = f"user {shown}" if shown else f"user #{position}"
            reader = TableReader(self.sink, self.file, label, entry, _USER_KEYS)
            extension = self._extension(reader)
            if extension is not None and extension in first_position:
                reader.entity = f"user {extension} (#{position})"
                reader.error(
                    "extension",
                    "user.extension_duplicate",
                    extension=extension,
                    position=first_position[extension],
                )
                extension = None
            draft = _UserDraft(position, reader.entity, extension, reader)
            draft.config = self._user(reader, draft, extension)
            self.drafts.append(draft)
            if extension is not None:
                first_position[extension] = position
                self.users[extension] = draft

    def _extension(self, reader: TableReader) -> Extension | None:
        raw = reader.table.get("extension")
        if isinstance(raw, int) and not isinstance(raw, bool):
            reader.error("extension", "user.extension_integer", quoted=f"{raw:04d}", value=raw)
            return None
        text = reader.text("extension", required=True)
        if text is None:
            return None
        if not _EXTENSION.fullmatch(text):
            reader.error("extension", "user.extension_format", value=text)
            return None
        return Extension(text)

    def _user(
        self, reader: TableReader, draft: _UserDraft, extension: Extension | None
    ) -> UserConfig | None:
        password = reader.string("password")
        if password == "":
            reader.error("password", "value.empty")
            password = None
        hashes: dict[str, str | None] = {}
        for key, (algorithm, length) in _HA1_FIELDS.items():
            value = reader.string(key)
            if value is not None and (len(value) != length or not _HEX.fullmatch(value)):
                reader.error(
                    key, "user.ha1_format", length=length, algorithm=algorithm, count=len(value)
                )
                value = None
            hashes[key] = value.lower() if value is not None else None
        has_hash = any(value is not None for value in hashes.values())
        credential_keys = ("password", *_HA1_FIELDS)
        if password is None and not has_hash:
            if not any(reader.has(key) for key in credential_keys):
                reader.error("password", "user.credential_missing")
        elif password is not None and has_hash:
            reader.error("password", "user.credential_both")
        elif has_hash:
            algorithms = self.auth_algorithms or self.server.auth.algorithms
            usable = [
                algorithm
                for key, (algorithm, _) in _HA1_FIELDS.items()
                if hashes[key] is not None and algorithm in algorithms
            ]
            offered = ", ".join(algorithms)
            if not usable:
                reader.error(
                    "password_ha1_md5" if hashes["password_ha1_md5"] else "password_ha1_sha256",
                    "user.ha1_no_offered_algorithm",
                    offered=offered,
                )
            elif len(usable) < len(algorithms):
                missing = [a for a in algorithms if a not in usable]
                reader.warn(
                    "password_ha1_md5" if hashes["password_ha1_md5"] else "password_ha1_sha256",
                    "user.ha1_missing_algorithm",
                    missing=", ".join(missing),
                )

        name = reader.string("name")
        department = reader.string("department")
        caller_id = None
        raw_cid = reader.string("caller_id")
        if raw_cid:
            number = normalize_number(reader.fold("caller_id", raw_cid))
            if number not in self.numbers:
                have = ", ".join(self.numbers) or "none"
                reader.error(
                    "caller_id",
                    "user.caller_id_not_of_tenant",
                    value=raw_cid,
                    tenant=self.id,
                    numbers=have,
                )
            else:
                caller_id = PhoneNumber(number)
        recording = reader.boolean("recording", False)

        forward = reader.table_("forward")
        fw = TableReader(self.sink, self.file, reader.entity, forward, _FORWARD_KINDS, "forward.")
        for kind in _FORWARD_KINDS:
            target = fw.string(kind)
            if target:
                draft.forward_raw[kind] = (target, fw)

        if extension is None:
            return None
        return UserConfig(
            extension=extension,
            password=password,
            password_ha1_md5=hashes["password_ha1_md5"],
            password_ha1_sha256=hashes["password_ha1_sha256"],
            name=name,
            department=department,
            caller_id=caller_id,
            recording=recording,
            forward=Forwarding(),  # filled in by _forwards once every extension is known
        )

    def _check_limits(self, lim: TableReader, max_users: int | None, recording_users: int) -> None:
        if max_users is not None and self.user_count > max_users:
            lim.error(
                "max_users", "limits.max_users_exceeded", count=self.user_count, max_users=max_users
            )
        recorders = [d for d in self.users.values() if d.config is not None and d.config.recording]
        if not recorders:
            return
        if recording_users == 0:
            for draft in recorders:
                draft.reader.error("recording", "user.recording_not_allowed", tenant=self.id)
        elif len(recorders) > recording_users:
            names = ", ".join(str(d.extension) for d in recorders)
            lim.error(
                "recording_users",
                "limits.recording_users_exceeded",
                count=len(recorders),
                extensions=names,
                recording_users=recording_users,
            )

    # -- forwarding ----------------------------------------------------------------------------

    def _target_problem(self, target: str, *, allow_announcement: bool) -> str | None:
        """Why an extension/external target is unacceptable (a code), or None when it is fine.

        The codes' parameters are the target (``value``) and the tenant.
        """
        classified = classify_number(target)
        kind = classified.kind
        if kind is NumberKind.EXTENSION and Extension(classified.digits) in self.users:
            return None
        if kind is NumberKind.ANNOUNCEMENT:
            return None if allow_announcement else "forward.announcement"
        if kind is NumberKind.INTERNATIONAL and not self.international:
            return "target.international_off"
        if kind in (NumberKind.DOMESTIC, NumberKind.SERVICE, NumberKind.INTERNATIONAL):
            return None
        return "target.invalid"

    def _forwards(self) -> None:
        for draft in self.drafts:
            targets: dict[str, str] = {}
            for kind, (raw, reader) in draft.forward_raw.items():
                target = reader.fold(kind, raw)
                problem = self._target_problem(target, allow_announcement=False)
                if problem is not None:
                    reader.error(kind, problem, value=target, tenant=self.id)
                    continue
                targets[kind] = classify_number(target).digits
            if draft.config is not None and targets:
                draft.config = replace(
                    draft.config,
                    forward=Forwarding(
                        busy=targets.get("busy"),
                        no_answer=targets.get("no_answer"),
                        offline=targets.get("offline"),
                    ),
                )

    def _cycles(self) -> None:
        """Forwarding cycles between extensions, any mix of busy/no_answer/offline edges."""
        edges: dict[Extension, dict[Extension, list[str]]] = {}
        for ext, draft in self.users.items():
            if draft.config is None:
                continue
            fwd = draft.config.forward
            for kind in _FORWARD_KINDS:
                target = getattr(fwd, kind)
                if target is not None and Extension(target) in self.users:
                    edges.setdefault(ext, {}).setdefault(Extension(target), []).append(kind)
        graph: dict[str, list[str]] = {ext: list(targets) for ext, targets in edges.items()}
        cycles, complete = simple_cycles(graph, limit=_MAX_CYCLES_REPORTED)
        for found in cycles:
            cycle = tuple(Extension(ext) for ext in found)
            steps = []
            for here, there in zip(cycle, (*cycle[1:], cycle[0]), strict=True):
                steps.append(f"{here} {'/'.join(edges[here][there])} -> {there}")
            first = self.users[cycle[0]]
            kinds = edges[cycle[0]][cycle[1] if len(cycle) > 1 else cycle[0]]
            self.sink.error(
                self.file,
                first.entity,
                f"forward.{kinds[0]}",
                "forward.cycle",
                steps=", ".join(steps),
            )
        if not complete:
            self.sink.error(
                self.file,
                self.entity,
                "forward",
                "forward.cycles_truncated",
                limit=_MAX_CYCLES_REPORTED,
            )

    # -- [[incoming]] ----------------------------------------------------------------------------

    def _incoming(self, top: TableReader) -> list[IncomingRule]:
        windows: dict[PhoneNumber, list[_Window]] = {}
        rules: list[IncomingRule] = []
        for position, entry in enumerate(top.tables("incoming"), start=1):
            if entry is None:
                continue
            raw_number = entry.get("number")
            label = f"incoming rule #{position}"
            if isinstance(raw_number, str):
                label += f" (number {normalize_number(raw_number)})"
            reader = TableReader(self.sink, self.file, label, entry, _INCOMING_KEYS)
            rule, window = self._rule(reader, position)
            if rule is not None:
                rules.append(rule)
            if window is not None:
                windows.setdefault(window.number, []).append(window)
        for number, found in windows.items():
            self._overlaps(found)
            self._coverage(number, found)
        for number in self.numbers:
            if number not in windows:
                self.sink.warn(
                    self.file, f"number {number}", "incoming", "incoming.number_without_rule"
                )
        return rules

    def _rule(
        self, reader: TableReader, position: int
    ) -> tuple[IncomingRule | None, _Window | None]:
        ok = True
        number: PhoneNumber | None = None
        raw_number = reader.string("number", required=True)
        if raw_number is not None:
            number = self._number(reader, "number", raw_number)
            if number is not None and number not in self.numbers:
                have = ", ".join(self.numbers) or "none"
                reader.error(
                    "number",
                    "incoming.number_not_of_tenant",
                    number=number,
                    tenant=self.id,
                    numbers=have,
                )
                number = None
        ok = number is not None

        targets = self._targets(reader)
        ok = ok and targets is not None

        days: set[DayName] = set()
        names = reader.strings("days")
        if names is None:
            if not reader.has("days"):
                reader.error("days", "incoming.days_required")
            ok = False
        else:
            if not names:
                reader.error("days", "incoming.days_empty")
                ok = False
            for raw in names:
                name = reader.fold("days", raw).lower()
                if name in DAY_KINDS:
                    days.add(name)
                else:
                    close = difflib.get_close_matches(name, DAY_KINDS, n=1)
                    if close:
                        reader.error(
                            "days", "incoming.day_unknown_suggest", value=raw, suggestion=close[0]
                        )
                    else:
                        reader.error("days", "incoming.day_unknown", value=raw)
                    ok = False

        bounds: dict[str, int] = {}
        for key in ("start", "end"):
            value = reader.table.get(key)
            if isinstance(value, time) and value.tzinfo is None and not value.microsecond:
                bounds[key] = value.hour * 3600 + value.minute * 60 + value.second
                continue
            text = reader.text(key, required=True)
            if text is None:
                ok = False
                continue
            try:
                bounds[key] = _parse_time(text, is_end=key == "end")
            except _TimeError as exc:
                reader.error(key, exc.code, value=text)
                ok = False
        if "start" in bounds and "end" in bounds and bounds["start"] > bounds["end"]:
            start, end = bounds["start"], bounds["end"]
            evening, morning = _midnight_split(start, end, reader.table.get("end"))
            reader.error(
                "end",
                "incoming.crosses_midnight",
                start=_clock(start),
                end=_clock(end),
                evening=evening,
                morning=morning,
            )
            ok = False
            del bounds["end"]
        window = None
        if number is not None and days and "start" in bounds and "end" in bounds:
            window = _Window(reader.entity, number, frozenset(days), bounds["start"], bounds["end"])
        if not ok or number is None or targets is None or window is None:
            return None, window
        rule = IncomingRule(
            position=position,
            number=number,
            targets=targets,
            days=window.days,
            start=_as_time(window.start),
            end=_as_time(window.end),
        )
        return rule, window

    def _targets(self, reader: TableReader) -> tuple[str, ...] | None:
        value = reader.table.get("targets")
        if value is None:
            reader.error("targets", "incoming.targets_required")
            return None
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            pieces = [reader.fold("targets", item) for item in value]
        elif isinstance(value, str):
            text = reader.fold("targets", value)
            if "、" in text:
                reader.warn("targets", "incoming.targets_japanese_commas")
                text = text.replace("、", ",")
            pieces = text.split(",")
        else:
            reader.error(
                "targets",
                "incoming.targets_type",
                actual=type_name(value),
                shown=show(value),
                suggestion=f'targets = "{value if isinstance(value, int) else "1001,1002"}"',
            )
            return None
        targets: list[str] = []
        ok = True
        for piece in (p.strip() for p in pieces):
            if not piece:
                reader.error("targets", "incoming.targets_empty_entry", shown=show(value))
                ok = False
                continue
            problem = self._target_problem(piece, allow_announcement=True)
            if problem is not None:
                if classify_number(piece).kind is NumberKind.EXTENSION:
                    reader.error(
                        "targets",
                        "incoming.target_unknown_extension",
                        extension=piece,
                        tenant=self.id,
                    )
                else:
                    reader.error("targets", problem, value=piece, tenant=self.id)
                ok = False
                continue
            digits = classify_number(piece).digits
            if digits in targets:
                reader.warn("targets", "incoming.target_duplicate", target=digits)
                continue
            targets.append(digits)
        others = [t for t in targets if t != AFTER_HOURS_TARGET]
        if AFTER_HOURS_TARGET in targets and others:
            reader.error(
                "targets",
                "incoming.announcement_mixed",
                announcement=AFTER_HOURS_TARGET,
                others=", ".join(others),
            )
            ok = False
        if ok and not targets:
            reader.error("targets", "incoming.targets_empty")
            ok = False
        return tuple(targets) if ok else None

    def _overlaps(self, windows: Sequence[_Window]) -> None:
        for index, later in enumerate(windows):
            for earlier in windows[:index]:
                shared = earlier.days & later.days
                low, high = max(earlier.start, later.start), min(earlier.end, later.end)
                if shared and low <= high:
                    self.sink.error(
                        self.file,
                        later.entity,
                        "start-end",
                        "incoming.overlap",
                        other=earlier.entity,
                        days=_day_list(shared),
                        start=_clock(low),
                        end=_clock(high),
                    )

    def _coverage(self, number: PhoneNumber, windows: Sequence[_Window]) -> None:
        has_holiday = any("holiday" in w.days for w in windows)
        kinds = DAY_KINDS if has_holiday else WEEKDAYS
        by_day: dict[DayName, tuple[tuple[int, int], ...]] = {}
        for day in kinds:
            spans = [(w.start, w.end) for w in windows if day in w.days]
            gaps = _gaps(spans)
            if gaps:
                by_day[day] = gaps
        if by_day:
            self.sink.warn(
                self.file,
                f"number {number}",
                "incoming",
                "incoming.gaps",
                gaps=_describe_gaps(by_day),
            )
