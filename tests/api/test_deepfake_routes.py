"""Seed D ``POST /api/v1/face/deepfake`` and the complete ``/face/analyze`` through a real uvicorn server."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from faceport.client import FaceportClient
from tests.conftest import FIXTURES

REAL = "identity/obama/fr_obama.jpg"
SOURCE = "identity/rose_leslie/fr_img1.jpg"  # swapped onto REAL by faceport's own mesh swapper


@pytest.fixture
def settings(settings):  # type: ignore[no-untyped-def]
    return settings.model_copy(update={"rate_limit_face": "100000/hour", "rate_limit_user": "100000/hour"})


@pytest.fixture
def fp(live_server, clip_aigen: Path) -> FaceportClient:  # type: ignore[no-untyped-def]
    client = FaceportClient(live_server.url)
    client.register("dora", "dora@example.com", "dora-password-1")
    client.login("dora", "dora-password-1")
    yield client
    client.close()


@pytest.fixture(scope="module")
def swapped_png(engine, data_dir: Path) -> bytes:
    from faceport.engine.swap import build_swapper

    target = cv2.imread(str(data_dir / REAL), cv2.IMREAD_COLOR)
    swapper = build_swapper(engine, [cv2.imread(str(data_dir / SOURCE), cv2.IMREAD_COLOR)], model="mesh")
    swapped = swapper.process(target, engine.detect(target, landmarks=True).sorted_by_area()[:1])
    assert not np.array_equal(swapped, target)
    ok, data = cv2.imencode(".png", swapped)
    assert ok
    return data.tobytes()


def _post(url: str, token: str, name: str, data: bytes, **form: str) -> httpx.Response:
    return httpx.post(f"{url}/api/v1/face/deepfake", files={"image": (name, data)}, data=form,
                      headers={"Authorization": f"Bearer {token}"}, timeout=60)


def test_a_real_photo_scores_below_its_swap_per_face_and_per_image(live_server, fp: FaceportClient,
                                                                   data_dir: Path, swapped_png: bytes) -> None:
    real = _post(live_server.url, fp.access_token, "obama.jpg", (data_dir / REAL).read_bytes())
    fake = _post(live_server.url, fp.access_token, "swapped.png", swapped_png)
    bodies = []
    for response in (real, fake):
        body = response.json()
        assert response.status_code == 200, body
        assert body["success"] is True and body["meta"]["request_id"] == response.headers["x-request-id"]
        assert response.headers["x-model-used"] == "yunet,facemesh,iris,clip_aigen"
        data = body["data"]
        assert data["count"] == len(data["faces"]) == 1 and data["not_available"] == []
        face = data["faces"][0]
        assert set(face["bbox"]) == {"x1", "y1", "x2", "y2"} and face["landmarks"] is None
        assert set(face["deepfake"]) == {"score", "label", "method", "cues"}
        assert set(face["deepfake"]["cues"]) == {"blend_boundary", "noise", "sharpness", "colour", "misalignment"}
        assert face["deepfake"]["method"].startswith("swap_artefacts")
        assert data["deepfake"]["score"] == face["deepfake"]["score"]  # one face: the image is that face
        assert data["ai_generated"]["method"].startswith("clip_aigen") and 0 <= data["ai_generated"]["score"] <= 1
        bodies.append(data)
    real_data, fake_data = bodies
    assert (real_data["deepfake"]["label"], fake_data["deepfake"]["label"]) == ("real", "fake")
    assert fake_data["faces"][0]["deepfake"]["score"] > real_data["faces"][0]["deepfake"]["score"] + 0.15
    assert fake_data["faces"][0]["deepfake"]["cues"]["sharpness"] > real_data["faces"][0]["deepfake"]["cues"][
        "sharpness"]
    # the same through JSON base64 and through the Python client
    again = fp.request("POST", "/face/deepfake", json={"image": base64.b64encode(swapped_png).decode()})
    assert again["faces"] == fake_data["faces"]
    assert fp.deepfake(data_dir / REAL)["deepfake"] == real_data["deepfake"]


def test_without_the_ai_generated_detector_and_without_a_face(live_server, fp: FaceportClient,
                                                              data_dir: Path) -> None:
    response = _post(live_server.url, fp.access_token, "hopper.jpg", (FIXTURES / "mpl_grace_hopper.jpg").read_bytes(),
                     ai_generated="false")
    assert response.status_code == 200
    assert response.json()["data"]["ai_generated"] is None and "clip_aigen" not in response.headers["x-model-used"]
    empty = _post(live_server.url, fp.access_token, "coffee.png", (data_dir / "negatives/sk_coffee.png").read_bytes())
    data = empty.json()["data"]
    assert data["count"] == 0 and data["faces"] == []
    assert (data["deepfake"]["score"], data["deepfake"]["label"]) == (0.0, "real")
    assert "no face" in data["deepfake"]["method"]


@pytest.mark.parametrize(("body", "content_type", "code"), [
    (b"{not json", "application/json", "INVALID_FORMAT"),
    (json.dumps({"detector": "yunet"}).encode(), "application/json", "MISSING_FIELD"),
    (json.dumps({"image": "aGk=", "detector": "haar"}).encode(), "application/json", "INVALID_INPUT"),
    (json.dumps({"image": "aGk=", "max_faces": 0}).encode(), "application/json", "INVALID_INPUT"),
    (json.dumps({"image": "aGk=", "ai_generated": "maybe"}).encode(), "application/json", "INVALID_INPUT"),
    (json.dumps({"image": "not base64 at all!"}).encode(), "application/json", "INVALID_FORMAT"),
    (json.dumps({"image": base64.b64encode(b"GIF89a not an image").decode()}).encode(), "application/json",
     "INVALID_FORMAT"),
])
def test_bad_bodies_get_the_envelope(live_server, fp: FaceportClient, body: bytes, content_type: str,
                                     code: str) -> None:
    response = httpx.post(f"{live_server.url}/api/v1/face/deepfake", content=body,
                          headers={"Authorization": f"Bearer {fp.access_token}", "Content-Type": content_type})
    assert response.status_code == 400, response.text
    payload = response.json()
    assert payload["success"] is False and payload["error"]["code"] == code


def test_the_route_needs_a_caller(live_server, data_dir: Path) -> None:
    response = httpx.post(f"{live_server.url}/api/v1/face/deepfake",
                          files={"image": ("obama.jpg", (data_dir / REAL).read_bytes())})
    assert response.status_code == 401 and response.json()["error"]["code"] == "AUTH_REQUIRED"


def test_analyze_returns_everything_each_value_with_its_method(fp: FaceportClient, data_dir: Path) -> None:
    result = fp.analyze(FIXTURES / "mpl_grace_hopper.jpg", landmarks=False)
    assert result["not_available"] == []
    assert set(result["methods"]) == {"detection", "landmarks", "pose", "quality", "recognition", "age", "gender",
                                      "emotion", "anti_spoof", "deepfake", "ai_generated"}
    face = result["faces"][0]
    assert face["landmarks"] is None  # computed for pose and the cues, not sent unless asked
    assert face["pose"]["method"] == "facemesh_axes" and abs(face["pose"]["yaw"]) < 10
    quality = face["quality"]
    assert quality["frontalness"] > 0.85 and quality["size"] > 100 and quality["method"]
    assert face["anti_spoof"]["live"] is True and face["anti_spoof"]["method"].startswith("passive_cues_v1:")
    assert set(face["anti_spoof"]["cues"]) >= {"frame_score", "moire_score"}
    assert face["deepfake"]["label"] == "real" and face["deepfake"]["method"].startswith("swap_artefacts")
    assert result["deepfake"]["label"] == "real" and result["ai_generated"]["method"].startswith("clip_aigen")
    for key in ("age", "gender", "emotion"):
        assert face["demographics"][key]["method"]
    # a turned head reads less frontal than Grace Hopper's portrait
    turned = fp.analyze(data_dir / "faces_misc/pf_45-m7-di-ph.jpg")["faces"][0]
    assert turned["quality"]["frontalness"] < quality["frontalness"]
    assert len(turned["landmarks"]) == 478
