"""Typed reading of TOML tables, problems collected in a sink, and the shared value checks.

Every rule module (``server_rules``, ``tenant_rules``) reads its tables through ``TableReader``,
which reports unknown keys (with the closest known one) and values of the wrong TOML type in
the admin's terms, so the rules themselves only state what a valid value is.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any

from pbx.config.messages import english
from pbx.config.problems import ConfigProblem, Params, Severity

_DOMAIN_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


# How an entry of an array of tables is named when it has no better name yet.
ENTRY_NAMES = {
    "numbers": "number",
    "users": "user",
    "incoming": "incoming rule",
    "trunks": "trunk",
}


# --------------------------------------------------------------------------------------------
# Problem collection and typed reading of TOML tables


def problem(
    file: str,
    entity: str,
    field_name: str,
    code: str,
    params: Mapping[str, object],
    severity: Severity = "error",
) -> ConfigProblem:
    """A problem of catalog ``code``; its English message is rendered from ``params``."""
    values = Params((name, str(value)) for name, value in params.items())
    return ConfigProblem(
        file, entity, field_name, english(code, values), severity, code=code, params=values
    )


class Sink:
    """Collects errors and warnings across every file of one load.

    Each is reported by its code in ``pbx.config.messages`` and the values its text names.
    """

    def __init__(self) -> None:
        self.errors: list[ConfigProblem] = []
        self.warnings: list[ConfigProblem] = []

    def error(self, file: str, entity: str, field_name: str, code: str, **params: object) -> None:
        self.errors.append(problem(file, entity, field_name, code, params))

    def warn(self, file: str, entity: str, field_name: str, code: str, **params: object) -> None:
        self.warnings.append(problem(file, entity, field_name, code, params, "warning"))


class AddressError(ValueError):
    """Why a ``host:port`` text is not one: a code of the catalog (``address.*``) and values."""

    def __init__(self, code: str, **params: object) -> None:
        super().__init__(code)
        self.code = code
        self.params = params


def type_name(value: object) -> str:
    """The TOML type of a parsed value, in the words of the TOML spec ("integer", "table")."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table"
    return "date/time"


