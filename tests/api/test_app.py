"""The server skeleton: health on both apps, docs, tracing headers, error envelopes, detection over HTTP."""

from __future__ import annotations

import re

from tests.conftest import FIXTURES


def test_health_is_the_union_of_seeds_b_d_e(client, privacy_client) -> None:
    for c in (client, privacy_client):
        response = c.get("/health")
        assert response.status_code == 200
        body = response.json()
        assert body["status"] == "healthy"
        assert re.match(r"^\d+\.\d+\.\d+", body["version"])
        assert body["timestamp"].endswith("Z")
        assert {"face_detection", "face_landmarks", "face_recognition"} <= set(body["processors_available"])


def test_openapi_docs_and_redoc(client) -> None:
    spec = client.get("/openapi.json").json()
    assert "/health" in spec["paths"] and "/api/v1/face/detect" in spec["paths"]
    assert "swagger" in client.get("/docs").text.lower()
    assert "redoc" in client.get("/redoc").text.lower()


def test_request_id_is_echoed_or_generated(client) -> None:
    given = client.get("/health", headers={"X-Request-ID": "abc-123", "X-Correlation-ID": "corr_9"})
    assert given.headers["x-request-id"] == "abc-123"
    assert given.headers["x-correlation-id"] == "corr_9"
    generated = client.get("/health", headers={"X-Request-ID": "bad id with spaces"})
    assert re.match(r"^req_[0-9a-f]{16}$", generated.headers["x-request-id"])
    assert generated.headers["x-correlation-id"] == generated.headers["x-request-id"]
    assert re.match(r"^\d+(\.\d+)?ms$", generated.headers["x-processing-time"])


def test_error_bodies_follow_each_surface(client, privacy_client) -> None:
    plain = client.get("/no/such/page")
    assert plain.status_code == 404 and plain.json()["code"] == "NOT_FOUND" and plain.json()["detail"]
    platform = client.get("/api/v1/no/such/route", headers={"X-Request-ID": "r1"})
    assert platform.status_code == 404
    assert platform.json()["success"] is False
    assert platform.json()["error"]["code"] == "NOT_FOUND"
    assert platform.json()["meta"]["request_id"] == "r1"
    privacy = privacy_client.get("/api/v1/nothing")
    assert privacy.status_code == 404
    assert set(privacy.json()) == {"error", "message", "code"}
    wrong_method = client.get("/api/v1/face/detect")
    assert wrong_method.status_code == 405


def test_detect_returns_the_two_faces_with_the_seed_d_envelope(client, auth_headers) -> None:
    data = (FIXTURES / "mpl_grace_hopper.jpg").read_bytes()
    response = client.post("/api/v1/face/detect", files={"image": ("h.jpg", data, "image/jpeg")},
                           data={"landmarks": "true", "detector": "centerface"}, headers=auth_headers)
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    face = body["data"]["faces"][0]
    x1, y1, x2 = face["bbox"]["x1"], face["bbox"]["y1"], face["bbox"]["x2"]
    assert 150 < x1 < 200 and 320 < x2 < 380 and 100 < y1 < 150  # Grace Hopper's face
    assert len(face["keypoints"]) == 5 and len(face["landmarks"]) == 478
    meta = body["meta"]
    assert meta["request_id"] == response.headers["x-request-id"]
    assert meta["processing_time"] > 0
    assert meta["vram_usage"]["device"] == "host" and meta["vram_usage"]["used"].endswith(("MB", "GB"))


def test_detect_accepts_a_data_url(client, auth_headers) -> None:
    import base64

    data = base64.b64encode((FIXTURES / "sk_astronaut.png").read_bytes()).decode()
    response = client.post("/api/v1/face/detect", data={"image_base64": f"data:image/png;base64,{data}"},
                           headers=auth_headers)
    assert response.status_code == 200 and response.json()["data"]["count"] == 1


def test_api_key_is_required_when_configured(settings) -> None:
    from fastapi.testclient import TestClient

    from faceport.api.app import create_app

    data = (FIXTURES / "sk_astronaut.png").read_bytes()
    with TestClient(create_app(settings.model_copy(update={"api_key": "s3cret"}))) as client:
        assert client.get("/health").status_code == 200  # health stays open
        missing = client.post("/api/v1/face/detect", files={"image": ("a.png", data, "image/png")})
        assert missing.status_code == 401 and missing.json()["error"]["code"] == "AUTH_REQUIRED"
        wrong = client.post("/api/v1/face/detect", files={"image": ("a.png", data, "image/png")},
                            headers={"X-API-Key": "nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "AUTH_INVALID"
        right = client.post("/api/v1/face/detect", files={"image": ("a.png", data, "image/png")},
                            headers={"X-API-Key": "s3cret"})
        assert right.status_code == 200 and right.json()["data"]["count"] == 1
