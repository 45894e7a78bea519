"""Licence plates: OpenCV plate cascades plus text-detector candidates of plate-like shape.

Two sources of candidates, merged:

- the Haar cascades shipped with OpenCV 4.x (``plate_cascades``: the Russian plate cascades,
  which fire on most European/US plates at a modest precision);
- PP-OCRv4 text lines whose box is plate-shaped (width/height 1.5-7, a small part of the image).

A candidate is confirmed by OCR where a recogniser is available: the text read inside the box
must look like a registration (4-10 letters/digits with at least one digit). Cascade hits that
OCR cannot confirm are kept only above a higher score, so the false positives stay few.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Final

import cv2
import numpy as np
from numpy.typing import NDArray

from faceport.engine.text import TextReader
from faceport.engine.types import BGRImage

log = logging.getLogger(__name__)

__all__ = ["Plate", "PlateDetector", "looks_like_plate"]

_PLATE_TEXT: Final = re.compile(r"[A-Z0-9]")
MIN_ASPECT: Final = 1.5
MAX_ASPECT: Final = 7.0


@dataclass(frozen=True, slots=True)
class Plate:
    """One plate.

    Attributes:
        xyxy: (4,) float32 box in pixels.
        score: 0..1 (OCR-confirmed plates score at least 0.6).
        text: The registration read by OCR ("" when not read).
        source: "cascade", "text" or "both".
    """

    xyxy: NDArray[np.float32]
    score: float
    text: str = ""
    source: str = "cascade"


def looks_like_plate(text: str) -> bool:
    """Whether OCR text reads like a registration: 4-8 letters/digits with a digit (4 only with a letter)."""
    chars = "".join(_PLATE_TEXT.findall(text.upper()))
    if not 4 <= len(chars) <= 8 or len(chars) < 0.6 * len(text.strip()) or not any(c.isdigit() for c in chars):
        return False
    return len(chars) >= 5 or any(c.isalpha() for c in chars)  # "2011" is a year on a sign, "3D55" a plate


def _iou(a: NDArray[np.float32], b: NDArray[np.float32]) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, float(x2 - x1)) * max(0.0, float(y2 - y1))
    union = float((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])) - inter
    return inter / union if union > 0 else 0.0


class PlateDetector:
    """Plate candidates from cascades and text lines, confirmed by OCR.

    Args:
        cascades: A ``CascadeSet`` (``.cascades``: cv2.CascadeClassifier list, ``.lock``), or None.
        reader: A text reader (detection + recognition), or None for cascades only.
        max_side: Longer image side used for the cascades (larger images are scaled down).
    """

    def __init__(self, cascades: Any | None, reader: TextReader | None, *, max_side: int = 1280) -> None:
        self.cascades = cascades
        self.reader = reader
        self.max_side = max_side

    def _cascade_boxes(self, image: BGRImage) -> list[NDArray[np.float32]]:
        if self.cascades is None:
            return []
        h, w = image.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        if scale < 1.0:
            gray = cv2.resize(gray, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        gray = cv2.equalizeHist(gray)
        boxes: list[NDArray[np.float32]] = []
        with self.cascades.lock:
            for cascade in self.cascades.cascades:
                found = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=4, minSize=(24, 8))
                for x, y, bw, bh in found if len(found) else []:
                    boxes.append(np.array([x, y, x + bw, y + bh], np.float32) / scale)
        return boxes

    def detect(self, image: BGRImage, *, confidence: float = 0.25) -> list[Plate]:
        """Plates in one BGR image, scores at or above ``confidence``."""
        h, w = image.shape[:2]
        candidates: list[tuple[NDArray[np.float32], str]] = [(b, "cascade") for b in self._cascade_boxes(image)]
        if self.reader is not None:
            for line in self.reader.detect(image):
                box = line.xyxy
                bw, bh = float(box[2] - box[0]), float(box[3] - box[1])
                if bh < 6 or not MIN_ASPECT <= bw / bh <= MAX_ASPECT or bw * bh > 0.05 * w * h:
                    continue
                candidates.append((box, "text"))
        plates: list[Plate] = []
        texts: list[str] = [""] * len(candidates)
        if self.reader is not None and self.reader.rec is not None and candidates:
            crops = [self.reader.crop(image, _quad(b, 0.1, w, h)) for b, _ in candidates]
            texts = [t for t, _ in self.reader.recognize_crops(crops)]
        for (box, source), text in zip(candidates, texts, strict=True):
            confirmed = looks_like_plate(text)
            if source == "text" and not confirmed:
                continue
            score = 0.8 if confirmed else 0.3
            if self.reader is not None and self.reader.rec is not None and not confirmed:
                score = 0.2  # OCR could read it and saw no registration
            plates.append(Plate(box, score, text if confirmed else "", source))
        return [p for p in _merge(plates) if p.score >= confidence]


def _quad(box: NDArray[np.float32], margin: float, w: int, h: int) -> NDArray[np.float32]:
    bw, bh = box[2] - box[0], box[3] - box[1]
    x1, y1 = max(0.0, box[0] - margin * bh), max(0.0, box[1] - margin * bh)
    x2, y2 = min(w - 1.0, box[2] + margin * bh), min(h - 1.0, box[3] + margin * bh)
    del bw
    return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], np.float32)


def _merge(plates: list[Plate]) -> list[Plate]:
    """Overlapping candidates become one plate (the union box, the best score)."""
    plates = sorted(plates, key=lambda p: -p.score)
    kept: list[Plate] = []
    for plate in plates:
        for i, other in enumerate(kept):
            if _iou(plate.xyxy, other.xyxy) > 0.2:
                union = np.concatenate([np.minimum(plate.xyxy[:2], other.xyxy[:2]),
                                        np.maximum(plate.xyxy[2:], other.xyxy[2:])]).astype(np.float32)
                source = other.source if other.source == plate.source else "both"
                kept[i] = Plate(union, other.score, other.text or plate.text, source)
                break
        else:
            kept.append(plate)
    return kept
