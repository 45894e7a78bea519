"""Seed D's /ws/* channels on a real uvicorn with a real websockets client: auth, envelopes, the per-user
connection cap, bad frames, newest-frame-wins, notifications for the owner only, status pushes for admins."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.api.conftest import LiveServer, serving
from tests.conftest import FIXTURES, TEST_ADMIN
from tests.realtime.conftest import REDIS_URL, redis_available

GRACE = (FIXTURES / "mpl_grace_hopper.jpg").read_bytes()
ASTRONAUT = (FIXTURES / "sk_astronaut.png").read_bytes()


def _token(server: LiveServer, username: str) -> str:
    password = "long-enough-password"
    if username == TEST_ADMIN["username"]:
        server.context.auth.create_admin(username, TEST_ADMIN["password"], email=TEST_ADMIN["email"])
        password = TEST_ADMIN["password"]
    else:
        response = httpx.post(f"{server.url}/api/v1/auth/register",
                              json={"username": username, "email": f"{username}@example.com", "password": password})
        assert response.status_code == 201, response.text
    response = httpx.post(f"{server.url}/api/v1/auth/login", json={"username": username, "password": password})
    return str(response.json()["data"]["access_token"])


def _ws_url(server: LiveServer, path: str) -> str:
    return server.url.replace("http://", "ws://") + path


def _recv(ws: ClientConnection, timeout: float = 60.0) -> dict[str, Any]:
    message = json.loads(ws.recv(timeout=timeout))
    assert set(message) >= {"success", "type", "meta"} and "timestamp" in message["meta"], message
    assert ("data" in message) if message["success"] else ("error" in message)
    return message


def _recv_type(ws: ClientConnection, kind: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    seen = []
    while (left := deadline - time.monotonic()) > 0:
        message = _recv(ws, left)
        if message["type"] == kind:
            return message
        seen.append(message["type"])
    raise AssertionError(f"no {kind!r} message; got {seen}")


def _refused(ws: ClientConnection) -> tuple[dict[str, Any], int]:
    """The error envelope and the close code of a refused socket."""
    message = _recv(ws, 30)
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=30)
    assert closed.value.rcvd is not None
    return message, closed.value.rcvd.code


@pytest.fixture
def server(settings) -> Iterator[LiveServer]:  # type: ignore[no-untyped-def]
    with serving(settings.model_copy(update={"redis_url": None, "ws_status_interval": 0.2})) as live:
        yield live


def test_face_analysis_frames_recognition_bad_frames_and_superseded(server: LiveServer) -> None:
    token = _token(server, "ada")
    headers = {"Authorization": f"Bearer {token}"}
    subject_id = httpx.post(f"{server.url}/api/v1/face/subjects", headers=headers, json={"name": "grace"},
                            timeout=30).json()["data"]["id"]
    enrolled = httpx.post(f"{server.url}/api/v1/face/subjects/{subject_id}/faces", headers=headers,
                          files={"image": ("g.jpg", GRACE)}, timeout=60)
    assert enrolled.status_code == 201, enrolled.text
    with connect(_ws_url(server, f"/ws/face-analysis?token={token}"), max_size=None) as ws:
        connected = _recv(ws)
        assert connected["type"] == "connected" and connected["data"]["user"] == "ada"
        assert connected["data"]["max_connections"] == 50
        ws.send(json.dumps({"type": "frame", "frame_id": 1, "image": base64.b64encode(GRACE).decode(),
                            "options": {"operations": ["detect", "recognize", "attributes"]}}))
        result = _recv_type(ws, "result")
        assert result["success"] is True and result["data"]["frame_id"] == 1
        assert result["meta"]["processing_time"] > 0
        (face,) = result["data"]["faces"]
        assert face["recognition"]["subject"]["subject_id"] == subject_id
        assert face["recognition"]["subject"]["match"] is True
        assert set(face["attributes"]["pose"]) >= {"yaw", "pitch", "roll"}
        # the same face as /face/detect finds
        single = httpx.post(f"{server.url}/api/v1/face/detect", headers=headers, files={"image": ("g.jpg", GRACE)},
                            timeout=60).json()["data"]["faces"][0]
        assert face["bbox"] == single["bbox"]

        for bad, code in ((json.dumps({"type": "frame", "frame_id": "b1", "image": "%%%"}), "INVALID_FORMAT"),
                          (json.dumps({"type": "frame", "frame_id": "b2",
                                       "image": base64.b64encode(b"hello, not an image").decode()}), "INVALID_FORMAT"),
                          ("not json at all", "INVALID_FORMAT"),
                          (json.dumps({"type": "teleport"}), "INVALID_INPUT"),
                          (json.dumps({"type": "frame", "frame_id": "b3"}), "INVALID_INPUT"),
                          (json.dumps({"type": "config", "operations": ["mind-reading"]}), "INVALID_INPUT")):
            ws.send(bad)
            error = _recv_type(ws, "error")
            assert error["success"] is False and error["error"]["code"] == code, (bad, error)
        # still open and working: a binary JPEG frame (the astronaut, nobody in ada's gallery)
        ws.send(ASTRONAUT)
        result = _recv_type(ws, "result")
        assert result["data"]["count"] == 1 and result["data"]["faces"][0]["recognition"]["subject"] is None

        # newest frame wins: every frame gets one answer, the last one a result
        frames = 15
        payload = base64.b64encode(GRACE).decode()
        for frame_id in range(100, 100 + frames):
            ws.send(json.dumps({"type": "frame", "frame_id": frame_id, "image": payload}))
        answered: dict[int, str] = {}
        while len(answered) < frames:
            message = _recv(ws)
            assert message["data"]["frame_id"] not in answered
            answered[message["data"]["frame_id"]] = message["type"]
        assert answered[100 + frames - 1] == "result"
        assert list(answered.values()).count("superseded") >= 1, answered
        ws.send(json.dumps({"type": "ping", "frame_id": "p"}))
        assert _recv_type(ws, "pong")["data"]["frame_id"] == "p"


@pytest.mark.parametrize("path", ["/ws/face-analysis", "/ws/notifications", "/ws/system-status"])
def test_every_channel_needs_credentials(server: LiveServer, path: str) -> None:
    with connect(_ws_url(server, path)) as ws:
        ws.send(json.dumps({"type": "frame", "image": "x"}))
        error, code = _refused(ws)
        assert (error["error"]["code"], code) == ("AUTH_REQUIRED", 4001)
    with connect(_ws_url(server, f"{path}?token=not.a.jwt")) as ws:
        error, code = _refused(ws)
        assert (error["error"]["code"], code) == ("AUTH_INVALID", 4001)
    with connect(_ws_url(server, path), additional_headers={"X-API-Key": "fpk_wrong"}) as ws:
        error, code = _refused(ws)
        assert (error["error"]["code"], code) == ("AUTH_INVALID", 4001)


def test_auth_by_first_message_header_or_api_key_and_admin_only_status(server: LiveServer) -> None:
    token = _token(server, "ada")
    admin = _token(server, TEST_ADMIN["username"])
    key = server.context.auth.create_api_key("svc", "user").key
    with connect(_ws_url(server, "/ws/notifications")) as ws:
        ws.send(json.dumps({"type": "auth", "token": token}))
        assert _recv(ws)["data"]["user"] == "ada"
    with connect(_ws_url(server, "/ws/face-analysis"), additional_headers={"X-API-Key": key}) as ws:
        assert _recv(ws)["data"]["user"] == "apikey:svc"
    with connect(_ws_url(server, "/ws/system-status"), additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        error, code = _refused(ws)
        assert (error["error"]["code"], code) == ("AUTH_FORBIDDEN", 4003)
    with connect(_ws_url(server, f"/ws/system-status?token={admin}")) as ws:
        assert _recv(ws)["type"] == "connected"
        pushes = [_recv_type(ws, "system.status") for _ in range(3)]
        assert all(set(p["data"]["jobs"]) >= {"queue_depth", "by_state"} for p in pushes)
        assert pushes[0]["data"]["uptime_seconds"] < pushes[-1]["data"]["uptime_seconds"]


def test_fifty_connections_per_user_across_channels(server: LiveServer) -> None:
    ada, bob = _token(server, "ada"), _token(server, "bob")
    with ExitStack() as stack:
        sockets: list[ClientConnection] = []
        for number in range(50):
            path = ("/ws/notifications", "/ws/face-analysis")[number % 2]
            ws = stack.enter_context(connect(_ws_url(server, f"{path}?token={ada}")))
            sockets.append(ws)
            assert _recv(ws)["type"] == "connected"
        with connect(_ws_url(server, f"/ws/notifications?token={ada}")) as extra:
            error, code = _refused(extra)
            assert (error["error"]["code"], code) == ("RATE_LIMITED", 4029)
            assert error["error"]["details"]["limit"] == 50
        with connect(_ws_url(server, f"/ws/notifications?token={bob}")) as other:  # another user is not affected
            assert _recv(other)["type"] == "connected"
        sockets.pop().close()
        deadline = time.monotonic() + 10
        while True:  # the server notices the close asynchronously
            with connect(_ws_url(server, f"/ws/notifications?token={ada}")) as again:
                first = _recv(again)
                if first["type"] == "connected":
                    break
            assert time.monotonic() < deadline, first
            time.sleep(0.1)


def test_notifications_reach_the_owner_only(server: LiveServer) -> None:
    ada, bob, admin = _token(server, "ada"), _token(server, "bob"), _token(server, TEST_ADMIN["username"])
    with connect(_ws_url(server, f"/ws/notifications?token={ada}")) as ada_ws, \
            connect(_ws_url(server, f"/ws/notifications?token={bob}")) as bob_ws, \
            connect(_ws_url(server, f"/ws/notifications?token={admin}")) as admin_ws:
        for ws in (ada_ws, bob_ws, admin_ws):
            assert _recv(ws)["type"] == "connected"
        response = httpx.post(f"{server.url}/api/v1/batch/submit", headers={"Authorization": f"Bearer {ada}"},
                              files=[("images", ("g.jpg", GRACE)), ("images", ("a.png", ASTRONAUT)),
                                     ("images", ("bad.jpg", b"nope"))], data={"operation": "detect"}, timeout=60)
        assert response.status_code == 202, response.text
        batch_id = response.json()["data"]["batch_id"]
        progress = _recv_type(ada_ws, "batch.progress")
        assert progress["data"]["batch_id"] == batch_id and progress["data"]["total"] == 3
        finished = _recv_type(ada_ws, "job.finished")
        data = finished["data"]
        assert (data["batch_id"], data["state"], data["succeeded"], data["failed"]) == (batch_id, "completed", 2, 1)

        unloaded = httpx.post(f"{server.url}/api/v1/system/models/unload",
                              headers={"Authorization": f"Bearer {admin}"}, json={"model": "yunet"}, timeout=60)
        assert unloaded.status_code == 200 and unloaded.json()["data"]["changed"] is True, unloaded.text
        event = _recv_type(admin_ws, "model.unloaded")
        assert event["data"]["model"] == "yunet"
        loaded = httpx.post(f"{server.url}/api/v1/system/models/load", headers={"Authorization": f"Bearer {admin}"},
                            json={"model": "yunet"}, timeout=60)
        assert loaded.status_code == 200 and loaded.json()["data"]["changed"] is True, loaded.text
        assert _recv_type(admin_ws, "model.loaded")["data"]["model"] == "yunet"
        # bob saw nothing of ada's batch, ada nothing of the model events, admin nothing of ada's batch
        for ws in (bob_ws, ada_ws, admin_ws):
            ws.send(json.dumps({"type": "ping"}))
            assert _recv(ws)["type"] == "pong"


def test_notifications_cross_nodes_through_redis(settings) -> None:  # type: ignore[no-untyped-def]
    """Two API nodes on one database and one Redis: a batch run on node B notifies ada's socket on node A."""
    if (problem := redis_available()) is not None:
        pytest.skip(problem)
    shared = settings.model_copy(update={"redis_url": REDIS_URL, "ws_max_connections_per_user": 2,
                                         "ws_redis_channel": f"faceport:notify:test-{uuid.uuid4().hex}",
                                         "rate_limit_key_prefix": f"faceport-test-{uuid.uuid4().hex}"})
    # two nodes: each with its own process-local state, sharing the database, Redis and the settings
    with serving(shared) as node_a, serving(shared) as node_b:
        assert node_a.context.notifier.cross_node and node_b.context.notifier.cross_node
        ada, admin = _token(node_a, "ada"), _token(node_a, TEST_ADMIN["username"])
        with connect(_ws_url(node_a, f"/ws/notifications?token={ada}")) as ada_ws, \
                connect(_ws_url(node_a, f"/ws/notifications?token={admin}")) as admin_ws:
            assert _recv(ada_ws)["type"] == "connected" and _recv(admin_ws)["type"] == "connected"
            response = httpx.post(f"{node_b.url}/api/v1/batch/submit", headers={"Authorization": f"Bearer {ada}"},
                                  files=[("images", ("g.jpg", GRACE))], data={"operation": "detect"}, timeout=60)
            assert response.status_code == 202, response.text
            batch_id = response.json()["data"]["batch_id"]
            finished = _recv_type(ada_ws, "job.finished")
            assert (finished["data"]["batch_id"], finished["data"]["state"]) == (batch_id, "completed")
            assert node_b.context.batch.get(batch_id, owner=None).job.state == "completed"
            unloaded = httpx.post(f"{node_b.url}/api/v1/system/models/load",
                                  headers={"Authorization": f"Bearer {admin}"}, json={"model": "iris"}, timeout=60)
            assert unloaded.status_code == 200, unloaded.text
            if unloaded.json()["data"]["changed"]:
                assert _recv_type(admin_ws, "model.loaded")["data"]["model"] == "iris"
            ada_ws.send(json.dumps({"type": "ping"}))
            assert _recv(ada_ws)["type"] == "pong"  # exactly one job.finished, no duplicate from node B's own listener

            # the per-user cap counts ada's sockets on both nodes
            with connect(_ws_url(node_b, f"/ws/face-analysis?token={ada}")) as second:
                assert _recv(second)["type"] == "connected"
                with connect(_ws_url(node_a, f"/ws/face-analysis?token={ada}")) as third:
                    error, code = _refused(third)
                    assert (error["error"]["code"], code) == ("RATE_LIMITED", 4029)
            deadline = time.monotonic() + 10
            while True:  # node B released its socket: ada may open one again, on either node
                with connect(_ws_url(node_a, f"/ws/face-analysis?token={ada}")) as again:
                    if _recv(again)["type"] == "connected":
                        break
                assert time.monotonic() < deadline
                time.sleep(0.1)


