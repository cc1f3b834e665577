"""``pbx backup DEST``: a consistent copy of the data folder while the server runs (issue 19).

- the database (``pbx.sqlite3``: registrations, call records, panel accounts and audit log) is
  copied with SQLite's online backup API (``sqlite3.Connection.backup``): a consistent snapshot
  even while the server writes, without stopping it;
- ``recordings/`` and ``config-history/`` (plain files, never rewritten once complete) are copied
  as they are; a recording of a call still in progress is copied as far as it was written;
- the configuration (``pbx.toml`` and the tenant files) goes to ``DEST/config/``.

Restoring is copying back with the server stopped (README, "Backup and restore").
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
from pathlib import Path

from pbx.config.load import load_config
from pbx.config.problems import ConfigError

DATABASE_NAME = "pbx.sqlite3"
FOLDERS = ("recordings", "config-history")


def backup(config_path: Path, dest: Path) -> list[str]:
    """Write the backup into ``dest`` (a new or empty folder); the lines to print."""
    snapshot = load_config(config_path)
    data_dir = snapshot.server.storage.data_dir
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} is not empty: give a new folder")
    dest.mkdir(parents=True, exist_ok=True)
    lines = []
    database = data_dir / DATABASE_NAME
    if database.exists():
        source = sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True)
        target = sqlite3.connect(dest / DATABASE_NAME)
        try:
            with target:
                source.backup(target)
            (check,) = target.execute("PRAGMA integrity_check").fetchone()
            (calls,) = target.execute("SELECT count(*) FROM call_records").fetchone()
        finally:
            target.close()
            source.close()
        lines.append(f"database: {dest / DATABASE_NAME} ({calls} call records; integrity {check})")
    else:
        lines.append(f"database: none yet at {database}")
    for name in FOLDERS:
        folder = data_dir / name
        if folder.is_dir():
            shutil.copytree(folder, dest / name)
            count = sum(1 for p in (dest / name).rglob("*") if p.is_file())
            lines.append(f"{name}: {count} files")
    config = dest / "config"
    (config / "tenants").mkdir(parents=True)
    shutil.copy2(config_path, config / config_path.name)
    for tenant in snapshot.tenants.values():
        shutil.copy2(tenant.path, config / "tenants" / tenant.path.name)
    lines.append(f"configuration: {config} (pbx.toml and {len(snapshot.tenants)} tenant files)")
    return lines


def main(args: argparse.Namespace) -> int:
    try:
        for line in backup(args.config, args.dest):
            print(line)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    except (OSError, sqlite3.Error) as exc:
        print(f"pbx backup: {exc}", file=sys.stderr)
        return 1
    return 0