def show(value: object) -> str:
    """A value as the admin wrote it (strings quoted)."""
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class TableReader:
    """Reads one TOML table of one file, reporting unknown keys and wrong types to the sink.

    Each getter returns the value, or a default / None after reporting what is wrong with it.
    """

    def __init__(
        self,
        sink: Sink,
        file: str,
        entity: str,
        table: Mapping[str, Any],
        known: Iterable[str],
        prefix: str = "",
    ) -> None:
        self.sink = sink
        self.file = file
        self.entity = entity
        self.table = table
        self.prefix = prefix
        known_keys = list(known)
        for key in table:
            if key not in known_keys:
                close = difflib.get_close_matches(key, known_keys, n=1)
                allowed = ", ".join(known_keys)
                if close:
                    self.sink.error(
                        file,
                        entity,
                        prefix + key,
                        "key.unknown_suggest",
                        suggestion=close[0],
                        known=allowed,
                    )
                else:
                    self.sink.error(file, entity, prefix + key, "key.unknown", known=allowed)

    def name(self, key: str) -> str:
        return self.prefix + key

    def error(self, key: str, code: str, **params: object) -> None:
        self.sink.error(self.file, self.entity, self.name(key), code, **params)

    def warn(self, key: str, code: str, **params: object) -> None:
        self.sink.warn(self.file, self.entity, self.name(key), code, **params)

    def _wrong_type(self, key: str, expected: str, value: object) -> None:
        self.error(key, "type.wrong", expected=expected, actual=type_name(value), shown=show(value))

    def has(self, key: str) -> bool:
        return key in self.table

    def string(self, key: str, *, required: bool = False) -> str | None:
        value = self.table.get(key)
        if value is None:
            if required:
                self.error(key, "value.required")
            return None
        if not isinstance(value, str):
            self._wrong_type(key, "a string", value)
            return None
        return value

    def text(self, key: str, *, required: bool = False) -> str | None:
        """A machine-read string (number, time, day): full-width forms folded with a warning."""
        value = self.string(key, required=required)
        if value is None:
            return None
        return self.fold(key, value)

    def fold(self, key: str, value: str) -> str:
        folded = unicodedata.normalize("NFKC", value)
        if folded != value:
            self.warn(key, "value.full_width", value=value, folded=folded)
        return folded.strip()

    def integer(
        self, key: str, default: int, *, minimum: int = 0, maximum: int | None = None
    ) -> int:
        value = self.table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            self._wrong_type(key, "an integer", value)
            return default
        if value < minimum or (maximum is not None and value > maximum):
            if maximum is None:
                self.error(key, "value.too_small", minimum=minimum, value=value)
            else:
                self.error(key, "value.out_of_range", minimum=minimum, maximum=maximum, value=value)
            return default
        return value

    def required_integer(self, key: str, *, minimum: int = 0) -> int | None:
        if key not in self.table:
            self.error(key, "value.required")
            return None
        value = self.table[key]
        if isinstance(value, bool) or not isinstance(value, int):
            self._wrong_type(key, "an integer", value)
            return None
        if value < minimum:
            self.error(key, "value.too_small", minimum=minimum, value=value)
            return None
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.table.get(key, default)
        if not isinstance(value, bool):
            self._wrong_type(key, "true or false", value)
            return default
        return value

    def strings(self, key: str) -> list[str] | None:
        """An array of strings (a single string is taken as a one-element array)."""
        value = self.table.get(key)
        if value is None:
            return None
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            self._wrong_type(key, "an array of strings", value)
            return None
        return list(value)

    def table_(self, key: str) -> Mapping[str, Any]:
        value = self.table.get(key, {})
        if not isinstance(value, dict):
            self.error(
                key,
                "type.not_table",
                name=self.name(key),
                actual=type_name(value),
                shown=show(value),
            )
            return {}
        return value

    def tables(self, key: str) -> list[Mapping[str, Any] | None]:
        """An array of tables; entries that are not tables are reported and come back as None."""
        value = self.table.get(key, [])
        if not isinstance(value, list):
            self.error(
                key,
                "type.not_array_of_tables",
                name=self.name(key),
                actual=type_name(value),
                shown=show(value),
            )
            return []
        result: list[Mapping[str, Any] | None] = []
        for position, item in enumerate(value, start=1):
            if isinstance(item, dict):
                result.append(item)
            else:
                self.sink.error(
                    self.file,
                    f"{ENTRY_NAMES.get(key, key)} #{position}",
                    "",
                    "type.entry_not_table",
                    actual=type_name(item),
                    shown=show(item),
                )
                result.append(None)
        return result


# --------------------------------------------------------------------------------------------
# Addresses


def parse_ip(text: str) -> str:
    """A literal IPv4/IPv6 address in its canonical form; raises ValueError."""
    return str(ipaddress.ip_address(text))


def split_host_port(
    text: str, default_port: int | None = None, *, allow_any_port: bool = False
) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` (a literal IP address); raises ``AddressError``.

    ``allow_any_port``: port 0 is accepted (a listener on any free port, as tests use).
    """
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise AddressError("address.bracket_unclosed")
        if rest and not rest.startswith(":"):
            raise AddressError("address.port_after_bracket")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    elif ":" in text:
        raise AddressError("address.ipv6_needs_brackets")
    else:
        host, port_text = text, None
    try:
        host = parse_ip(host)
    except ValueError:
        raise AddressError("address.not_ip", host=host) from None
    if port_text is None or port_text == "":
        if default_port is None:
            raise AddressError("address.port_required")
        return host, default_port
    lowest = 0 if allow_any_port else 1
    if not port_text.isdigit() or not lowest <= int(port_text) <= 65535:
        raise AddressError("address.bad_port", port=port_text, lowest=lowest)
    return host, int(port_text)


def valid_domain(domain: str) -> bool:
    """Whether ``domain`` (lower case) is an IP address or a host name of valid labels."""
    try:
        ipaddress.ip_address(domain)
    except ValueError:
        pass
    else:
        return True
    labels = domain.split(".")
    return len(domain) <= 253 and all(_DOMAIN_LABEL.fullmatch(label) for label in labels)
