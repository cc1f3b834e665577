"""``pbx simulate``: how a call to a number would be routed, without placing it (DESIGN section 6).

It asks the routing core the same questions the call engine asks: ``start_call`` for the call,
then, if nobody answers, ``next_step`` for each timer in the order they fire (no-answer forwards,
then the max-ring limit). Every user is taken as registered with one contact and free, except
those named with ``--offline`` (not registered) and ``--busy`` (at ``max_calls_per_user``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from pbx.config.load import ConfigError, load_config
from pbx.config.model import (
    ConfigSnapshot,
    Extension,
    IncomingRule,
    PhoneNumber,
    TenantConfig,
)
from pbx.numbers import normalize_number
from pbx.routing import (
    CallRequest,
    ContactId,
    Decision,
    DialOut,
    Fork,
    FromTrunk,
    LineState,
    PlayAnnouncement,
    RingExtension,
    RingTimer,
    TimerExpired,
    find_rule,
    next_step,
    start_call,
)
from pbx.routing.calendar import describe_instant, local_time

DEFAULT_TIMEZONE = "Asia/Tokyo"
MAX_STEPS = 50  # timers fired while following an unanswered call (each ends a fork or the call)


def main(args: argparse.Namespace) -> int:
    """Print the decision for ``--number`` at ``--at`` (text, or JSON with ``--json``)."""
    out, err = sys.stdout, sys.stderr
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            err.write(f"{problem}\n")
        err.write("simulate: the configuration is invalid (see pbx check-config)\n")
        return 1
    number = normalize_number(args.number)
    tenant = cfg.tenant_for_number(number)
    try:
        at = parse_instant(args.at, tenant.timezone if tenant else DEFAULT_TIMEZONE)
    except ValueError as exc:
        err.write(f"simulate: --at {args.at!r} is not an ISO-8601 date-time: {exc}\n")
        return 2
    offline, busy = list(args.offline or ()), list(args.busy or ())
    if tenant is not None:
        for ext in [*offline, *busy]:
            if Extension(ext) not in tenant.users:
                err.write(f"simulate: warning: {ext} is not an extension of {tenant.id}\n")
    lines = "assumed"
    if getattr(args, "live", False) and tenant is not None:
        live = live_offline(args.config, tenant)
        if live is None:
            err.write("simulate: --live: no server answered on the admin address\n")
            return 1
        offline = sorted({*offline, *live})
        lines = "live"
    report = simulate(cfg, number, at, offline=offline, busy=busy)
    report["lines"] = lines
    if args.json:
        out.write(json.dumps(report, ensure_ascii=False, indent=2) + "\n")
    else:
        write_text(report, out)
    return 0


def live_offline(config: Path, tenant: TenantConfig) -> list[str] | None:
    """The tenant's extensions the running server holds no reachable contact for (read from
    the admin API's ``GET /registrations``); None when no server answers."""
    from pbx.admin_client import call_admin  # the only I/O of simulate, and only with --live

    try:
        status, body = call_admin(config, "GET", "/registrations")
    except OSError:
        return None
    if status != 200 or not isinstance(body, list):
        return None
    online = {
        r["extension"]
        for r in body
        if r.get("tenant") == tenant.id and r.get("reachable", True) and r.get("expires_in", 0) > 0
    }
    return [ext for ext in sorted(tenant.users) if ext not in online]


def parse_instant(text: str, timezone: str) -> datetime:
    """An ISO-8601 instant; without an offset it is wall-clock time in ``timezone``."""
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=ZoneInfo(timezone))
    return value


def line_state(
    cfg: ConfigSnapshot, tenant: TenantConfig | None, offline: Sequence[str], busy: Sequence[str]
) -> LineState:
    """Every user registered with one contact and free, except the offline and busy ones."""
    if tenant is None:
        return LineState()
    registered = {
        (tenant.id, ext): (ContactId(f"{ext}@{tenant.domain}"),)
        for ext in tenant.users
        if ext not in offline
    }
    calls = {
        (tenant.id, Extension(ext)): cfg.server.calls.max_calls_per_user
        for ext in busy
        if Extension(ext) in tenant.users
    }
    return LineState(registered=registered, calls=calls)


def simulate(
    cfg: ConfigSnapshot,
    number: str,
    at: datetime,
    *,
    offline: Sequence[str] = (),
    busy: Sequence[str] = (),
) -> dict[str, Any]:
    """The routing of an inbound call to ``number`` at ``at``, as plain JSON-ready data."""
    tenant = cfg.tenant_for_number(number)
    state = line_state(cfg, tenant, offline, busy)
    trunk = cfg.server.trunks[0].name if cfg.server.trunks else "carrier"
    request = CallRequest(FromTrunk(trunk=trunk, caller=None), number)
    decision = start_call(cfg, request, at, state)
    local = local_time(at, tenant.timezone) if tenant else at
    called = decision.progress.number or PhoneNumber(number)
    rule = find_rule(tenant.rules_for(called), local) if tenant else None
    report: dict[str, Any] = {
        "number": number,
        "tenant": tenant.id if tenant else None,
        "at": local.isoformat(),
        "local_time": describe_instant(local) if tenant else None,
        "rule": _rule(rule),
        "offline": list(offline),
        "busy": list(busy),
        **_decision(decision),
        "if_unanswered": _follow_timers(cfg, decision, at, state),
    }
    return report


