"""Rate limits as a client sees them: X-RateLimit-* headers, 429 envelopes, buckets per user and per IP,
in process memory and on a real Redis shared by two app instances."""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send

from faceport.api.app import PLATFORM_MIDDLEWARE, _base_app
from faceport.api.principal import Principal
from faceport.api.ratelimit import rate_limit
from faceport.config import Settings

REDIS_URL = os.environ.get("FACEPORT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


async def principal_from_test_header(request: Request) -> None:
    """Stands in for ``current_principal``: ``X-Test-User: alice`` authenticates as alice."""
    user = request.headers.get("x-test-user")
    if user:
        request.state.principal = Principal(user_id=user, username=user, role="user", method="jwt")


class ClientAddressFromHeader:
    """The peer address is a network boundary: ``X-Test-Client: 10.0.0.1`` pretends to connect from there."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"x-test-client":
                    scope["client"] = (value.decode(), 40000)
        await self.app(scope, receive, send)


def build_app(settings: Settings) -> FastAPI:
    router = APIRouter(prefix="/api/v1")
    authenticated = [Depends(principal_from_test_header)]

    @router.get("/things", dependencies=[*authenticated, Depends(rate_limit("user"))])
    async def things() -> dict[str, bool]:
        return {"ok": True}

    @router.post("/face/things", dependencies=[*authenticated, Depends(rate_limit("user", "face"))])
    async def face_things() -> dict[str, bool]:
        return {"ok": True}

    @router.post("/auth/login", dependencies=[Depends(rate_limit("ip"))])
    async def login() -> dict[str, bool]:
        return {"ok": True}

    app = _base_app("test", "rate limits", settings, None, "plain", inner_middleware=PLATFORM_MIDDLEWARE)
    app.include_router(router)
    app.add_middleware(ClientAddressFromHeader)
    return app


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    # explicit storage and switch: a FACEPORT_REDIS_URL in the environment must not leak counts between tests
    values: dict[str, Any] = {"home": tmp_path / "home", "pull_on_start": False, "model_idle_ttl": 0,
                              "redis_url": None, "rate_limits_enabled": True, "rate_limit_user": "5/minute",
                              "rate_limit_face": "3/minute", "rate_limit_ip": "4/minute"}
    return Settings(**(values | overrides))


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of its own on the real Redis; the keys are deleted afterwards."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Redis at {REDIS_URL} is unreachable in CI: {exc}")
        pytest.skip(f"Redis at {REDIS_URL} is unreachable (start redis-server or set FACEPORT_TEST_REDIS_URL): {exc}")
    prefix = f"faceport-test-{uuid.uuid4().hex}"
    yield prefix
    keys = list(client.scan_iter(match=f"*{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings that select the storage: process memory, or the real Redis under a fresh key prefix."""
    if request.param == "memory":
        return {}
    return {"redis_url": REDIS_URL, "rate_limit_key_prefix": request.getfixturevalue("redis_prefix")}


@pytest.fixture
def client(tmp_path: Path, backend: dict[str, Any]) -> Iterator[TestClient]:
    with TestClient(build_app(make_settings(tmp_path, **backend))) as test_client:
        yield test_client


def remaining(response: Any) -> int:
    return int(response.headers["x-ratelimit-remaining"])


def test_headers_count_down_then_429_with_the_envelope(client: TestClient) -> None:
    alice = {"X-Test-User": "alice"}
    started = time.time()
    seen = []
    for _ in range(5):
        response = client.get("/api/v1/things", headers=alice)
        assert response.status_code == 200
        assert response.headers["x-ratelimit-limit"] == "5"
        assert started <= int(response.headers["x-ratelimit-reset"]) <= started + 62
        seen.append(remaining(response))
    assert seen == [4, 3, 2, 1, 0]

    refused = client.get("/api/v1/things", headers={**alice, "X-Request-ID": "req-over-limit"})
    assert refused.status_code == 429
    body = refused.json()
    assert body["success"] is False
    assert body["error"]["code"] == "RATE_LIMITED"
    assert body["meta"]["request_id"] == "req-over-limit"
    details = body["error"]["details"]
    assert details["limit"] == 5 and details["category"] == "user" and 1 <= details["retry_after"] <= 60
    assert refused.headers["retry-after"] == refused.headers["x-ratelimit-retry-after"] == str(details["retry_after"])
    assert refused.headers["x-ratelimit-limit"] == "5" and remaining(refused) == 0
    assert "x-ratelimit-reset" in refused.headers and "x-ratelimit-degraded" not in refused.headers


def test_each_user_has_a_bucket_of_their_own(client: TestClient) -> None:
    for _ in range(5):
        assert client.get("/api/v1/things", headers={"X-Test-User": "alice"}).status_code == 200
    assert client.get("/api/v1/things", headers={"X-Test-User": "alice"}).status_code == 429
    bob = client.get("/api/v1/things", headers={"X-Test-User": "bob"})
    assert bob.status_code == 200 and remaining(bob) == 4


def test_anonymous_callers_are_counted_per_ip(client: TestClient) -> None:
    first = {"X-Test-Client": "10.0.0.1"}
    for expected in (3, 2, 1, 0):
        response = client.post("/api/v1/auth/login", headers=first)
        assert response.status_code == 200 and remaining(response) == expected
    refused = client.post("/api/v1/auth/login", headers=first)
    assert refused.status_code == 429 and refused.json()["error"]["details"]["category"] == "ip"
    other = client.post("/api/v1/auth/login", headers={"X-Test-Client": "10.0.0.2"})
    assert other.status_code == 200 and remaining(other) == 3
    # without a principal the user limit falls back to the IP too
    anonymous = client.get("/api/v1/things", headers={"X-Test-Client": "10.0.0.3"})
    assert anonymous.status_code == 200 and remaining(anonymous) == 4


def test_the_tightest_limit_is_reported_and_a_refusal_spends_no_other_budget(client: TestClient) -> None:
    alice = {"X-Test-User": "alice"}
    first = client.post("/api/v1/face/things", headers=alice)
    assert first.headers["x-ratelimit-limit"] == "3" and remaining(first) == 2  # face (3/min) is tighter
    for _ in range(2):
        assert client.post("/api/v1/face/things", headers=alice).status_code == 200
    refused = client.post("/api/v1/face/things", headers=alice)
    assert refused.status_code == 429 and refused.json()["error"]["details"]["category"] == "face"
    # 3 face requests went through, the refused one did not count against the user limit
    plain = client.get("/api/v1/things", headers=alice)
    assert plain.status_code == 200 and plain.headers["x-ratelimit-limit"] == "5" and remaining(plain) == 1


def test_two_app_instances_share_one_redis_bucket(tmp_path: Path, redis_prefix: str) -> None:
    shared = {"redis_url": REDIS_URL, "rate_limit_key_prefix": redis_prefix}
    app_a = build_app(make_settings(tmp_path / "a", **shared))
    app_b = build_app(make_settings(tmp_path / "b", **shared))
    alice = {"X-Test-User": "alice"}
    with TestClient(app_a) as a, TestClient(app_b) as b:
        assert [remaining(a.get("/api/v1/things", headers=alice)) for _ in range(3)] == [4, 3, 2]
        assert [remaining(b.get("/api/v1/things", headers=alice)) for _ in range(2)] == [1, 0]
        assert a.get("/api/v1/things", headers=alice).status_code == 429
        assert b.get("/api/v1/things", headers=alice).status_code == 429
        assert b.get("/api/v1/things", headers={"X-Test-User": "bob"}).status_code == 200


def test_unreachable_redis_lets_requests_through_marked_degraded(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings(tmp_path, redis_url="redis://127.0.0.1:1/0", rate_limit_user="1/minute")
    with caplog.at_level(logging.WARNING, logger="faceport.api.ratelimit"), TestClient(build_app(settings)) as c:
        responses = [c.get("/api/v1/things", headers={"X-Test-User": "alice"}) for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert all(r.headers["x-ratelimit-degraded"] == "1" for r in responses)
    assert all("x-ratelimit-remaining" not in r.headers for r in responses)
    warnings = [r for r in caplog.records if r.name == "faceport.api.ratelimit" and "unreachable" in r.getMessage()]
    assert len(warnings) == 1  # logged once, not once per request


def test_disabled_limits_neither_count_nor_refuse(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, rate_limits_enabled=False, rate_limit_user="1/minute")
    with TestClient(build_app(settings)) as c:
        responses = [c.get("/api/v1/things", headers={"X-Test-User": "alice"}) for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert all("x-ratelimit-limit" not in r.headers for r in responses)


@pytest.mark.parametrize(("categories", "error"), [
    (("user",), None),
    (("user", "face"), None),
    (("batch",), None),
    (("ip",), None),
    (("users",), ValueError),
    ((), ValueError),
])
def test_rate_limit_accepts_only_known_categories(categories: tuple[Any, ...], error: type[Exception] | None) -> None:
    if error is None:
        assert callable(rate_limit(*categories))
        assert rate_limit(*categories) is rate_limit(*categories)  # one dependency, so FastAPI runs it once
    else:
        with pytest.raises(error, match="unknown categories"):
            rate_limit(*categories)


@pytest.mark.parametrize(("value", "valid"), [("1000/hour", True), ("5 per minute", True), ("10/hour;", False),
                                              ("lots", False), ("10/hour;5/minute", False),
                                              ("0/hour", False)])
def test_limit_settings_are_checked_at_start(tmp_path: Path, value: str, valid: bool) -> None:
    if valid:
        assert make_settings(tmp_path, rate_limit_face=value).rate_limit_face == value
    else:
        with pytest.raises(ValueError, match="is not a rate limit"):
            make_settings(tmp_path, rate_limit_face=value)


def test_the_main_app_counts_authenticated_platform_requests_per_principal(tmp_path: Path) -> None:
    from faceport.api.app import create_app

    with TestClient(create_app(make_settings(tmp_path, rate_limit_user="3/minute"))) as c:
        auth: Any = c.app.state.context.auth  # type: ignore[attr-defined]
        first, second = ({"X-API-Key": auth.create_api_key(name).key} for name in ("first", "second"))
        statuses = [c.get("/api/v1/face/subjects", headers=first).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        other = c.get("/api/v1/face/subjects", headers=second)
        assert other.status_code == 200 and remaining(other) == 2
        # authentication runs first: an anonymous caller is refused without touching any bucket
        anonymous = c.get("/api/v1/face/subjects")
        assert anonymous.status_code == 401 and "x-ratelimit-limit" not in anonymous.headers
