"""Seed D batches on a real uvicorn with the real models: lifecycle, per-image errors, cancel, ownership,
QUEUE_FULL, the batch rate limit, zip guards, retention."""

from __future__ import annotations

import base64
import io
import stat
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import LiveServer, serving
from tests.conftest import FIXTURES, TEST_ADMIN

GRACE = (FIXTURES / "mpl_grace_hopper.jpg").read_bytes()
ASTRONAUT = (FIXTURES / "sk_astronaut.png").read_bytes()
CAMERA = (FIXTURES / "sk_camera.png").read_bytes()  # the cameraman


def _headers(server: LiveServer, username: str, password: str = "long-enough-password") -> dict[str, str]:
    if username == TEST_ADMIN["username"]:
        server.context.auth.create_admin(username, TEST_ADMIN["password"], email=TEST_ADMIN["email"])
        password = TEST_ADMIN["password"]
    else:
        response = httpx.post(f"{server.url}/api/v1/auth/register",
                              json={"username": username, "email": f"{username}@example.com", "password": password})
        assert response.status_code == 201, response.text
    response = httpx.post(f"{server.url}/api/v1/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['data']['access_token']}"}


def _submit(server: LiveServer, headers: dict[str, str], files: list[tuple[str, tuple[str, bytes, str]]],
            **data: Any) -> httpx.Response:
    return httpx.post(f"{server.url}/api/v1/batch/submit", headers=headers, files=files, data=data, timeout=120)


def _get(server: LiveServer, headers: dict[str, str], path: str, **params: Any) -> httpx.Response:
    return httpx.get(f"{server.url}/api/v1/batch{path}", headers=headers, params=params, timeout=60)


