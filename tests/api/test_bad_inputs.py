"""The bad-input table through a real HTTP route: a clear error or a correct result, never a 500."""

from __future__ import annotations

import io
from collections.abc import Callable

import cv2
import numpy as np
import pytest
from PIL import Image

from tests.conftest import FIXTURES, register_headers
from tests.engine.test_imageio import BLUE, RED, animated, gray16_png, png_bomb, rgba_png, save, solid

ROUTE = "/api/v1/face/detect"


def _hopper_pil() -> Image.Image:
    return Image.open(FIXTURES / "mpl_grace_hopper.jpg").convert("RGB")


def hopper_cmyk_jpeg() -> bytes:
    return save(_hopper_pil().convert("CMYK"), "JPEG", quality=92)


def hopper_16bit_png() -> bytes:
    bgr16 = cv2.imread(str(FIXTURES / "mpl_grace_hopper.jpg")).astype(np.uint16) * 257
    return cv2.imencode(".png", bgr16)[1].tobytes()


def hopper_rgba_png() -> bytes:
    im = _hopper_pil().convert("RGBA")
    im.putalpha(255)
    return save(im, "PNG")


def hopper_animated_webp() -> bytes:
    first = _hopper_pil()
    return save(first, "WEBP", save_all=True, append_images=[solid(BLUE, first.size)], duration=100, loop=0)


