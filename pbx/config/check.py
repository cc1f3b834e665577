"""``pbx check-config``: validate the configuration and list every problem (DESIGN section 6)."""

from __future__ import annotations

import argparse
import sys

from pbx.config.load import ConfigError, load_config


def main(args: argparse.Namespace) -> int:
    """Print each problem and the warnings (exit 1), or the warnings and an OK line (exit 0)."""
    out = sys.stdout
    try:
        snapshot = load_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            out.write(f"{problem}\n")
        for found in exc.warnings:
            out.write(f"warning: {found}\n")
        count = len(exc.problems)
        out.write(f"FAILED: {count} problem{'s' if count != 1 else ''} in the configuration\n")
        return 1
    for warning in snapshot.warnings:
        out.write(f"warning: {warning}\n")
    tenants = len(snapshot.tenants)
    users = sum(len(tenant.users) for tenant in snapshot.tenants.values())
    out.write(f"OK: configuration valid ({tenants} tenants, {users} users)\n")
    return 0
