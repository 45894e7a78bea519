"""Per-session live options over Socket.IO (issue 16, point 7): ``set_options`` -> ``options`` / ``error``.

A real python-socketio client against a real uvicorn server; frames of a real clip. The mouth
mask must keep the camera's mouth in the next frame, bad options must be refused with an
``error`` event while the session keeps being served, and many faces must swap both faces of a
frame showing two people.
"""

from __future__ import annotations

import queue
from typing import Any

import cv2
import numpy as np

from faceport.engine.swap.colour import LIPS_OUTER
from tests.realtime.conftest import from_data_url, to_data_url


def listen(client: Any, event: str) -> queue.Queue[dict[str, Any]]:
    q: queue.Queue[dict[str, Any]] = queue.Queue()
    client.sio.on(event, q.put)
    return q


def lips_mask(engine: Any, frame: np.ndarray) -> np.ndarray:
    faces = engine.detect(frame, landmarks=True).sorted_by_area()[:1]
    assert len(faces) == 1 and faces.landmarks is not None
    mask = np.zeros(frame.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(faces.landmarks[0][list(LIPS_OUTER), :2]).astype(np.int32)], 255)
    return cv2.erode(mask, np.ones((3, 3), np.uint8), iterations=2) > 0


def swapped(client: Any, frame: np.ndarray) -> np.ndarray:
    client.send(to_data_url(frame, quality=95))
    reply = client.reply()
    assert reply["success"] is True, reply
    return from_data_url(reply["processed"])


def test_options_change_the_next_frame_and_bad_ones_are_refused(live_server, live_client, clip_frames,
                                                                 engine) -> None:
    live_server.upload_source()
    client = live_client(live_server.url)
    options, errors = listen(client, "options"), listen(client, "error")
    client.status_message("Connected")
    frame = clip_frames[40]
    lips = lips_mask(engine, frame)

    def lips_change(image: np.ndarray) -> float:
        return float(np.abs(image.astype(np.int16) - frame.astype(np.int16)).mean(axis=2)[lips].mean())

    before = lips_change(swapped(client, frame))
    assert before > 4  # default: the source's lips are pasted

    ack = client.sio.call("set_options", {"mouth_mask": True}, timeout=10)
    assert ack == {"success": True, "options": {"mouth_mask": True, "face_enhancer": False,
                                                "face_enhancer_blend": ack["options"]["face_enhancer_blend"],
                                                "many_faces": False}}
    assert options.get(timeout=10) == ack
    after = lips_change(swapped(client, frame))
    assert after < 0.6 * before  # the camera's mouth is kept (JPEG noise only)

    # bad values: an error event, nothing changed, and the session keeps being served
    for bad, field in (({"face_enhancer_blend": 150}, "face_enhancer_blend"), ({"mouth_mask": "yes"}, "mouth_mask"),
                       ({"colour": "red"}, "colour"), ("mouth_mask", None)):
        client.sio.emit("set_options", bad)
        error = errors.get(timeout=10)
        assert error["success"] is False and error["code"] == "INVALID_INPUT" and error["field"] == field, error
    assert lips_change(swapped(client, frame)) < 0.6 * before  # the mouth mask is still on
    assert options.empty()

    enhanced = client.sio.call("set_options", {"mouth_mask": False, "face_enhancer": True,
                                               "face_enhancer_blend": 100}, timeout=10)
    assert enhanced["options"]["face_enhancer"] is True and enhanced["options"]["face_enhancer_blend"] == 100
    assert lips_change(swapped(client, frame)) > 0.6 * before
    assert live_server.status()["error_count"] == 0


def test_many_faces_swaps_every_face_of_a_frame(live_server, live_client, clip_frames, engine) -> None:
    live_server.upload_source()
    client = live_client(live_server.url)
    client.status_message("Connected")
    frame = clip_frames[40]
    pair = np.hstack([frame, cv2.flip(frame, 1)])  # two people side by side (the same clip, mirrored)
    boxes = engine.detect(pair).xyxy
    assert len(boxes) == 2

    def changed(image: np.ndarray) -> list[float]:
        diff = np.abs(image.astype(np.int16) - pair.astype(np.int16)).mean(axis=2)
        return [float(diff[int(y0):int(y1), int(x0):int(x1)].mean()) for x0, y0, x1, y1 in boxes]

    one = changed(swapped(client, pair))
    assert sorted(one)[0] < 3.0 and sorted(one)[1] > 8.0  # one face per frame by default (FACEPORT_LIVE_MAX_FACES=1)
    assert client.sio.call("set_options", {"many_faces": True}, timeout=10)["success"] is True
    both = changed(swapped(client, pair))
    assert min(both) > 8.0, both
