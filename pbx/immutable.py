"""``@immutable``: the records of the hot paths (SIP messages, transaction events, bindings,
routing decisions), declared like a frozen dataclass.

To mypy a ``@immutable`` class *is* ``@dataclass(frozen=True, slots=True)`` (``dataclass_transform``
with ``frozen_default``): assigning a field is a type error, and ``mypy --strict`` runs on every
change. At run time it is a slotted dataclass with a field hash but without the frozen check,
whose generated ``__init__`` goes through ``object.__setattr__`` for every field. Those checks
cost a sixth of the instructions of an authenticated registration (about 25 records each;
measured with callgrind: docs/design.md, section 9), for no protection that mypy does not already
give. The configuration snapshot keeps real ``frozen=True``: it is built once per reload and
shared by everything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar, dataclass_transform

T = TypeVar("T")


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def immutable(cls: type[T]) -> type[T]:
    """Make ``cls`` an immutable (by type) slotted dataclass with equality and hash."""
    return dataclass(slots=True, unsafe_hash=True)(cls)
