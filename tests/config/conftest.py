"""Helpers that write small configurations into tmp_path and load them."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from pbx.config import tables
from pbx.config.load import ConfigError, ConfigProblem, load_config
from pbx.config.messages import CATALOG, render_entity, render_field, render_problem
from pbx.config.model import ConfigSnapshot

SERVER = """\
[sip]
listen = ["udp:127.0.0.1:5060"]
[storage]
data_dir = "data"
[[trunks]]
name = "carrier"
address = "127.0.0.2:5080"
"""

TENANT_HEAD = """\
[tenant]
domain = "acme.example"
default = true
[limits]
max_users = 10
recording_users = 1
international_calls = false
[[numbers]]
number = "0312345678"
[[numbers]]
number = "0612345678"
"""

USERS = """\
[[users]]
extension = "1001"
password = "pw1"
caller_id = "0312345678"
[[users]]
extension = "1002"
password = "pw2"
[[users]]
extension = "1003"
password = "pw3"
"""

ALL_WEEK = '["mon", "tue", "wed", "thu", "fri", "sat", "sun"]'

INCOMING = f"""\
[[incoming]]
number = "0312345678"
targets = "1001,1002"
days = {ALL_WEEK}
start = "0:00"
end = "23:59:59"
[[incoming]]
number = "0612345678"
targets = "1003"
days = {ALL_WEEK}
start = "0:00"
end = "23:59:59"
"""


def tenant(
    *, head: str = TENANT_HEAD, users: str = USERS, incoming: str = INCOMING, extra: str = ""
) -> str:
    """A valid tenant file by default; replace a part to break one thing."""
    return head + users + incoming + extra


def rule(number: str, targets: str, days: str, start: str, end: str) -> str:
    return (
        f'[[incoming]]\nnumber = "{number}"\ntargets = "{targets}"\ndays = {days}\n'
        f'start = "{start}"\nend = "{end}"\n'
    )


Writer = Callable[..., Path]


@pytest.fixture
def write(tmp_path: Path) -> Writer:
    """write(acme=TEXT, other=TEXT, server=TEXT) -> path of pbx.toml (config/ under tmp_path)."""

    def _write(server: str = SERVER, **tenants: str) -> Path:
        root = tmp_path / "config"
        (root / "tenants").mkdir(parents=True, exist_ok=True)
        (root / "pbx.toml").write_text(server, encoding="utf-8")
        if not tenants:
            tenants = {"acme": tenant()}
        for name, text in tenants.items():
            (root / "tenants" / f"{name}.toml").write_text(text, encoding="utf-8")
        return root / "pbx.toml"

    return _write


def problems_of(path: Path) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.problems


def only_problem(path: Path) -> ConfigProblem:
    found = problems_of(path)
    assert len(found) == 1, "\n".join(map(str, found))
    return found[0]


def loads(path: Path) -> ConfigSnapshot:
    try:
        return load_config(path)
    except ConfigError as exc:  # show every problem when a test expected success
        pytest.fail(str(exc))


# Two English words in a row: what a Japanese rendering must not contain once the values the
# admin wrote (the parameters) are taken out of it.
ENGLISH_WORDS = re.compile(r"\b[A-Za-z]{2,}\b(?: \b[A-Za-z]{2,}\b)+")


def english_left_in(text: str, params: Mapping[str, str]) -> list[str]:
    """Runs of English words in ``text`` that are not parameter values."""
    for value in sorted(params.values(), key=len, reverse=True):
        if value:
            text = text.replace(value, " ")
    return ENGLISH_WORDS.findall(text)


def check_rendering(problem: ConfigProblem) -> None:
    """A problem has a catalog code, English equal to its message, and real Japanese."""
    assert problem.code in CATALOG, problem
    assert render_problem(problem, "en") == problem.message
    japanese = render_problem(problem, "ja")
    assert japanese != problem.message, problem
    assert not english_left_in(japanese, problem.params), (problem, japanese)
    entity = render_entity(problem, "ja")
    assert not english_left_in(entity, {}), (problem, entity)
    assert render_entity(problem, "en") == problem.entity
    assert render_field(problem, "en") == problem.field


@pytest.fixture(autouse=True)
def every_problem_renders_in_both_languages(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[list[ConfigProblem]]:
    """Every problem any config test makes is checked by ``check_rendering`` afterwards."""
    made: list[ConfigProblem] = []
    original = tables.problem

    def recording(*args: object, **kwargs: object) -> ConfigProblem:
        found = original(*args, **kwargs)  # type: ignore[arg-type]
        made.append(found)
        return found

    monkeypatch.setattr(tables, "problem", recording)
    yield made
    for found in made:
        check_rendering(found)
