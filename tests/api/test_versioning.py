"""Header versioning and seed D's response headers under /api/v1: X-API-Version, X-VRAM-Usage, X-Model-Used."""

from __future__ import annotations

import doctest
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
from fastapi import APIRouter, FastAPI, Request
from fastapi.testclient import TestClient

import faceport.api.versioning
from faceport.api.app import PLATFORM_MIDDLEWARE, _base_app, create_app
from faceport.config import Settings

MEMORY = re.compile(r"^\d+(\.\d+)?(MB|GB)/\d+(\.\d+)?(MB|GB)$")


def build_app(settings: Settings) -> FastAPI:
    router = APIRouter(prefix="/api/v1")

    @router.get("/plain")
    async def plain() -> dict[str, bool]:
        return {"ok": True}

    @router.get("/modelled")
    async def modelled(request: Request) -> dict[str, bool]:
        request.state.model_used = "blazeface_full,dlib_resnet"
        return {"ok": True}

    app = _base_app("test", "versioning", settings, None, "plain", inner_middleware=PLATFORM_MIDDLEWARE)
    app.include_router(router)
    return app


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(home=tmp_path / "home", pull_on_start=False, model_idle_ttl=0)
    with TestClient(build_app(settings)) as test_client:
        yield test_client


@pytest.mark.parametrize(("path", "version", "status", "message"), [
    ("/api/v1/plain", None, 200, None),
    ("/api/v1/plain", "v1", 200, None),
    ("/api/v1/plain", "1", 200, None),
    ("/api/v1/plain", " V1 ", 200, None),
    ("/api/v1/plain", "v0", 200, None),  # seed D's deprecated version: served, with Deprecation/Sunset/Link
    ("/api/v1/plain", "0", 200, None),
    ("/api/v1/plain", "v2", 400, "unsupported API version 'v2'; supported versions: v1, v0 (deprecated)"),
    ("/api/v1/plain", "banana", 400, "unsupported API version 'banana'; supported versions: v1, v0 (deprecated)"),
    ("/api/v1/plain", "", 400, "unsupported API version ''; supported versions: v1, v0 (deprecated)"),
    ("/api/v1/no/such/route", "v2", 400, "unsupported API version 'v2'; supported versions: v1, v0 (deprecated)"),
    ("/health", "v2", 200, None),  # the header is seed D's: other surfaces ignore it
])
def test_api_version_header(client: TestClient, path: str, version: str | None, status: int,
                            message: str | None) -> None:
    headers = {"X-Request-ID": "req-version"} | ({"X-API-Version": version} if version is not None else {})
    response = client.get(path, headers=headers)
    assert response.status_code == status
    assert response.headers["x-request-id"] == "req-version"
    deprecated = version is not None and version.strip().lower() in ("v0", "0") and path.startswith("/api/v1")
    assert ("deprecation" in response.headers) == deprecated
    assert ("sunset" in response.headers) == deprecated
    if deprecated:
        assert response.headers["x-api-version"] == "v0"
        assert re.fullmatch(r"@\d+", response.headers["deprecation"])  # RFC 9745: a structured-field date
        assert parsedate_to_datetime(response.headers["sunset"]) > datetime.fromtimestamp(
            int(response.headers["deprecation"][1:]), UTC)  # RFC 8594: an HTTP-date after the deprecation
        assert '</docs>; rel="deprecation"' in response.headers["link"]
    if message is None:
        return
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == "UNSUPPORTED_VERSION"
    assert body["error"]["message"] == message
    assert body["error"]["details"]["supported"] == ["v1", "v0"]
    assert body["error"]["details"]["deprecated"] == ["v0"]
    assert body["meta"]["request_id"] == "req-version"
    assert response.headers["x-api-version"] == "v1"  # tells the client what it should ask for


def test_platform_responses_carry_version_and_memory_headers(client: TestClient) -> None:
    for response in (client.get("/api/v1/plain"), client.get("/api/v1/no/such/route")):
        assert response.headers["x-api-version"] == "v1"
        assert MEMORY.match(response.headers["x-vram-usage"]), response.headers["x-vram-usage"]
        assert "x-model-used" not in response.headers
    health = client.get("/health")
    assert "x-api-version" not in health.headers and "x-vram-usage" not in health.headers


def test_model_used_header_when_the_route_names_its_models(client: TestClient) -> None:
    response = client.get("/api/v1/modelled")
    assert response.status_code == 200
    assert response.headers["x-model-used"] == "blazeface_full,dlib_resnet"


def test_the_main_app_applies_versioning(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", pull_on_start=False, model_idle_ttl=0)
    with TestClient(create_app(settings)) as c:
        refused = c.get("/api/v1/face/subjects", headers={"X-API-Version": "v7"})
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "UNSUPPORTED_VERSION"
        legacy = c.get("/api/v1/face/subjects", headers={"X-API-Version": "v0"})  # same route, deprecated version
        assert legacy.status_code == 401 and legacy.json()["error"]["code"] == "AUTH_REQUIRED"
        assert legacy.headers["x-api-version"] == "v0" and legacy.headers["deprecation"].startswith("@")
        missing = c.get("/api/v1/no/such/route")
        assert missing.status_code == 404 and missing.headers["x-api-version"] == "v1"


def test_docstring_examples() -> None:
    result = doctest.testmod(faceport.api.versioning)
    assert result.attempted > 0 and result.failed == 0
