"""着信設定 pages: a number's rules, its weekly timeline, the test call, the midnight split.

Routes (mounted by ``build_panel_app`` behind ``tenant_route``, so another tenant's admin gets
404 whatever the number):

- ``GET /t/{tenant}/incoming``: the tenant's numbers, each with its rules' count.
- ``GET /t/{tenant}/incoming/{number}``: the rules, the timeline, the rule form (``?edit=N``
  fills it with rule N) and the test call (``?date=&time=&busy=&offline=``: a question, no
  state change, so a GET).
- ``POST /t/{tenant}/incoming/{number}``: add or replace a rule (``index``), or accept the
  midnight split (``split=1``), or ``delete=N``; CSRF-checked, saved through ``TenantSaver``
  (validated like ``check-config``, digest stale-check, audited with the file's diff).

Handlers parse (``pbx.panel.inbound``), ask one domain function (``find_overlaps``, the saver,
``pbx.simulate.simulate``) and render; the picture comes from ``pbx.panel.timeline``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from markupsafe import Markup
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from pbx.config.model import IncomingRule, PhoneNumber, TenantConfig
from pbx.config.problems import ConfigProblem
from pbx.panel import forms
from pbx.panel.i18n import Lang, translate
from pbx.panel.inbound import (
    DAY_CHOICES,
    FieldError,
    RuleDraft,
    parse_rule,
    parse_test_call,
    split_at_midnight,
    summarize_call,
)
from pbx.panel.incoming_files import PutIncoming, RemoveIncoming, RuleValues
from pbx.panel.timeline import Window, clock, describe_days, find_overlaps, overlap_messages
from pbx.panel.timeline import render_svg as render_timeline
from pbx.simulate import simulate

if TYPE_CHECKING:
    from pbx.panel.app import FieldErrors, Viewer, _Panel

MAX_PICKABLE_USERS = 300  # users offered in the pick list; more are typed


def _seconds(value: time) -> int:
    return value.hour * 3600 + value.minute * 60 + value.second


def rule_windows(rules: Sequence[IncomingRule]) -> list[Window]:
    """The rules of one number as the timeline draws them, numbered 1, 2, ... in file order."""
    return [
        Window(n, r.targets, frozenset(r.days), _seconds(r.start), _seconds(r.end))
        for n, r in enumerate(rules, start=1)
    ]


def _field_of(problem: ConfigProblem) -> str:
    return problem.field if problem.field in ("targets", "days", "start", "end") else ""


@dataclass(slots=True)
class _Refused:
    """A POST that saved nothing: the form to show again, and why."""

    values: dict[str, Any]
    errors: FieldErrors
    editing: Window | None = None
    split_offer: tuple[RuleDraft, ...] = ()
    crossing: RuleDraft | None = None
    stale: bool = False


def _blank_values() -> dict[str, Any]:
    return {"index": "", "targets": "", "pick": [], "days": [], "start": "", "end": ""}


def routes(panel: _Panel) -> list[BaseRoute]:
    """着信設定's routes, each behind the panel's tenant check."""
    pages = InboundPages(panel)
    return [
        Route("/t/{tenant}/incoming", panel.tenant_route(pages.numbers)),
        Route(
            "/t/{tenant}/incoming/{number}",
            panel.tenant_route(pages.rules),
            methods=["GET", "POST"],
        ),
    ]


class InboundPages:
    """The handlers; ``panel`` gives the shared plumbing (render, CSRF, saving, audit)."""

    def __init__(self, panel: _Panel) -> None:
        self.panel = panel

    async def numbers(self, request: Request, viewer: Viewer, tenant: TenantConfig) -> Response:
        counts = {number: len(tenant.rules_for(number)) for number in tenant.numbers}
        return self.panel.render(
            request, "incoming_numbers.html", viewer, tenant=tenant, counts=counts
        )

    async def rules(self, request: Request, viewer: Viewer, tenant: TenantConfig) -> Response:
        from pbx.panel.app import FieldErrors

        number = PhoneNumber(request.path_params["number"])
        if number not in tenant.numbers:
            raise HTTPException(404)
        lang = self.panel.lang(request)
        errors = FieldErrors()
        windows = rule_windows(tenant.rules_for(number))
        values = _blank_values()
        editing: Window | None = None
        split_offer: tuple[RuleDraft, ...] = ()
        crossing: RuleDraft | None = None
        digest = self.panel.digest_of(tenant.id)
        status = 200
        edit = request.query_params.get("edit", "")
        if request.method == "GET" and edit.isdigit() and 1 <= int(edit) <= len(windows):
            editing = windows[int(edit) - 1]
            values = {
                "index": edit,
                "targets": ",".join(editing.targets),
                "pick": [],
                "days": sorted(editing.days, key=DAY_CHOICES.index),
                "start": clock(editing.start),
                "end": clock(editing.end),
            }
        if request.method == "POST":
            form = await self.panel.checked_form(request, viewer)
            digest = str(form.get("digest") or "") or None
            if form.get("delete"):
                return await self._delete(request, viewer, tenant, number, form, len(windows))
            result = await self._put(request, viewer, tenant, number, form, windows, lang)
            if isinstance(result, Response):
                return result
            values, errors, editing = result.values, result.errors, result.editing
            split_offer, crossing = result.split_offer, result.crossing
            status = 400
            if result.stale:
                # Show what is in force now: the admin enters the change again on top of it.
                current = self.panel.deps.current().tenants.get(tenant.id, tenant)
                windows = rule_windows(current.rules_for(number))
                digest = self.panel.digest_of(tenant.id)
                editing = None
        return self._render(
            request,
            viewer,
            tenant,
            number,
            windows,
            status=status,
            values=values,
            errors=errors,
            editing=editing,
            split_offer=split_offer,
            crossing=crossing,
            digest=digest or "",
        )

    # -- saving --------------------------------------------------------------------------------

    async def _delete(
        self,
        request: Request,
        viewer: Viewer,
        tenant: TenantConfig,
        number: PhoneNumber,
        form: FormData,
        count: int,
    ) -> Response:
        from pbx.panel.app import FieldErrors, _saved

        index = str(form.get("delete", ""))
        if not index.isdigit() or not 1 <= int(index) <= count:
            raise HTTPException(404)
        edit = RemoveIncoming(number, int(index))
        digest = str(form.get("digest") or "") or None
        outcome = await self.panel.save(
            viewer, tenant.id, edit, digest, "delete_incoming", f"{number} #{index}"
        )
        if outcome.outcome == "saved":
            return _saved(f"/t/{tenant.id}/incoming/{number}", outcome)
        errors = self._outcome_errors(request, viewer, outcome)
        current = self.panel.deps.current().tenants.get(tenant.id, tenant)
        return self._render(
            request,
            viewer,
            current,
            number,
            rule_windows(current.rules_for(number)),
            status=400,
            values=_blank_values(),
            errors=errors if errors else FieldErrors(),
            editing=None,
            split_offer=(),
            crossing=None,
            digest=self.panel.digest_of(tenant.id) or "",
        )

    async def _put(
        self,
        request: Request,
        viewer: Viewer,
        tenant: TenantConfig,
        number: PhoneNumber,
        form: FormData,
        windows: list[Window],
        lang: Lang,
    ) -> Response | _Refused:
        from pbx.panel.app import FieldErrors, _saved

        errors = FieldErrors()
        index_text = str(form.get("index", ""))
        if index_text and (not index_text.isdigit() or not 1 <= int(index_text) <= len(windows)):
            raise HTTPException(404)
        index = int(index_text) if index_text else None
        values: dict[str, Any] = {
            "index": index_text,
            "targets": str(form.get("targets", "")).strip()[:500],
            "pick": [str(v) for v in form.getlist("pick")][:MAX_PICKABLE_USERS],
            "days": [str(v) for v in form.getlist("days")][:16],
            "start": str(form.get("start", "")).strip()[:16],
            "end": str(form.get("end", "")).strip()[:16],
        }
        draft, problems = parse_rule(
            values["targets"], values["pick"], values["days"], values["start"], values["end"]
        )
        for name, problem in problems.items():
            errors.add(name, problem.message(lang))
        if draft is None:
            return _Refused(values, errors)
        parts = split_at_midnight(draft)
        if draft.crosses_midnight and form.get("split") != "1":
            # Nothing saved: the form comes back with the split, one click away.
            errors.add(
                "end",
                translate(lang, "incoming.midnight", start=clock(draft.start), end=values["end"]),
            )
            return _Refused(values, errors, split_offer=parts, crossing=draft)
        others = [w for w in windows if w.index != index]
        for part in parts:
            overlaps = find_overlaps(part.window(index or 0), others)
            if overlaps:
                errors.add("", translate(lang, "incoming.overlap"))
                for message in overlap_messages(overlaps, lang):
                    errors.add("", message)
                shown = {**values, **part.values(), "pick": [], "index": index_text}
                return _Refused(shown, errors, editing=part.window(index or 0))
        edit = PutIncoming(
            number,
            index,
            tuple(RuleValues(p.targets, p.days, p.start, p.end) for p in parts),
        )
        action = (
            "split_incoming"
            if len(parts) > 1
            else ("edit_incoming" if index is not None else "add_incoming")
        )
        target = f"{number} #{index}" if index is not None else str(number)
        outcome = await self.panel.save(
            viewer, tenant.id, edit, str(form.get("digest") or "") or None, action, target
        )
        if outcome.outcome == "saved":
            return _saved(f"/t/{tenant.id}/incoming/{number}", outcome)
        errors = self._outcome_errors(request, viewer, outcome)
        drawn = None if draft.crosses_midnight else draft.window(index or 0)
        return _Refused(values, errors, editing=drawn, stale=outcome.outcome == "stale")

    def _outcome_errors(self, request: Request, viewer: Viewer, outcome: Any) -> FieldErrors:
        errors = self.panel.outcome_errors(request, viewer, outcome, _field_of)
        # An edit that could not be applied is about the form, not an extension field.
        for message in errors.by_field.pop("extension", []):
            errors.add("", message)
        return errors

    # -- the page --------------------------------------------------------------------------------

    def _render(
        self,
        request: Request,
        viewer: Viewer,
        tenant: TenantConfig,
        number: PhoneNumber,
        windows: list[Window],
        *,
        status: int,
        values: dict[str, Any],
        errors: FieldErrors,
        editing: Window | None,
        split_offer: tuple[RuleDraft, ...],
        crossing: RuleDraft | None,
        digest: str,
    ) -> Response:
        lang = self.panel.lang(request)
        test = self._test_call(request, tenant, number, lang)
        users = sorted(tenant.users.values(), key=lambda u: u.extension)[:MAX_PICKABLE_USERS]
        rules = [
            {
                "index": w.index,
                "targets": ",".join(w.targets),
                "days": describe_days(w.days, lang),
                "start": clock(w.start),
                "end": clock(w.end),
            }
            for w in windows
        ]
        return self.panel.render(
            request,
            "incoming.html",
            viewer,
            status,
            tenant=tenant,
            number=number,
            rules=rules,
            timeline=Markup(render_timeline(windows, editing, lang)),
            values=values,
            errors=errors,
            digest=digest,
            users=users,
            day_choices=DAY_CHOICES,
            split_offer=[{"start": clock(p.start), "end": clock(p.end)} for p in split_offer],
            crossing=crossing,
            **test,
        )

    def _test_call(
        self, request: Request, tenant: TenantConfig, number: PhoneNumber, lang: Lang
    ) -> dict[str, Any]:
        from pbx.panel.app import FieldErrors

        query = request.query_params
        now = datetime.fromtimestamp(self.panel.deps.wall_clock(), ZoneInfo(tenant.timezone))
        values = {
            "date": query.get("date", now.strftime("%Y-%m-%d"))[:32],
            "time": query.get("time", now.strftime("%H:%M:%S"))[:16],
            "busy": query.get("busy", "")[:200],
            "offline": query.get("offline", "")[:200],
        }
        errors = FieldErrors()
        summary = None
        if "date" in query:
            call, problems = parse_test_call(values, tenant.timezone)
            for name, problem in problems.items():
                assert isinstance(problem, (forms.FormError, FieldError))
                errors.add(name, problem.message(lang))
            if call is not None:
                report = simulate(
                    self.panel.deps.current(),
                    number,
                    call.at,
                    offline=call.offline,
                    busy=call.busy,
                )
                positions = [r.position for r in tenant.rules_for(number)]
                summary = summarize_call(report, positions)
        return {
            "test_values": values,
            "test_errors": errors,
            "test": summary,
            "test_query": urlencode(values),
        }
