"""``POST /api/v1/face/anti-spoof`` (passive, single image) through a real uvicorn server and the Python client."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from faceport.client import FaceportClient
from tests.conftest import read_bgr
from tests.spoof_attacks import portrait, print_attack


@pytest.fixture
def settings(settings):  # type: ignore[no-untyped-def]
    return settings.model_copy(update={"rate_limit_face": "100000/hour", "rate_limit_user": "100000/hour"})


@pytest.fixture
def fp(live_server) -> FaceportClient:  # type: ignore[no-untyped-def]
    client = FaceportClient(live_server.url)
    client.register("alice", "alice@example.com", "alice-password-1")
    client.login("alice", "alice-password-1")
    yield client
    client.close()


def _jpeg(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok
    return buf.tobytes()


def test_real_photo_is_live_and_a_held_print_is_not(live_server, fp: FaceportClient, data_dir: Path) -> None:
    real = data_dir / "identity/obama/fr_obama.jpg"
    response = httpx.post(f"{live_server.url}/api/v1/face/anti-spoof", files={"image": (real.name, real.read_bytes())},
                          headers={"Authorization": f"Bearer {fp.access_token}"})
    body = response.json()
    assert response.status_code == 200, body
    assert body["success"] is True and body["meta"]["request_id"] == response.headers["x-request-id"]
    assert "passive_cues_v1" in response.headers["x-model-used"]
    data = body["data"]
    assert data["count"] == 1 and data["live"] is True and data["method"].startswith("passive_cues_v1")
    verdict = data["faces"][0]["anti_spoof"]
    assert verdict["live"] is True and verdict["method"] == "passive_cues_v1:passive" and verdict["score"] < 0.5
    assert {"frame_score", "moire_score", "gamut_score", "specular_score", "blur_score"} <= set(verdict["cues"])

    image = read_bgr(real)
    faces = fp.detect(real)["faces"]
    box = faces[0]["bbox"]
    held = print_attack(portrait(image, np.array([box["x1"], box["y1"], box["x2"], box["y2"]], np.float32)),
                        read_bgr(data_dir / "negatives/sk_coffee.png"), np.random.default_rng(0))
    result = fp.anti_spoof(_jpeg(held))  # the Python client, multipart
    assert result["count"] == 1 and result["live"] is False
    verdict = result["faces"][0]["anti_spoof"]
    assert verdict["live"] is False and verdict["score"] >= 0.5
    assert verdict["method"] in ("passive_cues_v1:frame", "passive_cues_v1:combined")
    # the same image as base64 in a JSON body gives the same answer
    again = fp.request("POST", "/face/anti-spoof", json={"image": base64.b64encode(_jpeg(held)).decode()})
    assert again["faces"][0]["anti_spoof"] == verdict


def test_no_face_is_an_empty_list(fp: FaceportClient, data_dir: Path) -> None:
    result = fp.anti_spoof(data_dir / "negatives/sk_coffee.png")
    assert (result["count"], result["faces"], result["live"]) == (0, [], True)


@pytest.mark.parametrize(("body", "code"), [
    (b"{not json", "INVALID_FORMAT"),
    (json.dumps({"image": "aGk=", "max_faces": 0}).encode(), "INVALID_INPUT"),
    (json.dumps({"detector": "yunet"}).encode(), "MISSING_FIELD"),
    (json.dumps({"image": "not base64 at all!"}).encode(), "INVALID_FORMAT"),
])
def test_bad_bodies_get_the_envelope(live_server, fp: FaceportClient, body: bytes, code: str) -> None:
    response = httpx.post(f"{live_server.url}/api/v1/face/anti-spoof", content=body,
                          headers={"Authorization": f"Bearer {fp.access_token}", "Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code


def test_needs_authentication(live_server) -> None:  # type: ignore[no-untyped-def]
    response = httpx.post(f"{live_server.url}/api/v1/face/anti-spoof", json={"image": "aGk="})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "AUTH_REQUIRED"