def _follow_timers(
    cfg: ConfigSnapshot, decision: Decision, start: datetime, state: LineState
) -> list[dict[str, Any]]:
    """Fire the pending timers in time order, as if nobody ever answered."""
    steps: list[dict[str, Any]] = []
    pending: list[RingTimer] = list(decision.timers)
    for _ in range(MAX_STEPS):
        if decision.progress.finished or not pending:
            break
        pending.sort(key=lambda timer: (timer.at, timer.kind.value != "no_answer"))
        timer = pending.pop(0)
        if timer.fork_id is not None and decision.progress.live_fork(timer.fork_id) is None:
            continue
        decision = next_step(cfg, decision.progress, TimerExpired(timer), timer.at, state)
        pending.extend(decision.timers)
        step = {"after_seconds": (timer.at - start).total_seconds(), "timer": timer.kind.value}
        steps.append(step | _decision(decision))
    return steps


def _decision(decision: Decision) -> dict[str, Any]:
    return {
        "forks": [_fork(fork) for fork in decision.start],
        "cancel": list(decision.cancel),
        "timers": [
            {"kind": timer.kind.value, "seconds": timer.seconds, "fork": timer.fork_id}
            for timer in decision.timers
        ],
        "final": decision.final,
        "trace": list(decision.trace),
    }


def _fork(fork: Fork) -> dict[str, Any]:
    kind = {RingExtension: "ring", DialOut: "dial_out", PlayAnnouncement: "announcement"}
    return {"kind": kind[type(fork)], **dataclasses.asdict(fork)}


def _rule(rule: IncomingRule | None) -> dict[str, Any] | None:
    if rule is None:
        return None
    order = ("mon", "tue", "wed", "thu", "fri", "sat", "sun", "holiday")
    return {
        "position": rule.position,
        "number": rule.number,
        "targets": list(rule.targets),
        "days": [day for day in order if day in rule.days],
        "start": rule.start.strftime("%H:%M:%S"),
        "end": rule.end.strftime("%H:%M:%S"),
    }


def _describe_fork(fork: dict[str, Any]) -> str:
    hops = f", {fork['hops']} hop{'s' if fork['hops'] != 1 else ''}" if fork["hops"] else ""
    record = ", recorded" if fork["record"] else ""
    diversions = "".join(
        f", diverted by {d['extension'] or d['number']} ({d['reason']})"
        for d in fork.get("diversions", ())
    )
    if fork["kind"] == "ring":
        contacts = ", ".join(fork["contacts"])
        text = f"ring {fork['extension']} [{contacts}]"
    elif fork["kind"] == "dial_out":
        shown = fork["caller_id"] or "anonymous"
        text = f"dial out {fork['number']} via {fork['trunk']} presenting {shown}"
    else:
        text = "play the after-hours announcement (009608)"
    return f"{fork['fork_id']}: {text}{diversions}{hops}{record}"


def _write_decision(report: dict[str, Any], out: TextIO, indent: str) -> None:
    for fork in report["forks"]:
        out.write(f"{indent}{_describe_fork(fork)}\n")
    for fork_id in report["cancel"]:
        out.write(f"{indent}cancel {fork_id}\n")
    if report["final"] is not None:
        out.write(f"{indent}final response: {report['final']}\n")


def write_text(report: dict[str, Any], out: TextIO) -> None:
    """The human-readable form of a ``simulate`` report."""
    where = report["local_time"] or report["at"]
    tenant = f" (tenant {report['tenant']})" if report["tenant"] else " (no tenant has it)"
    out.write(f"call to {report['number']}{tenant} at {where}\n")
    if report.get("lines") == "live":
        out.write("lines: live, from the running server (offline: no reachable contact)\n")
    else:
        out.write(
            "lines: assumed: every extension online and free except --offline/--busy "
            "(--live reads the running server)\n"
        )
    if report["offline"] or report["busy"]:
        offline = " ".join(report["offline"]) or "-"
        busy = " ".join(report["busy"]) or "-"
        out.write(f"offline: {offline}  busy: {busy}\n")
    rule = report["rule"]
    if rule is not None:
        out.write(
            f"rule {rule['position']} ({rule['start']}-{rule['end']}, {','.join(rule['days'])})"
            f" -> {','.join(rule['targets'])}\n"
        )
    out.write("decision:\n")
    _write_decision(report, out, "  ")
    if report["if_unanswered"]:
        out.write("if nobody answers:\n")
        for step in report["if_unanswered"]:
            label = "no answer" if step["timer"] == "no_answer" else "max ring"
            out.write(f"  after {step['after_seconds']:g}s ({label}):\n")
            _write_decision(step, out, "    ")
    out.write("trace:\n")
    for line in report["trace"]:
        out.write(f"  {line}\n")
    for step in report["if_unanswered"]:
        for line in step["trace"]:
            out.write(f"  +{step['after_seconds']:g}s {line}\n")
