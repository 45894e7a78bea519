"""Hands: MediaPipe's palm detector and 21-point hand landmarks, for keeping a hand over a face on top.

Two models from the mediapipe wheel (Apache-2.0), run through the ``Session`` protocol:

1. ``palm_detection_lite.tflite`` on the whole image letterboxed (zero border), or on one square of it
   (around a face: a hand in a large frame is otherwise a few pixels), into 192x192 RGB in [0, 1].
   It is an SSD over 2016 anchors — 24x24 cells x 2 (stride 8) and 12x12 cells x 6 (three stride-16
   layers sharing one grid) — with fixed unit-size anchors, so a box is the anchor centre plus an
   offset, and the size is the raw value; both in 192ths of the input. Each box carries 7 palm
   keypoints (0: wrist, 2: middle-finger base). Scores are sigmoids; MediaPipe's graph keeps boxes
   over 0.5 (the swap goes down to 0.1 and lets the landmark model's presence reject false palms) and
   merges them by weighted non-maximum suppression (IoU 0.3).
2. ``hand_landmark_lite.tflite`` on a rotated square crop per palm: the crop is turned so the
   wrist-to-middle-finger direction points up, centred half a palm towards the fingers and
   2.6 times the palm box (so the whole hand, fingers spread, fits). It returns 21 points
   (x, y, z in 224-pixel crop units) and a hand-presence probability.

The result is a :class:`Hands` of row-aligned arrays in image pixels, and :func:`hand_silhouette`
draws the hand's area (its palm polygon and finger bones, drawn as thick as a finger).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
from numpy.typing import NDArray

from faceport.engine.landmarks import Roi, crop_input, crop_to_image
from faceport.engine.models.sessions import Session
from faceport.engine.types import BGRImage

PALM_SIZE = 192
HAND_SIZE = 224
NUM_ANCHORS = 2016
# the palm detector's SSD layers: (stride, anchors per cell); consecutive layers of one stride share a grid
_ANCHOR_LAYERS = ((8, 2), (16, 6))
PALM_SCORE = 0.5
PALM_NMS_IOU = 0.3
PRESENCE_THRESHOLD = 0.5
ROI_SCALE = 2.6  # the hand crop's side, in palm-box sides
ROI_SHIFT = -0.5  # the crop centre moves half a palm box towards the fingers
WRIST, MIDDLE_BASE = 0, 2  # palm keypoints that give the hand's direction

# 21 hand landmarks: 0 wrist; thumb 1-4; index 5-8; middle 9-12; ring 13-16; little 17-20
PALM = (0, 1, 2, 5, 9, 13, 17)
BONES = ((0, 1), (1, 2), (2, 3), (3, 4), (5, 6), (6, 7), (7, 8), (9, 10), (10, 11), (11, 12),
         (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20), (5, 9), (9, 13), (13, 17))


@dataclass(frozen=True, slots=True)
class Hands:
    """Hands in one image; every array has n rows, n may be 0.

    ``palm`` is the palm detector's box (x0, y0, x1, y1 pixels) and score; ``landmarks`` the 21 points
    (x, y pixels; z relative depth in pixels, the wrist's about 0), ``presence`` the landmark model's
    hand-presence probability.
    """

    palm: NDArray[np.float32]  # (n, 4)
    score: NDArray[np.float32]  # (n,)
    landmarks: NDArray[np.float32]  # (n, 21, 3)
    presence: NDArray[np.float32]  # (n,)

    def __post_init__(self) -> None:
        n = len(self.score)
        for name, arr, tail in (("palm", self.palm, (4,)), ("landmarks", self.landmarks, (21, 3)),
                                ("presence", self.presence, ())):
            if arr.shape != (n, *tail):
                raise ValueError(f"Hands.{name}: expected shape {(n, *tail)}, got {arr.shape}")

    def __len__(self) -> int:
        return len(self.score)

    def __getitem__(self, idx: int | slice | NDArray[np.bool_] | NDArray[np.intp]) -> Hands:
        if isinstance(idx, int):
            idx = slice(idx, idx + 1)
        return Hands(self.palm[idx], self.score[idx], self.landmarks[idx], self.presence[idx])

    @classmethod
    def empty(cls) -> Hands:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 21, 3), np.float32),
                   np.zeros(0, np.float32))


@lru_cache(maxsize=1)
def palm_anchors() -> NDArray[np.float32]:
    """(2016, 2) anchor centres of the palm detector, in [0, 1] of its input, in the model's output order."""
    centres = []
    for stride, per_cell in _ANCHOR_LAYERS:
        cells = PALM_SIZE // stride
        ys, xs = np.mgrid[0:cells, 0:cells]
        grid = np.stack([(xs + 0.5) / cells, (ys + 0.5) / cells], -1).reshape(-1, 1, 2)
        centres.append(np.repeat(grid, per_cell, axis=1).reshape(-1, 2))
    out = np.concatenate(centres).astype(np.float32)
    if len(out) != NUM_ANCHORS:
        raise ValueError(f"palm anchors: expected {NUM_ANCHORS}, built {len(out)}")
    return out


def _weighted_nms(boxes: NDArray[np.float32], keypoints: NDArray[np.float32], scores: NDArray[np.float32],
                  iou_threshold: float) -> list[tuple[NDArray[np.float32], NDArray[np.float32], float]]:
    """MediaPipe's weighted NMS: each cluster around the best remaining box becomes its score-weighted mean."""
    order = np.argsort(-scores)
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    remaining = np.ones(len(scores), bool)
    out = []
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    for i in range(len(scores)):
        if not remaining[i]:
            continue
        x0 = np.maximum(boxes[i, 0], boxes[:, 0])
        y0 = np.maximum(boxes[i, 1], boxes[:, 1])
        x1 = np.minimum(boxes[i, 2], boxes[:, 2])
        y1 = np.minimum(boxes[i, 3], boxes[:, 3])
        inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
        iou = inter / np.maximum(area[i] + area - inter, 1e-9)
        cluster = remaining & (iou > iou_threshold)
        cluster[i] = True
        w = scores[cluster][:, None]
        box = (boxes[cluster] * w).sum(0) / w.sum()
        kps = (keypoints[cluster] * w[:, :, None]).sum(0) / w.sum()
        out.append((box.astype(np.float32), kps.astype(np.float32), float(scores[i])))
        remaining &= ~cluster
    return out


class HandLandmarker:
    """Palm detection + hand landmarks on one image (no per-call state; a video caller runs it per frame).

    Args:
        palm: session of ``palm_detection_lite.tflite`` (1x192x192x3 RGB in [0, 1]; outputs (1, 2016, 18)
            boxes + 7 keypoints, (1, 2016, 1) score logits).
        landmark: session of ``hand_landmark_lite.tflite`` (1x224x224x3 RGB in [0, 1]; outputs 63 coordinates,
            presence, handedness, 63 world coordinates).
    """

    PALM_INPUT = "input_1"
    PALM_BOXES, PALM_SCORES = 0, 1
    HAND_INPUT = "input_1"
    HAND_POINTS, HAND_PRESENCE = 0, 1

    def __init__(self, palm: Session, landmark: Session) -> None:
        self.palm = palm
        self.landmark = landmark

    def detect_palms(self, image: BGRImage, score_threshold: float = PALM_SCORE,
                     region: tuple[float, float, float] | None = None
                     ) -> list[tuple[NDArray[np.float32], NDArray[np.float32], float]]:
        """Palms as (box xyxy pixels, 7 keypoints (7, 2) pixels, score), best first.

        ``region`` (centre x, centre y, side in pixels) searches one square of the image (zero outside it)
        instead of the whole image letterboxed: a hand a few tens of pixels wide in a large frame is a few
        pixels in the detector's 192x192 input, too small to be found.
        """
        h, w = image.shape[:2]
        if region is None:
            side = max(h, w)
            pad_x, pad_y = (side - w) // 2, (side - h) // 2
            square = cv2.copyMakeBorder(image, pad_y, side - h - pad_y, pad_x, side - w - pad_x,
                                        cv2.BORDER_CONSTANT, value=(0, 0, 0))
            resized = cv2.resize(square, (PALM_SIZE, PALM_SIZE), interpolation=cv2.INTER_AREA)
        else:
            cx, cy, side_f = region
            side = max(8, round(side_f))
            x0, y0 = round(cx - side / 2), round(cy - side / 2)
            square = np.zeros((side, side, 3), np.uint8)
            sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(w, x0 + side), min(h, y0 + side)
            if sx1 > sx0 and sy1 > sy0:
                square[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = image[sy0:sy1, sx0:sx1]
            pad_x, pad_y = -x0, -y0
            resized = cv2.resize(square, (PALM_SIZE, PALM_SIZE),
                                 interpolation=cv2.INTER_AREA if side > PALM_SIZE else cv2.INTER_LINEAR)
        tensor = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
        outputs = self.palm.run({self.PALM_INPUT: tensor[None]})
        raw = outputs[self.PALM_BOXES].reshape(NUM_ANCHORS, 18)
        logits = np.clip(outputs[self.PALM_SCORES].reshape(NUM_ANCHORS), -100.0, 100.0)
        scores = 1.0 / (1.0 + np.exp(-logits))
        keep = scores > score_threshold
        if not keep.any():
            return []
        anchors = palm_anchors()[keep]
        raw, scores = raw[keep] / PALM_SIZE, scores[keep].astype(np.float32)
        centre = raw[:, :2] + anchors
        half = raw[:, 2:4] / 2
        boxes = np.concatenate([centre - half, centre + half], 1) * side - np.array([pad_x, pad_y] * 2)
        keypoints = (raw[:, 4:].reshape(-1, 7, 2) + anchors[:, None]) * side - np.array([pad_x, pad_y])
        return _weighted_nms(boxes.astype(np.float32), keypoints.astype(np.float32), scores, PALM_NMS_IOU)

    @staticmethod
    def roi_from_palm(box: NDArray[np.float32], keypoints: NDArray[np.float32]) -> Roi:
        """The rotated square crop around a palm: fingers up, 2.6 palm boxes wide, shifted towards the fingers."""
        (x0, y0), (x1, y1) = keypoints[WRIST], keypoints[MIDDLE_BASE]
        angle = math.pi / 2 - math.atan2(-(float(y1) - float(y0)), float(x1) - float(x0))
        angle = angle - 2 * math.pi * math.floor((angle + math.pi) / (2 * math.pi))
        bw, bh = float(box[2] - box[0]), float(box[3] - box[1])
        cx, cy = float(box[0]) + bw / 2, float(box[1]) + bh / 2
        # the shift is along the crop's own up axis (towards the fingers)
        cx -= bh * ROI_SHIFT * math.sin(angle)
        cy += bh * ROI_SHIFT * math.cos(angle)
        return Roi(cx, cy, max(bw, bh) * ROI_SCALE, angle)

    def landmarks_in(self, image: BGRImage, roi: Roi) -> tuple[NDArray[np.float32], float]:
        """21 hand points (x, y, z) in image pixels from one crop, and the hand-presence probability."""
        tensor, m = crop_input(image, roi, HAND_SIZE)
        outputs = self.landmark.run({self.HAND_INPUT: tensor})
        presence = float(np.asarray(outputs[self.HAND_PRESENCE]).ravel()[0])
        return crop_to_image(outputs[self.HAND_POINTS].reshape(21, 3), m, roi.size, HAND_SIZE), presence

    def detect(self, image: BGRImage, *, max_hands: int = 4, score_threshold: float = PALM_SCORE,
               presence_threshold: float = PRESENCE_THRESHOLD, region: tuple[float, float, float] | None = None
               ) -> Hands:
        """Hands in a BGR image (palms, then landmarks per palm); none found is ``Hands.empty()``.

        ``region``: search one square (centre x, centre y, side), see :meth:`detect_palms`.

        Raises:
            ValueError: ``image`` is not (H, W, 3) uint8.
        """
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"HandLandmarker.detect: expected (H, W, 3) uint8, got {image.shape} {image.dtype}")
        rows = []
        for box, kps, score in self.detect_palms(image, score_threshold, region)[:max_hands]:
            points, presence = self.landmarks_in(image, self.roi_from_palm(box, kps))
            if presence >= presence_threshold:
                rows.append((box, score, points, presence))
        if not rows:
            return Hands.empty()
        return Hands(np.stack([r[0] for r in rows]).astype(np.float32), np.array([r[1] for r in rows], np.float32),
                     np.stack([r[2] for r in rows]).astype(np.float32), np.array([r[3] for r in rows], np.float32))


def hand_silhouette(landmarks: NDArray[np.float32], shape: tuple[int, int], offset: tuple[float, float] = (0.0, 0.0),
                    grow: float = 0.0) -> NDArray[np.uint8]:
    """A 0/255 mask of the hands' area: each palm polygon plus its finger bones drawn a finger thick.

    Args:
        landmarks: (n, 21, 2+) hand points in image pixels.
        shape: (height, width) of the mask.
        offset: image pixel that is the mask's (0, 0).
        grow: extra margin, as a fraction of each hand's palm width (index base to little-finger base).
    """
    mask = np.zeros(shape, np.uint8)
    origin = np.asarray(offset, np.float64)
    for hand in landmarks:
        xy = hand[:, :2].astype(np.float64) - origin
        palm_width = float(np.linalg.norm(xy[5] - xy[17]))
        palm_length = float(np.linalg.norm(xy[0] - xy[9]))
        width = max(palm_width, 0.6 * palm_length, 1.0)
        # a finger is about a quarter of the palm's width; its outline lies half that beyond the bone
        thickness = max(1, round(width * (0.3 + 2 * grow)))
        pts = np.round(xy).astype(np.int32)
        cv2.fillPoly(mask, [cv2.convexHull(pts[list(PALM)])], 255)
        for a, b in BONES:
            cv2.line(mask, tuple(int(v) for v in pts[a]), tuple(int(v) for v in pts[b]), 255, thickness,
                     cv2.LINE_8)
        for tip in (4, 8, 12, 16, 20):
            cv2.circle(mask, tuple(int(v) for v in pts[tip]), thickness // 2, 255, -1)
        if grow > 0:
            k = max(3, int(width * grow) | 1)
            palm = np.zeros(shape, np.uint8)
            cv2.fillPoly(palm, [cv2.convexHull(pts[list(PALM)])], 255)
            mask |= np.asarray(cv2.dilate(palm, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))), np.uint8)
    return mask


__all__ = ["HAND_SIZE", "PALM_SIZE", "HandLandmarker", "Hands", "hand_silhouette", "palm_anchors"]