def test_registered_message_types_keep_per_connection_state_in_order(server: LiveServer) -> None:
    """The hook a liveness session uses: every message handled in order, with state kept per connection."""
    from faceport.realtime.platform_ws import MESSAGE_TYPES, register_message_type

    def count_frames(ctx: Any, principal: Any, message: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
        state["seen"] = state.get("seen", 0) + 1
        return {"seen": state["seen"], "user": principal.username, "step": message.get("step")}

    register_message_type("count_frames", count_frames)
    try:
        token = _token(server, "ada")
        with connect(_ws_url(server, f"/ws/face-analysis?token={token}")) as ws, \
                connect(_ws_url(server, f"/ws/face-analysis?token={token}")) as other:
            assert _recv(ws)["type"] == "connected" and _recv(other)["type"] == "connected"
            for step in range(5):
                ws.send(json.dumps({"type": "count_frames", "frame_id": step, "step": step}))
            replies = [_recv_type(ws, "count_frames.result")["data"] for _ in range(5)]
            assert [(r["frame_id"], r["seen"], r["step"]) for r in replies] == [(i, i + 1, i) for i in range(5)]
            assert replies[0]["user"] == "ada"
            other.send(json.dumps({"type": "count_frames", "frame_id": "x"}))
            assert _recv_type(other, "count_frames.result")["data"]["seen"] == 1  # its own state
    finally:
        MESSAGE_TYPES.pop("count_frames", None)


def test_logout_or_a_lost_admin_role_ends_open_sockets_and_tokens_can_be_renewed(settings) -> None:  # type: ignore[no-untyped-def]
    with serving(settings.model_copy(update={"redis_url": None, "ws_reauth_interval": 0.3,
                                             "ws_status_interval": 0.2})) as server:
        token = _token(server, "ada")
        bob = _token(server, "bob")
        with connect(_ws_url(server, f"/ws/notifications?token={token}")) as ws:
            assert _recv(ws)["type"] == "connected"
            second = httpx.post(f"{server.url}/api/v1/auth/login",
                                json={"username": "ada", "password": "long-enough-password"}).json()["data"]
            ws.send(json.dumps({"type": "auth", "token": second["access_token"]}))
            assert _recv_type(ws, "authenticated")["data"]["user"] == "ada"
            ws.send(json.dumps({"type": "auth", "token": bob}))
            assert _recv_type(ws, "error")["error"]["code"] == "AUTH_INVALID"  # cannot become bob
            # the socket now runs on the second session; ending it ends the socket
            out = httpx.post(f"{server.url}/api/v1/auth/logout", headers={"Authorization": f"Bearer "
                                                                          f"{second['access_token']}"},
                             json={"refresh_token": second["refresh_token"]})
            assert out.status_code == 200, out.text
            error, code = _refused(ws)
            assert (error["error"]["code"], code) == ("AUTH_INVALID", 4001)
        admin = _token(server, TEST_ADMIN["username"])
        with connect(_ws_url(server, f"/ws/system-status?token={admin}")) as ws:
            assert _recv(ws)["type"] == "connected"
            with server.context.store.session() as session:
                from sqlalchemy import update

                from faceport.store.models import User

                session.execute(update(User).where(User.username == TEST_ADMIN["username"]).values(role="user"))
            deadline = time.monotonic() + 30
            while (message := _recv(ws))["type"] == "system.status":
                assert time.monotonic() < deadline
            assert message["error"]["code"] == "AUTH_FORBIDDEN"
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=30)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4003


