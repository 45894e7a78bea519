"""Cross-cutting platform behaviour on both apps: the OpenAPI schema's error statuses, CORS (HTTP and
Socket.IO), and the audit log (one JSON line per request, personal data masked, rotation)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import TypeAdapter

from faceport.api.app import create_app, create_privacy_app
from faceport.api.docs import PlainError, PlatformError, PrivacyError
from faceport.config import Settings
from faceport.realtime.live_swap import socketio_origins
from tests.conftest import FIXTURES, register_headers

ALLOWED = "https://app.example.com"
OTHER = "https://evil.example.net"


def _operations(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


# ---- OpenAPI: documented error statuses -------------------------------------------------------

def test_no_operation_documents_422_on_either_app(client, privacy_client) -> None:
    for app_client in (client, privacy_client):
        schema = app_client.get("/openapi.json").json()
        for path, method, operation in _operations(schema):
            assert "422" not in operation["responses"], (method, path)
        assert "HTTPValidationError" not in schema["components"]["schemas"]


@pytest.mark.parametrize(("app_name", "method", "path", "statuses", "model"), [
    ("main", "get", "/api/v1/face/subjects/{subject_id}", {"400", "401", "404", "429"}, "PlatformError"),
    ("main", "post", "/api/v1/face/detect", {"400", "401", "413", "429", "503"}, "PlatformError"),
    ("main", "get", "/api/v1/auth/users", {"400", "401", "403", "429"}, "PlatformError"),
    ("main", "get", "/api/v1/system/status", {"400", "401", "403", "429"}, "PlatformError"),
    ("main", "post", "/api/v1/system/models/load", {"400", "401", "403", "404", "413", "429", "503"}, "PlatformError"),
    ("main", "post", "/process/image", {"400", "413", "503"}, "PlainError"),
    ("main", "get", "/download/{name}", {"404"}, "PlainError"),
    ("main", "get", "/metrics", {"401"}, "PlainError"),
    ("privacy", "get", "/api/v1/jobs/{job_id}", {"404"}, "PrivacyError"),
    ("privacy", "get", "/api/v1/jobs/{job_id}/report", {"404"}, "PrivacyError"),
    ("privacy", "post", "/api/v1/process", {"400", "413", "503"}, "PrivacyError"),
])
def test_operations_document_their_error_statuses_with_the_surface_envelope(
        client, privacy_client, app_name: str, method: str, path: str, statuses: set[str], model: str) -> None:
    schema = (client if app_name == "main" else privacy_client).get("/openapi.json").json()
    responses = schema["paths"][path][method]["responses"]
    assert statuses <= set(responses), sorted(responses)
    for status in statuses:
        ref = responses[status]["content"]["application/json"]["schema"]["$ref"]
        assert ref == f"#/components/schemas/{model}"
    assert model in schema["components"]["schemas"]


def test_docs_openapi_json_is_the_same_schema(client) -> None:
    assert client.get("/docs/openapi.json").json() == client.get("/openapi.json").json()


def _pdf() -> bytes:
    return b"%PDF-1.4 not an image"


# (method, path, request kwargs, needs auth) -> the status must be documented and the body match the model
BAD_REQUESTS: list[tuple[str, str, str, dict[str, Any], bool]] = [
    ("post", "/api/v1/face/detect", "/api/v1/face/detect", {"files": {"image": ("x.pdf", _pdf())}}, True),
    ("post", "/api/v1/face/detect", "/api/v1/face/detect", {}, False),
    ("post", "/api/v1/face/detect", "/api/v1/face/detect", {"headers": {"X-API-Version": "v9"}}, True),
    ("get", "/api/v1/face/subjects/{subject_id}", "/api/v1/face/subjects/sub_doesnotexist", {}, True),
    ("get", "/api/v1/face/subjects/{subject_id}", "/api/v1/face/subjects/sub_doesnotexist", {}, False),
    ("get", "/api/v1/face/subjects", "/api/v1/face/subjects", {"params": {"size": "-4"}}, True),
    ("get", "/api/v1/auth/users", "/api/v1/auth/users", {}, True),  # a plain user: 403
    ("post", "/api/v1/system/optimize", "/api/v1/system/optimize", {}, True),  # a plain user: 403
    ("post", "/api/v1/system/models/load", "/api/v1/system/models/load", {"json": {"model": "x"}}, False),
    ("post", "/api/v1/auth/login", "/api/v1/auth/login", {"json": {"username": 3}}, False),
    ("post", "/process/image", "/process/image", {"data": {"request": "{not json"}}, False),
    ("get", "/download/{name}", "/download/nothing-here.jpg", {}, False),
    ("get", "/metrics", "/metrics", {}, False),
]


@pytest.mark.parametrize(("method", "template", "path", "kwargs", "auth"), BAD_REQUESTS)
def test_statuses_really_returned_are_documented(client, method: str, template: str, path: str,
                                                 kwargs: dict[str, Any], auth: bool) -> None:
    schema = client.get("/openapi.json").json()
    headers = {**(register_headers(client) if auth else {}), **kwargs.pop("headers", {})}
    response = client.request(method.upper(), path, headers=headers, **kwargs)
    assert response.status_code >= 400, response.text
    documented = schema["paths"][template][method]["responses"]
    assert str(response.status_code) in documented, (response.status_code, sorted(documented))
    model = documented[str(response.status_code)]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    TypeAdapter({"PlatformError": PlatformError, "PlainError": PlainError}[model]).validate_python(response.json())


def test_privacy_error_bodies_match_the_documented_model(privacy_client) -> None:
    schema = privacy_client.get("/openapi.json").json()
    response = privacy_client.get("/api/v1/jobs/no-such-job")
    assert str(response.status_code) in schema["paths"]["/api/v1/jobs/{job_id}"]["get"]["responses"]
    PrivacyError.model_validate(response.json())


# ---- CORS ------------------------------------------------------------------------------------

@pytest.fixture
def cors_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"cors_origins": [ALLOWED, "http://localhost:3000"]})


PREFLIGHT = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization, content-type"}


@pytest.mark.parametrize(("origins", "origin", "preflight", "cors"), [
    ([ALLOWED], ALLOWED, True, True),
    ([ALLOWED], ALLOWED, False, True),
    ([ALLOWED], OTHER, True, False),
    ([ALLOWED], OTHER, False, False),
    ([], ALLOWED, True, False),  # the default: no CORS at all
    ([], ALLOWED, False, False),
    (["*"], OTHER, True, True),
])
@pytest.mark.parametrize("app_name", ["main", "privacy"])
def test_cors(settings: Settings, app_name: str, origins: list[str], origin: str, preflight: bool,
              cors: bool) -> None:
    factory = create_app if app_name == "main" else create_privacy_app
    app = factory(settings.model_copy(update={"cors_origins": origins}))
    with TestClient(app) as c:
        if preflight:
            response = c.options("/api/v1/face/detect" if app_name == "main" else "/api/v1/process",
                                 headers={"Origin": origin, **PREFLIGHT})
        else:
            response = c.get("/health", headers={"Origin": origin})
    headers = {k.lower() for k in response.headers}
    assert ("access-control-allow-origin" in headers) == cors, dict(response.headers)
    if not cors:
        assert not any(h.startswith("access-control-") for h in headers)
        return
    assert response.headers["access-control-allow-origin"] == origin
    assert "Origin" in response.headers["vary"]
    if preflight:
        assert response.status_code == 200
        assert "POST" in response.headers["access-control-allow-methods"]
        assert response.headers["access-control-allow-headers"] == "authorization, content-type"
    else:
        assert response.status_code == 200
        assert "X-Request-ID" in response.headers["access-control-expose-headers"]


@pytest.mark.parametrize(("origins", "origin", "allowed"), [
    ([], ALLOWED, None),  # None: python-engineio's own same-origin check
    ([ALLOWED], ALLOWED, True),
    ([ALLOWED], ALLOWED.upper() + "/", True),
    ([ALLOWED], OTHER, False),
    ([ALLOWED], "http://testserver", True),  # same origin stays allowed
    (["*"], OTHER, True),
])
def test_socketio_allowed_origins_follow_the_setting(origins: list[str], origin: str, allowed: bool | None) -> None:
    check = socketio_origins(origins)
    if allowed is None:
        assert check is None
        return
    assert check is not None
    assert check(origin, {"wsgi.url_scheme": "http", "HTTP_HOST": "testserver"}) is allowed


@pytest.mark.parametrize(("origin", "accepted"), [(ALLOWED, True), (OTHER, False), ("http://testserver", True)])
def test_socketio_handshake_honours_cors_origins(cors_settings: Settings, origin: str, accepted: bool) -> None:
    with TestClient(create_app(cors_settings)) as c:
        response = c.get("/socket.io/?EIO=4&transport=polling", headers={"Origin": origin})
    assert (response.status_code == 200) is accepted, response.text
    if accepted:
        assert response.headers["access-control-allow-origin"] == origin


# ---- audit log -------------------------------------------------------------------------------

def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_audit_log_one_masked_line_per_request_on_both_apps(settings: Settings, tmp_path: Path) -> None:
    audit = tmp_path / "audit" / "audit.log"
    settings = settings.model_copy(update={"audit_log": str(audit)})
    user = {"username": "johndoe", "email": "john.doe@example.com", "password": "john-password-1"}
    image = (FIXTURES / "mpl_grace_hopper.jpg").read_bytes()
    with TestClient(create_app(settings)) as c:
        headers = register_headers(c, user)  # register + login: 2 requests
        detected = c.post("/api/v1/face/detect", headers=headers, files={"image": ("g.jpg", image)})
        assert detected.status_code == 200
        c.get("/api/v1/face/subjects/sub_missing?access_token=s3cr3t-token", headers=headers)
        c.get("/api/v1/proctor/clients/john.doe@example.com")
        c.get("/health", headers={"X-Request-ID": "req-audit-1"})
        with c.websocket_connect("/ws"):
            pass
    with TestClient(create_privacy_app(settings)) as p:
        p.get("/api/v1/jobs/nothing")
    text = audit.read_text()
    lines = _lines(audit)
    assert [(e["app"], e["method"], e["status"]) for e in lines] == [
        ("main", "POST", 201), ("main", "POST", 200), ("main", "POST", 200), ("main", "GET", 404),
        ("main", "GET", 401), ("main", "GET", 200), ("main", "GET", 101), ("privacy", "GET", 404)]
    detect = lines[2]
    assert detect["route"] == "/api/v1/face/detect" and detect["type"] == "http"
    assert detect["principal"].startswith("user:") and detect["user"] == "j***"
    assert detect["model"] and detect["client_ip"] and detect["latency_ms"] > 0
    assert detect["request_id"] == detected.headers["x-request-id"]
    assert lines[3]["route"] == "/api/v1/face/subjects/{subject_id}"
    assert lines[4]["path"] == "/api/v1/proctor/clients/j***@e***.com"
    assert lines[5]["request_id"] == "req-audit-1" and lines[5]["principal"] is None
    assert lines[6]["type"] == "websocket" and lines[6]["route"] == "/ws"
    for secret in ("johndoe", "john.doe", "example.com", "s3cr3t", "access_token", "john-password"):
        assert secret not in text
    assert "JFIF" not in text and "\\xff\\xd8" not in text  # never image bytes


def test_audit_log_rotates_and_can_be_turned_off(settings: Settings, tmp_path: Path) -> None:
    audit = tmp_path / "audit.log"
    rotating = settings.model_copy(update={"audit_log": str(audit), "audit_log_max_bytes": 1200,
                                           "audit_log_backups": 2})
    with TestClient(create_app(rotating)) as c:
        for _ in range(40):
            c.get("/health")
    assert audit.exists() and Path(f"{audit}.1").exists() and Path(f"{audit}.2").exists()
    assert not Path(f"{audit}.3").exists()
    assert audit.stat().st_size <= 1200
    total = sum(len(_lines(p)) for p in (audit, Path(f"{audit}.1"), Path(f"{audit}.2")))
    assert 0 < total <= 40

    off = settings.model_copy(update={"audit_log": "off"})
    assert off.audit_log_path is None
    with TestClient(create_app(off)) as c:
        c.get("/health")
    assert not (settings.home / "audit.log").exists()

    with TestClient(create_app(settings)) as c:  # default: <home>/audit.log
        c.get("/health")
    assert _lines(settings.home / "audit.log")[0]["route"] == "/health"


def test_settings_refuse_a_malformed_cors_origin(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not an origin"):
        Settings(home=tmp_path, cors_origins="app.example.com")
    assert Settings(home=tmp_path, cors_origins=f"{ALLOWED}/, http://LOCALHOST:3000").cors_origins == [
        ALLOWED, "http://localhost:3000"]


def test_masking_docstring_examples() -> None:
    import doctest

    import faceport.api.audit

    result = doctest.testmod(faceport.api.audit)
    assert result.attempted > 0 and result.failed == 0
