"""Gallery routes over HTTP with real photos: enrol identities, refuse group and empty photos, 404s, pages."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from faceport.store.models import SubjectFace
from tests.conftest import FIXTURES, read_bgr, register_headers

API = "/api/v1/face/subjects"
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")
MISSING = "0" * 32


def _photos(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)


def _create(client: Any, headers: dict[str, str], name: str) -> dict[str, Any]:
    response = client.post(API, json={"name": name}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()["data"]


def _enrol(client: Any, headers: dict[str, str], subject_id: str, photo: Path) -> Any:
    return client.post(f"{API}/{subject_id}/faces", files={"image": (photo.name, photo.read_bytes())},
                       headers=headers)


def _error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False and body["error"]["code"] == code, body
    assert body["meta"]["request_id"] == response.headers["x-request-id"]
    return body["error"]


def test_every_route_needs_a_caller(client) -> None:
    for method, path in [("get", API), ("post", API), ("get", f"{API}/x"), ("put", f"{API}/x"),
                         ("delete", f"{API}/x"), ("post", f"{API}/x/faces"), ("get", f"{API}/x/faces"),
                         ("delete", f"{API}/x/faces/y")]:
        _error(client.request(method, path, json={"name": "n"}), 401, "AUTH_REQUIRED")
    spec = client.get("/openapi.json").json()
    assert "gallery" in spec["paths"]["/api/v1/face/subjects/{subject_id}/faces"]["post"]["tags"]


def test_enrolled_identities_are_recognised_on_their_other_photos(client, auth_headers, data_dir: Path) -> None:
    """First photo of each person enrolled over HTTP; every other photo of them must find them first."""
    ctx = client.app.state.context
    probes: list[tuple[str, Path]] = []
    for folder in sorted(p for p in (data_dir / "identity").iterdir() if p.is_dir()):
        photos = _photos(folder)
        subject = _create(client, auth_headers, folder.name.replace("_", " ").title())
        response = _enrol(client, auth_headers, subject["id"], photos[0])
        assert response.status_code == 201, (photos[0], response.text)
        face = response.json()["data"]
        assert face["subject_id"] == subject["id"] and len(face["id"]) == 32
        height, width = read_bgr(photos[0]).shape[:2]
        box = face["bbox"]
        assert 0 <= box["x1"] < box["x2"] <= width * 1.1 and 0 <= box["y1"] < box["y2"] <= height * 1.1
        assert 0.5 <= face["score"] <= 1.0 and face["created_at"].endswith("Z")
        assert response.headers["x-model-used"].endswith("dlib_resnet")
        probes += [(subject["name"], photo) for photo in photos[1:]]
    assert ctx.gallery.stats() == {"subjects": 9, "faces": 9}
    assert len(probes) >= 15

    wrong = {}
    for name, photo in probes:
        embedding = ctx.engine.embed_largest(read_bgr(photo)).embedding[0]
        top = ctx.gallery.search(embedding, k=3)
        if top[0].subject_name != name or top[0].distance > ctx.engine.options.verify_threshold:
            wrong[photo.name] = (name, [(m.subject_name, round(m.distance, 3)) for m in top])
    assert not wrong, wrong

    listing = client.get(API, params={"size": 100}, headers=auth_headers).json()["data"]
    assert listing["total"] == 9 and all(item["face_count"] == 1 for item in listing["items"])


def test_base64_in_json_or_form_enrols_the_same_face(client, auth_headers) -> None:
    data = (FIXTURES / "mpl_grace_hopper.jpg").read_bytes()
    encoded = base64.b64encode(data).decode()
    subject = _create(client, auth_headers, "Grace Hopper")
    url = f"{API}/{subject['id']}/faces"
    as_json = client.post(url, json={"image_base64": f"data:image/jpeg;base64,{encoded}"}, headers=auth_headers)
    as_form = client.post(url, data={"image_base64": encoded}, headers=auth_headers)
    as_file = client.post(url, files={"image": ("g.jpg", data, "image/jpeg")}, headers=auth_headers)
    assert [r.status_code for r in (as_json, as_form, as_file)] == [201, 201, 201]
    boxes = [r.json()["data"]["bbox"] for r in (as_json, as_form, as_file)]
    assert boxes[0] == boxes[1] == boxes[2]
    x1, y1, x2, _ = boxes[0].values()
    assert 150 < x1 < 200 and 320 < x2 < 380 and 100 < y1 < 150  # Grace Hopper's face
    faces = client.get(url, headers=auth_headers).json()["data"]
    assert faces["total"] == 3 and [f["id"] for f in faces["items"]] == [r.json()["data"]["id"]
                                                                          for r in (as_json, as_form, as_file)]
    # The same picture, however it was sent, is recorded with one hash; the image itself is not kept.
    with client.app.state.context.store.session() as session:
        rows = session.scalars(select(SubjectFace)).all()
    assert len({row.image_sha256 for row in rows}) == 1
    assert all(len(row.embedding) == 128 * 4 and row.dim == 128 for row in rows)


@pytest.mark.parametrize("photo", ["group/fr_obama_and_biden.jpg", "group/ul_zidane.jpg", "group/pf_multi_face.jpg"])
def test_a_group_photo_is_refused(client, auth_headers, data_dir: Path, photo: str) -> None:
    subject = _create(client, auth_headers, "Someone")
    error = _error(_enrol(client, auth_headers, subject["id"], data_dir / photo), 400, "INVALID_INPUT")
    assert error["message"] == "several faces; send an image with exactly one"
    assert error["details"]["field"] == "image" and error["details"]["faces"] >= 2
    assert client.get(f"{API}/{subject['id']}", headers=auth_headers).json()["data"]["face_count"] == 0
    assert client.app.state.context.gallery.stats()["faces"] == 0


@pytest.mark.parametrize("photo", ["negatives/sk_coffee.png", "negatives/dt_33887522274_bus_mountains.jpg",
                                   "negatives/if_mask_white.jpg"])
def test_a_photo_without_a_face_is_refused(client, auth_headers, data_dir: Path, photo: str) -> None:
    subject = _create(client, auth_headers, "Someone")
    error = _error(_enrol(client, auth_headers, subject["id"], data_dir / photo), 400, "INVALID_INPUT")
    assert error["details"]["validation"] == "face_required" and error["details"]["reason"] == "NO_FACE"
    assert error["details"]["field"] == "image"
    assert client.app.state.context.gallery.stats()["faces"] == 0


def test_bad_or_missing_images(client, auth_headers) -> None:
    subject = _create(client, auth_headers, "Someone")
    url = f"{API}/{subject['id']}/faces"
    _error(client.post(url, json={}, headers=auth_headers), 400, "MISSING_FIELD")
    _error(client.post(url, files={"image": ("x.jpg", b"not an image")}, headers=auth_headers), 400,
           "INVALID_FORMAT")
    _error(client.post(url, content=b"raw", headers={**auth_headers, "content-type": "text/plain"}), 400,
           "INVALID_FORMAT")


def test_unknown_ids_are_not_found(client, auth_headers) -> None:
    subject = _create(client, auth_headers, "Known")
    photo = (FIXTURES / "mpl_grace_hopper.jpg").read_bytes()
    cases = [
        ("get", f"{API}/{MISSING}", {}),
        ("put", f"{API}/{MISSING}", {"json": {"name": "x"}}),
        ("delete", f"{API}/{MISSING}", {}),
        ("get", f"{API}/{MISSING}/faces", {}),
        ("post", f"{API}/{MISSING}/faces", {"files": {"image": ("g.jpg", photo)}}),
        ("delete", f"{API}/{MISSING}/faces/{MISSING}", {}),
        ("delete", f"{API}/{subject['id']}/faces/{MISSING}", {}),
    ]
    for method, path, kwargs in cases:
        error = _error(client.request(method, path, headers=auth_headers, **kwargs), 404, "NOT_FOUND")
        assert MISSING in error["message"], (method, path)


def test_pagination(client, auth_headers) -> None:
    names = [f"person {i:02d}" for i in range(25)]
    for name in reversed(names):
        _create(client, auth_headers, name)

    def page(**params: Any) -> dict[str, Any]:
        response = client.get(API, params=params, headers=auth_headers)
        assert response.status_code == 200, response.text
        return response.json()["data"]

    first = page(page=1, size=10)
    assert (first["page"], first["size"], first["total"]) == (1, 10, 25)
    assert [item["name"] for item in first["items"]] == names[:10]
    assert {"id", "name", "face_count", "created_at", "owner"} == set(first["items"][0])
    assert [item["name"] for item in page(page=3, size=10)["items"]] == names[20:]
    assert page(page=4, size=10)["items"] == []
    default = page()
    assert (default["page"], default["size"], len(default["items"])) == (1, 20, 20)
    assert len(page(size=100)["items"]) == 25
    for params in ({"size": 101}, {"size": 0}, {"page": 0}, {"page": "two"}):
        error = _error(client.get(API, params=params, headers=auth_headers), 400, "INVALID_INPUT")
        assert error["details"]["field"] in ("size", "page")


def test_names_rename_and_delete(client, auth_headers) -> None:
    ctx = client.app.state.context
    grace = _create(client, auth_headers, "  Grace ")
    assert grace["name"] == "Grace" and grace["face_count"] == 0
    error = _error(client.post(API, json={"name": "Grace"}, headers=auth_headers), 400, "INVALID_INPUT")
    assert error["details"]["field"] == "name"
    _error(client.post(API, json={"name": "   "}, headers=auth_headers), 400, "INVALID_INPUT")
    _error(client.post(API, json={"name": "x" * 256}, headers=auth_headers), 400, "INVALID_INPUT")
    _error(client.post(API, json={}, headers=auth_headers), 400, "MISSING_FIELD")
    _error(client.post(API, json={"name": "A", "id": "chosen"}, headers=auth_headers), 400, "INVALID_INPUT")

    photo = FIXTURES / "mpl_grace_hopper.jpg"
    face = _enrol(client, auth_headers, grace["id"], photo).json()["data"]
    other = _create(client, auth_headers, "Eileen")
    _error(client.put(f"{API}/{grace['id']}", json={"name": "Eileen"}, headers=auth_headers), 400, "INVALID_INPUT")
    renamed = client.put(f"{API}/{grace['id']}", json={"name": "Grace Hopper"}, headers=auth_headers)
    assert renamed.status_code == 200 and renamed.json()["data"]["name"] == "Grace Hopper"
    assert renamed.json()["data"]["face_count"] == 1
    embedding = ctx.engine.embed_largest(read_bgr(photo)).embedding[0]
    assert ctx.gallery.search(embedding, k=1)[0].subject_name == "Grace Hopper"

    got = client.get(f"{API}/{grace['id']}", headers=auth_headers).json()["data"]
    assert got == {**grace, "name": "Grace Hopper", "face_count": 1}

    deleted_face = client.delete(f"{API}/{grace['id']}/faces/{face['id']}", headers=auth_headers)
    assert deleted_face.status_code == 200 and deleted_face.json()["data"]["id"] == face["id"]
    assert ctx.gallery.search(embedding, k=1) == []
    _enrol(client, auth_headers, grace["id"], photo)
    _enrol(client, auth_headers, grace["id"], photo)
    deleted = client.delete(f"{API}/{grace['id']}", headers=auth_headers)
    assert deleted.status_code == 200
    assert deleted.json()["data"] == {"id": grace["id"], "name": "Grace Hopper", "faces_deleted": 2}
    _error(client.get(f"{API}/{grace['id']}", headers=auth_headers), 404, "NOT_FOUND")
    assert ctx.gallery.stats() == {"subjects": 1, "faces": 0}
    assert client.get(API, headers=auth_headers).json()["data"]["items"][0]["id"] == other["id"]


# --- owners ----------------------------------------------------------------------------

OTHER_USER = {"username": "mallory", "email": "mallory@example.com", "password": "mallory-password"}
RECOGNIZE, VERIFY = "/api/v1/face/recognize", "/api/v1/face/verify"


def _user_id(client: Any, headers: dict[str, str]) -> str:
    return str(client.get("/api/v1/auth/profile", headers=headers).json()["data"]["id"])


def _candidates(client: Any, headers: dict[str, str], photo: bytes, **fields: str) -> dict[str, Any]:
    response = client.post(RECOGNIZE, files={"image": ("g.jpg", photo)}, data=fields, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def test_another_users_subjects_are_not_found_and_never_recognised(client, auth_headers, admin_headers) -> None:
    photo = (FIXTURES / "mpl_grace_hopper.jpg").read_bytes()
    grace = _create(client, auth_headers, "Grace")
    face = _enrol(client, auth_headers, grace["id"], FIXTURES / "mpl_grace_hopper.jpg").json()["data"]
    owner = _user_id(client, auth_headers)
    assert grace["owner"] == owner
    other = register_headers(client, OTHER_USER)

    # Everything the other user can try on the first user's subject answers like a missing id.
    cases = [
        ("get", f"{API}/{{id}}", {}),
        ("put", f"{API}/{{id}}", {"json": {"name": "Stolen"}}),
        ("delete", f"{API}/{{id}}", {}),
        ("get", f"{API}/{{id}}/faces", {}),
        ("post", f"{API}/{{id}}/faces", {"files": {"image": ("g.jpg", photo)}}),
        ("delete", f"{API}/{{id}}/faces/" + face["id"], {}),
        ("post", VERIFY, {"files": {"image1": ("g.jpg", photo)}, "data": {"subject_id": "{id}"}}),
    ]
    for method, template, kwargs in cases:
        answers = []
        for subject_id in (grace["id"], MISSING):
            filled = {**kwargs, "data": {k: v.format(id=subject_id) for k, v in kwargs["data"].items()}} \
                if "data" in kwargs else kwargs
            response = client.request(method, template.format(id=subject_id), headers=other, **filled)
            answers.append(_error(response, 404, "NOT_FOUND")["message"].replace(subject_id, "<id>"))
        assert answers[0] == answers[1], (method, template)

    listing = client.get(API, headers=other).json()["data"]
    assert (listing["total"], listing["items"]) == (0, [])
    found = _candidates(client, other, photo)
    assert found["faces"][0]["candidates"] == [] and found["faces"][0]["subject"] is None
    assert found["gallery"] == {"subjects": 0, "faces": 0}
    # Names are unique per owner: the other user may have their own "Grace", recognised for them only.
    theirs = _create(client, other, "Grace")
    assert _enrol(client, other, theirs["id"], FIXTURES / "mpl_grace_hopper.jpg").status_code == 201
    assert [c["subject_id"] for c in _candidates(client, other, photo)["faces"][0]["candidates"]] == [theirs["id"]]
    mine = _candidates(client, auth_headers, photo)
    assert [c["subject_id"] for c in mine["faces"][0]["candidates"]] == [grace["id"]]
    assert mine["faces"][0]["subject"]["subject_id"] == grace["id"]
    assert mine["gallery"] == {"subjects": 1, "faces": 1}
    # The first user's subject came through untouched.
    got = client.get(f"{API}/{grace['id']}", headers=auth_headers).json()["data"]
    assert (got["name"], got["face_count"]) == ("Grace", 1)
    # Filtering by owner is for admins; others are refused whatever the owner asked for.
    _error(client.get(API, params={"owner": owner}, headers=other), 403, "AUTH_FORBIDDEN")
    _error(client.post(RECOGNIZE, files={"image": ("g.jpg", photo)}, data={"owner": owner}, headers=other),
           403, "AUTH_FORBIDDEN")

    # Admins see every subject, filter by owner, and may act on anyone's.
    everyone = client.get(API, headers=admin_headers).json()["data"]
    assert {item["id"] for item in everyone["items"]} == {grace["id"], theirs["id"]}
    filtered = client.get(API, params={"owner": owner}, headers=admin_headers).json()["data"]
    assert [item["id"] for item in filtered["items"]] == [grace["id"]] and filtered["total"] == 1
    assert {c["subject_id"] for c in _candidates(client, admin_headers, photo)["faces"][0]["candidates"]} == {
        grace["id"], theirs["id"]}
    only_theirs = _candidates(client, admin_headers, photo, owner=_user_id(client, other))
    assert [c["subject_id"] for c in only_theirs["faces"][0]["candidates"]] == [theirs["id"]]
    verified = client.post(VERIFY, files={"image1": ("g.jpg", photo)}, data={"subject_id": grace["id"]},
                           headers=admin_headers)
    assert verified.status_code == 200 and verified.json()["data"]["verified"] is True
    renamed = client.put(f"{API}/{theirs['id']}", json={"name": "Grace H"}, headers=admin_headers)
    assert renamed.status_code == 200 and renamed.json()["data"]["owner"] == theirs["owner"]
    assert client.delete(f"{API}/{theirs['id']}", headers=admin_headers).status_code == 200
    assert client.get(API, headers=other).json()["data"]["total"] == 0


def test_api_keys_own_subjects_like_their_user_or_themselves(client, auth_headers, admin_headers) -> None:
    user_id = _user_id(client, auth_headers)
    grace = _create(client, auth_headers, "Grace")

    def key(**body: Any) -> dict[str, str]:
        created = client.post("/api/v1/auth/api-keys", json={"name": "k", **body}, headers=admin_headers)
        assert created.status_code == 201, created.text
        return {"X-API-Key": created.json()["data"]["key"]}

    users_key, service_key = key(user_id=user_id), key()
    # A key acting for a user sees and owns that user's subjects.
    assert [s["id"] for s in client.get(API, headers=users_key).json()["data"]["items"]] == [grace["id"]]
    by_key = _create(client, users_key, "Ada")
    assert by_key["owner"] == user_id
    assert client.get(f"{API}/{by_key['id']}", headers=auth_headers).status_code == 200
    # A service key owns its own subjects, apart from every user's.
    service = _create(client, service_key, "Grace")
    assert service["owner"].startswith("key:")
    assert [s["id"] for s in client.get(API, headers=service_key).json()["data"]["items"]] == [service["id"]]
    _error(client.get(f"{API}/{grace['id']}", headers=service_key), 404, "NOT_FOUND")
    _error(client.get(f"{API}/{service['id']}", headers=auth_headers), 404, "NOT_FOUND")
