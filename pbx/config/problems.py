"""Configuration problems (errors and warnings), named in the admin's terms.

Each problem carries a stable ``code`` and its ``params`` besides the English ``message``, so
that ``pbx.config.messages`` can say the same in Japanese (the control panel) and tools can
tell problems apart without reading sentences.
"""

from __future__ import annotations

import dataclasses  # "field" is a field name below
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pbx.errors import PbxError

Severity = Literal["error", "warning"]


class Params(Mapping[str, str]):
    """A problem's parameters: an immutable mapping that hashes and pickles.

    (``MappingProxyType`` does neither, and problems cross into the panel's worker process.)
    """

    __slots__ = ("_items",)

    _items: tuple[tuple[str, str], ...]

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        object.__setattr__(self, "_items", tuple(pairs))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Params is immutable")

    def __getitem__(self, key: str) -> str:
        for name, value in self._items:
            if name == key:
                return value
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return dict(self._items) == dict(other.items())
        return NotImplemented

    def __hash__(self) -> int:
        return hash(frozenset(self._items))

    def __repr__(self) -> str:
        return f"Params({dict(self._items)!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Params, (self._items,))


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One problem: the file, the entity ("user 1001", "[calls]"), the field and what is wrong.

    ``str()`` gives one line, e.g.
    ``config/tenants/acme.toml: user 1001: forward.busy: "1099" is not an extension ...``.
    ``code`` names the rule ("target.invalid"), ``params`` the values its message is made of
    (``pbx.config.messages`` renders both in English, which is ``message``, and Japanese).
    """

    file: str
    entity: str
    field: str
    message: str
    severity: Severity = "error"
    code: str = ""
    params: Mapping[str, str] = dataclasses.field(default_factory=Params)

    def __str__(self) -> str:
        return ": ".join(
            part for part in (self.file, self.entity, self.field, self.message) if part
        )


class ConfigError(PbxError):
    """The configuration is invalid; ``problems`` lists every problem found, in file order.

    ``warnings`` holds the warnings found on the way (not part of the message).
    """

    def __init__(
        self, problems: Iterable[ConfigProblem], warnings: Iterable[ConfigProblem] = ()
    ) -> None:
        self.problems: list[ConfigProblem] = list(problems)
        self.warnings: list[ConfigProblem] = list(warnings)
        count = len(self.problems)
        lines = [f"{count} configuration problem{'s' if count != 1 else ''}:"]
        lines.extend(str(problem) for problem in self.problems)
        super().__init__("\n".join(lines))

    def __reduce__(self) -> tuple[Any, ...]:
        # The default would call ConfigError(message): rebuild from the problems instead.
        return (ConfigError, (self.problems, self.warnings))
