"""Seed A over Socket.IO with a real python-socketio client against a real uvicorn server.

Every event and rule of the seed: connect (single-user takeover), process_frame (success and error
forms, source required, bad frames answered and the connection kept), clear_source, the 15 fps limit
(excess frames dropped without a reply), backpressure (only the newest waiting frame is rendered),
session and idle timeouts. Frames are real frames of a clip; the swapped face must differ from the
camera's while the rest of the frame stays as it was.
"""

from __future__ import annotations

import asyncio
import base64
import io
import textwrap
import threading
import time
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from PIL import Image

from faceport.realtime.live_swap import NO_SOURCE, NOT_ACTIVE, REPLACED
from tests.realtime.conftest import LiveClient, from_data_url, to_data_url

STATS_KEYS = {"frame_count", "swap_count", "avg_processing_time", "fps"}


def face_box(engine: Any, frame: np.ndarray) -> tuple[int, int, int, int]:
    faces = engine.detect(frame)
    assert len(faces) == 1, "the clip frame should show one face"
    x0, y0, x1, y1 = (int(v) for v in faces.xyxy[0])
    return x0, y0, x1, y1


def region_change(before: np.ndarray, after: np.ndarray, box: tuple[int, int, int, int],
                  margin: int = 40) -> tuple[float, float]:
    """Mean absolute difference inside the face box's inner half, and outside the box grown by ``margin``."""
    x0, y0, x1, y1 = box
    diff = np.abs(before.astype(np.int16) - after.astype(np.int16)).mean(axis=2)
    w, h = x1 - x0, y1 - y0
    inner = diff[y0 + h // 4: y1 - h // 4, x0 + w // 4: x1 - w // 4]
    outside = np.ones(diff.shape, bool)
    outside[max(0, y0 - margin): y1 + margin, max(0, x0 - margin): x1 + margin] = False
    return float(inner.mean()), float(diff[outside].mean())


def test_connect_then_frames_are_swapped_with_stats(live_server, live_client, clip_frames, engine,
                                                    grace_hopper) -> None:
    assert live_server.upload_source() == {"success": True, "message": "Source face ready!"}
    client = live_client(live_server.url)
    assert "Source face ready" in client.status_message("Connected")

    sent = clip_frames[::6][:8]
    replies = []
    for frame in sent:
        client.send(to_data_url(frame))
        replies.append(client.reply())
        time.sleep(0.07)  # under 15 fps: nothing is dropped

    for i, reply in enumerate(replies):
        assert set(reply) == {"success", "processed", "stats"}, reply.get("error")
        assert reply["success"] is True
        assert set(reply["stats"]) == STATS_KEYS
        assert reply["stats"]["frame_count"] == i + 1 and reply["stats"]["swap_count"] == i + 1
        assert reply["processed"].startswith("data:image/jpeg;base64,")
    assert replies[-1]["stats"]["avg_processing_time"] > 0
    assert replies[-1]["stats"]["fps"] > 0

    # the face changed, the rest of the frame did not (beyond JPEG noise)
    for frame, reply in zip(sent, replies, strict=True):
        out = from_data_url(reply["processed"])
        assert out.shape == frame.shape
        inside, outside = region_change(frame, out, face_box(engine, frame))
        assert inside > 8.0, f"face region barely changed: {inside:.1f}"
        assert outside < 3.0, f"outside the face changed: {outside:.1f}"

    # and it looks more like the source person than before
    grace = engine.embed_largest(grace_hopper)
    before = engine.compare(engine.embed_largest(sent[0]), grace).distance
    after = engine.compare(engine.embed_largest(from_data_url(replies[0]["processed"])), grace).distance
    assert after < before, (before, after)

    status = live_server.status()
    assert status == {"frame_count": 8, "swap_count": 8, "error_count": 0,
                      "avg_processing_time": status["avg_processing_time"],
                      "source_face_loaded": True, "models_loaded": True}
    assert status["avg_processing_time"] > 0


def test_second_client_takes_over_and_first_is_told_and_disconnected(live_server, live_client,
                                                                       clip_frames) -> None:
    live_server.upload_source()
    first = live_client(live_server.url)
    first.status_message("Connected")
    second = live_client(live_server.url)
    second.status_message("Connected")

    assert first.status_message("Another user") == REPLACED
    assert first.disconnected.wait(10), "the first user was not disconnected"
    assert not first.connected and second.connected

    second.send(to_data_url(clip_frames[0]))
    assert second.reply()["success"] is True


def test_frame_before_a_source_gets_the_error_form(live_server, live_client, clip_frames) -> None:
    client = live_client(live_server.url)
    assert "Upload a source face" in client.status_message("Connected")
    frame = to_data_url(clip_frames[0])
    client.send(frame)
    reply = client.reply()
    assert reply == {"success": False, "error": NO_SOURCE, "processed": frame}
    assert live_server.status()["error_count"] == 1


def _gif_data_url() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buffer, "GIF")
    return "data:image/gif;base64," + base64.b64encode(buffer.getvalue()).decode()


