"""Admin API of the proctoring registry: clients, reference faces, state changes, evidence."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import read_bgr


def _jpeg(image: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", image)[1].tobytes()


def test_client_lifecycle_and_evidence(client, admin_headers, auth_headers, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    base = "/api/v1/proctor/clients"
    assert client.post(base, json={"user_name": "obama"}, headers=auth_headers).status_code == 403
    assert client.post(base, json={"user_name": "obama"}).status_code == 401
    created = client.post(base, json={"user_name": "obama"}, headers=admin_headers)
    assert created.status_code == 201 and created.json()["data"]["state"] == "active"
    assert client.post(base, json={"user_name": "obama"}, headers=admin_headers).status_code == 400
    face = _jpeg(read_bgr(data_dir / "identity/obama/fr_obama.jpg"))
    added = client.post(f"{base}/obama/faces", files={"image": ("o.jpg", face, "image/jpeg")}, headers=admin_headers)
    assert added.status_code == 201 and added.json()["data"]["face_count"] == 1
    for name, code in (("negatives/sk_motorcycle_left.png", "no face"),
                       ("group/fr_two_people.jpg", "faces in the image")):
        bad = client.post(f"{base}/obama/faces", files={"image": ("x.jpg", _jpeg(read_bgr(data_dir / name)),
                                                                  "image/jpeg")}, headers=admin_headers)
        assert bad.status_code == 400 and code in bad.json()["error"]["message"], bad.json()
    for verb, state in (("pause", "paused"), ("resume", "active"), ("block", "blocked"), ("unblock", "active")):
        response = client.post(f"{base}/obama/{verb}", headers=admin_headers)
        assert response.status_code == 200 and response.json()["data"]["state"] == state
    listing = client.get(base, headers=admin_headers).json()["data"]
    assert [c["user_name"] for c in listing["clients"]] == ["obama"]
    assert client.get(f"{base}/nobody", headers=admin_headers).status_code == 404

    ctx = client.app.state.context
    biden = read_bgr(data_dir / "identity/biden/fr_biden.jpg")
    decisions = [ctx.proctor.check_frame("obama", biden) for _ in range(2)]
    assert decisions[-1].reason.name == "REASON_WRONG_USER"
    evidence = client.get("/api/v1/proctor/evidence", headers=admin_headers).json()["data"]
    assert evidence["total"] == 1
    item = evidence["evidence"][0]
    assert item["reason"] == "REASON_WRONG_USER" and item["details"]["decided_by"] == "dlib_resnet_l2"
    one = client.get(f"/api/v1/proctor/evidence/{item['id']}", headers=admin_headers).json()["data"]
    assert one["image_base64"]
    image = client.get(f"/api/v1/proctor/evidence/{item['id']}/image", headers=admin_headers)
    assert image.headers["content-type"] == "image/jpeg" and image.content[:2] == b"\xff\xd8"
    # retention: nothing younger than the window goes; an expired row does
    assert ctx.proctor.purge_evidence() == 0
    from datetime import timedelta

    from faceport.store.models import ProctorEvidence, utcnow

    with ctx.store.session() as session:
        session.get(ProctorEvidence, item["id"]).created_at = utcnow() - timedelta(days=8)
    assert ctx.proctor.purge_evidence() == 1
    assert client.get(f"/api/v1/proctor/evidence/{item['id']}", headers=admin_headers).status_code == 404
    assert client.delete(f"{base}/obama", headers=admin_headers).status_code == 200
    assert client.get(f"{base}/obama", headers=admin_headers).status_code == 404


def test_block_after_m_violations(client, settings, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    ctx = client.app.state.context
    ctx.settings = ctx.proctor.settings = settings.model_copy(update={"proctor_block_after": 2,
                                                                      "proctor_debounce_frames": 1})
    ctx.proctor.create_client("obama")
    ctx.proctor.add_face("obama", read_bgr(data_dir / "identity/obama/fr_obama.jpg"))
    biden = read_bgr(data_dir / "identity/biden/fr_biden.jpg")
    assert ctx.proctor.check_frame("obama", biden).action.name == "ACTION_SIGN_OUT"
    assert ctx.proctor.check_frame("obama", biden).action.name == "ACTION_SIGN_OUT"
    assert ctx.proctor.get_client("obama").state == "blocked"
    assert ctx.proctor.check_frame("obama", biden).reason.name == "REASON_BLOCKED_CLIENT"


# user_name at registration: (name, accepted)
USER_NAMES = {
    "plain": ("alice", True),
    "every allowed character": ("a.B_c-9@exam.org", True),
    "64 characters": ("x" * 64, True),
    "path": ("a/b/../c", False),
    "65 characters": ("x" * 65, False),
    "one megabyte": ("y" * 1_000_000, False),
    "markup": ("<b>bob</b>", False),
    "space": ("bob smith", False),
    "non-ASCII": ("jürgen", False),
    "empty": ("", False),
}


@pytest.mark.parametrize("case", list(USER_NAMES))
def test_user_name_charset_and_length_at_registration(client, admin_headers, case: str) -> None:  # type: ignore[no-untyped-def]
    name, accepted = USER_NAMES[case]
    response = client.post("/api/v1/proctor/clients", json={"user_name": name}, headers=admin_headers)
    if accepted:
        assert response.status_code == 201 and response.json()["data"]["user_name"] == name
        return
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["success"] is False and body["error"]["code"] == "INVALID_INPUT"
    assert len(response.content) < 2000 and (not name or name not in response.text)
    assert client.get("/api/v1/proctor/clients", headers=admin_headers).json()["data"]["total"] == 0
    # the service refuses it too, without echoing it
    from faceport.errors import InvalidInput

    with pytest.raises(InvalidInput) as refused:
        client.app.state.context.proctor.create_client(name)
    assert not name or name not in refused.value.message


def test_client_token_is_shown_once_and_stored_hashed(client, admin_headers) -> None:  # type: ignore[no-untyped-def]
    base = "/api/v1/proctor/clients"
    client.post(base, json={"user_name": "student"}, headers=admin_headers)
    assert client.get(f"{base}/student", headers=admin_headers).json()["data"]["has_token"] is False
    made = client.post(f"{base}/student/token", headers=admin_headers)
    assert made.status_code == 200, made.text
    token = made.json()["data"]["token"]
    assert made.json()["data"]["has_token"] is True and len(token) >= 32
    chosen = client.post(f"{base}/student/token", json={"token": "exam-room-7-secret"}, headers=admin_headers)
    assert chosen.json()["data"]["token"] == "exam-room-7-secret"
    assert client.post(f"{base}/student/token", json={"token": "short"}, headers=admin_headers).status_code == 400
    assert client.post(f"{base}/nobody/token", headers=admin_headers).status_code == 404
    shown = client.get(f"{base}/student", headers=admin_headers)
    assert shown.json()["data"]["has_token"] is True and "exam-room-7-secret" not in shown.text
    from sqlalchemy import select

    from faceport.services.proctor import token_digest
    from faceport.store.models import ProctorClient

    ctx = client.app.state.context
    with ctx.store.session() as session:
        stored = session.scalar(select(ProctorClient.token_hash).where(ProctorClient.user_name == "student"))
    assert stored == token_digest("exam-room-7-secret") and stored != "exam-room-7-secret"
    assert ctx.proctor.token_accepted(ctx.proctor.client("student"), "exam-room-7-secret")
    assert not ctx.proctor.token_accepted(ctx.proctor.client("student"), token)  # replaced
    cleared = client.delete(f"{base}/student/token", headers=admin_headers)
    assert cleared.status_code == 200 and cleared.json()["data"]["has_token"] is False
    assert ctx.proctor.token_accepted(ctx.proctor.client("student"), None)  # tokens are off by default
