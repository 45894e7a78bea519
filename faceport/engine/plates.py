"""Licence plates: OpenCV plate cascades plus text-detector candidates of plate-like shape.

Sources of candidates, merged:

- the Haar cascades shipped with OpenCV 4.x (``plate_cascades``: the Russian plate cascades,
  which fire on most European/US plates at a modest precision);
- PP-OCRv4 text lines whose rotated box is plate-shaped (width/height 1-8, a small part of the
  image), found at the image's own size and, for images whose longer side is under
  ``upscale_below``, once more on a copy enlarged 2x: a 60x30 px plate whose characters are
  12 px high is often missed by the detector at 1x and found at 2x;
- neighbouring fragments of one row ("627" and "WWI" split by a sticker) joined into one line.

A candidate is confirmed by OCR where a recogniser is available: the text read inside the
rectified line (tight, and grown by a fifth of its height so clipped edge characters are read)
must look like a registration (4-8 letters/digits with at least one digit). A text line OCR
cannot read as a word (nothing confident of 3+ characters) is kept when its surroundings look
like a plate: an even, light, low-saturation face with dark strokes (:func:`plate_contrast`).
Cascade hits that OCR cannot confirm are kept only above a higher score, so the false positives
stay few. The returned box is the plate, not its characters: a
text box grown by ``PLATE_GROWTH`` of its height.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Final

import cv2
import numpy as np
from numpy.typing import NDArray

from faceport.engine.text import TextLine, TextReader
from faceport.engine.types import BGRImage

log = logging.getLogger(__name__)

__all__ = ["Plate", "PlateDetector", "looks_like_plate", "plate_contrast"]

_PLATE_TEXT: Final = re.compile(r"[A-Z0-9]")
MIN_ASPECT: Final = 1.0  # a tilted plate's rotated text box can be nearly square
MAX_ASPECT: Final = 8.0
MAX_TILT: Final = 35.0  # degrees; diagonal text is a watermark or a logo, not a plate
MAX_AREA: Final = 0.03  # a plate candidate covers at most this share of the image
PLATE_GROWTH: Final = (0.35, 0.3)  # text box -> plate box: x and y growth as fractions of the text height
FALLBACK_MIN_ASPECT: Final = 1.4  # an unread line must be this elongated to count on contrast alone
READ_GROWTH: Final = 0.2  # the second OCR crop grows the line by this fraction of its height


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


def plate_contrast(crop: BGRImage) -> float:
    """How much a crop looks like a plate face with characters on it, 0..1.

    A plate is an even, light, low-saturation face (white, pale yellow, grey) with dark
    characters covering a fair part of it: after an Otsu split the dark class (the strokes)
    holds 8-45 % of the pixels, the classes differ by at least 60 grey levels, and the light
    class (the face) is even (grey std under 40). Light text on a dark window or sign is not a
    plate face (the few plates with light characters on a dark face need OCR to confirm them).

    Args:
        crop: (h, w, 3) uint8 BGR.

    Returns:
        0 when any test fails, else a score rising with the contrast (capped at 1).
    """
    if crop.size == 0 or min(crop.shape[:2]) < 4:
        return 0.0
    gray = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    threshold, split = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    del threshold
    face = split > 0
    strokes = ~face
    stroke_share = float(strokes.mean())
    if not 0.08 <= stroke_share <= 0.45:
        return 0.0
    face_px, stroke_px = gray[face].astype(np.float32), gray[strokes].astype(np.float32)
    gap = abs(float(face_px.mean()) - float(stroke_px.mean()))
    if gap < 60 or float(face_px.std()) > 40:
        return 0.0
    saturation = cv2.cvtColor(crop, cv2.COLOR_BGR2HSV)[:, :, 1][face]
    if float(saturation.mean()) > 110:  # a coloured sticker or sign, not a plate face
        return 0.0
    return min(1.0, gap / 150.0)


class PlateDetector:
    """Plate candidates from cascades and text lines (two scales), confirmed by OCR or plate contrast.

    Args:
        cascades: A ``CascadeSet`` (``.cascades``: cv2.CascadeClassifier list, ``.lock``), or None.
        reader: A text reader (detection + recognition), or None for cascades only.
        max_side: Longer image side used for the cascades (larger images are scaled down).
        upscale_below: Images whose longer side is under this get a second text-detection pass on
            a copy enlarged 2x (0: never).
    """

    def __init__(self, cascades: Any | None, reader: TextReader | None, *, max_side: int = 1280,
                 upscale_below: int = 1280) -> None:
        self.cascades = cascades
        self.reader = reader
        self.max_side = max_side
        self.upscale_below = upscale_below

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

    def _text_lines(self, image: BGRImage) -> list[TextLine]:
        """Text lines at 1x and (small images) up to 2x, duplicates dropped, quads in image pixels."""
        if self.reader is None:
            return []
        h, w = image.shape[:2]
        lines = self.reader.detect(image)
        longest = max(h, w)
        if self.upscale_below and longest < self.upscale_below:
            factor = 2.0
            big = np.asarray(cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC), np.uint8)
            for line in self.reader.detect(big, max_side=max(big.shape[:2])):
                quad = (line.quad / factor).astype(np.float32)
                if not any(_iou(_box(quad), other.xyxy) > 0.8 for other in lines):
                    lines.append(TextLine(quad, line.score))
        return lines

    def detect(self, image: BGRImage, *, confidence: float = 0.25) -> list[Plate]:
        """Plates in one BGR image, scores at or above ``confidence``."""
        h, w = image.shape[:2]
        candidates: list[tuple[NDArray[np.float32], str]] = [
            (_quad(b, 0.0, w, h), "cascade") for b in self._cascade_boxes(image)]
        lines = [line for line in self._text_lines(image) if _plate_shaped(line.quad, w, h)]
        candidates += [(line.quad, "text") for line in lines]
        candidates += [(quad, "text") for quad in _row_groups(lines) if _plate_shaped(quad, w, h)]
        readable = self.reader is not None and self.reader.rec is not None
        readings: list[list[tuple[str, float]]] = [[] for _ in candidates]
        if readable and candidates:
            assert self.reader is not None
            reader = self.reader
            tight = reader.recognize_crops([_rectified(reader, image, quad, 0.05) for quad, _s in candidates])
            readings = [[t] for t in tight]
            # a second look, grown, where the tight crop read no registration: edge characters clipped
            again = [i for i, (t, _c) in enumerate(tight) if not looks_like_plate(t)]
            grown = reader.recognize_crops([_rectified(reader, image, candidates[i][0], READ_GROWTH) for i in again])
            for i, t in zip(again, grown, strict=True):
                readings[i].append(t)
        plates: list[Plate] = []
        for (quad, source), read in zip(candidates, readings, strict=True):
            box = _box(quad)
            plate_text = next((t for t, _c in read if looks_like_plate(t)), "")
            if plate_text:
                plates.append(Plate(_plate_box(box, w, h), 0.8, plate_text, source))
                continue
            word = any(c >= 0.6 and sum(ch.isalnum() for ch in t) >= 3 for t, c in read)
            if source == "text":
                if word or not _glimpse(read) or _aspect(quad) < FALLBACK_MIN_ASPECT:
                    # a word with no registration in it (a sign, a label), a line of words OCR
                    # half-reads, no Latin character at all, or a near-square blob (eyes, which
                    # the text detector likes)
                    continue
                contrast = plate_contrast(_crop(image, _plate_box(box, w, h)))
                if contrast > 0:
                    plates.append(Plate(_plate_box(box, w, h), 0.3 + 0.2 * contrast, "", source))
                continue
            score = 0.3
            if readable:
                score = 0.2  # OCR could read it and saw no registration
            plates.append(Plate(box, score, "", source))
        # filtered before merging: a weak cascade box must not widen a confirmed plate it overlaps
        return _merge([p for p in plates if p.score >= confidence])


def _box(quad: NDArray[np.float32]) -> NDArray[np.float32]:
    return np.array([*quad.min(axis=0), *quad.max(axis=0)], np.float32)


def _quad(box: NDArray[np.float32], margin: float, w: int, h: int) -> NDArray[np.float32]:
    bh = box[3] - box[1]
    x1, y1 = max(0.0, box[0] - margin * bh), max(0.0, box[1] - margin * bh)
    x2, y2 = min(w - 1.0, box[2] + margin * bh), min(h - 1.0, box[3] + margin * bh)
    return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], np.float32)


def _side_lengths(quad: NDArray[np.float32]) -> tuple[float, float]:
    """(width, height) of an ordered quad (top-left, top-right, bottom-right, bottom-left)."""
    width = max(float(np.linalg.norm(quad[1] - quad[0])), float(np.linalg.norm(quad[2] - quad[3])))
    height = max(float(np.linalg.norm(quad[3] - quad[0])), float(np.linalg.norm(quad[2] - quad[1])))
    return width, height


def _aspect(quad: NDArray[np.float32]) -> float:
    qw, qh = _side_lengths(quad)
    return qw / max(qh, 1e-6)


def _glimpse(read: list[tuple[str, float]]) -> bool:
    """Whether OCR made out a few Latin letters or digits (2-4 in its longest reading), no more.

    A plate too small or too tilted to read gives such fragments; a line of words that OCR only
    half reads ("Forelnl", "TrORR") gives more.
    """
    counts = [len(_PLATE_TEXT.findall(t.upper())) for t, _c in read]
    return bool(counts) and 2 <= max(counts) <= 4


def _plate_shaped(quad: NDArray[np.float32], w: int, h: int) -> bool:
    qw, qh = _side_lengths(quad)
    top = quad[1] - quad[0]
    tilt = abs(float(np.degrees(np.arctan2(top[1], top[0]))))
    return (qh >= 5 and MIN_ASPECT <= qw / max(qh, 1e-6) <= MAX_ASPECT and qw * qh <= MAX_AREA * w * h
            and tilt <= MAX_TILT)


def _grown(quad: NDArray[np.float32], growth: float) -> NDArray[np.float32]:
    """The quad grown along its own axes by ``growth`` x its height on every side."""
    _qw, qh = _side_lengths(quad)
    ux, uy = quad[1] - quad[0], quad[3] - quad[0]
    ux = ux / max(float(np.linalg.norm(ux)), 1e-6)
    uy = uy / max(float(np.linalg.norm(uy)), 1e-6)
    d = growth * qh
    offsets = np.array([-ux - uy, ux - uy, ux + uy, -ux + uy], np.float32) * d
    grown: NDArray[np.float32] = (quad + offsets).astype(np.float32)
    return grown


def _rectified(reader: TextReader, image: BGRImage, quad: NDArray[np.float32], growth: float) -> BGRImage:
    """The line rectified for OCR; small lines are enlarged so characters reach ~32 px."""
    h, w = image.shape[:2]
    grown = np.clip(_grown(quad, growth), 0, [w - 1, h - 1]).astype(np.float32)
    crop = reader.crop(image, grown)
    if 0 < crop.shape[0] < 32:
        factor = 32 / crop.shape[0]
        return np.asarray(cv2.resize(crop, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC), np.uint8)
    return crop


def _crop(image: BGRImage, box: NDArray[np.float32]) -> BGRImage:
    x1, y1, x2, y2 = (round(float(v)) for v in box)
    return image[max(0, y1):max(0, y2), max(0, x1):max(0, x2)]


def _plate_box(box: NDArray[np.float32], w: int, h: int) -> NDArray[np.float32]:
    """The plate around a text box: grown by ``PLATE_GROWTH`` of the text height."""
    th = float(box[3] - box[1])
    gx, gy = PLATE_GROWTH[0] * th, PLATE_GROWTH[1] * th
    out: NDArray[np.float32] = np.clip(np.array([box[0] - gx, box[1] - gy, box[2] + gx, box[3] + gy], np.float32),
                                       0, [w, h, w, h]).astype(np.float32)
    return out


def _row_groups(lines: list[TextLine]) -> list[NDArray[np.float32]]:
    """Axis quads joining neighbouring lines of one row (similar height, overlapping rows, gap < a height)."""
    boxes = sorted((line.xyxy for line in lines), key=lambda b: float(b[0]))
    groups: list[NDArray[np.float32]] = []
    used = [False] * len(boxes)
    for i, first in enumerate(boxes):
        if used[i]:
            continue
        current, joined = first.copy(), 1
        for j in range(i + 1, len(boxes)):
            other = boxes[j]
            ch, oh = current[3] - current[1], other[3] - other[1]
            overlap = min(current[3], other[3]) - max(current[1], other[1])
            gap = other[0] - current[2]
            if 0.67 <= oh / max(ch, 1e-6) <= 1.5 and overlap >= 0.6 * min(ch, oh) and -0.5 * ch <= gap <= ch:
                current = np.concatenate([np.minimum(current[:2], other[:2]), np.maximum(current[2:], other[2:])])
                used[j] = True
                joined += 1
        if joined > 1:
            x1, y1, x2, y2 = (float(v) for v in current)
            groups.append(np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], np.float32))
    return groups


def _merge(plates: list[Plate]) -> list[Plate]:
    """Overlapping candidates become one plate (the union box, the best score)."""
    plates = sorted(plates, key=lambda p: -p.score)
    kept: list[Plate] = []
    for plate in plates:
        for i, other in enumerate(kept):
            if _iou(plate.xyxy, other.xyxy) > 0.2 or _inside(plate.xyxy, other.xyxy) > 0.6:
                union = np.concatenate([np.minimum(plate.xyxy[:2], other.xyxy[:2]),
                                        np.maximum(plate.xyxy[2:], other.xyxy[2:])]).astype(np.float32)
                source = other.source if other.source == plate.source else "both"
                kept[i] = Plate(union, other.score, other.text or plate.text, source)
                break
        else:
            kept.append(plate)
    return kept


def _inside(a: NDArray[np.float32], b: NDArray[np.float32]) -> float:
    """Share of the smaller box's area inside the other."""
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, float(x2 - x1)) * max(0.0, float(y2 - y1))
    smaller = min(float((a[2] - a[0]) * (a[3] - a[1])), float((b[2] - b[0]) * (b[3] - b[1])))
    return inter / smaller if smaller > 0 else 0.0