def _wait(server: LiveServer, headers: dict[str, str], batch_id: str, *, until: Any = None,
          timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = _get(server, headers, f"/status/{batch_id}")
        assert response.status_code == 200, response.text
        data = response.json()["data"]
        if (until(data) if until else data["state"] in ("completed", "failed", "cancelled")):
            return data
        assert time.monotonic() < deadline, data
        time.sleep(0.1)


def _images(*blobs: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("images", (name, blob, "application/octet-stream")) for name, blob in blobs]


@pytest.fixture
def server(settings) -> Any:  # type: ignore[no-untyped-def]
    with serving(settings.model_copy(update={"redis_url": None})) as live:
        yield live


def test_batch_lifecycle_per_image_errors_and_results_equal_the_single_routes(server: LiveServer) -> None:
    ada = _headers(server, "ada")
    files = _images(("grace.jpg", GRACE), ("astronaut.png", ASTRONAUT), ("broken.jpg", b"\xff\xd8 not a jpeg"),
                    ("camera.png", CAMERA))
    response = _submit(server, ada, files, operation="detect", options='{"score_threshold": 0.6}')
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["success"] is True and set(body["meta"]) >= {"timestamp", "request_id", "processing_time"}
    submitted = body["data"]
    assert submitted["total"] == 4 and submitted["operation"] == "detect"
    assert submitted["state"] in ("queued", "running")
    assert "X-RateLimit-Limit" in response.headers

    status = _wait(server, ada, submitted["batch_id"])
    assert status["state"] == "completed", status
    assert (status["total"], status["processed"], status["succeeded"], status["failed"]) == (4, 4, 3, 1)
    assert status["progress"] == 100.0 and status["eta_seconds"] == 0.0 and status["expires_at"]

    results = _get(server, ada, f"/results/{submitted['batch_id']}", size=2).json()["data"]
    assert (results["count"], results["pages"], len(results["items"])) == (4, 2, 2)
    page2 = _get(server, ada, f"/results/{submitted['batch_id']}", size=2, page=2).json()["data"]["items"]
    items = {item["name"]: item for item in results["items"] + page2}
    assert [items[n]["index"] for n in ("grace.jpg", "astronaut.png", "broken.jpg", "camera.png")] == [0, 1, 2, 3]
    broken = items["broken.jpg"]
    assert broken["status"] == "error" and broken["result"] is None
    assert broken["error"]["code"] == "INVALID_FORMAT" and broken["error"]["details"]["reason"] == "INVALID_IMAGE"
    for name, blob in (("grace.jpg", GRACE), ("astronaut.png", ASTRONAUT), ("camera.png", CAMERA)):
        single = httpx.post(f"{server.url}/api/v1/face/detect", headers=ada, files={"image": (name, blob)},
                            data={"score_threshold": "0.6"}, timeout=60)
        assert single.status_code == 200, single.text
        assert items[name]["status"] == "ok"
        assert items[name]["result"] == single.json()["data"], name
        assert items[name]["result"]["count"] == 1
    errors = _get(server, ada, f"/results/{submitted['batch_id']}", status="error").json()["data"]
    assert [item["name"] for item in errors["items"]] == ["broken.jpg"]
    # the staged images are gone once the job ended
    assert not (server.settings.resolved_batch_dir / submitted["batch_id"]).exists()


def test_batches_belong_to_their_owner_admins_see_all(server: LiveServer) -> None:
    ada, bob, admin = _headers(server, "ada"), _headers(server, "bob"), _headers(server, TEST_ADMIN["username"])
    batch_id = _submit(server, ada, _images(("grace.jpg", GRACE)), operation="detect").json()["data"]["batch_id"]
    _wait(server, ada, batch_id)
    for method, path in (("GET", f"/status/{batch_id}"), ("GET", f"/results/{batch_id}"),
                         ("DELETE", f"/cancel/{batch_id}")):
        response = httpx.request(method, f"{server.url}/api/v1/batch{path}", headers=bob, timeout=30)
        assert response.status_code == 404, (path, response.text)
        assert response.json()["error"]["code"] == "NOT_FOUND"
    assert _get(server, bob, "/list").json()["data"]["batches"] == []
    assert [b["batch_id"] for b in _get(server, ada, "/list").json()["data"]["batches"]] == [batch_id]
    listed = _get(server, admin, "/list").json()["data"]
    assert [b["batch_id"] for b in listed["batches"]] == [batch_id] and listed["total"] == 1
    assert _get(server, admin, f"/status/{batch_id}").status_code == 200
    forbidden = _get(server, bob, "/list", owner="someone-else")
    assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "AUTH_FORBIDDEN"
    assert httpx.get(f"{server.url}/api/v1/batch/list", timeout=30).json()["error"]["code"] == "AUTH_REQUIRED"


def test_cancel_stops_a_running_batch_and_queue_full_refuses_more(settings) -> None:  # type: ignore[no-untyped-def]
    with serving(settings.model_copy(update={"redis_url": None, "job_queue_max": 1})) as server:
        ada = _headers(server, "ada")
        many = _images(*((f"grace_{i}.jpg", GRACE) for i in range(120)))
        running = _submit(server, ada, many, operation="analyze").json()["data"]["batch_id"]
        _wait(server, ada, running, until=lambda s: s["state"] == "running" and s["processed"] >= 2)
        queued = _submit(server, ada, _images(("grace.jpg", GRACE)), operation="detect")
        assert queued.status_code == 202, queued.text
        full = _submit(server, ada, _images(("grace.jpg", GRACE)), operation="detect")
        assert full.status_code == 503 and full.json()["error"]["code"] == "QUEUE_FULL", full.text

        status = _wait(server, ada, running, until=lambda s: s["eta_seconds"] is not None)
        assert status["eta_seconds"] > 0 and 0 < status["progress"] < 100

        cancelled = httpx.delete(f"{server.url}/api/v1/batch/cancel/{queued.json()['data']['batch_id']}",
                                 headers=ada, timeout=30)
        assert cancelled.status_code == 200 and cancelled.json()["data"]["state"] == "cancelled"
        response = httpx.delete(f"{server.url}/api/v1/batch/cancel/{running}", headers=ada, timeout=30)
        assert response.status_code == 200, response.text
        assert response.json()["data"]["state"] == "cancelled"
        time.sleep(1.5)  # a running image may finish; nothing after it
        settled = _get(server, ada, f"/status/{running}").json()["data"]
        time.sleep(1.0)
        after = _get(server, ada, f"/status/{running}").json()["data"]
        assert after["state"] == "cancelled" and after["processed"] == settled["processed"] < 120
        results = _get(server, ada, f"/results/{running}", size=500).json()["data"]
        assert results["count"] == after["processed"] >= 2
        assert all(item["status"] == "ok" and item["result"]["count"] == 1 for item in results["items"])
        again = httpx.delete(f"{server.url}/api/v1/batch/cancel/{running}", headers=ada, timeout=30)
        assert again.status_code == 400 and again.json()["error"]["code"] == "INVALID_INPUT"
        assert not (server.settings.resolved_batch_dir / running).exists()


def test_batch_rate_limit_is_enforced_per_user(settings) -> None:  # type: ignore[no-untyped-def]
    with serving(settings.model_copy(update={"redis_url": None, "rate_limit_batch": "2/hour"})) as server:
        ada, bob = _headers(server, "ada"), _headers(server, "bob")
        for _ in range(2):
            assert _submit(server, ada, _images(("g.jpg", GRACE)), operation="detect").status_code == 202
        refused = _submit(server, ada, _images(("g.jpg", GRACE)), operation="detect")
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "RATE_LIMITED"
        assert refused.json()["error"]["details"]["category"] == "batch"
        assert refused.headers["X-RateLimit-Limit"] == "2" and int(refused.headers["Retry-After"]) > 0
        assert _get(server, ada, "/list").status_code == 200  # other routes are not batch-limited
        assert _submit(server, bob, _images(("g.jpg", GRACE)), operation="detect").status_code == 202


def _zip(entries: list[tuple[str, bytes]], *, symlink: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, blob in entries:
            archive.writestr(name, blob)
        if symlink is not None:
            info = zipfile.ZipInfo(symlink)
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "/etc/passwd")
    return buffer.getvalue()


def test_zip_archives_are_labels_only_and_bombs_stop_at_the_limits(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    limits = {"redis_url": None, "max_image_bytes": 2 * 1024 * 1024, "batch_max_bytes": 8 * 1024 * 1024}
    with serving(settings.model_copy(update=limits)) as server:
        ada = _headers(server, "ada")
        bomb = b"\0" * (64 * 1024 * 1024)  # 64 MB of zeros, ~64 KB compressed
        archive = _zip([("photos/grace.jpg", GRACE), ("../../escaped.jpg", GRACE), ("/abs/astronaut.png", ASTRONAUT),
                        ("__MACOSX/._grace.jpg", b"junk"), (".hidden.jpg", GRACE), ("bomb.jpg", bomb)],
                       symlink="link.jpg")
        assert len(archive) < 1024 * 1024
        response = _submit(server, ada, [("archive", ("set.zip", archive, "application/zip"))], operation="detect")
        assert response.status_code == 202, response.text
        batch_id = response.json()["data"]["batch_id"]
        assert _wait(server, ada, batch_id)["state"] == "completed"
        items = _get(server, ada, f"/results/{batch_id}").json()["data"]["items"]
        by_name = {item["name"]: item for item in items}
        assert set(by_name) == {"photos/grace.jpg", "escaped.jpg", "abs/astronaut.png", "bomb.jpg", "link.jpg"}
        assert by_name["photos/grace.jpg"]["result"]["count"] == 1
        assert by_name["escaped.jpg"]["result"]["count"] == 1
        assert by_name["abs/astronaut.png"]["result"]["count"] == 1
        assert by_name["bomb.jpg"]["error"]["code"] == "FILE_TOO_LARGE"
        assert by_name["link.jpg"]["error"]["code"] == "INVALID_INPUT"
        root = server.settings.home
        assert not list(root.parent.rglob("escaped.jpg")) and not Path("/abs").exists()

        many_bombs = _zip([(f"bomb{i}.jpg", bomb[: 3 * 1024 * 1024]) for i in range(5)])
        refused = _submit(server, ada, [("archive", ("bombs.zip", many_bombs, "application/zip"))],
                          operation="detect")
        assert refused.status_code == 413 and refused.json()["error"]["code"] == "FILE_TOO_LARGE", refused.text
        not_zip = _submit(server, ada, [("archive", ("x.zip", b"PK\x03\x04 but no archive", "application/zip"))],
                          operation="detect")
        assert not_zip.status_code == 400 and not_zip.json()["error"]["code"] == "INVALID_FORMAT"
        staged = [p.name for p in server.settings.resolved_batch_dir.iterdir()]
        assert staged == [], staged  # refused submissions leave nothing behind


def test_json_base64_submission_verify_against_a_subject_and_bad_requests(server: LiveServer) -> None:
    ada, bob = _headers(server, "ada"), _headers(server, "bob")
    subject = httpx.post(f"{server.url}/api/v1/face/subjects", headers=ada, json={"name": "grace"}, timeout=30)
    subject_id = subject.json()["data"]["id"]
    enrolled = httpx.post(f"{server.url}/api/v1/face/subjects/{subject_id}/faces", headers=ada,
                          files={"image": ("g.jpg", GRACE)}, timeout=60)
    assert enrolled.status_code == 201, enrolled.text
    body = {"operation": "verify", "subject_id": subject_id,
            "images": [{"name": "grace", "image": base64.b64encode(GRACE).decode()},
                       "data:image/png;base64," + base64.b64encode(ASTRONAUT).decode(), "%%% not base64"]}
    response = httpx.post(f"{server.url}/api/v1/batch/submit", headers=ada, json=body, timeout=60)
    assert response.status_code == 202, response.text
    batch_id = response.json()["data"]["batch_id"]
    assert _wait(server, ada, batch_id)["state"] == "completed"
    items = _get(server, ada, f"/results/{batch_id}").json()["data"]["items"]
    assert [i["name"] for i in items] == ["grace", "image_1", "image_2"]
    assert items[0]["result"]["verified"] is True and items[1]["result"]["verified"] is False
    assert items[1]["result"]["distance"] > items[0]["result"]["distance"]
    assert items[2]["status"] == "error" and items[2]["error"]["code"] == "INVALID_FORMAT"

    # recognize against ada's gallery, images from a base64 zip in JSON; bob's gallery knows nobody
    archive = base64.b64encode(_zip([("grace.jpg", GRACE), ("astronaut.png", ASTRONAUT)])).decode()
    for headers, expected in ((ada, [subject_id, None]), (bob, [None, None])):
        response = httpx.post(f"{server.url}/api/v1/batch/submit", headers=headers, timeout=60,
                              json={"operation": "recognize", "archive": archive, "options": {"top_k": 3}})
        assert response.status_code == 202, response.text
        recognized = response.json()["data"]["batch_id"]
        assert _wait(server, headers, recognized)["state"] == "completed"
        items = _get(server, headers, f"/results/{recognized}").json()["data"]["items"]
        found = [(item["result"]["faces"][0]["subject"] or {}).get("subject_id") for item in items]
        assert found == expected, items

    bobs = httpx.post(f"{server.url}/api/v1/batch/submit", headers=bob, json=body, timeout=60)
    assert bobs.status_code == 404 and bobs.json()["error"]["code"] == "NOT_FOUND"  # ada's subject
    for bad, code in (({"images": ["x"]}, "MISSING_FIELD"), ({"operation": "teleport", "images": ["x"]},
                                                           "INVALID_INPUT"),
                      ({"operation": "detect"}, "MISSING_FIELD"),
                      ({"operation": "verify", "images": ["x"]}, "MISSING_FIELD"),
                      ({"operation": "detect", "images": ["x"], "options": {"max_faces": 0}}, "INVALID_INPUT"),
                      ({"operation": "detect", "images": "x"}, "INVALID_INPUT")):
        refused = httpx.post(f"{server.url}/api/v1/batch/submit", headers=ada, json=bad, timeout=30)
        assert refused.status_code == 400 and refused.json()["error"]["code"] == code, (bad, refused.text)


def test_finished_batches_are_purged_after_the_retention_window(settings) -> None:  # type: ignore[no-untyped-def]
    with serving(settings.model_copy(update={"redis_url": None, "batch_retention_hours": 2 / 3600})) as server:
        ada = _headers(server, "ada")
        batch_id = _submit(server, ada, _images(("g.jpg", GRACE)), operation="detect").json()["data"]["batch_id"]
        assert _wait(server, ada, batch_id)["state"] == "completed"
        deadline = time.monotonic() + 30
        while _get(server, ada, f"/status/{batch_id}").status_code != 404:
            assert time.monotonic() < deadline, "the batch was not purged"
            time.sleep(0.25)
        assert _get(server, ada, f"/results/{batch_id}").status_code == 404
        with server.context.store.session() as session:
            from faceport.errors import NotFound
            from faceport.store import get_job

            with pytest.raises(NotFound):
                get_job(session=session, job_id=batch_id)


def test_a_restart_resumes_an_interrupted_batch_after_its_last_stored_image(settings) -> None:  # type: ignore[no-untyped-def]
    """Nothing accepted is lost: the server stops mid-batch, the next one finishes it, every image exactly once."""
    shared = settings.model_copy(update={"redis_url": None})
    total = 80
    with serving(shared) as first:
        ada = _headers(first, "ada")
        response = _submit(first, ada, _images(*((f"g{i}.jpg", GRACE) for i in range(total))),
                           operation="detect", landmarks="true")
        batch_id = response.json()["data"]["batch_id"]
        interrupted = _wait(first, ada, batch_id, until=lambda s: s["processed"] >= 3)
    assert interrupted["processed"] < total
    with serving(shared) as second:
        login = httpx.post(f"{second.url}/api/v1/auth/login",
                           json={"username": "ada", "password": "long-enough-password"})
        ada = {"Authorization": f"Bearer {login.json()['data']['access_token']}"}
        assert _get(second, ada, f"/status/{batch_id}").json()["data"]["state"] in ("queued", "running")
        status = _wait(second, ada, batch_id)
        assert (status["state"], status["processed"], status["succeeded"]) == ("completed", total, total)
        items = _get(second, ada, f"/results/{batch_id}", size=500).json()["data"]["items"]
        assert [item["index"] for item in items] == list(range(total))
        assert all(len(item["result"]["faces"][0]["landmarks"]) == 478 for item in items)  # options kept


@pytest.mark.parametrize(("operation", "route", "options"), [
    ("anti_spoof", "anti-spoof", {}),
    ("deepfake", "deepfake", {"ai_generated": False}),
    ("analyze", "analyze", {}),
])
def test_trust_operations_in_a_batch_equal_their_routes(server: LiveServer, operation: str, route: str,
                                                        options: dict[str, Any]) -> None:
    import json

    ada = _headers(server, "ada")
    response = _submit(server, ada, _images(("grace.jpg", GRACE), ("broken.jpg", b"nope")), operation=operation,
                       options=json.dumps(options))
    assert response.status_code == 202, response.text
    batch_id = response.json()["data"]["batch_id"]
    assert _wait(server, ada, batch_id)["state"] == "completed"
    items = {i["name"]: i for i in _get(server, ada, f"/results/{batch_id}").json()["data"]["items"]}
    assert items["broken.jpg"]["status"] == "error"
    single = httpx.post(f"{server.url}/api/v1/face/{route}", headers=ada, files={"image": ("grace.jpg", GRACE)},
                        data={k: str(v).lower() for k, v in options.items()}, timeout=60)
    assert single.status_code == 200, single.text
    assert items["grace.jpg"]["result"] == single.json()["data"]
    face = items["grace.jpg"]["result"]["faces"][0]
    assert (face["anti_spoof"]["live"] is True) if operation == "anti_spoof" else (face["deepfake"]["label"] == "real")


def test_huge_pages_are_a_validation_error_not_a_server_error(server: LiveServer) -> None:
    ada = _headers(server, "ada")
    for path in ("/list", "/results/0123456789abcdef0123456789abcdef"):
        response = _get(server, ada, path, page=2305843009213693951, size=40)
        assert response.status_code in (400, 422), response.text
        assert response.json()["success"] is False