BAD_FRAMES = {
    "garbage base64": ("data:image/jpeg;base64,!!!this is not base64###", "base64", True),
    "non-image data URL": ("data:text/plain;base64," + base64.b64encode(b"hello world").decode(), "text/plain",
                           True),
    "image type, text content": ("data:image/png;base64," + base64.b64encode(b"hello world" * 20).decode(),
                                 "not a JPEG, PNG or WebP", True),
    "GIF": (_gif_data_url(), "image/gif", True),
    "GIF content declared JPEG": (_gif_data_url().replace("image/gif", "image/jpeg"), "it is GIF", True),
    "text, not a data URL": ("just some text", "not a JPEG, PNG or WebP", True),
    "neither a data URL nor base64": ("%%% not base64 %%%", "not valid base64", True),
    "30 MB frame": ("data:image/jpeg;base64," + "A" * 30_000_000, "over the limit", False),
    "number": (42, "frame is required", False),
}


@pytest.mark.parametrize("name", list(BAD_FRAMES))
def test_bad_frames_get_the_error_form_and_the_connection_is_kept(name, live_server, live_client,
                                                                   clip_frames) -> None:
    frame, error_part, echoed = BAD_FRAMES[name]
    live_server.upload_source()
    client = live_client(live_server.url)
    client.send(frame)
    reply = client.reply(timeout=60)
    assert reply["success"] is False
    assert error_part in reply["error"], reply["error"]
    assert reply["processed"] == (frame if echoed else None)

    time.sleep(0.1)
    assert client.connected
    client.send(to_data_url(clip_frames[0]))
    assert client.reply()["success"] is True, "a good frame after a bad one must still be swapped"


def test_no_face_in_frame_gets_the_seed_error(live_server, live_client, data_dir) -> None:
    live_server.upload_source()
    client = live_client(live_server.url)
    capture = cv2.VideoCapture(str(data_dir / "video" / "pf_no_face.mp4"))
    ok, empty_room = capture.read()
    capture.release()
    assert ok
    frame = to_data_url(empty_room)
    client.send(frame)
    assert client.reply() == {"success": False, "error": "No face detected in frame", "processed": frame}


def test_thirty_frames_in_one_second_about_fifteen_processed_rest_silently_dropped(live_server, live_client,
                                                                                    clip_frames) -> None:
    live_server.upload_source()
    client = live_client(live_server.url)
    client.status_message("Connected")
    frames = [to_data_url(frame) for frame in clip_frames[:30]]
    started = time.monotonic()
    for i, frame in enumerate(frames):  # evenly spread over one second: 30 fps
        time.sleep(max(0.0, started + i / 30 - time.monotonic()))
        client.send(frame)
    replies = client.drain(settle=1.5)

    assert 13 <= len(replies) <= 17, f"{len(replies)} of 30 frames processed"
    assert all(reply["success"] for reply in replies), "dropped frames must get no reply, not an error"
    stats = live_server.service.stats
    assert stats.dropped_rate_limited >= 30 - 17
    assert len(replies) + stats.dropped_rate_limited + stats.dropped_stale == 30


def _marked(frame: np.ndarray, number: int) -> np.ndarray:
    """The frame with ``number`` written as 8 black/white squares in its top-left corner (far from the face)."""
    out = frame.copy()
    for bit in range(8):
        out[0:16, bit * 16: bit * 16 + 16] = 255 if number >> bit & 1 else 0
    return out


def _read_mark(frame: np.ndarray) -> int:
    return sum(1 << bit for bit in range(8) if frame[4:12, bit * 16 + 4: bit * 16 + 12].mean() > 128)


