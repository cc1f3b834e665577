"""The admin HTTP API (docs/design.md, "Command line and admin API") as a Starlette app.

``POST /reload``, ``GET /status``, ``GET /registrations``, ``GET /calls`` (JSON), ``GET /metrics``
(Prometheus text format 0.0.4) and ``GET /openapi.json`` (this API described in OpenAPI 3.1:
``OPENAPI`` below). Each handler calls one narrow function of the server and renders what it
returns; the app keeps no state. Errors are JSON ``{"error": "..."}``: 404 for an unknown path,
405 for a known path with another method (with ``Allow``), 413 for a body over 64 KiB, 500 when
a handler fails (logged). ``pbx.http.HttpListener`` serves it on ``[admin] listen``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger("pbx.admin")

MAX_BODY = 64 * 1024
METRICS_MEDIA_TYPE = "text/plain; version=0.0.4"

ReloadFunction = Callable[[], Awaitable[tuple[int, dict[str, Any]]]]
ViewFunction = Callable[[], Any]  # returns plain JSON data (dicts, lists, str, numbers, None)


class AdminJsonResponse(JSONResponse):
    """JSON as the admin API has always written it: indented, UTF-8 as is, a final newline."""

    def render(self, content: Any) -> bytes:
        return (json.dumps(content, ensure_ascii=False, indent=2, default=str) + "\n").encode()


def build_admin_app(
    *,
    reload: ReloadFunction,
    status: ViewFunction,
    registrations: ViewFunction,
    calls: ViewFunction,
    metrics: Callable[[], str],
) -> Starlette:
    """The admin API over these functions of the running server (``pbx.server.PbxServer``)."""

    async def do_reload(request: Request) -> Response:
        code, body = await reload()
        return AdminJsonResponse(body, code)

    async def do_status(request: Request) -> Response:
        return AdminJsonResponse(status())

    async def do_registrations(request: Request) -> Response:
        return AdminJsonResponse(registrations())

    async def do_calls(request: Request) -> Response:
        return AdminJsonResponse(calls())

    async def do_metrics(request: Request) -> Response:
        return Response(metrics(), media_type=METRICS_MEDIA_TYPE)

    async def do_openapi(request: Request) -> Response:
        return AdminJsonResponse(OPENAPI)

    routes = {
        "/reload": ("POST", do_reload),
        "/status": ("GET", do_status),
        "/registrations": ("GET", do_registrations),
        "/calls": ("GET", do_calls),
        "/metrics": ("GET", do_metrics),
        "/openapi.json": ("GET", do_openapi),
    }

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        path = request.url.path
        if exc.status_code == 404:
            error = f"no such endpoint: {path}"
        elif exc.status_code == 405:
            # Starlette also answers HEAD wherever GET is routed; the message names what we serve.
            error = f"use {routes[path][0]}" if path in routes else "method not allowed"
        else:
            error = exc.detail
        return AdminJsonResponse({"error": error}, exc.status_code, headers=exc.headers)

    app = Starlette(
        routes=[
            Route(path, _guarded(endpoint), methods=[method])
            for path, (method, endpoint) in routes.items()
        ],
        middleware=[Middleware(BodyLimit, limit=MAX_BODY)],
        exception_handlers={HTTPException: http_error},
    )
    # ``/status/`` is not ``/status``: a 404, as it always was, not a redirect.
    app.router.redirect_slashes = False
    return app


def _guarded(
    endpoint: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    async def guarded(request: Request) -> Response:
        try:
            return await endpoint(request)
        except Exception:  # the API boundary: one failing request never stops the server
            log.exception("admin_request_failed", method=request.method, path=request.url.path)
            return AdminJsonResponse({"error": "internal error"}, 500)

    return guarded


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes gets 413 before the app sees it.

    A declared Content-Length over the limit is refused without reading; a chunked body is read
    up to the limit. The admin API's bodies are empty, so buffering the rest costs nothing.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await _refuse(scope, receive, send, declared.isdigit())
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await _refuse(scope, receive, send, True)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)


async def _refuse(scope: Scope, receive: Receive, send: Send, too_large: bool) -> None:
    if too_large:
        response = AdminJsonResponse({"error": "body too large"}, 413)
    else:
        response = AdminJsonResponse({"error": "bad Content-Length"}, 400)
    await response(scope, receive, send)


# -- The OpenAPI 3.1 description (served at GET /openapi.json; tests/test_admin_api.py checks the
# document and every route's real answers against it).


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json_content(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERRORS = {
    "413": {"$ref": "#/components/responses/PayloadTooLarge"},
    "500": {"$ref": "#/components/responses/InternalError"},
}
_NULLABLE_STRING = {"type": ["string", "null"]}
_STRINGS = {"type": "array", "items": {"type": "string"}}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "pbx admin API",
        "version": "1",
        "description": (
            "The running server's admin API on `[admin] listen` (loopback by default). "
            'Every error is JSON `{"error": "..."}`: 404 for an unknown path, 405 (with '
            "`Allow`) for a known path with another method, 413 for a request body over 64 KiB, "
            "500 when the server failed to answer. Times are POSIX seconds."
        ),
    },
    "paths": {
        "/reload": {
            "post": {
                "operationId": "reload",
                "summary": "Reload the configuration (as `pbx reload` and SIGHUP do)",
                "description": (
                    "Validates every file first: a valid configuration is swapped in at once, an "
                    "invalid one changes nothing and its problems are listed. The request body "
                    "is ignored."
                ),
                "responses": {
                    "200": _json_content(_ref("ReloadDone"), "The new configuration is in force"),
                    "409": _json_content(
                        _ref("ReloadRefused"), "Refused: the old configuration stays in force"
                    ),
                    **_ERRORS,
                },
            }
        },
        "/status": {
            "get": {
                "operationId": "status",
                "summary": "Server status: version, uptime, configuration, listeners, counts",
                "responses": {"200": _json_content(_ref("Status"), "The status"), **_ERRORS},
            }
        },
        "/registrations": {
            "get": {
                "operationId": "registrations",
                "summary": "The active registrations (contacts bound to extensions)",
                "responses": {
                    "200": _json_content(
                        {"type": "array", "items": _ref("Registration")}, "Active registrations"
                    ),
                    **_ERRORS,
                },
            }
        },
        "/calls": {
            "get": {
                "operationId": "calls",
                "summary": "The calls in progress",
                "responses": {
                    "200": _json_content({"type": "array", "items": _ref("Call")}, "Active calls"),
                    **_ERRORS,
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics (text exposition format 0.0.4)",
                "responses": {
                    "200": {
                        "description": "The metrics",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_ERRORS,
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "responses": {
                    "200": _json_content({"type": "object"}, "The OpenAPI 3.1 document"),
                    **_ERRORS,
                },
            }
        },
    },
    "components": {
        "responses": {
            "NotFound": _json_content(_ref("Error"), "No such endpoint"),
            "MethodNotAllowed": _json_content(_ref("Error"), "The path takes another method"),
            "PayloadTooLarge": _json_content(_ref("Error"), "The request body is over 64 KiB"),
            "InternalError": _json_content(_ref("Error"), "The server failed to answer"),
        },
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {"type": "string"}},
                "additionalProperties": False,
            },
            "ReloadDone": {
                "type": "object",
                "required": ["version", "digest", "warnings"],
                "properties": {
                    "version": {"type": "integer", "description": "Configuration version now"},
                    "digest": {"type": "string", "description": "SHA-256 hex of the files"},
                    "changed": {
                        "type": "boolean",
                        "description": "False when the files were those in force: the version "
                        "stays",
                    },
                    "warnings": _STRINGS,
                },
                "additionalProperties": False,
            },
            "ReloadRefused": {
                "type": "object",
                "required": ["version", "digest", "errors"],
                "properties": {
                    "version": {"type": "integer", "description": "The version still in force"},
                    "digest": {"type": "string"},
                    "errors": {**_STRINGS, "description": "Every problem, with file and field"},
                },
                "additionalProperties": False,
            },
            "ListenAddress": {
                "type": "object",
                "required": ["transport", "host", "port"],
                "properties": {
                    "transport": {"enum": ["UDP", "TCP", "TLS"]},
                    "host": {"type": "string"},
                    "port": {"type": "integer", "minimum": 0, "maximum": 65535},
                },
                "additionalProperties": False,
            },
            "Tenant": {
                "type": "object",
                "required": ["id", "domain", "default", "numbers", "users"],
                "properties": {
                    "id": {"type": "string"},
                    "domain": {"type": "string"},
                    "default": {"type": "boolean"},
                    "numbers": _STRINGS,
                    "users": {**_STRINGS, "description": "Extensions, sorted"},
                },
                "additionalProperties": False,
            },
            "Ban": {
                "type": "object",
                "required": ["host", "until"],
                "properties": {"host": {"type": "string"}, "until": {"type": "number"}},
                "additionalProperties": False,
            },
            "Status": {
                "type": "object",
                "required": [
                    "server_version",
                    "uptime_seconds",
                    "config_version",
                    "config_digest",
                    "tenants",
                    "sip",
                    "tcp_connections",
                ],
                "properties": {
                    "server_version": {"type": "string"},
                    "uptime_seconds": {"type": "number", "minimum": 0},
                    "config_version": {"type": "integer"},
                    "config_digest": {"type": "string"},
                    "tenants": {"type": "array", "items": _ref("Tenant")},
                    "sip": {"type": "array", "items": _ref("ListenAddress")},
                    "tcp_connections": {"type": "integer", "minimum": 0},
                    "registrations": {"type": "integer", "minimum": 0},
                    "transactions": {"type": "integer", "minimum": 0},
                    "bans": {"type": "array", "items": _ref("Ban")},
                    "calls_active": {"type": "integer", "minimum": 0},
                    "dialogs": {"type": "integer", "minimum": 0},
                    "rtp_ports_in_use": {"type": "integer", "minimum": 0},
                },
                "additionalProperties": False,
            },
            "Registration": {
                "type": "object",
                "required": [
                    "tenant",
                    "extension",
                    "contact",
                    "source",
                    "transport",
                    "encrypted",
                    "user_agent",
                    "registered_at",
                    "expires_in",
                ],
                "properties": {
                    "tenant": {"type": "string"},
                    "extension": {"type": "string"},
                    "contact": {"type": "string", "description": "The Contact URI"},
                    "source": {"type": "string", "description": "host:port it registered from"},
                    "transport": {"enum": ["UDP", "TCP", "TLS"]},
                    "encrypted": {
                        "type": "boolean",
                        "description": "Signalling over TLS (issue #18)",
                    },
                    "user_agent": _NULLABLE_STRING,
                    "registered_at": {"type": "number"},
                    "expires_in": {"type": "integer", "minimum": 0},
                    # Issue 15: what routing sees (optional, so older clients still validate).
                    "reachable": {
                        "type": "boolean",
                        "description": "False: keep-alive unanswered or TCP connection closed; "
                        "a call does not ring this contact",
                    },
                    "keepalive_answered": {
                        "type": "boolean",
                        "description": "The contact answered a keep-alive check at least once "
                        "(only such contacts are judged by keep-alives)",
                    },
                    # Issue 20: several nodes on one database (optional, as above).
                    "node": {
                        **_NULLABLE_STRING,
                        "description": "The other node this phone registered through (its "
                        "[storage] node); null: this node",
                    },
                },
                "additionalProperties": False,
            },
            "Leg": {
                "type": "object",
                "required": ["fork", "to", "state", "call_id"],
                "properties": {
                    "fork": {"type": "string"},
                    "to": {"type": "string", "description": "Extension or number dialled"},
                    "state": {"enum": ["calling", "proceeding", "answered", "ended"]},
                    "call_id": {"type": "string", "description": "The leg's SIP Call-ID"},
                },
                "additionalProperties": False,
            },
            "Call": {
                "type": "object",
                "required": [
                    "id",
                    "tenant",
                    "caller",
                    "called",
                    "state",
                    "config_version",
                    "started_at",
                    "answered_at",
                    "answered_by",
                    "legs",
                    "call_id",
                ],
                "properties": {
                    "id": {"type": "string"},
                    "tenant": _NULLABLE_STRING,
                    "caller": {"type": "string"},
                    "called": {"type": "string"},
                    "state": {"enum": ["ringing", "answered", "ended"]},
                    "config_version": {"type": "integer"},
                    "started_at": {"type": "number"},
                    "answered_at": {"type": ["number", "null"]},
                    "answered_by": _NULLABLE_STRING,
                    "legs": {"type": "array", "items": _ref("Leg")},
                    "call_id": {"type": "string", "description": "The caller's SIP Call-ID"},
                    # issue #18 (optional, so older clients still validate)
                    "encryption": {
                        "type": "object",
                        "required": ["caller", "callee"],
                        "properties": {
                            "caller": _ref("Protection"),
                            "callee": {
                                "oneOf": [_ref("Protection"), {"type": "null"}],
                                "description": "The answered side; null while ringing or "
                                "while the PBX itself answers (009608)",
                            },
                        },
                        "additionalProperties": False,
                    },
                },
                "additionalProperties": False,
            },
            "Protection": {
                "type": "object",
                "description": "How one side of a call is protected (issue #18)",
                "required": ["tls", "srtp", "encrypted"],
                "properties": {
                    "tls": {"type": "boolean", "description": "Signalling over TLS"},
                    "srtp": {"type": "boolean", "description": "Media as SRTP"},
                    "encrypted": {"type": "boolean", "description": "Both"},
                },
                "additionalProperties": False,
            },
        },
    },
}
