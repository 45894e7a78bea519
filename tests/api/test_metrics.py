"""GET /metrics: API-key protected Prometheus text with request, rate-limit, model and gallery series."""

from __future__ import annotations

import doctest
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import APIRouter, Depends, FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

import faceport.api.metrics
from faceport.api.app import create_app
from faceport.api.ratelimit import rate_limit
from faceport.config import Settings

KEY = "metrics-test-key-0123456789"
SERIES = ("faceport_http_requests_total", "faceport_http_request_duration_seconds", "faceport_model_loads_total",
          "faceport_models_loaded", "faceport_model_memory_bytes", "faceport_gallery_subjects",
          "faceport_gallery_faces", "faceport_rate_limited_total")


def with_test_routes(app: FastAPI) -> FastAPI:
    router = APIRouter(prefix="/api/v1/test")

    @router.get("/items/{item_id}")
    async def item(item_id: str) -> dict[str, str]:
        return {"id": item_id}

    @router.get("/limited", dependencies=[Depends(rate_limit("user"))])
    async def limited() -> dict[str, bool]:
        return {"ok": True}

    app.include_router(router)
    return app


@pytest.fixture
def keyed_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"api_key": KEY, "rate_limit_user": "2/minute", "redis_url": None,
                                       "rate_limits_enabled": True})


@pytest.fixture
def client(keyed_settings: Settings) -> Iterator[TestClient]:
    with TestClient(with_test_routes(create_app(keyed_settings))) as test_client:
        yield test_client


def scrape(client: TestClient) -> str:
    response = client.get("/metrics", headers={"X-API-Key": KEY})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def value(text: str, name: str, **labels: str) -> float:
    """The sample ``name{labels}``; 0 when the series does not exist yet."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


@pytest.mark.parametrize(("headers", "status", "code"), [
    ({}, 401, "AUTH_REQUIRED"),
    ({"X-API-Key": "not-the-key"}, 401, "AUTH_INVALID"),
    ({"X-API-Key": KEY}, 200, None),
])
def test_metrics_needs_an_api_key(client: TestClient, headers: dict[str, str], status: int,
                                  code: str | None) -> None:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == status
    if code is not None:
        assert response.json()["code"] == code and response.json()["detail"]  # plain body: not under /api/v1
        return
    for name in SERIES:
        assert f"# TYPE {name.removesuffix('_total')}" in response.text, name


def test_a_key_issued_by_the_auth_service_is_accepted_until_revoked(client: TestClient) -> None:
    auth: Any = client.app.state.context.auth  # type: ignore[attr-defined]
    created = auth.create_api_key("prometheus")
    assert client.get("/metrics", headers={"X-API-Key": created.key}).status_code == 200
    auth.revoke_api_key(created.record.id)
    revoked = client.get("/metrics", headers={"X-API-Key": created.key})
    assert revoked.status_code == 401 and revoked.json()["code"] == "AUTH_INVALID"


def test_requests_are_counted_under_their_route_template(client: TestClient, keyed_settings: Settings) -> None:
    template = "/api/v1/test/items/{item_id}"
    before = scrape(client)
    for item_id in ("a", "b", "c", "d"):
        assert client.get(f"/api/v1/test/items/{item_id}").status_code == 200
    for _ in range(2):
        assert client.get("/no/such/page").status_code == 404
    after = scrape(client)
    counted = value(after, "faceport_http_requests_total", method="GET", route=template, status="200")
    assert counted - value(before, "faceport_http_requests_total", method="GET", route=template, status="200") == 4
    assert value(after, "faceport_http_request_duration_seconds_count", method="GET", route=template) == 4
    assert value(after, "faceport_http_requests_total", method="GET", route="unmatched", status="404") == 2
    assert "/api/v1/test/items/a" not in after and "/no/such/page" not in after
    # another app of the same process keeps its own registry
    with TestClient(create_app(keyed_settings)) as other:
        assert value(scrape(other), "faceport_http_requests_total", route=template) == 0


def test_refused_requests_are_counted_per_category(client: TestClient) -> None:
    statuses = [client.get("/api/v1/test/limited").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    text = scrape(client)
    assert value(text, "faceport_rate_limited_total", category="user") == 1
    assert value(text, "faceport_rate_limited_total", category="face") == 0
    assert value(text, "faceport_http_requests_total", route="/api/v1/test/limited", status="429") == 1


def test_model_loads_through_the_cache_show_up(client: TestClient) -> None:
    cache = client.app.state.context.cache  # type: ignore[attr-defined]
    before = scrape(client)
    cache.get("blazeface_short")
    after = scrape(client)
    assert value(after, "faceport_model_loads_total") == value(before, "faceport_model_loads_total") + 1
    assert value(after, "faceport_models_loaded") == value(before, "faceport_models_loaded") + 1
    assert value(after, "faceport_model_memory_bytes") > value(before, "faceport_model_memory_bytes")


def test_gallery_size_shows_up(client: TestClient) -> None:
    gallery = client.app.state.context.gallery  # type: ignore[attr-defined]
    before = value(scrape(client), "faceport_gallery_subjects")
    gallery.create_subject("Ada Lovelace", owner="key:metrics")
    text = scrape(client)
    assert value(text, "faceport_gallery_subjects") == before + 1
    assert value(text, "faceport_gallery_faces") == gallery.stats()["faces"]


def test_docstring_examples() -> None:
    result = doctest.testmod(faceport.api.metrics)
    assert result.attempted > 0 and result.failed == 0
