"""Seed D face services through a real uvicorn server and the Python client."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest

from faceport.client import FaceportAPIError, FaceportClient
from tests.conftest import FIXTURES

UNKNOWN_FACES = ("faces_misc/pf_0-f1-su-ph.jpg", "faces_misc/pf_0-f15-hao-ph.jpg", "faces_misc/pf_15-f13-anc-ph.jpg",
                 "faces_misc/pf_45-m7-di-ph.jpg", "faces_misc/pf_single_face.jpg", "faces_misc/sk_camera.png")


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


def test_recognition_on_real_identities_with_unknown_faces(fp: FaceportClient, manifest, data_dir: Path,
                                                           capsys) -> None:
    by_identity: dict[str, list[str]] = {}
    for entry in manifest["files"]:
        if entry["path"].startswith("identity/"):
            by_identity.setdefault(entry["identity"], []).append(entry["path"])
    probes: list[tuple[str, str]] = []
    for identity, paths in sorted(by_identity.items()):
        paths.sort()
        subject = fp.create_subject(identity)
        fp.add_face(subject["id"], data_dir / paths[0])
        probes += [(identity, p) for p in paths[1:]]
    correct = 0
    for identity, path in probes:
        face = max(fp.recognize(data_dir / path)["faces"], key=lambda f: f["bbox"]["x2"] - f["bbox"]["x1"])
        correct += face["subject"] is not None and face["subject"]["subject"] == identity
    false_accepts = 0
    for path in UNKNOWN_FACES:
        result = fp.recognize(data_dir / path)
        assert result["count"] >= 1
        false_accepts += sum(f["subject"] is not None for f in result["faces"])
    accuracy = correct / len(probes)
    with capsys.disabled():
        print(f"\n[recognition] {len(by_identity)} enrolled identities, {len(probes)} probes: top-1 accuracy "
              f"{accuracy:.3f}; {len(UNKNOWN_FACES)} unknown faces: {false_accepts} false accepts")
    assert accuracy >= 0.9
    assert false_accepts == 0


def test_recognize_names_each_person_in_a_group_photo(fp: FaceportClient, data_dir: Path) -> None:
    for name, path in (("obama", "identity/obama/fr_obama.jpg"), ("biden", "identity/biden/fr_biden.jpg")):
        fp.add_face(fp.create_subject(name)["id"], data_dir / path)
    result = fp.recognize(data_dir / "group/fr_two_people.jpg", top_k=2)
    by_x = sorted(result["faces"], key=lambda f: f["bbox"]["x1"])
    assert [f["subject"]["subject"] for f in by_x] == ["obama", "biden"]  # obama left, biden right
    assert all(len(f["candidates"]) == 2 for f in by_x)
    assert result["gallery"] == {"subjects": 2, "faces": 2}
    assert fp.last_response is not None and fp.last_response.headers["x-model-used"] == "yunet,dlib_resnet"


def test_verify_two_images_and_an_image_against_a_subject(fp: FaceportClient, data_dir: Path) -> None:
    same = fp.verify(data_dir / "identity/obama/fr_obama.jpg", data_dir / "identity/obama/fr_obama2.jpg")
    assert same["verified"] is True and same["distance"] <= same["threshold"] == 0.42
    assert 0.0 <= same["similarity"] <= 1.0 and set(same["faces"]) == {"image1", "image2"}
    different = fp.verify(data_dir / "identity/obama/fr_obama.jpg", data_dir / "identity/biden/fr_biden.jpg")
    assert different["verified"] is False
    subject = fp.create_subject("kit")
    fp.add_face(subject["id"], data_dir / "identity/kit_harington/fr_john1.jpeg")
    assert fp.verify(data_dir / "identity/kit_harington/fr_john2.jpeg", subject_id=subject["id"])["verified"]
    assert not fp.verify(data_dir / "identity/rose_leslie/fr_img1.jpg", subject_id=subject["id"])["verified"]
    with pytest.raises(FaceportAPIError) as missing:
        fp.verify(data_dir / "identity/obama/fr_obama.jpg", subject_id="nosuchsubject")
    assert missing.value.status == 404 and missing.value.code == "NOT_FOUND"
    with pytest.raises(FaceportAPIError) as no_face:
        fp.verify(data_dir / "negatives/sk_coffee.png", data_dir / "identity/obama/fr_obama.jpg")
    assert no_face.value.code == "INVALID_INPUT" and no_face.value.details["field"] == "image1"
    with pytest.raises(FaceportAPIError) as no_second:
        fp.verify(data_dir / "identity/obama/fr_obama.jpg")
    assert no_second.value.code == "MISSING_FIELD" and no_second.value.details["field"] == "image2"


def test_analyze_reports_pose_quality_and_methods(fp: FaceportClient, clip_aigen: Path) -> None:
    result = fp.analyze(FIXTURES / "mpl_grace_hopper.jpg", include_embedding=True)
    face = result["faces"][0]
    assert len(face["landmarks"]) == 478 and len(face["embedding"]) == 128
    assert abs(face["pose"]["yaw"]) < 10 and face["pose"]["method"] == "facemesh_axes"
    assert face["quality"]["sharpness"] > 100 and face["quality"]["method"]
    assert face["recognition"] is None  # empty gallery
    assert set(result["methods"]) >= {"detection", "landmarks", "pose", "quality", "recognition",
                                      "age", "gender", "emotion", "anti_spoof", "deepfake", "ai_generated"}
    # every model is installed (clip_aigen, optional, too): nothing is missing
    assert result["not_available"] == []
    demographics = face["demographics"]  # Grace Hopper at 77 (BENCHMARKS.md: the one gender the model gets wrong)
    assert demographics["age"]["value"] >= 65 and demographics["age"]["method"].startswith("age_cydral")
    assert demographics["gender"]["method"].startswith("gender_cydral") and demographics["gender"]["score"] > 0.5
    assert demographics["emotion"]["method"].startswith("fer_emotion")
    assert set(demographics["emotion"]["scores"]) == {"angry", "disgust", "fear", "happy", "sad", "surprise",
                                                      "neutral"}


@pytest.mark.parametrize(("photo", "faces"), [("sk_astronaut.png", 1), ("negatives/sk_coffee.png", 0)])
def test_demographics_per_face_with_the_method_of_each_value(live_server, fp: FaceportClient, data_dir: Path,
                                                             photo: str, faces: int) -> None:
    path = FIXTURES / photo if (FIXTURES / photo).is_file() else data_dir / photo
    response = httpx.post(f"{live_server.url}/api/v1/face/demographics",
                          files={"image": (path.name, path.read_bytes())},
                          headers={"Authorization": f"Bearer {fp.access_token}"})
    body = response.json()
    assert response.status_code == 200, body
    assert body["success"] is True and body["meta"]["request_id"] == response.headers["x-request-id"]
    data = body["data"]
    assert data["count"] == len(data["faces"]) == faces  # no face: an empty list, as /face/detect answers
    assert data["detector"] == "yunet" and data["image"]["width"] > 0
    if faces:
        face = data["faces"][0]  # Eileen Collins, NASA portrait at about 37, smiling
        assert set(face["bbox"]) == {"x1", "y1", "x2", "y2"} and len(face["keypoints"]) == 5
        d = face["demographics"]
        assert (d["gender"]["value"], d["emotion"]["value"]) == ("female", "happy")
        assert 25 <= d["age"]["value"] <= 45 and abs(d["age"]["years"] - d["age"]["value"]) <= 0.5
        assert 0 < d["age"]["score"] <= 1 and d["gender"]["score"] > 0.8
        assert abs(sum(d["emotion"]["scores"].values()) - 1) < 0.01
        assert [d[k]["method"].split(" ")[0] for k in ("age", "gender", "emotion")] == [
            "age_cydral", "gender_cydral", "fer_emotion"]
    # the same image as base64 in JSON gives the same answer (the image input forms of /face/detect)
    b64 = base64.b64encode(path.read_bytes()).decode()
    again = fp.request("POST", "/face/demographics", json={"image": b64})
    assert again["faces"] == data["faces"]
    assert fp.demographics(path)["faces"] == data["faces"]  # and through the Python client


@pytest.mark.parametrize("detector", ["centerface", "yunet"])
def test_detect_accepts_json_base64_with_the_seed_field_names(live_server, fp: FaceportClient, detector: str) -> None:
    b64 = base64.b64encode((FIXTURES / "sk_astronaut.png").read_bytes()).decode()
    response = httpx.post(f"{live_server.url}/api/v1/face/detect", json={"image": b64, "detector": detector},
                          headers={"Authorization": f"Bearer {fp.access_token}"})
    body = response.json()
    assert response.status_code == 200, body
    face = body["data"]["faces"][0]
    assert set(face["bbox"]) == {"x1", "y1", "x2", "y2"} and len(face["keypoints"]) == 5
    assert body["data"]["detector"] == detector
    assert response.headers["x-api-version"] == "v1" and "/" in response.headers["x-vram-usage"]


@pytest.mark.parametrize(("route", "body", "content_type", "code"), [
    ("recognize", b"{not json", "application/json", "INVALID_FORMAT"),
    ("recognize", b"[1, 2]", "application/json", "INVALID_FORMAT"),
    ("recognize", json.dumps({"image": "aGk=", "top_k": 0}).encode(), "application/json", "INVALID_INPUT"),
    ("recognize", json.dumps({"detector": "centerface"}).encode(), "application/json", "MISSING_FIELD"),
    ("recognize", b"raw bytes", "application/octet-stream", "INVALID_FORMAT"),
    ("demographics", b"{not json", "application/json", "INVALID_FORMAT"),
    ("demographics", json.dumps({"image": "aGk=", "max_faces": 0}).encode(), "application/json", "INVALID_INPUT"),
    ("demographics", json.dumps({"image": "aGk=", "detector": "haar"}).encode(), "application/json",
     "INVALID_INPUT"),
    ("demographics", json.dumps({"detector": "centerface"}).encode(), "application/json", "MISSING_FIELD"),
    ("demographics", json.dumps({"image": "not base64 at all!"}).encode(), "application/json", "INVALID_FORMAT"),
])
def test_bad_bodies_get_the_envelope(live_server, fp: FaceportClient, route: str, body: bytes, content_type: str,
                                     code: str) -> None:
    response = httpx.post(f"{live_server.url}/api/v1/face/{route}", content=body,
                          headers={"Authorization": f"Bearer {fp.access_token}", "Content-Type": content_type})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
