"""Object detection with SSD MobileNet v3 (COCO) through OpenCV DNN; used for "cell phone" (class 77).

The network takes a 320x320 RGB blob scaled to [-1, 1] and returns rows
``[batch, class_id, score, x1, y1, x2, y2]`` with corners normalised to [0, 1]. Class ids
follow the 91-id COCO label map that ships with the model (1 = person, 77 = cell phone).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np
from numpy.typing import NDArray

from faceport.engine.types import BGRImage

PERSON = 1
CELL_PHONE = 77
INPUT_SIZE = 320
DEFAULT_PHONE_SCORE = 0.5


class ForwardSession(Protocol):
    """What the detector needs from its session (``OpenCVDnnSession`` or a test fake)."""

    def forward(self, blob: NDArray[np.float32]) -> NDArray[np.float32]: ...


@dataclass(frozen=True, slots=True)
class Objects:
    """Objects in one image; every array has n rows, n may be 0.

    Attributes:
        xyxy: (n, 4) float32 box corners in pixels.
        score: (n,) float32 confidence in [0, 1].
        class_id: (n,) int32 COCO class ids (91-id label map).
    """

    xyxy: NDArray[np.float32]
    score: NDArray[np.float32]
    class_id: NDArray[np.int32]

    def __post_init__(self) -> None:
        n = self.xyxy.shape[0]
        if self.xyxy.ndim != 2 or self.xyxy.shape[1] != 4:
            raise ValueError(f"Objects.xyxy: expected shape (n, 4), got {self.xyxy.shape}")
        if self.score.shape != (n,) or self.class_id.shape != (n,):
            raise ValueError(f"Objects: expected score and class_id of shape ({n},), "
                             f"got {self.score.shape} and {self.class_id.shape}")

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])

    @classmethod
    def empty(cls) -> Objects:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int32))

    def of_class(self, class_id: int) -> Objects:
        """Only the objects of one class."""
        keep = self.class_id == class_id
        return Objects(self.xyxy[keep], self.score[keep], self.class_id[keep])

    @property
    def max_score(self) -> float:
        """Highest score, 0.0 when there is nothing."""
        return float(self.score.max()) if len(self) else 0.0


class ObjectDetector:
    """SSD MobileNet v3 large (COCO) object detector.

    Args:
        session: the ``ssd_mobilenet_v3_coco`` session (``engine.cache.get("ssd_mobilenet_v3_coco")``).
    """

    def __init__(self, session: ForwardSession) -> None:
        self.session = session

    def detect(self, image: BGRImage, *, score_threshold: float = 0.3,
               classes: tuple[int, ...] | None = None) -> Objects:
        """Objects above ``score_threshold``, optionally only of ``classes``.

        Args:
            image: (H, W, 3) uint8 BGR.
            score_threshold: minimum confidence.
            classes: COCO ids to keep; None keeps all.

        Returns:
            Objects with boxes in pixels of ``image``; ``Objects.empty()`` when none.

        Raises:
            ValueError: the image is not (H, W, 3) uint8.
        """
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 BGR image, got {image.shape} {image.dtype}")
        h, w = image.shape[:2]
        blob = np.asarray(cv2.dnn.blobFromImage(image, 1.0 / 127.5, (INPUT_SIZE, INPUT_SIZE),
                                                (127.5, 127.5, 127.5), swapRB=True), np.float32)
        rows = np.asarray(self.session.forward(blob), np.float32).reshape(-1, 7)
        keep = rows[:, 2] >= score_threshold
        if classes is not None:
            keep &= np.isin(rows[:, 1].astype(np.int32), np.array(classes, np.int32))
        rows = rows[keep]
        if not len(rows):
            return Objects.empty()
        boxes = np.clip(rows[:, 3:7], 0.0, 1.0) * np.array([w, h, w, h], np.float32)
        order = np.argsort(-rows[:, 2], kind="stable")
        return Objects(boxes[order].astype(np.float32), rows[order, 2].astype(np.float32),
                       rows[order, 1].astype(np.int32))

    def phones(self, image: BGRImage, *, score_threshold: float = DEFAULT_PHONE_SCORE) -> Objects:
        """Mobile phones (COCO "cell phone") above ``score_threshold``."""
        return self.detect(image, score_threshold=score_threshold, classes=(CELL_PHONE,))


@dataclass(frozen=True, slots=True)
class PhoneGateOptions:
    """When a per-stream phone check may reuse its last "no phone" answer instead of running the SSD.

    A phone that comes into view is found on the first frame that differs enough from the last
    checked one, and at the latest on the frame after ``max_reuse_frames`` reused ones or the first
    frame ``max_reuse_seconds`` after the last check, whichever comes first.

    Attributes:
        max_reuse_frames: most frames in a row that reuse an answer (0: every frame is checked).
        max_reuse_seconds: an answer older than this is never reused.
        change_fraction: a frame whose share of changed thumbnail pixels is above this is checked.
        pixel_delta: how far (grey levels, 0-255) a thumbnail pixel must leave the range of its 3x3
            neighbourhood in the last checked frame to count as changed.
        thumb_size: (width, height) of the grey thumbnail frames are compared on.
        hit_score: the phone score that counts as a phone; only answers below it are reused.
    """

    max_reuse_frames: int = 4
    max_reuse_seconds: float = 2.0
    change_fraction: float = 0.005
    pixel_delta: int = 12
    thumb_size: tuple[int, int] = (64, 48)
    hit_score: float = DEFAULT_PHONE_SCORE

    def __post_init__(self) -> None:
        if self.max_reuse_frames < 0 or self.max_reuse_seconds < 0 or not 0 <= self.change_fraction <= 1:
            raise ValueError(f"PhoneGateOptions: negative window or change_fraction outside [0, 1]: {self}")


@dataclass(frozen=True, slots=True)
class PhoneCheck:
    """One frame's phone answer from :class:`PhoneGate`.

    Attributes:
        score: highest "cell phone" score (0.0 when none), measured now or reused.
        checked: True when the detector ran on this frame, False when the last answer was reused.
        changed: share of thumbnail pixels that changed since the last checked frame (1.0 for the
            first frame or a new frame size).
        reused: frames in a row that have reused the last answer, this one included (0 when checked).
    """

    score: float
    checked: bool
    changed: float
    reused: int


_NEIGHBOURS = np.ones((3, 3), np.uint8)


def _thumbnail(image: BGRImage, size: tuple[int, int]) -> NDArray[np.uint8]:
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return np.asarray(cv2.resize(grey, size, interpolation=cv2.INTER_AREA), np.uint8)


class PhoneGate:
    """Frame-difference gate in front of a phone detector, one per stream (proctoring client).

    The detector runs on a frame unless the last checked frame had no phone, this frame barely
    differs from it (grey thumbnail difference) and the reuse window (frames and seconds) is not
    used up; then its answer is reused. The gate looks at the whole frame, so it works the same
    whether or not a face is in view. Not thread-safe: callers serialise the frames of one stream.

    Args:
        options: the reuse window and change measure.
    """

    def __init__(self, options: PhoneGateOptions | None = None) -> None:
        self.options = options or PhoneGateOptions()
        self.reset()

    def reset(self) -> None:
        """Forget the last checked frame: the next frame is checked."""
        self._lo: NDArray[np.int16] | None = None  # 3x3 minimum / maximum of the last checked thumbnail
        self._hi: NDArray[np.int16] | None = None
        self._shape: tuple[int, ...] = ()
        self._score = 0.0
        self._reused = 0
        self._checked_at = 0.0

    def changed(self, image: BGRImage) -> float:
        """Share of thumbnail pixels of ``image`` that differ from the last checked frame (1.0 if none)."""
        return self._change(image, _thumbnail(image, self.options.thumb_size))

    def _change(self, image: BGRImage, thumb: NDArray[np.uint8]) -> float:
        # A pixel counts as changed only when it leaves the grey range of its 3x3 neighbourhood in the
        # last checked thumbnail: a head or camera shift of a thumbnail pixel (1/64 of the width) is not
        # a change, something new in view (a phone, a hand) is.
        if self._lo is None or self._hi is None or image.shape != self._shape:
            return 1.0
        new = thumb.astype(np.int16)
        outside = np.maximum(self._lo - new, new - self._hi)
        return float(np.mean(outside > self.options.pixel_delta))

    def check(self, image: BGRImage, detect: Callable[[BGRImage], float], *, now: float | None = None) -> PhoneCheck:
        """The phone score of ``image``, from ``detect`` or reused from the last checked frame.

        Args:
            image: (H, W, 3) uint8 BGR.
            detect: returns the highest phone score of an image (e.g. ``ObjectDetector.phones(...).max_score``).
            now: monotonic seconds; ``time.monotonic()`` when None.

        Raises:
            ValueError: the image is not (H, W, 3) uint8.
        """
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 BGR image, got {image.shape} {image.dtype}")
        o = self.options
        now = time.monotonic() if now is None else now
        thumb = _thumbnail(image, o.thumb_size)
        changed = self._change(image, thumb)
        if (self._lo is not None and self._score < o.hit_score and self._reused < o.max_reuse_frames
                and now - self._checked_at < o.max_reuse_seconds and changed <= o.change_fraction):
            self._reused += 1
            return PhoneCheck(self._score, False, changed, self._reused)
        score = float(detect(image))
        self._lo = np.asarray(cv2.erode(thumb, _NEIGHBOURS), np.int16)
        self._hi = np.asarray(cv2.dilate(thumb, _NEIGHBOURS), np.int16)
        self._shape, self._score, self._reused, self._checked_at = image.shape, score, 0, now
        return PhoneCheck(score, True, changed, 0)
