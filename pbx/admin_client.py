"""``pbx reload`` and ``pbx status``: clients of the running server's admin HTTP API."""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

TIMEOUT_SECONDS = 30.0


def admin_base_url(config_path: Path) -> str:
    """``http://host:port`` of ``[admin] listen`` in pbx.toml (default 127.0.0.1:8088)."""
    with config_path.open("rb") as fh:
        data = tomllib.load(fh)
    listen = str(data.get("admin", {}).get("listen", "127.0.0.1:8088"))
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def call_admin(config_path: Path, method: str, path: str) -> tuple[int, Any]:
    """One admin request; returns (HTTP status, decoded JSON body)."""
    url = admin_base_url(config_path) + path
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _reload(config: Path) -> int:
    status, body = call_admin(config, "POST", "/reload")
    if status == 200:
        if body.get("changed", True):
            print(f"reloaded: configuration version {body['version']} ({body['digest'][:12]})")
        else:
            print(
                f"unchanged: configuration version {body['version']} ({body['digest'][:12]}) "
                "stays in force (the files are those already loaded)"
            )
        for warning in body.get("warnings", []):
            print(f"warning: {warning}")
        return 0
    print(f"reload refused; version {body.get('version')} stays in force:", file=sys.stderr)
    for problem in body.get("errors", [body.get("error")]):
        print(f"  {problem}", file=sys.stderr)
    return 1


def _status(config: Path, as_json: bool) -> int:
    _, status = call_admin(config, "GET", "/status")
    _, registrations = call_admin(config, "GET", "/registrations")
    _, calls = call_admin(config, "GET", "/calls")
    if as_json:
        print(json.dumps({"status": status, "registrations": registrations, "calls": calls}))
        return 0
    print(f"pbx {status.get('server_version', '')}, up {status['uptime_seconds']:.0f} s")
    print(f"configuration version {status['config_version']} ({status['config_digest'][:12]})")
    for tenant in status.get("tenants", []):
        print(f"tenant {tenant['id']} ({tenant['domain']}): {len(tenant['users'])} users")
    print(f"registrations: {len(registrations)}")
    for reg in registrations:
        print(
            f"  {reg['tenant']}/{reg['extension']}  {reg['contact']}  from "
            f"{reg['source']} over {reg['transport']}, expires in {reg['expires_in']} s"
        )
    print(f"active calls: {len(calls)}")
    return 0


def main(args: argparse.Namespace) -> int:
    try:
        if args.command == "reload":
            return _reload(args.config)
        return _status(args.config, bool(getattr(args, "json", False)))
    except BrokenPipeError:
        raise  # our reader went away (``pbx status | head``): pbx.cli ends quietly
    except (OSError, urllib.error.URLError) as exc:
        print(f"pbx {args.command}: cannot reach the server's admin API: {exc}", file=sys.stderr)
        return 2
