"""The ``pbx`` command line (docs/design.md, "Command line and admin API").

Each command lives in its own module; this file only parses arguments and dispatches.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

DEFAULT_CONFIG = Path("config/pbx.toml")

# command -> module whose ``main(args: argparse.Namespace) -> int`` carries it out
COMMANDS = {
    "run": "pbx.server",
    "check-config": "pbx.config.check",
    "reload": "pbx.admin_client",
    "status": "pbx.admin_client",
    "simulate": "pbx.simulate",
    "panel": "pbx.panel.cli",
    # issue 19 (deploy): call records without SQL, a backup of the data folder
    "calls": "pbx.calls_cli",
    "backup": "pbx.backup",
    # issue 20: the shared PostgreSQL store
    "storage": "pbx.storage_cli",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pbx", description="SIP PBX and B2BUA")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="path to pbx.toml")
        return cmd

    run = add("run", "run the server in the foreground")
    run.add_argument("--log-level", default="info")
    run.add_argument("--log-json", action="store_true", help="JSON log lines even on a terminal")
    # issue 19 (deploy): published demo passwords on an address other hosts reach
    run.add_argument(
        "--allow-demo-passwords",
        action="store_true",
        help="start even when users keep the repository's demo passwords on a non-loopback address",
    )
    add("check-config", "validate the configuration")
    add("reload", "ask the running server to reload its configuration")
    status = add("status", "print the running server's status")
    status.add_argument("--json", action="store_true")
    sim = add("simulate", "show how a call would be routed, without placing it")
    sim.add_argument("--number", required=True, help="the dialled number (DID)")
    sim.add_argument("--at", required=True, help="ISO-8601 instant; tenant-local time if naive")
    sim.add_argument("--offline", nargs="*", default=[], metavar="EXT")
    sim.add_argument("--busy", nargs="*", default=[], metavar="EXT")
    sim.add_argument("--json", action="store_true")
    sim.add_argument(
        "--live",
        action="store_true",
        help="read who is offline from the running server (admin API) instead of assuming "
        "every extension online",
    )
    # issue 19 (deploy): pbx calls, pbx backup
    from pbx.calls_cli import add_arguments as add_calls_arguments

    add_calls_arguments(add("calls", "list and filter call records (JSON lines or CSV)"))
    backup = add("backup", "copy the database (online backup), recordings and configuration")
    backup.add_argument("dest", type=Path, help="a new or empty folder")
    # issue 20: pbx storage migrate-to postgresql://...
    from pbx.storage_cli import add_arguments as add_storage_arguments

    add_storage_arguments(sub.add_parser("storage", help="move the database to PostgreSQL"))
    panel = sub.add_parser("panel", help="the control panel's accounts")
    panel_sub = panel.add_subparsers(dest="panel_command", required=True)

    def add_panel(name: str, help_text: str) -> argparse.ArgumentParser:
        cmd = panel_sub.add_parser(name, help=help_text)
        cmd.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="path to pbx.toml")
        return cmd

    add_panel("add-operator", "add an operator (sees every tenant)").add_argument("name")
    admin = add_panel("add-admin", "add a tenant admin (sees one tenant)")
    admin.add_argument("name")
    admin.add_argument("--tenant", required=True, help="the tenant's ID (its file name)")
    listing = add_panel("list", "list the panel's accounts")
    listing.add_argument("--tenant", help="only this tenant's admins")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module = importlib.import_module(COMMANDS[args.command])
    try:
        result: int = module.main(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (``pbx status | head``): not an error worth a traceback. Point
        # stdout at /dev/null so that the interpreter's final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # as a shell reports a command ended by SIGPIPE
    return result
