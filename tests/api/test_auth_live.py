"""Seed D authentication over real HTTP (uvicorn + httpx): the account life cycle, roles, API keys, the CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Any

import httpx
import pytest

from tests.conftest import FIXTURES

USER = {"username": "ada", "email": "ada@example.com", "password": "ada-password-1"}
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
PUBLIC_USER_FIELDS = {"id", "username", "email", "role", "full_name", "created_at", "is_active"}


def assert_success(response: httpx.Response, status: int = 200) -> dict[str, Any]:
    """Seed D's success envelope, exactly; returns ``data``."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"success", "data", "meta"} and body["success"] is True
    meta = body["meta"]
    assert set(meta) >= {"timestamp", "request_id", "processing_time", "vram_usage"}
    assert ISO_UTC.match(meta["timestamp"]) and meta["request_id"] == response.headers["x-request-id"]
    assert isinstance(meta["processing_time"], int | float) and meta["processing_time"] >= 0
    assert {"used", "available"} <= set(meta["vram_usage"])
    assert re.match(r"^\d+(\.\d+)?(MB|GB)$", meta["vram_usage"]["used"])
    return body["data"]


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Seed D's error envelope, exactly; returns ``error``."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"success", "error", "meta"} and body["success"] is False
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code and body["error"]["message"]
    assert set(body["meta"]) == {"timestamp", "request_id"}
    assert ISO_UTC.match(body["meta"]["timestamp"]) and body["meta"]["request_id"] == response.headers["x-request-id"]
    return body["error"]


def bearer(tokens: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


def login(http: httpx.Client, username: str, password: str) -> dict[str, Any]:
    return assert_success(http.post("/api/v1/auth/login", json={"username": username, "password": password}))


def test_register_login_profile_refresh_reuse_logout(live_server) -> None:
    with httpx.Client(base_url=live_server.url, timeout=30) as http:
        registered = http.post("/api/v1/auth/register", json=USER)
        user = assert_success(registered, 201)
        assert set(user) == PUBLIC_USER_FIELDS
        assert (user["username"], user["email"], user["role"], user["full_name"]) == ("ada", USER["email"], "user",
                                                                                      None)
        assert ISO_UTC.match(user["created_at"])
        assert "argon2" not in registered.text and USER["password"] not in registered.text
        assert_error(http.post("/api/v1/auth/register", json=USER), 400, "INVALID_INPUT")
        short = assert_error(http.post("/api/v1/auth/register", json={**USER, "username": "bo", "password": "x"}),
                             400, "INVALID_INPUT")
        assert short["details"]["field"] in {"username", "password"}
        assert_error(http.post("/api/v1/auth/register", json={"username": "nopass"}), 400, "MISSING_FIELD")

        wrong = assert_error(http.post("/api/v1/auth/login", json={**USER, "password": "wrong-password"}), 401,
                             "AUTH_INVALID")
        unknown = assert_error(http.post("/api/v1/auth/login", json={"username": "nobody", "password": "whatever1"}),
                               401, "AUTH_INVALID")
        assert wrong["message"] == unknown["message"]

        tokens = login(http, "ada", USER["password"])
        assert set(tokens) == {"access_token", "refresh_token", "token_type", "expires_in"}
        assert tokens["token_type"] == "bearer" and tokens["expires_in"] == live_server.settings.access_token_ttl

        profile = assert_success(http.get("/api/v1/auth/profile", headers=bearer(tokens)))
        assert profile == user
        updated = assert_success(http.put("/api/v1/auth/profile", headers=bearer(tokens),
                                          json={"full_name": "Ada Lovelace"}))
        assert updated["full_name"] == "Ada Lovelace" and updated["role"] == "user"
        escalate = assert_error(http.put("/api/v1/auth/profile", headers=bearer(tokens), json={"role": "admin"}),
                                400, "INVALID_INPUT")
        assert escalate["details"]["field"] == "role"
        assert_error(http.put("/api/v1/auth/profile", headers=bearer(tokens), json={"password": "new-password-1"}),
                     400, "MISSING_FIELD")

        rotated = assert_success(http.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}))
        assert rotated["refresh_token"] != tokens["refresh_token"]
        assert assert_success(http.get("/api/v1/auth/profile", headers=bearer(rotated)))["username"] == "ada"

        reuse = assert_error(http.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}),
                             401, "AUTH_INVALID")
        assert "reuse" in reuse["message"]
        assert_error(http.post("/api/v1/auth/refresh", json={"refresh_token": rotated["refresh_token"]}),
                     401, "AUTH_INVALID")  # the family died with the reuse

        fresh = login(http, "ada", USER["password"])
        out = assert_success(http.post("/api/v1/auth/logout", headers=bearer(fresh),
                                       json={"refresh_token": fresh["refresh_token"]}))
        assert out == {"logged_out": True, "refresh_tokens_revoked": 1}
        revoked = assert_error(http.get("/api/v1/auth/profile", headers=bearer(fresh)), 401, "AUTH_INVALID")
        assert "revoked" in revoked["message"]
        assert_error(http.post("/api/v1/auth/refresh", json={"refresh_token": fresh["refresh_token"]}),
                     401, "AUTH_INVALID")
        required = assert_error(http.get("/api/v1/auth/profile"), 401, "AUTH_REQUIRED")
        assert "Authorization: Bearer" in required["message"]
        assert_error(http.get("/api/v1/auth/profile", headers={"Authorization": "Bearer not-a-token"}), 401,
                     "AUTH_INVALID")