def test_liveness_session_frames_over_face_analysis(server: LiveServer, data_dir) -> None:  # type: ignore[no-untyped-def]
    """An active-liveness session fed over /ws/face-analysis: a real clip turning right passes; another user's
    session is NOT_FOUND and a frame without its fields is an error on a socket that stays open."""
    import cv2

    from tests.liveness_clips import BONA_FIDE, read_segment

    admin = _token(server, TEST_ADMIN["username"])
    other = _token(server, "mallory")
    created = httpx.post(f"{server.url}/api/v1/face/anti-spoof/sessions", headers={"Authorization": f"Bearer {admin}"},
                         json={"challenges": ["turn_right"]}, timeout=30)
    assert created.status_code == 201, created.text
    session_id = created.json()["data"]["session_id"]
    segment = next(s for s in BONA_FIDE if s.challenges == ("turn_right",))
    frames = read_segment(data_dir, segment)
    with connect(_ws_url(server, f"/ws/face-analysis?token={other}")) as ws:
        _recv_type(ws, "connected")
        jpeg = base64.b64encode(cv2.imencode(".jpg", frames[0][1])[1].tobytes()).decode()
        ws.send(json.dumps({"type": "liveness_frame", "session_id": session_id, "image": jpeg, "timestamp": 0}))
        refused = _recv_type(ws, "error")
        assert refused["error"]["code"] == "NOT_FOUND"
    with connect(_ws_url(server, f"/ws/face-analysis?token={admin}")) as ws:
        _recv_type(ws, "connected")
        ws.send(json.dumps({"type": "liveness_frame", "session_id": session_id}))
        assert _recv_type(ws, "error")["error"]["code"] in ("MISSING_FIELD", "VALIDATION_ERROR", "INVALID_INPUT")
        result: dict[str, Any] = {}
        for t, frame in frames:
            jpeg = base64.b64encode(cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()).decode()
            ws.send(json.dumps({"type": "liveness_frame", "session_id": session_id, "image": jpeg,
                                "timestamp": round(t * 1000.0, 1)}))
            result = _recv_type(ws, "liveness_frame.result")["data"]
            if result["status"] != "in_progress":
                break
        assert result["status"] == "passed" and result["verdict"]["live"] is True, result
