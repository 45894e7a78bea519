"""Seed A's HTTP surface: the page at ``/``, ``POST /upload_source`` and ``GET /status``, with the seed's own shapes."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tests.conftest import FIXTURES

GRACE = FIXTURES / "mpl_grace_hopper.jpg"
STATUS_KEYS = {"frame_count", "swap_count", "error_count", "avg_processing_time", "source_face_loaded",
               "models_loaded"}


def test_index_page_and_its_assets_are_served_offline(client) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    for asset in ("/web/vendor/socket.io.min.js", "/web/live/live.js", "/web/live/live.css"):
        assert asset in html
        response = client.get(asset)
        assert response.status_code == 200 and len(response.content) > 500, asset
    assert "http://" not in html and "https://" not in html, "the page must not load anything from elsewhere"
    vendor = client.get("/web/vendor/socket.io.min.js").text
    assert vendor.startswith("/*!\n * Socket.IO v4.") and "MIT License" in vendor[:200]
    for element in ('id="dropzone"', 'id="camera"', 'id="output"', 'id="clear-source"', 'id="stat-fps"',
                    'id="stat-latency"', 'id="stat-swaps"', 'id="stat-errors"', 'id="stat-dropped"'):
        assert element in html


def test_status_has_exactly_the_seed_fields(client) -> None:
    body = client.get("/status").json()
    assert set(body) == STATUS_KEYS
    assert body == {"frame_count": 0, "swap_count": 0, "error_count": 0, "avg_processing_time": 0.0,
                    "source_face_loaded": False, "models_loaded": True}


def test_upload_source_accepts_a_face_and_status_says_so(client) -> None:
    response = client.post("/upload_source", files={"image": ("grace.jpg", GRACE.read_bytes(), "image/jpeg")})
    assert response.status_code == 200
    assert response.json() == {"success": True, "message": "Source face ready!"}
    assert client.get("/status").json()["source_face_loaded"] is True


@pytest.mark.parametrize("extension", [".jpg", ".JPEG", ".png", ".bmp", ".webp"])
def test_upload_source_accepts_every_allowed_format(client, extension) -> None:
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".webp": "WEBP"}[extension.lower()]
    buffer = io.BytesIO()
    Image.open(GRACE).save(buffer, fmt)
    response = client.post("/upload_source", files={"image": (f"grace{extension}", buffer.getvalue())})
    assert response.json() == {"success": True, "message": "Source face ready!"}


def _png(size: tuple[int, int] = (64, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (120, 160, 200)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(("files", "status", "message_part"), [
    ({"image": ("blank.png", _png((200, 200)))}, 400, "No face detected"),
    ({"image": ("grace.gif", GRACE.read_bytes())}, 400, "Invalid file type .gif"),
    ({"image": ("grace", GRACE.read_bytes())}, 400, "Invalid file type (none)"),
    ({"image": ("notes.jpg", b"this is text, not a picture" * 10)}, 400, "Invalid image"),
    ({"image": ("gif-inside.png", b"GIF89a" + bytes(200))}, 400, "Invalid image"),
    ({"image": ("empty.jpg", b"")}, 400, "empty"),
    ({"photo": ("grace.jpg", GRACE.read_bytes())}, 400, "No image provided"),
    ({"image": ("big.jpg", b"\xff\xd8\xff" + bytes(11 * 1024 * 1024))}, 400, "File too large (max 10 MB)"),
    ({"image": ("huge.jpg", bytes(17 * 1024 * 1024))}, 413, "Request too large (max 16 MB)"),
], ids=["no face", "gif extension", "no extension", "text content", "gif content", "empty", "wrong field",
        "over 10 MB", "over 16 MB"])
def test_upload_source_refusals_use_the_seed_shape(client, files, status, message_part) -> None:
    response = client.post("/upload_source", files=files)
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"success", "message"} and body["success"] is False
    assert message_part in body["message"], body["message"]
    assert client.get("/status").json()["source_face_loaded"] is False


def test_no_face_message_is_exactly_the_seeds(client) -> None:
    response = client.post("/upload_source", files={"image": ("blank.png", _png((200, 200)))})
    assert response.json() == {"success": False, "message": "No face detected"}


def test_upload_source_without_multipart_body(client) -> None:
    response = client.post("/upload_source", json={"image": "nope"})
    assert response.status_code == 400
    assert response.json()["success"] is False


def test_a_failed_upload_keeps_the_previous_source(client) -> None:
    client.post("/upload_source", files={"image": ("grace.jpg", GRACE.read_bytes())})
    response = client.post("/upload_source", files={"image": ("blank.png", _png())})
    assert response.json()["success"] is False
    assert client.get("/status").json()["source_face_loaded"] is True


def test_with_an_api_key_the_page_takes_it_once_and_keeps_it_in_a_cookie(settings) -> None:
    from fastapi.testclient import TestClient

    from faceport.api.app import create_app

    with TestClient(create_app(settings.model_copy(update={"api_key": "operator-key"}))) as keyed:
        form = keyed.get("/", headers={"Accept": "text/html"})
        assert form.status_code == 401 and '<input name="api_key"' in form.text and "AUTH_REQUIRED" in form.text
        assert keyed.get("/status").json()["code"] == "AUTH_REQUIRED"
        assert keyed.get("/?api_key=wrong").status_code == 401

        page = keyed.get("/?api_key=operator-key")
        assert page.status_code == 200 and 'id="camera"' in page.text
        cookie = page.headers["set-cookie"]
        assert "faceport_api_key=operator-key" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
        # the cookie now travels with the page's own requests
        assert keyed.get("/status").status_code == 200
        upload = keyed.post("/upload_source", files={"image": ("grace.jpg", GRACE.read_bytes())})
        assert upload.json() == {"success": True, "message": "Source face ready!"}
        keyed.cookies.clear()
        assert keyed.get("/status", headers={"X-API-Key": "operator-key"}).status_code == 200
        assert keyed.get("/status", headers={"X-API-Key": "nope"}).json()["code"] == "AUTH_INVALID"


def _dead_redis_url() -> str:
    """A Redis URL where nothing listens (a port just freed)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"redis://127.0.0.1:{s.getsockname()[1]}/0"


@pytest.mark.parametrize(("method", "path"), [("GET", "/status"), ("POST", "/upload_source")])
def test_unreachable_redis_is_a_503_in_the_seed_form(settings, method, path) -> None:
    from fastapi.testclient import TestClient

    from faceport.api.app import create_app
    from faceport.realtime.live_swap import STATE_UNAVAILABLE

    with TestClient(create_app(settings.model_copy(update={"redis_url": _dead_redis_url()}))) as down:
        files = {"image": ("grace.jpg", GRACE.read_bytes(), "image/jpeg")} if method == "POST" else None
        response = down.request(method, path, files=files)
        assert response.status_code == 503, response.text
        assert response.json() == {"success": False, "message": STATE_UNAVAILABLE, "code": "STATE_UNAVAILABLE"}
        assert down.get("/").status_code == 200  # the page itself is still served