def truncated_jpeg() -> bytes:
    data = (FIXTURES / "mpl_grace_hopper.jpg").read_bytes()
    return data[: len(data) // 2]


# (id, bytes factory, filename, expected: ("error", code) or ("faces", n))
CASES: list[tuple[str, Callable[[], bytes], str, tuple[str, object]]] = [
    ("empty", lambda: b"", "empty.jpg", ("error", "INVALID_FORMAT")),
    ("truncated-jpeg", truncated_jpeg, "half.jpg", ("error", "INVALID_FORMAT")),
    ("text-named-jpg", lambda: b"this is not an image at all\n" * 20, "notes.jpg", ("error", "INVALID_FORMAT")),
    ("png-bomb-20000x20000", png_bomb, "bomb.png", ("error", "INVALID_FORMAT")),
    ("animated-gif", lambda: animated("GIF"), "anim.gif", ("error", "INVALID_FORMAT")),
    ("one-pixel", lambda: save(solid(RED, (1, 1)), "PNG"), "dot.png", ("faces", 0)),
    ("gray-16bit-png", gray16_png, "g16.png", ("faces", 0)),
    ("rgba-png", rgba_png, "alpha.png", ("faces", 0)),
    ("hopper-16bit-png", hopper_16bit_png, "hopper16.png", ("faces", 1)),
    ("hopper-cmyk-jpeg", hopper_cmyk_jpeg, "hopper_cmyk.jpg", ("faces", 1)),
    ("hopper-rgba-png", hopper_rgba_png, "hopper_rgba.png", ("faces", 1)),
    ("hopper-animated-webp", hopper_animated_webp, "hopper.webp", ("faces", 1)),
]


@pytest.mark.parametrize("route", [ROUTE, "/api/v1/face/demographics", "/api/v1/face/deepfake"])
@pytest.mark.parametrize(("make", "filename", "expected"), [pytest.param(m, f, e, id=i) for i, m, f, e in CASES])
def test_bad_and_odd_images_over_http(client, auth_headers, make: Callable[[], bytes], filename: str,
                                      expected: tuple[str, object], route: str) -> None:
    response = client.post(route, files={"image": (filename, io.BytesIO(make()), "image/jpeg")},
                           headers=auth_headers)
    body = response.json()
    kind, value = expected
    if kind == "error":
        assert response.status_code == 400, body
        assert body["success"] is False
        assert body["error"]["code"] == value
        assert body["error"]["details"]["reason"] == "INVALID_IMAGE"
        assert body["error"]["message"]
        assert body["meta"]["request_id"] == response.headers["x-request-id"]
    else:
        assert response.status_code == 200, body
        assert body["data"]["count"] == value
    # the server keeps serving
    assert client.get("/health").status_code == 200


@pytest.mark.parametrize(("make", "filename", "expected"), [pytest.param(m, f, e, id=i) for i, m, f, e in CASES])
def test_bad_and_odd_images_on_the_privacy_app(privacy_client, make: Callable[[], bytes], filename: str,
                                               expected: tuple[str, object]) -> None:
    """The same table as multipart uploads to seed E's /api/v1/process: refused before a job is queued, and deleted."""
    response = privacy_client.post("/api/v1/process", files={"file": (filename, io.BytesIO(make()), "image/jpeg")})
    body = response.json()
    uploads = privacy_client.app.state.context.privacy.root / "uploads"
    kind, _ = expected
    if kind == "error":
        assert response.status_code == 400, body
        assert set(body) == {"error", "message", "code"}
        # .gif is not a type the privacy filter takes; the rest are undecodable images
        assert body["code"] == ("INVALID_FORMAT" if filename.endswith(".gif") else "INVALID_IMAGE"), body
        assert not uploads.is_dir() or list(uploads.iterdir()) == []
    else:
        assert response.status_code == 200, body
        assert body["status"] == "processing"
    assert privacy_client.get("/health").status_code == 200


def test_server_keeps_detecting_after_the_whole_table(client, auth_headers) -> None:
    for _, make, filename, _ in CASES:
        client.post(ROUTE, files={"image": (filename, io.BytesIO(make()), "image/png")}, headers=auth_headers)
    ok = client.post(ROUTE, files={"image": ("h.jpg", (FIXTURES / "mpl_grace_hopper.jpg").read_bytes(), "image/jpeg")},
                     headers=auth_headers)
    assert ok.status_code == 200 and ok.json()["data"]["count"] == 1


def test_too_large_upload_is_413(settings, models_dir) -> None:
    from fastapi.testclient import TestClient

    from faceport.api.app import create_app

    small = settings.model_copy(update={"max_image_bytes": 50_000})
    with TestClient(create_app(small)) as client:
        headers = register_headers(client)
        data = (FIXTURES / "sk_astronaut.png").read_bytes()
        assert len(data) > 50_000
        response = client.post(ROUTE, files={"image": ("a.png", data, "image/png")}, headers=headers)
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "FILE_TOO_LARGE"
        big_b64 = "A" * 200_000
        response = client.post(ROUTE, data={"image_base64": big_b64}, headers=headers)
        assert response.status_code == 413


def test_body_over_the_app_limit_gets_the_seed_d_envelope(settings, models_dir) -> None:
    """Starlette refuses the body before any route runs; the client still gets seed D's error envelope."""
    from fastapi.testclient import TestClient

    from faceport.api.app import create_app

    small = settings.model_copy(update={"max_upload_bytes": 100_000})
    with TestClient(create_app(small)) as client:
        headers = register_headers(client)
        response = client.post(ROUTE, files={"image": ("a.png", b"\0" * 300_000, "image/png")}, headers=headers)
        assert response.status_code == 413
        body = response.json()
        assert body["success"] is False and body["error"]["code"] == "FILE_TOO_LARGE"
        assert body["meta"]["request_id"] == response.headers["X-Request-ID"]
        ok = client.post(ROUTE, files={"image": ("h.jpg", (FIXTURES / "mpl_grace_hopper.jpg").read_bytes(),
                                                 "image/jpeg")}, headers=headers)
        assert ok.status_code == 200  # and it keeps serving


@pytest.mark.parametrize(
    ("data", "code", "field"),
    [
        ({}, "MISSING_FIELD", "image"),
        ({"image_base64": "!!!not base64!!!"}, "INVALID_FORMAT", None),
        ({"image_base64": "data:text/plain;base64,aGVsbG8="}, "INVALID_FORMAT", None),
        ({"image_base64": "aGk=", "detector": "yolo"}, "INVALID_INPUT", "detector"),
        ({"image_base64": "aGk=", "max_faces": "0"}, "INVALID_INPUT", "max_faces"),
        ({"image_base64": "aGk=", "score_threshold": "1.5"}, "INVALID_INPUT", "score_threshold"),
    ],
)
def test_field_errors_name_the_field(client, auth_headers, data: dict, code: str, field: str | None) -> None:
    response = client.post(ROUTE, data=data, headers=auth_headers)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == code
    if field:
        assert error["details"]["field"] == field
