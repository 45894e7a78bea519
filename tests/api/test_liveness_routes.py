"""Seed D active liveness sessions over HTTP: ownership, envelopes, a real clip passing, a replay failing."""

from __future__ import annotations

import base64
from pathlib import Path

import cv2
import numpy as np
import pytest

from faceport.engine.active_liveness import CHALLENGES, TURNS
from tests import liveness_clips as clips
from tests.conftest import register_headers

SESSIONS = "/api/v1/face/anti-spoof/sessions"
OTHER_USER = {"username": "mallory", "email": "mallory@example.com", "password": "mallory-password"}


def _jpeg(frame: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return data.tobytes()


def _send(client, headers, session_id: str, frames: clips.Frames, *, t0_ms: float = 1_700_000_000_000.0) -> dict:  # type: ignore[no-untyped-def]
    body: dict = {}
    for t, frame in frames:
        response = client.post(f"{SESSIONS}/{session_id}/frames", headers=headers,
                               files={"image": ("frame.jpg", _jpeg(frame), "image/jpeg")},
                               data={"timestamp": str(t0_ms + t * 1000.0)})
        assert response.status_code == 200, response.text
        body = response.json()
        if body["data"]["status"] != "in_progress":
            break
    return body


def test_a_user_gets_a_random_sequence_with_a_turn(client, auth_headers) -> None:  # type: ignore[no-untyped-def]
    response = client.post(SESSIONS, headers=auth_headers, json={})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["success"] is True and {"timestamp", "request_id", "processing_time"} <= set(body["meta"])
    data = body["data"]
    kinds = [c["type"] for c in data["challenges"]]
    assert len(kinds) == 3 == len(set(kinds)) and set(kinds) <= set(CHALLENGES) and set(kinds) & set(TURNS)
    assert data["status"] == "in_progress" and data["current_step"] == 0
    assert data["instruction"] == data["challenges"][0]["instruction"]
    assert data["verdict"]["live"] is None and data["expires_at"] > data["created_at"]
    assert data["session_id"].startswith("lv_")
    longer = client.post(SESSIONS, headers=auth_headers, json={"length": 5}).json()["data"]
    assert sorted(c["type"] for c in longer["challenges"]) == sorted(CHALLENGES)


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"challenges": ["turn_left"]}, 403, "AUTH_FORBIDDEN"),  # only admins fix the sequence
    ({"length": 1}, 400, "INVALID_INPUT"),
    ({"length": 9}, 400, "INVALID_INPUT"),
    ({"unknown": 1}, 400, "INVALID_INPUT"),
])
def test_bad_session_requests(client, auth_headers, body: dict, status: int, code: str) -> None:  # type: ignore[no-untyped-def]
    response = client.post(SESSIONS, headers=auth_headers, json=body)
    assert response.status_code == status, response.text
    assert response.json()["success"] is False and response.json()["error"]["code"] == code


def test_admin_sequences_must_hold_a_turn(client, admin_headers) -> None:  # type: ignore[no-untyped-def]
    response = client.post(SESSIONS, headers=admin_headers, json={"challenges": ["smile", "blink"]})
    assert response.status_code == 400 and "turn" in response.json()["error"]["message"]
    response = client.post(SESSIONS, headers=admin_headers, json={"challenges": ["smile", "jump", "turn_left"]})
    assert response.status_code == 400 and response.json()["error"]["code"] == "INVALID_INPUT"
    fixed = client.post(SESSIONS, headers=admin_headers, json={"challenges": ["blink", "turn_right"]})
    assert [c["type"] for c in fixed.json()["data"]["challenges"]] == ["blink", "turn_right"]


def test_sessions_are_owned(client, auth_headers, admin_headers, grace_hopper: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    session_id = client.post(SESSIONS, headers=auth_headers, json={}).json()["data"]["session_id"]
    other = register_headers(client, OTHER_USER)
    for response in (client.get(f"{SESSIONS}/{session_id}", headers=other),
                     client.post(f"{SESSIONS}/{session_id}/frames", headers=other,
                                 files={"image": ("f.jpg", _jpeg(grace_hopper), "image/jpeg")},
                                 data={"timestamp": "1000"}),
                     client.get(f"{SESSIONS}/lv_nosuchsession", headers=auth_headers)):
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] == "NOT_FOUND"
    assert client.get(f"{SESSIONS}/{session_id}", headers=admin_headers).status_code == 200  # admins see all
    assert client.get(f"{SESSIONS}/{session_id}", headers=auth_headers).json()["data"]["session_id"] == session_id
    assert client.get(f"{SESSIONS}/{session_id}").status_code == 401
    assert client.post(SESSIONS, json={}).json()["error"]["code"] == "AUTH_REQUIRED"


