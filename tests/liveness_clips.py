"""Real clip segments where a person performs liveness challenges, and attacks built from them.

Shared by the active-liveness tests and ``bench/liveness_active.py``. The segments were found by
measuring FaceMesh yaw, eye aspect ratio, mouth width and face size on every frame of the
clips in ``../shared/data/video`` (see BENCHMARKS.md, "Active liveness"); each lists the
challenges the person really performs there, in order. The attacks are synthetic, made here
from the same real frames:

- ``planar_photo``: one still frame perspective-warped as a plane turning about a vertical
  axis (0 to ``degrees`` and back), JPEG re-encoded: a printed photo or a phone tilted in front
  of the camera;
- ``screen_replay``: the real frames shown on a simulated screen: shrunk, moire (beating of the
  screen's pixel grid against the camera's), a dark bezel and a desk around it, sensor noise;
- ``cutout_mouth``: one still frame whose mouth region is replaced by the real moving mouth of
  each frame (a photo with a cut-out mouth held in front of a real mouth), the whole warped as
  a plane following the real head's yaw;
- ``identity_switch``: one person's frames followed by another person's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

from faceport.engine.active_liveness import LIPS, Challenge

Frames = list[tuple[float, np.ndarray]]  # (client seconds, BGR frame)


@dataclass(frozen=True)
class Segment:
    name: str
    clip: str  # path under ../shared/data
    start: int  # first frame index (inclusive)
    stop: int  # last frame index (exclusive)
    challenges: tuple[Challenge, ...]
    note: str


WOLF = "video/pf_WolfgangLanger_Pexels.mp4"
DOOR = "video/pf_single_face.mp4"
CAR = "video/skv_carphone_pristine.mp4"

BONA_FIDE = (
    Segment("woman: smile, blink, turn left", WOLF, 220, 384, ("smile", "blink", "turn_left"),
            "t 9.2-16.0 s: smiles (mouth width +28%), blinks at 12.0 s, turns left to yaw -12"),
    Segment("woman: turn right", WOLF, 93, 170, ("turn_right",), "t 3.9-7.1 s: yaw 0 -> +13"),
    Segment("woman: turn left", WOLF, 330, 400, ("turn_left",), "t 13.8-16.7 s: yaw -3 -> -12"),
    Segment("man in car (176x144): turn right, turn left", CAR, 18, 100, ("turn_right", "turn_left"),
            "t 0.6-3.3 s: yaw -1 -> +9 -> -10; a 50-pixel face"),
)
# No turn here, so it runs only with require_three_d=False (engine tests of smile and blink).
DOOR_SMILE_BLINK = Segment("man at a door: smile, blink", DOOR, 0, 40, ("smile", "blink"),
                           "t 0-1.3 s: smiles (+35%), blinks at 0.87 s")


def read_segment(data_dir: Path, segment: Segment) -> Frames:
    """The segment's frames with their presentation times, re-based to start at 0 s."""
    frames: Frames = []
    with av.open(str(data_dir / segment.clip)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i >= segment.stop:
                break
            if i >= segment.start:
                frames.append((float(frame.time or 0.0), frame.to_ndarray(format="bgr24")))
    t0 = frames[0][0]
    return [(t - t0, f) for t, f in frames]


def _jpeg(image: np.ndarray, quality: int = 85) -> np.ndarray:
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(encoded, cv2.IMREAD_COLOR)


def plane_homography(width: int, centre: tuple[float, float], yaw_deg: float) -> np.ndarray:
    """Image homography of a fronto-parallel plane through ``centre`` rotated by ``yaw_deg`` about a vertical axis.

    A pinhole camera with focal length ``width`` pixels; the plane sits at that depth.
    """
    f, (cx, cy) = float(width), centre
    k = np.array([[f, 0, cx], [0, f, cy], [0, 0, 1.0]])
    th = math.radians(yaw_deg)
    r = np.array([[math.cos(th), 0, math.sin(th)], [0, 1, 0], [-math.sin(th), 0, math.cos(th)]])
    c = np.array([0, 0, f])
    h = k @ (r + np.outer(c - r @ c, [0, 0, 1.0]) / f) @ np.linalg.inv(k)
    return h / h[2, 2]


def planar_photo(still: np.ndarray, centre: tuple[float, float], *, degrees: float, frames: int = 192,
                 fps: float = 24.0) -> Frames:
    """A still warped as a plane turning 0 -> ``degrees`` -> 0, twice, over ``frames`` frames (8 s)."""
    h, w = still.shape[:2]
    out: Frames = []
    for i in range(frames):
        phase = abs(math.sin(2 * math.pi * i / (frames - 1)))  # 0 -> 1 -> 0 -> 1 -> 0
        warp = plane_homography(w, centre, degrees * phase)
        moved = cv2.warpPerspective(still, warp, (w, h), borderMode=cv2.BORDER_REFLECT)
        out.append((i / fps, _jpeg(moved)))
    return out


def screen_replay(frames: Frames, *, seed: int = 0, bezel: bool = True) -> Frames:
    """The frames as a camera would see them on a phone screen held in front of it.

    ``bezel=False``: the screen fills the camera's whole view (no border in sight, moire only).
    """
    rng = np.random.default_rng(seed)
    out: Frames = []
    for t, frame in frames:
        h, w = frame.shape[:2]
        desk = np.full((h, w, 3), (96, 104, 110), np.uint8)
        sw, sh = (int(w * 0.62), int(h * 0.62)) if bezel else (w, h)
        screen = cv2.resize(frame, (sw, sh), interpolation=cv2.INTER_AREA).astype(np.float32)
        yy, xx = np.mgrid[:sh, :sw].astype(np.float32)
        moire = 1.0 + 0.12 * np.sin(2 * np.pi * (xx * 0.31 + yy * 0.07)) * np.sin(2 * np.pi * (yy * 0.29 - xx * 0.05))
        screen = np.clip((screen * 0.9 + 18) * moire[..., None], 0, 255)  # screen gamma/black level and beating
        x0, y0 = (w - sw) // 2, (h - sh) // 2
        if bezel:
            edge = max(6, int(0.03 * w))
            cv2.rectangle(desk, (x0 - edge, y0 - edge), (x0 + sw + edge, y0 + sh + edge), (22, 22, 24), -1)
        desk[y0:y0 + sh, x0:x0 + sw] = screen.astype(np.uint8)
        noisy = desk.astype(np.float32) + rng.normal(0, 3.0, desk.shape)
        out.append((t, _jpeg(np.clip(noisy, 0, 255).astype(np.uint8))))
    return out


def _mouth_mask(landmarks: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    pts = landmarks[list(LIPS), :2]
    centre = pts.mean(0)
    grown = (pts - centre) * np.array([1.35, 1.9]) + centre  # lips plus a margin, taller for an open mouth
    mask = np.zeros(shape[:2], np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(grown.astype(np.int32)), 255)
    return cv2.GaussianBlur(mask, (7, 7), 0)


def cutout_mouth(frames: Frames, landmarks: list[np.ndarray | None], yaws: list[float], *,
                 yaw_gain: float = 3.0) -> Frames:
    """The first frame as a photo with a cut-out mouth: each frame's real mouth shows through it.

    Args:
        frames: the real frames.
        landmarks: each frame's (468|478, 3) FaceMesh points, or None.
        yaws: each frame's head yaw; the photo is warped as a plane turning ``yaw_gain`` x the
            real yaw change (a plane must be tilted further than a head turns to move its landmarks as much).
    """
    photo = frames[0][1]
    base = landmarks[0]
    assert base is not None
    centre = (float(base[1, 0]), float(base[1, 1]))
    out: Frames = []
    for (t, frame), points, yaw in zip(frames, landmarks, yaws, strict=True):
        composite = photo.copy()
        if points is not None:
            # the real mouth, moved onto the photo's mouth position
            shift = base[list(LIPS), :2].mean(0) - points[list(LIPS), :2].mean(0)
            moved = cv2.warpAffine(frame, np.float32([[1, 0, shift[0]], [0, 1, shift[1]]]),
                                   (frame.shape[1], frame.shape[0]), borderMode=cv2.BORDER_REFLECT)
            alpha = _mouth_mask(base, photo.shape).astype(np.float32)[..., None] / 255.0
            composite = (moved * alpha + photo * (1 - alpha)).astype(np.uint8)
        warp = plane_homography(photo.shape[1], centre, yaw_gain * (yaw - yaws[0]))
        out.append((t, _jpeg(cv2.warpPerspective(composite, warp, (photo.shape[1], photo.shape[0]),
                                                 borderMode=cv2.BORDER_REFLECT))))
    return out


def identity_switch(first: Frames, second: Frames, *, gap: float = 0.04) -> Frames:
    """``first`` then ``second``, one continuous timeline."""
    offset = first[-1][0] + gap
    return [*first, *[(t + offset, f) for t, f in second]]