def test_backpressure_renders_only_the_newest_waiting_frame_and_keeps_the_loop_free(make_live_server,
                                                                                   live_client,
                                                                                   clip_frames) -> None:
    # no rate limit in the way (1 us between frames; set past the validator): frames come far faster than they render
    server = make_live_server(live_max_fps=1e6)
    server.upload_source()
    client = live_client(server.url)
    client.status_message("Connected")
    big = [cv2.resize(_marked(frame, i), (1920, 1080), interpolation=cv2.INTER_NEAREST)
           for i, frame in enumerate(clip_frames[:40])]
    frames = [to_data_url(frame) for frame in big]

    status_times: list[float] = []

    def poll_status() -> None:
        for _ in range(10):
            started = time.perf_counter()
            httpx.get(f"{server.url}/status", timeout=10)
            status_times.append(time.perf_counter() - started)
            time.sleep(0.05)

    poller = threading.Thread(target=poll_status)
    poller.start()
    for frame in frames:
        client.send(frame)
        time.sleep(0.01)
    replies = client.drain(settle=3.0)
    poller.join()

    assert all(reply["success"] for reply in replies)
    marks = [_read_mark(cv2.resize(from_data_url(r["processed"]), (640, 360), interpolation=cv2.INTER_AREA))
             for r in replies]
    assert marks == sorted(marks) and len(set(marks)) == len(marks), marks
    assert marks[-1] == len(frames) - 1, f"the newest frame was not the last rendered: {marks}"
    assert len(replies) < len(frames) / 2, f"{len(replies)} of {len(frames)} rendered: no backpressure?"
    stats = server.service.stats
    assert stats.dropped_stale == len(frames) - len(replies)
    assert stats.dropped_rate_limited == 0
    # rendering runs on the thread pool: the event loop keeps answering HTTP meanwhile
    assert max(status_times) < 0.5, status_times


def test_clear_source(live_server, live_client, clip_frames) -> None:
    live_server.upload_source()
    client = live_client(live_server.url)
    client.status_message("Connected")
    client.sio.emit("clear_source")
    assert client.status_message("Source cleared") == "Source cleared"
    assert live_server.status()["source_face_loaded"] is False
    frame = to_data_url(clip_frames[0])
    client.send(frame)
    assert client.reply() == {"success": False, "error": NO_SOURCE, "processed": frame}


def test_upload_tells_the_active_user(live_server, live_client) -> None:
    client = live_client(live_server.url)
    client.status_message("Upload a source face")
    live_server.upload_source(sid=client.sio.get_sid())
    assert client.status_message("Source face ready!") == "Source face ready!"


# who uploads a source while someone streams: (X-SocketIO-SID sent, accepted)
UPLOADERS = {
    "the streaming session": ("active", True),
    "no session header": (None, False),
    "a made-up session": ("not-a-session-id", False),
    "the session it replaced": ("replaced", False),
}


@pytest.mark.parametrize("who", list(UPLOADERS))
def test_while_streaming_only_the_active_session_replaces_the_source(who, live_server, live_client,
                                                                     clip_frames) -> None:
    first = live_client(live_server.url)
    first.status_message("Connected")
    replaced_sid = first.sio.get_sid()
    client = live_client(live_server.url)  # takes over: the active user now
    client.status_message("Connected")
    assert first.disconnected.wait(10)
    sid, accepted = UPLOADERS[who]
    sid = {"active": client.sio.get_sid(), "replaced": replaced_sid}.get(sid, sid)  # type: ignore[arg-type]
    response = live_server.post_source(sid=sid)
    if accepted:
        assert response.status_code == 200 and response.json() == {"success": True, "message": "Source face ready!"}
        client.send(to_data_url(clip_frames[0]))
        assert client.reply()["success"] is True
    else:
        assert response.status_code == 409
        assert response.json() == {"success": False, "message": NOT_ACTIVE}
        assert live_server.status()["source_face_loaded"] is False
    client.close()  # nobody streams any more: anyone may upload again
    deadline = time.monotonic() + 10
    while asyncio.run(live_server.service.state.active_user()) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert live_server.upload_source() == {"success": True, "message": "Source face ready!"}


def _raw_base64(frame: np.ndarray, ext: str) -> str:
    ok, buf = cv2.imencode(ext, frame)
    assert ok
    return base64.b64encode(buf.tobytes()).decode()


FRAME_FORMS = {
    "JPEG data URL": lambda frame: to_data_url(frame),
    "raw base64 JPEG": lambda frame: _raw_base64(frame, ".jpg"),
    "raw base64 PNG": lambda frame: _raw_base64(frame, ".png"),
    "raw base64 JPEG, wrapped": lambda frame: "\n".join(textwrap.wrap(_raw_base64(frame, ".jpg"), 76)),
}


