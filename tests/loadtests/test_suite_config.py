"""The load suite's configuration (``loadtests.suite.write_suite_config``) loads as the server
loads it, with keep-alives off in every tenant: SIPp's phones cannot answer an OPTIONS outside
a call. Each probe was a failed call to them and one call less of their ``-m`` count, so the
step's last INVITE went unanswered (480 after 32 s) and the step failed."""

from __future__ import annotations

from pathlib import Path

from loadtests.suite import TENANTS, write_suite_config
from pbx.config.load import load_config


def test_the_suite_config_loads_with_keep_alives_off(tmp_path: Path) -> None:
    config, storm, phones = write_suite_config(tmp_path)
    snapshot = load_config(config)
    assert len(snapshot.tenants) == TENANTS
    assert [t.qualify_seconds for t in snapshot.tenants.values()] == [0] * TENANTS
    # Every user the SIPp CSVs register exists in the configuration.
    users = {(t.domain, u) for t in snapshot.tenants.values() for u in t.users}
    rows = [line.split(";")[:2] for line in storm.read_text().splitlines()[1:]]
    for csv in phones.values():
        rows += [line.split(";")[:2] for line in csv.read_text().splitlines()[1:]]
    assert rows
    assert {(domain, extension) for extension, domain in rows} <= users


def test_the_suite_can_run_the_relay_with_its_kernel_fast_path(tmp_path: Path) -> None:
    assert not load_config(write_suite_config(tmp_path / "a")[0]).server.media.kernel_forwarding
    config = write_suite_config(tmp_path / "b", kernel_forwarding=True)[0]
    assert load_config(config).server.media.kernel_forwarding
