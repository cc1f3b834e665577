"""The ``pbx`` command line (docs/design.md, "Command line and admin API").

Each command lives in its own module; this file only parses arguments and dispatches.
"""

from __future__ import annotations

import argparse
import importlib
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
    result: int = module.main(args)
    return result