def test_revoked_sessions_lose_their_access_tokens_at_once(live_server) -> None:
    """Reuse detection, logout everywhere and a password change refuse access tokens immediately, not at expiry."""
    profile = "/api/v1/auth/profile"
    with httpx.Client(base_url=live_server.url, timeout=30) as http:
        assert_success(http.post("/api/v1/auth/register", json=USER), 201)
        other_user = {"username": "bob", "email": "bob@example.com", "password": "bob-password-1"}
        assert_success(http.post("/api/v1/auth/register", json=other_user), 201)
        bob = login(http, "bob", other_user["password"])

        # Reuse of a rotated refresh token: the whole session's access tokens die with it.
        stolen = login(http, "ada", USER["password"])
        unrelated = login(http, "ada", USER["password"])
        rotated = assert_success(http.post("/api/v1/auth/refresh", json={"refresh_token": stolen["refresh_token"]}))
        assert_success(http.get(profile, headers=bearer(rotated)))
        assert_error(http.post("/api/v1/auth/refresh", json={"refresh_token": stolen["refresh_token"]}), 401,
                     "AUTH_INVALID")
        for tokens in (stolen, rotated):
            refused = assert_error(http.get(profile, headers=bearer(tokens)), 401, "AUTH_INVALID")
            assert "session was revoked" in refused["message"]
        assert_success(http.get(profile, headers=bearer(unrelated)))  # another session of the same user

        # A password change ends every other session at once; the session making it stays.
        changer = login(http, "ada", USER["password"])
        changed = http.put(profile, headers=bearer(changer),
                           json={"password": "ada-password-2", "current_password": USER["password"]})
        assert_success(changed)
        assert_error(http.get(profile, headers=bearer(unrelated)), 401, "AUTH_INVALID")
        assert_error(http.post("/api/v1/auth/refresh", json={"refresh_token": unrelated["refresh_token"]}), 401,
                     "AUTH_INVALID")
        assert_success(http.get(profile, headers=bearer(changer)))
        changer = assert_success(http.post("/api/v1/auth/refresh", json={"refresh_token": changer["refresh_token"]}))

        # Logout everywhere: every session of the account, this one included; other accounts untouched.
        second = login(http, "ada", "ada-password-2")
        out = assert_success(http.post("/api/v1/auth/logout", headers=bearer(second), json={"all": True}))
        assert out == {"logged_out": True, "refresh_tokens_revoked": 2}
        for tokens in (changer, second):
            assert_error(http.get(profile, headers=bearer(tokens)), 401, "AUTH_INVALID")
            assert_error(http.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}), 401,
                         "AUTH_INVALID")
        assert assert_success(http.get(profile, headers=bearer(bob)))["username"] == "bob"
        assert_success(http.get(profile, headers=bearer(login(http, "ada", "ada-password-2"))))


def test_admin_route_is_forbidden_to_users_and_open_to_admins(live_server) -> None:
    with httpx.Client(base_url=live_server.url, timeout=30) as http:
        assert_success(http.post("/api/v1/auth/register", json=USER), 201)
        user_tokens = login(http, "ada", USER["password"])
        forbidden = assert_error(http.get("/api/v1/auth/users", headers=bearer(user_tokens)), 403, "AUTH_FORBIDDEN")
        assert "admin" in forbidden["message"]
        assert_error(http.post("/api/v1/auth/api-keys", headers=bearer(user_tokens), json={"name": "mine"}),
                     403, "AUTH_FORBIDDEN")

        live_server.context.auth.create_admin("root", "root-password-1", email="root@example.com")
        admin_tokens = login(http, "root", "root-password-1")
        page = assert_success(http.get("/api/v1/auth/users", headers=bearer(admin_tokens)))
        assert page["total"] == 2 and [u["username"] for u in page["items"]] == ["ada", "root"]
        assert all(set(u) == PUBLIC_USER_FIELDS for u in page["items"])
        second = assert_success(http.get("/api/v1/auth/users", params={"limit": 1, "offset": 1},
                                         headers=bearer(admin_tokens)))
        assert [u["username"] for u in second["items"]] == ["root"] and second["total"] == 2
        assert_error(http.get("/api/v1/auth/users", params={"limit": 0}, headers=bearer(admin_tokens)), 400,
                     "INVALID_INPUT")


