"""The ``[[incoming]]`` entries of a tenant file, edited by the panel's 着信設定 page (pure).

Same approach as ``tenant_files`` (whose tomlkit helpers this reuses): the text is parsed, the
few entries concerned change, everything else (comments, order, quoting) comes back as written.
Rules are addressed as the page numbers them: the N-th ``[[incoming]]`` entry of a number
(numbers compared normalised). The save's digest check guarantees the page saw that same file.
"""

from __future__ import annotations

from dataclasses import dataclass

import tomlkit
from tomlkit.container import Container

from pbx.numbers import normalize_number
from pbx.panel import forms
from pbx.panel.forms import FormError
from pbx.panel.inbound import parse_seconds
from pbx.panel.tenant_files import (
    TenantFileError,
    _append_entry,
    _entries,
    _parse,
    _put,
    _remove_entry,
    _render,
    _TailKept,
)
from pbx.panel.timeline import clock

__all__ = [
    "PutIncoming",
    "RemoveIncoming",
    "RuleNotFound",
    "RuleValues",
    "put_incoming",
    "remove_incoming",
]

_INCOMING_KEYS = ("number", "targets", "days", "start", "end")


class RuleNotFound(TenantFileError):
    """The rule to edit or remove is not in the file (any more)."""

    def __init__(self, number: str, index: int) -> None:
        super().__init__(f"number {number} has no inbound rule {index}")
        self.number = number
        self.index = index


@dataclass(frozen=True, slots=True)
class RuleValues:
    """One rule to write: targets, days in week order, inclusive window in seconds."""

    targets: tuple[str, ...]
    days: tuple[str, ...]
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class PutIncoming:
    """Put ``rules`` in place of rule ``replacing`` of ``number`` (None: add them).

    Two rules replace one when the admin accepted the midnight split.
    """

    number: str
    replacing: int | None
    rules: tuple[RuleValues, ...]


@dataclass(frozen=True, slots=True)
class RemoveIncoming:
    number: str
    index: int  # 1-based among the number's rules


def _positions(entries: object, number: str) -> list[int]:
    """Where (in the ``[[incoming]]`` array) the rules of ``number`` are, in file order."""
    found = []
    for position, entry in enumerate(getattr(entries, "body", ())):
        value = entry.value.get("number")
        if isinstance(value, str) and normalize_number(value) == number:
            found.append(position)
    return found


def _same_time(current: object, seconds: int, *, is_end: bool) -> bool:
    if not isinstance(current, str):
        return False
    try:
        return parse_seconds(current, is_end=is_end)[0] == seconds
    except FormError:
        return False


def _same_targets(current: object, targets: tuple[str, ...]) -> bool:
    if not isinstance(current, str):
        return False
    try:
        return forms.parse_targets(current) == targets
    except FormError:
        return False


def _fill(container: Container, number: str | None, rule: RuleValues) -> None:
    """Write ``rule`` into an entry; a value that already says the same (``"8:00"`` for
    8:00:00, days in another order) is left as written."""
    if number is not None:
        _put(container, "number", number, _INCOMING_KEYS)
    if not _same_targets(container.get("targets"), rule.targets):
        _put(container, "targets", ",".join(rule.targets), _INCOMING_KEYS)
    days = container.get("days")
    if not (isinstance(days, list) and sorted(map(str, days)) == sorted(rule.days)):
        _put(container, "days", list(rule.days), _INCOMING_KEYS)
    if not _same_time(container.get("start"), rule.start, is_end=False):
        _put(container, "start", clock(rule.start), _INCOMING_KEYS)
    if not _same_time(container.get("end"), rule.end, is_end=True):
        _put(container, "end", clock(rule.end), _INCOMING_KEYS)


def put_incoming(text: str, edit: PutIncoming) -> str:
    """The file with ``edit`` applied: a replaced rule keeps its place and comments; added
    rules (and the second half of a split) go after the last ``[[incoming]]``."""
    if not edit.rules:
        raise TenantFileError("no rule to write")
    number = normalize_number(edit.number)
    doc = _parse(text)
    entries = _entries(doc, "incoming")
    rules = list(edit.rules)
    if edit.replacing is not None:
        positions = _positions(entries, number)
        if entries is None or not 1 <= edit.replacing <= len(positions):
            raise RuleNotFound(number, edit.replacing)
        entry = entries.body[positions[edit.replacing - 1]]
        with _TailKept(entry):
            _fill(entry.value, None, rules.pop(0))
    for rule in rules:
        table = tomlkit.table()
        _fill(table.value, number, rule)
        _append_entry(doc, "incoming", table, after=("users", "numbers", "limits", "tenant"))
    return _render(doc, text)


def remove_incoming(text: str, edit: RemoveIncoming) -> str:
    """The file without rule ``edit.index`` of the number (and the comments right above it)."""
    number = normalize_number(edit.number)
    doc = _parse(text)
    entries = _entries(doc, "incoming")
    positions = _positions(entries, number)
    if entries is None or not 1 <= edit.index <= len(positions):
        raise RuleNotFound(number, edit.index)
    _remove_entry(doc, "incoming", entries, positions[edit.index - 1])
    return _render(doc, text)
