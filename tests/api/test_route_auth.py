"""Every route needs credentials unless seed D (or the docs) says otherwise.

Routes are read from ``create_app(settings).routes`` each run, so a route added later is
checked without editing this file; a new public route must be added to an allow-list below,
on purpose.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.routing import Mount

# Seed D: "All API endpoints require authentication except POST /auth/login, POST /auth/register,
# GET /health, GET /metrics (with API key)". Refresh authenticates by the refresh token in its body.
PUBLIC_API_ROUTES = {
    ("POST", "/api/v1/auth/login"),
    ("POST", "/api/v1/auth/register"),
    ("POST", "/api/v1/auth/refresh"),
}
# Outside /api/v1: health and the API documentation stay open.
OPEN_PATHS = {"/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json", "/docs/openapi.json"}
# Reachable with an API key only.
API_KEY_PATHS = {"/metrics"}
DUMMY_PATH_VALUE = "1"  # valid for str and int path parameters alike


def http_routes(app: FastAPI) -> list[tuple[str, str]]:
    """``(method, path template)`` of every HTTP route, included routers flattened; HEAD/OPTIONS left out.

    Raises:
        AssertionError: A mounted sub-application lives under ``/api/v1`` (its routes cannot be listed).
    """
    try:  # FastAPI >= 0.16x keeps included routers nested; this walks them
        from fastapi.routing import iter_route_contexts

        routes: Any = iter_route_contexts(app.routes)
    except ImportError:  # older FastAPI flattens included routes into app.routes
        routes = app.routes
    found: set[tuple[str, str]] = set()
    for route in routes:
        path, methods = getattr(route, "path", None), getattr(route, "methods", None)
        if not path:
            continue
        if not methods:  # a WebSocket route (authenticated by its own handshake) or a mounted app
            mounted = isinstance(getattr(route, "original_route", route), Mount)
            assert not (mounted and path.startswith("/api/v1")), f"mounted app at {path}: its routes are unchecked"
            continue
        found.update((method, path) for method in methods if method not in ("HEAD", "OPTIONS"))
    return sorted(found)


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", DUMMY_PATH_VALUE, path)


def _app(home: Path, **overrides: Any) -> FastAPI:
    from faceport.api.app import create_app
    from faceport.config import Settings

    return create_app(Settings(home=home, pull_on_start=False, model_idle_ttl=0, **overrides))


ROUTES = http_routes(_app(Path("/nonexistent-faceport-home")))  # building an app touches no disk
API_ROUTES = [r for r in ROUTES if r[1].startswith("/api/v1")]
PROTECTED_API_ROUTES = [r for r in API_ROUTES if r not in PUBLIC_API_ROUTES]
OTHER_ROUTES = [r for r in ROUTES if not r[1].startswith("/api/v1")]
KEY_GUARDED_ROUTES = [r for r in OTHER_ROUTES if r[1] not in OPEN_PATHS]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    app = _app(tmp_path_factory.mktemp("route-auth") / "home", models_dir_override=models_dir)
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def keyed_client(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Any]:
    """An app with ``FACEPORT_API_KEY`` set: then every non-open route outside /api/v1 needs a key too."""
    from fastapi.testclient import TestClient

    app = _app(tmp_path_factory.mktemp("route-auth-key") / "home", models_dir_override=models_dir,
               api_key="operator-key")
    with TestClient(app) as test_client:
        yield test_client


def test_the_route_table_is_really_read() -> None:
    assert ("GET", "/api/v1/auth/profile") in PROTECTED_API_ROUTES
    assert ("POST", "/api/v1/face/detect") in PROTECTED_API_ROUTES
    assert ("GET", "/api/v1/auth/users") in PROTECTED_API_ROUTES
    assert ("POST", "/api/v1/system/models/load") in PROTECTED_API_ROUTES
    assert ("GET", "/health") in OTHER_ROUTES
    assert PUBLIC_API_ROUTES <= set(API_ROUTES), "an exception names a route that no longer exists"


@pytest.mark.parametrize(("method", "path"), PROTECTED_API_ROUTES, ids=[f"{m} {p}" for m, p in PROTECTED_API_ROUTES])
def test_api_route_without_credentials_is_auth_required(client, method: str, path: str) -> None:
    response = client.request(method, concrete(path), content=b"")
    assert response.status_code == 401, f"{method} {path} answered {response.status_code} without credentials"
    body = response.json()
    assert body["success"] is False and body["error"]["code"] == "AUTH_REQUIRED"
    assert "X-API-Key" in body["error"]["message"]


@pytest.mark.parametrize(("method", "path"), PROTECTED_API_ROUTES, ids=[f"{m} {p}" for m, p in PROTECTED_API_ROUTES])
def test_api_route_with_a_bad_token_is_auth_invalid(client, method: str, path: str) -> None:
    response = client.request(method, concrete(path), content=b"", headers={"Authorization": "Bearer x.y.z"})
    assert response.status_code == 401 and response.json()["error"]["code"] == "AUTH_INVALID"


@pytest.mark.parametrize(("method", "path"), sorted(PUBLIC_API_ROUTES), ids=[f"{m} {p}" for m, p in
                                                                             sorted(PUBLIC_API_ROUTES)])
def test_seed_exceptions_are_reachable_without_credentials(client, method: str, path: str) -> None:
    response = client.request(method, path, json={})
    assert response.status_code == 400, response.text  # the body is checked, not the caller
    assert response.json()["error"]["code"] == "MISSING_FIELD"


@pytest.mark.parametrize("path", sorted(OPEN_PATHS))
def test_health_and_docs_stay_open(client, keyed_client, path: str) -> None:
    for c in (client, keyed_client):
        assert c.get(path).status_code == 200, path


@pytest.mark.parametrize(("method", "path"), KEY_GUARDED_ROUTES, ids=[f"{m} {p}" for m, p in KEY_GUARDED_ROUTES])
def test_other_routes_need_a_key_when_one_is_configured(keyed_client, method: str, path: str) -> None:
    response = keyed_client.request(method, concrete(path), content=b"")
    assert response.status_code == 401, f"{method} {path} answered {response.status_code} without credentials"
    assert "AUTH_REQUIRED" in response.text


@pytest.mark.parametrize("path", sorted(API_KEY_PATHS))
def test_metrics_needs_an_api_key(client, keyed_client, path: str) -> None:
    if ("GET", path) not in ROUTES:
        pytest.skip(f"{path} is not served")
    for c in (client, keyed_client):
        assert c.get(path).status_code == 401
        assert c.get(path, headers={"X-API-Key": "wrong"}).status_code == 401
    assert keyed_client.get(path, headers={"X-API-Key": "operator-key"}).status_code == 200
    database_key = client.app.state.context.auth.create_api_key("scraper", "user").key
    assert client.get(path, headers={"X-API-Key": database_key}).status_code == 200