def test_bad_frames(client, auth_headers, grace_hopper: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    session_id = client.post(SESSIONS, headers=auth_headers, json={}).json()["data"]["session_id"]
    url = f"{SESSIONS}/{session_id}/frames"
    image = {"image": ("f.jpg", _jpeg(grace_hopper), "image/jpeg")}
    missing = client.post(url, headers=auth_headers, data={"timestamp": "1000"})
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "MISSING_FIELD"
    no_time = client.post(url, headers=auth_headers, files=image)
    assert no_time.status_code == 400 and no_time.json()["error"]["details"]["field"] == "timestamp"
    garbage = client.post(url, headers=auth_headers, files={"image": ("f.jpg", b"not an image", "image/jpeg")},
                          data={"timestamp": "1000"})
    assert garbage.status_code == 400 and garbage.json()["error"]["code"] == "INVALID_FORMAT"
    first = client.post(url, headers=auth_headers, files=image, data={"timestamp": "2000"})
    assert first.status_code == 200 and first.json()["data"]["face_detected"] is True
    frame = first.json()["data"]["frame"]
    assert abs(frame["yaw"]) < 15 and frame["eye_aspect_ratio"] > 0.15
    as_json = client.post(url, headers=auth_headers, json={
        "image": "data:image/jpeg;base64," + base64.b64encode(_jpeg(grace_hopper)).decode(), "timestamp": 2100})
    assert as_json.status_code == 200, as_json.text
    back = client.post(url, headers=auth_headers, files=image, data={"timestamp": "1500"})
    assert back.status_code == 400 and back.json()["error"]["code"] == "INVALID_INPUT"
    assert "increase" in back.json()["error"]["message"]


def test_a_real_clip_passes_end_to_end(client, admin_headers, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    segment = clips.BONA_FIDE[2]  # the woman turns left
    created = client.post(SESSIONS, headers=admin_headers, json={"challenges": list(segment.challenges)})
    session_id = created.json()["data"]["session_id"]
    last = _send(client, admin_headers, session_id, clips.read_segment(data_dir, segment))
    assert last["data"]["status"] == "passed" and last["data"]["passed_step"] == "turn_left"
    final = client.get(f"{SESSIONS}/{session_id}", headers=admin_headers).json()["data"]
    assert final["verdict"]["live"] is True and final["current_step"] is None
    assert final["challenges"][0]["status"] == "passed" and final["challenges"][0]["measured"]["parallax"] >= 0.015
    assert final["verdict"]["checks"]["three_d"]["measured"] is True
    assert "parallax" in final["verdict"]["method"]
    late = _send(client, admin_headers, session_id, [(100.0, clips.read_segment(data_dir, segment)[0][1])])
    assert late["data"]["status"] == "passed"  # frames after the verdict change nothing


def test_a_screen_replay_fails_end_to_end(client, admin_headers, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    segment = clips.BONA_FIDE[0]
    session_id = client.post(SESSIONS, headers=admin_headers,
                             json={"challenges": list(segment.challenges)}).json()["data"]["session_id"]
    last = _send(client, admin_headers, session_id, clips.screen_replay(clips.read_segment(data_dir, segment)))
    assert last["data"]["status"] == "failed"
    assert last["data"]["verdict"] == {**last["data"]["verdict"], "live": False, "reason": "presentation_cues"}


def test_a_user_session_expires(client, auth_headers, grace_hopper: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    service = client.app.state.context.liveness
    session_id = client.post(SESSIONS, headers=auth_headers, json={}).json()["data"]["session_id"]
    record = service.store.get(session_id)
    record.expires_at -= 200  # as if the session's 120 s ran out (its verdict stays readable 600 s more)
    service.store.put(record)
    data = client.get(f"{SESSIONS}/{session_id}", headers=auth_headers).json()["data"]
    assert data["status"] == "failed" and data["verdict"] == {**data["verdict"], "live": False,
                                                              "reason": "session_expired"}



def test_a_session_takes_a_bounded_number_of_frames(settings, grace_hopper: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from faceport.api.app import create_app

    with TestClient(create_app(settings.model_copy(update={"liveness_max_frames": 10}))) as client:
        _bounded(client, register_headers(client), grace_hopper)


def _bounded(client, auth_headers, grace_hopper: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    session_id = client.post(SESSIONS, headers=auth_headers, json={}).json()["data"]["session_id"]
    url = f"{SESSIONS}/{session_id}/frames"
    image = _jpeg(grace_hopper)
    for k in range(10):
        response = client.post(url, headers=auth_headers, files={"image": ("f.jpg", image, "image/jpeg")},
                               data={"timestamp": str(1000 + 50 * k)})
        assert response.status_code == 200 and response.json()["data"]["status"] == "in_progress"
    over = client.post(url, headers=auth_headers, files={"image": ("f.jpg", image, "image/jpeg")},
                       data={"timestamp": "5000"})
    assert over.status_code == 400 and "at most 10 frames" in over.json()["error"]["message"]
    data = client.get(f"{SESSIONS}/{session_id}", headers=auth_headers).json()["data"]
    assert data["status"] == "failed" and data["verdict"]["reason"] == "session_expired"
