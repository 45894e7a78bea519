"""Seed A's live path keeps the face: small, compressed, moving faces and faces that jump (issue 11, point 6).

Real clips, real models, the service's own ``render`` (decode, track, swap, encode). "A visible
face" is judged independently of the live path: CenterFace at a low threshold on the full
frame (as ``bench/live_coverage.py``).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from faceport.errors import NoFace

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
JUDGE_THRESHOLD = 0.3
CHANGED = 4.0  # mean |diff| (grey levels) in the judged box that a swap leaves; JPEG re-encoding alone: < 2


def _url(image: np.ndarray) -> str:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
    assert ok
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def _image(url: str) -> np.ndarray:
    payload = url.partition(",")[2]
    image = cv2.imdecode(np.frombuffer(base64.b64decode(payload), np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def _frames(path: Path, step: int = 2) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames, index = [], 0
    while (read := capture.read())[0]:
        if index % step == 0:
            frames.append(read[1])
        index += 1
    capture.release()
    assert frames, path
    return frames


def _changed(before: np.ndarray, after: np.ndarray, box: np.ndarray) -> float:
    x0, y0 = max(0, int(box[0])), max(0, int(box[1]))
    x1, y1 = int(np.ceil(box[2])), int(np.ceil(box[3]))
    return float(cv2.absdiff(before[y0:y1, x0:x1], after[y0:y1, x0:x1]).mean())


@pytest.fixture
def live(settings, engine, models_dir):  # type: ignore[no-untyped-def]
    """The live service's blocking half (render, tracker) and a swapper of Grace Hopper's face."""
    from faceport.engine.models import ModelStore
    from faceport.engine.swap import build_swapper
    from faceport.services.live_swap import LiveSwapService

    service = LiveSwapService(settings.model_copy(update={"redis_url": None}), engine, ModelStore(models_dir),
                              run=None)  # type: ignore[arg-type]  # only blocking methods are used
    swapper = build_swapper(engine, [cv2.imread(str(FIXTURES / "mpl_grace_hopper.jpg"))])
    return service, swapper


def _render(service: Any, tracker: Any, swapper: Any, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    url = _url(frame)
    sent = service.decode_frame(url)
    try:
        return sent, _image(service.render(url, tracker, swapper).processed)
    except NoFace:
        return sent, None


# carphone_distorted: a 176x144, heavily compressed talking head (face ≈ 45-60 px) that moves and turns;
# YuNet finds it on every frame but FaceMesh's presence score is mostly < 0.5 there. Measured: main as of
# this branch swapped 16 of 60 judged frames (26.7 %), this branch 60 of 60. pf_WolfgangLanger (head turns,
# a hand over the face): 100 % before and after.
@pytest.mark.parametrize(("clip", "at_least"), [
    ("skv_carphone_distorted.mp4", 0.85),
    ("pf_WolfgangLanger_Pexels.mp4", 0.95),
])
def test_live_path_swaps_the_judged_face_frames_of_a_clip(live, engine, data_dir: Path, clip: str,
                                                           at_least: float) -> None:
    service, swapper = live
    judge = engine.detector("centerface")
    tracker = service.new_tracker()
    frames = _frames(data_dir / "video" / clip)[:60]
    judged = swapped = 0
    for frame in frames:
        sent, out = _render(service, tracker, swapper, frame)
        boxes = judge.detect(sent, score_threshold=JUDGE_THRESHOLD).xyxy
        if len(boxes) == 0:
            continue
        judged += 1
        if out is not None and max(_changed(sent, out, box) for box in boxes) > CHANGED:
            swapped += 1
    assert judged >= 0.9 * len(frames)
    assert swapped / judged >= at_least, f"{clip}: {swapped} of {judged} judged-face frames swapped"


def _on_canvas(frame: np.ndarray, x: int, size: tuple[int, int] = (640, 480)) -> np.ndarray:
    canvas = np.full((size[1], size[0], 3), 96, np.uint8)
    h, w = frame.shape[:2]
    y = (size[1] - h) // 2
    canvas[y:y + h, x:x + w] = frame
    return canvas


@pytest.mark.parametrize("clip", ["pf_single_face.mp4", "skv_carphone_distorted.mp4"])
def test_a_face_that_jumps_is_redetected_and_swapped_on_the_same_frame(live, engine, data_dir: Path,
                                                                         clip: str) -> None:
    service, swapper = live
    frames = _frames(data_dir / "video" / clip)[:12]
    scale = 0.5 if frames[0].shape[1] > 320 else 1.0  # the 640x360 clip at 320x180 so that it can move
    frames = [cv2.resize(f, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) for f in frames]
    tracker = service.new_tracker()
    for frame in frames[:-1]:  # face A at the left of the picture: tracked
        _sent, out = _render(service, tracker, swapper, _on_canvas(frame, 0))
    assert out is not None, "the face was not swapped before the jump"
    runs = tracker.detections_run
    jumped = _on_canvas(frames[-1], 640 - frames[-1].shape[1])  # the same face, now at the right edge
    sent, out = _render(service, tracker, swapper, jumped)
    assert out is not None, "the frame where the face jumped came back without a swap"
    assert tracker.detections_run == runs + 1  # lost by the tracker, re-detected on this very frame
    boxes = engine.detector("centerface").detect(sent, score_threshold=JUDGE_THRESHOLD).xyxy
    assert len(boxes) == 1 and boxes[0, 0] > 320  # the judge sees it at its new place ...
    assert _changed(sent, out, boxes[0]) > CHANGED  # ... and that is where the pixels changed


@pytest.mark.parametrize("mirror", [False, True], ids=["yaw+43", "yaw-38"])
def test_a_head_turned_about_45_degrees_is_swapped(live, engine, data_dir: Path, mirror: bool) -> None:
    """A real photo of a head turned about 45° (and its mirror, the other way) comes back swapped.

    Yaw is FaceMesh's estimate (``attributes.head_pose``): +42.6° and -38.2° here. The shared data
    has no face turned further; ±60° is covered on a synthetic turn (test below).
    """
    from faceport.engine.attributes import head_pose

    service, swapper = live
    photo = cv2.imread(str(data_dir / "faces_misc" / "pf_45-m7-di-ph.jpg"))
    scale = 640 / max(photo.shape[:2])
    frame = cv2.resize(photo, (round(photo.shape[1] * scale), round(photo.shape[0] * scale)))
    if mirror:
        frame = np.ascontiguousarray(frame[:, ::-1])
    faces = engine.detect(frame, landmarks=True)
    assert len(faces) == 1 and faces.landmarks is not None
    assert abs(head_pose(faces.landmarks[0]).yaw) > 35
    sent, out = _render(service, service.new_tracker(), swapper, frame)
    assert out is not None, "the turned face was not swapped"
    assert _changed(sent, out, faces.xyxy[0]) > CHANGED


@pytest.mark.parametrize("face_px", [160, 48])
def test_a_synthetic_head_turn_to_60_degrees_stays_swapped(live, engine, data_dir: Path, face_px: int) -> None:
    """A real photo's mesh rotated 0 → +60° → 0 → -60° → 0 in 10° steps (tests/yaw_render.py: SYNTHETIC, since
    no shared clip turns that far) stays tracked and swapped on every frame, at 160 and 48 px faces."""
    from tests.yaw_render import YawRenderer, sweep

    service, swapper = live
    photo = cv2.imread(str(data_dir / "faces_misc" / "pf_single_face.jpg"))
    box = engine.detect(photo).sorted_by_area().xyxy[0]
    scale = face_px / float(box[2] - box[0])
    photo = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    cx, cy = (box[0] + box[2]) / 2 * scale, (box[1] + box[3]) / 2 * scale
    canvas = cv2.warpAffine(photo, np.float32([[1, 0, 320 - cx], [0, 1, 240 - cy]]), (640, 480),
                            borderMode=cv2.BORDER_REPLICATE)
    faces = engine.detect(canvas, landmarks=True).sorted_by_area()
    assert faces.landmarks is not None
    renderer = YawRenderer(canvas, faces.landmarks[0])
    tracker = service.new_tracker()
    missed = []
    for yaw in sweep(60.0, 10.0):
        frame, mask = renderer.render(yaw)
        sent, out = _render(service, tracker, swapper, frame)
        ys, xs = np.nonzero(mask)
        rendered_face = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
        if out is None or _changed(sent, out, rendered_face) <= CHANGED / 2:
            missed.append(round(yaw))
    assert not missed, f"not swapped at yaw {missed}"
