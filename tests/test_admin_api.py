"""The admin API app (pbx/admin.py): routes, errors, the body cap, and its OpenAPI 3.1 document.

Unit tests drive the Starlette app in process (TestClient, no sockets) over fake server
functions; one integration test checks a real running server's answers against the document.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_spec
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.testclient import TestClient
from structlog.testing import capture_logs

from pbx.admin import MAX_BODY, OPENAPI, build_admin_app
from tests.integration.harness import running_server, write_config
from tests.integration.sip_client import SipUdpClient

STATUS = {
    "server_version": "0.1.0",
    "uptime_seconds": 12.5,
    "config_version": 3,
    "config_digest": "ab" * 32,
    "tenants": [
        {
            "id": "acme",
            "domain": "acme.example",
            "default": True,
            "numbers": ["0312345678"],
            "users": ["1001", "1002"],
        }
    ],
    "sip": [
        {"transport": "UDP", "host": "127.0.0.1", "port": 5060},
        {"transport": "TCP", "host": "127.0.0.1", "port": 5060},
    ],
    "tcp_connections": 1,
    "registrations": 1,
    "transactions": 4,
    "bans": [{"host": "192.0.2.9", "until": 1767225600.0}],
    "calls_active": 1,
    "dialogs": 2,
    "rtp_ports_in_use": 4,
}
REGISTRATIONS = [
    {
        "tenant": "acme",
        "extension": "1001",
        "contact": "sip:1001@127.0.0.1:5062;transport=udp",
        "source": "127.0.0.1:5062",
        "transport": "UDP",
        "encrypted": False,
        "user_agent": "佐藤's phone",
        "registered_at": 1767225600.25,
        "expires_in": 3599,
    },
    {
        "tenant": "acme",
        "extension": "1002",
        "contact": "sip:1002@127.0.0.1:5064",
        "source": "127.0.0.1:40001",
        "transport": "TLS",
        "encrypted": True,
        "user_agent": None,
        "registered_at": 1767225601.0,
        "expires_in": 1,
    },
]
CALLS = [
    {
        "id": "c1",
        "tenant": "acme",
        "caller": "0901234567",
        "called": "0312345678",
        "state": "answered",
        "config_version": 3,
        "started_at": 1767225600.0,
        "answered_at": 1767225604.5,
        "answered_by": "1001",
        "call_id": "a-leg@carrier",
        "legs": [
            {"fork": "f1", "to": "1001", "state": "answered", "call_id": "b1@pbx"},
            {"fork": "f1", "to": "1002", "state": "ended", "call_id": "b2@pbx"},
        ],
    },
    {
        "id": "c2",
        "tenant": None,
        "caller": "1001",
        "called": "1002",
        "state": "ringing",
        "config_version": 3,
        "started_at": 1767225600.0,
        "answered_at": None,
        "answered_by": None,
        "call_id": "a-leg@phone",
        "legs": [],
    },
]
METRICS = '# TYPE pbx_reloads_total counter\npbx_reloads_total{result="ok"} 1\n'


class FakeServer:
    """The five functions the admin app is built from, with canned answers."""

    def __init__(self) -> None:
        self.reload_answer: tuple[int, dict[str, Any]] = (
            200,
            {"version": 4, "digest": "cd" * 32, "warnings": ["user 1003: no caller_id"]},
        )
        self.reloads = 0
        self.fail_status = False

    async def reload(self) -> tuple[int, dict[str, Any]]:
        self.reloads += 1
        return self.reload_answer

    def status(self) -> dict[str, Any]:
        if self.fail_status:
            raise RuntimeError("boom")
        return STATUS

    def app(self) -> Starlette:
        return build_admin_app(
            reload=self.reload,
            status=self.status,
            registrations=lambda: REGISTRATIONS,
            calls=lambda: CALLS,
            metrics=lambda: METRICS,
        )


@pytest.fixture
def fake() -> FakeServer:
    return FakeServer()


@pytest.fixture
def client(fake: FakeServer) -> Iterator[TestClient]:
    with TestClient(fake.app(), raise_server_exceptions=False) as test_client:
        yield test_client


def response_validator(
    path: str, method: str, status: int, media_type: str
) -> Draft202012Validator:
    """A JSON Schema validator for one documented response (its ``$ref``s resolve in the doc)."""
    response = OPENAPI["paths"][path][method.lower()]["responses"][str(status)]
    if "$ref" in response:
        response = OPENAPI["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    schema = response["content"][media_type]["schema"]
    return Draft202012Validator({**schema, "components": OPENAPI["components"]})


def error_validator() -> Draft202012Validator:
    schema = OPENAPI["components"]["schemas"]["Error"]
    return Draft202012Validator(schema)


DOCUMENTED = [
    (path, method.upper()) for path, operations in OPENAPI["paths"].items() for method in operations
]


def test_openapi_document_is_valid_openapi_3_1() -> None:
    assert OPENAPI["openapi"].startswith("3.1.")
    validate_spec(OPENAPI)


def test_openapi_document_describes_exactly_the_routes_served(fake: FakeServer) -> None:
    app = fake.app()
    served = {
        (route.path, method)
        for route in app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }
    assert served == set(DOCUMENTED)


def test_every_schema_in_the_document_is_valid_json_schema() -> None:
    for schema in OPENAPI["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize(("path", "method"), DOCUMENTED)
def test_every_route_answers_as_documented(client: TestClient, path: str, method: str) -> None:
    response = client.request(method, path)
    assert response.status_code == 200
    media_type = response.headers["content-type"].split(";")[0]
    content = OPENAPI["paths"][path][method.lower()]["responses"]["200"]["content"]
    assert media_type in content
    body = response.json() if media_type == "application/json" else response.text
    response_validator(path, method, 200, media_type).validate(body)


def test_views_are_rendered_unchanged(client: TestClient) -> None:
    assert client.get("/status").json() == STATUS
    assert client.get("/registrations").json() == REGISTRATIONS
    assert client.get("/calls").json() == CALLS
    assert client.get("/openapi.json").json() == OPENAPI


def test_json_is_indented_utf8_with_a_final_newline(client: TestClient) -> None:
    response = client.get("/registrations")
    assert response.headers["content-type"] == "application/json"
    assert response.content.startswith(b'[\n  {\n    "tenant": "acme",')
    assert "佐藤".encode() in response.content
    assert response.content.endswith(b"]\n")


def test_metrics_are_prometheus_text(client: TestClient) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert response.text == METRICS


def test_reload_answers_200_with_the_new_version(client: TestClient, fake: FakeServer) -> None:
    response = client.post("/reload")
    assert response.status_code == 200
    assert response.json() == fake.reload_answer[1]
    assert fake.reloads == 1


def test_refused_reload_answers_409_with_the_errors(client: TestClient, fake: FakeServer) -> None:
    fake.reload_answer = (
        409,
        {"version": 3, "digest": "ab" * 32, "errors": ["acme.toml: user 1001: bad password"]},
    )
    response = client.post("/reload")
    assert response.status_code == 409
    assert response.json() == fake.reload_answer[1]
    response_validator("/reload", "POST", 409, "application/json").validate(response.json())


@pytest.mark.parametrize("path", ["/nope", "/status/", "/", "/reload/x"])
def test_unknown_path_is_404_json(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": f"no such endpoint: {path}"}
    error_validator().validate(response.json())


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/reload", "POST"),
        ("POST", "/status", "GET"),
        ("DELETE", "/calls", "GET"),
        ("PUT", "/metrics", "GET"),
        ("POST", "/openapi.json", "GET"),
    ],
)
def test_wrong_method_is_405_json_with_allow(
    client: TestClient, fake: FakeServer, method: str, path: str, allowed: str
) -> None:
    response = client.request(method, path)
    assert response.status_code == 405
    assert response.json() == {"error": f"use {allowed}"}
    assert allowed in response.headers["allow"]
    error_validator().validate(response.json())
    assert fake.reloads == 0


def test_body_over_64_kib_is_413_and_not_handled(client: TestClient, fake: FakeServer) -> None:
    response = client.post("/reload", content=b"x" * (MAX_BODY + 1))
    assert response.status_code == 413
    assert response.json() == {"error": "body too large"}
    response_validator("/reload", "POST", 413, "application/json").validate(response.json())
    assert fake.reloads == 0


def test_chunked_body_over_64_kib_is_413(client: TestClient, fake: FakeServer) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(5):
            yield b"x" * (16 * 1024)

    response = client.post("/reload", content=chunks())
    assert response.status_code == 413
    assert fake.reloads == 0


def test_body_of_exactly_64_kib_is_accepted(client: TestClient, fake: FakeServer) -> None:
    response = client.post("/reload", content=b"x" * MAX_BODY)
    assert response.status_code == 200
    assert fake.reloads == 1


def test_failing_handler_is_500_json_and_logged(client: TestClient, fake: FakeServer) -> None:
    fake.fail_status = True
    with capture_logs() as logs:
        response = client.get("/status")
    assert response.status_code == 500
    assert response.json() == {"error": "internal error"}
    response_validator("/status", "GET", 500, "application/json").validate(response.json())
    failed = [entry for entry in logs if entry["event"] == "admin_request_failed"]
    assert failed
    assert failed[0]["path"] == "/status"
    assert failed[0]["exc_info"] is True


@pytest.mark.integration
def test_running_server_answers_match_the_document(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    with running_server(config) as server:
        with SipUdpClient(server.udp, "1001", "secret1001", "acme.example") as phone:
            assert phone.register().status == 200
        for path in ("/status", "/registrations", "/calls", "/openapi.json"):
            code, body = server.admin_request("GET", path)
            assert code == 200, (path, body)
            response_validator(path, "GET", 200, "application/json").validate(body)
        code, status = server.admin_request("GET", "/status")
        # Every documented status field is there once the server runs.
        assert set(status) == set(OPENAPI["components"]["schemas"]["Status"]["properties"])
        code, registrations = server.admin_request("GET", "/registrations")
        assert [r["extension"] for r in registrations] == ["1001"]
        code, body = server.admin_request("DELETE", "/status")
        assert (code, body) == (405, {"error": "use GET"})
        code, body = server.admin_request("GET", "/nope")
        assert (code, body) == (404, {"error": "no such endpoint: /nope"})
