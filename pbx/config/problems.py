"""Configuration problems (errors and warnings), named in the admin's terms."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from pbx.errors import PbxError

Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One problem: the file, the entity ("user 1001", "[calls]"), the field and what is wrong.

    ``str()`` gives one line, e.g.
    ``config/tenants/acme.toml: user 1001: forward.busy: "1099" is not an extension ...``.
    """

    file: str
    entity: str
    field: str
    message: str
    severity: Severity = "error"

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