@pytest.mark.parametrize("form", list(FRAME_FORMS))
def test_frame_as_data_url_or_raw_base64_is_swapped(form, live_server, live_client, clip_frames) -> None:
    live_server.upload_source()
    client = live_client(live_server.url)
    client.send(FRAME_FORMS[form](clip_frames[0]))
    reply = client.reply()
    assert reply["success"] is True, reply.get("error")
    assert from_data_url(reply["processed"]).shape == clip_frames[0].shape


def test_a_burst_is_answered_for_its_newest_frame(live_server, live_client, clip_frames) -> None:
    """60 distinct frames at once, at the default 15 fps: the excess is dropped, but never the newest."""
    live_server.upload_source()
    client = live_client(live_server.url)
    client.status_message("Connected")
    frames = [to_data_url(_marked(frame, i)) for i, frame in enumerate(clip_frames[:60])]
    for frame in frames:
        client.send(frame)
    replies = client.drain(settle=3.0)

    assert replies and all(reply["success"] for reply in replies), [r.get("error") for r in replies]
    marks = [_read_mark(from_data_url(reply["processed"])) for reply in replies]
    assert marks[-1] == len(frames) - 1, f"the burst was not answered for its newest frame: {marks}"
    assert marks == sorted(marks) and len(replies) < len(frames) / 2, marks
    stats = live_server.service.stats
    assert len(replies) + stats.dropped_rate_limited + stats.dropped_stale == len(frames)


def test_idle_timeout_fires_and_frames_keep_the_session_alive(make_live_server, live_client,
                                                               clip_frames) -> None:
    server = make_live_server(live_idle_timeout=1.0)
    server.upload_source()
    client = live_client(server.url)
    client.status_message("Connected")
    frame = to_data_url(clip_frames[0])
    for _ in range(8):  # 2 s of activity, twice the idle timeout
        client.send(frame)
        time.sleep(0.25)
    assert client.connected, "activity must keep the session alive"
    started = time.monotonic()
    message = client.status_message("without activity", timeout=5)
    assert "1 s" in message
    assert client.disconnected.wait(5)
    assert 0.5 < time.monotonic() - started < 3.0


def test_session_timeout_fires_despite_activity(make_live_server, live_client, clip_frames) -> None:
    server = make_live_server(live_session_timeout=1.5, live_idle_timeout=60.0)
    server.upload_source()
    client = live_client(server.url)
    frame = to_data_url(clip_frames[0])
    deadline = time.monotonic() + 4
    while client.connected and time.monotonic() < deadline:
        client.send(frame)
        time.sleep(0.2)
    assert client.disconnected.wait(1), "the session outlived its timeout"
    assert "Session expired" in client.status_message("Session expired")


def test_disconnect_frees_the_active_user(live_server, live_client) -> None:
    state = live_server.service.state  # process memory here: no event loop of its own needed
    client = live_client(live_server.url)
    client.status_message("Connected")
    assert asyncio.run(state.active_user()) == client.sio.get_sid()
    client.close()
    deadline = time.monotonic() + 5
    while asyncio.run(state.active_user()) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert asyncio.run(state.active_user()) is None


def test_with_an_api_key_configured_a_connection_needs_it(make_live_server, clip_frames) -> None:
    server = make_live_server(api_key="operator-key")
    clients = []
    try:
        anonymous = LiveClient(server.url).connect()
        clients.append(anonymous)
        assert "API key required" in anonymous.status_message("API key")
        assert anonymous.disconnected.wait(30)

        wrong = LiveClient(server.url).connect(auth={"api_key": "guess"})
        clients.append(wrong)
        assert wrong.status_message("Invalid API key") and wrong.disconnected.wait(30)

        with_auth = LiveClient(server.url).connect(auth={"api_key": "operator-key"})
        clients.append(with_auth)
        with_auth.status_message("Connected")
        with_header = LiveClient(server.url).connect(headers={"X-API-Key": "operator-key"})
        clients.append(with_header)
        with_header.status_message("Connected")
        cookie = LiveClient(server.url).connect(headers={"Cookie": "faceport_api_key=operator-key"})
        clients.append(cookie)
        cookie.status_message("Connected")
        assert cookie.connected
    finally:
        for client in clients:
            client.close()
