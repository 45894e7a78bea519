"""Object detection with SSD MobileNet v3 (COCO) through OpenCV DNN; used for "cell phone" (class 77).

The network takes a 320x320 RGB blob scaled to [-1, 1] and returns rows
``[batch, class_id, score, x1, y1, x2, y2]`` with corners normalised to [0, 1]. Class ids
follow the 91-id COCO label map that ships with the model (1 = person, 77 = cell phone).
"""

from __future__ import annotations

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