def test_database_api_keys_work_until_revoked(live_server) -> None:
    image = (FIXTURES / "sk_astronaut.png").read_bytes()
    with httpx.Client(base_url=live_server.url, timeout=60) as http:
        live_server.context.auth.create_admin("root", "root-password-1")
        admin = bearer(login(http, "root", "root-password-1"))
        created = assert_success(http.post("/api/v1/auth/api-keys", headers=admin,
                                           json={"name": "ingest", "role": "user"}), 201)
        key = created["key"]
        assert key.startswith("fpk_") and created["prefix"] == key[:12] and created["revoked_at"] is None

        detect = http.post("/api/v1/face/detect", files={"image": ("a.png", image, "image/png")},
                           headers={"X-API-Key": key})
        assert assert_success(detect)["count"] == 1
        assert_error(http.get("/api/v1/auth/users", headers={"X-API-Key": key}), 403, "AUTH_FORBIDDEN")
        listed = assert_success(http.get("/api/v1/auth/api-keys", headers=admin))
        assert listed["total"] == 1 and "key" not in listed["items"][0] and key not in json.dumps(listed)
        assert listed["items"][0]["last_used_at"] is not None

        revoked = assert_success(http.delete(f"/api/v1/auth/api-keys/{created['id']}", headers=admin))
        assert revoked["revoked_at"] is not None
        refused = http.post("/api/v1/face/detect", files={"image": ("a.png", image, "image/png")},
                            headers={"X-API-Key": key})
        assert_error(refused, 401, "AUTH_INVALID")
        assert_error(http.delete("/api/v1/auth/api-keys/nosuchkey", headers=admin), 404, "NOT_FOUND")
        assert_error(http.post("/api/v1/face/detect", files={"image": ("a.png", image, "image/png")},
                               headers={"X-API-Key": "fpk_guessed"}), 401, "AUTH_INVALID")


def _cli(live_server, *args: str, password: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.update(FACEPORT_HOME=str(live_server.settings.home), FACEPORT_MODELS_DIR=str(live_server.settings.models_dir))
    if live_server.settings.database_url:
        env["FACEPORT_DATABASE_URL"] = live_server.settings.database_url
    else:
        env.pop("FACEPORT_DATABASE_URL", None)
    env.pop("FACEPORT_ADMIN_PASSWORD", None)
    if password is not None:
        env["FACEPORT_ADMIN_PASSWORD"] = password
    return subprocess.run([sys.executable, "-m", "faceport.cli", *args], capture_output=True, text=True, env=env,
                          check=False, timeout=300, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("password_from", ["option", "environment"])
def test_cli_admin_and_api_keys_work_against_the_running_server(live_server, password_from: str) -> None:
    password = "cli-admin-password"
    args = ["users", "create-admin", "--username", "ops", "--email", "ops@example.com"]
    created = (_cli(live_server, *args, "--password", password) if password_from == "option"
               else _cli(live_server, *args, password=password))
    assert created.returncode == 0, created.stderr
    assert "created admin ops" in created.stdout
    with httpx.Client(base_url=live_server.url, timeout=30) as http:
        admin = bearer(login(http, "ops", password))
        profile = assert_success(http.get("/api/v1/auth/profile", headers=admin))
        assert (profile["role"], profile["email"]) == ("admin", "ops@example.com")
        assert assert_success(http.get("/api/v1/auth/users", headers=admin))["total"] == 1

        again = _cli(live_server, "users", "create-admin", "--username", "ops", "--password", "second-password")
        assert again.returncode == 0 and "promoted" in again.stdout
        assert_error(http.post("/api/v1/auth/login", json={"username": "ops", "password": password}), 401,
                     "AUTH_INVALID")
        login(http, "ops", "second-password")
        weak = _cli(live_server, "users", "create-admin", "--username", "weak", "--password", "short")
        assert weak.returncode != 0 and "at least 8" in weak.stderr

        users = _cli(live_server, "users", "list", "--json")
        assert users.returncode == 0 and [u["username"] for u in json.loads(users.stdout)] == ["ops"]

        made = _cli(live_server, "apikeys", "create", "--name", "svc", "--role", "admin")
        assert made.returncode == 0, made.stderr
        key = made.stdout.strip()
        assert re.match(r"^fpk_[A-Za-z0-9_-]{43}$", key)
        assert assert_success(http.get("/api/v1/auth/users", headers={"X-API-Key": key}))["total"] == 1
        keys = json.loads(_cli(live_server, "apikeys", "list", "--json").stdout)
        assert [k["name"] for k in keys] == ["svc"] and key not in json.dumps(keys)
        revoked = _cli(live_server, "apikeys", "revoke", keys[0]["id"])
        assert revoked.returncode == 0 and "revoked" in revoked.stdout
        assert_error(http.get("/api/v1/auth/users", headers={"X-API-Key": key}), 401, "AUTH_INVALID")
        assert _cli(live_server, "apikeys", "revoke", "nosuchkey").returncode != 0
