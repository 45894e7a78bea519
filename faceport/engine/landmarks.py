"""FaceMesh landmarks (468 points, + 10 iris points = 478) from a detection ROI, and a tracker.

The ROI follows MediaPipe: a square around the detection (or the previous frame's
landmarks), 1.5x its size, rotated so the eyes are level. The crop is one ``warpAffine``;
landmarks are mapped back through the inverse transform.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import cv2
import numpy as np
from numpy.typing import NDArray

from faceport.engine.detect import FaceDetector
from faceport.engine.models.sessions import Session
from faceport.engine.types import BGRImage, Faces

MESH_SIZE = 192
IRIS_SIZE = 64
ROI_SCALE = 1.5
EYE_ROI_SCALE = 2.3
# Mesh indices of the eye corners: (outer, inner) of the image-left eye, then the image-right eye.
LEFT_EYE_CORNERS = (33, 133)
RIGHT_EYE_CORNERS = (362, 263)
# Mesh points used for the 5-point layout (right eye centre, left eye centre, nose tip, mouth corners).
_KPS_FROM_MESH = ((33, 133), (362, 263), (1,), (61,), (291,))


@dataclass(frozen=True, slots=True)
class Roi:
    """A rotated square: centre (px), side (px), rotation (radians, counter-clockwise)."""

    cx: float
    cy: float
    size: float
    angle: float

    def crop_matrix(self, out_size: int) -> NDArray[np.float64]:
        """2x3 affine taking image pixels to crop pixels."""
        scale = out_size / self.size
        cos, sin = math.cos(self.angle) * scale, math.sin(self.angle) * scale
        # rotate by -angle around the centre, scale, then move centre to crop centre
        m = np.array([[cos, sin, 0.0], [-sin, cos, 0.0]])
        m[:, 2] = np.array([out_size / 2, out_size / 2]) - m[:, :2] @ np.array([self.cx, self.cy])
        return m


def _normalize_angle(a: float) -> float:
    return a - 2 * math.pi * math.floor((a + math.pi) / (2 * math.pi))


def roi_from_detection(xyxy: NDArray[np.float32], kps: NDArray[np.float32]) -> Roi:
    """ROI from a detection box and its eye keypoints (kps[0] right eye, kps[1] left eye)."""
    (x0, y0), (x1, y1) = kps[0], kps[1]
    angle = _normalize_angle(-math.atan2(-(float(y1) - float(y0)), float(x1) - float(x0)))
    w, h = float(xyxy[2] - xyxy[0]), float(xyxy[3] - xyxy[1])
    return Roi(float(xyxy[0]) + w / 2, float(xyxy[1]) + h / 2, max(w, h) * ROI_SCALE, angle)


def roi_from_landmarks(points: NDArray[np.float32]) -> Roi:
    """ROI for the next video frame from this frame's mesh (tracking)."""
    (x0, y0), (x1, y1) = points[LEFT_EYE_CORNERS[0], :2], points[RIGHT_EYE_CORNERS[1], :2]
    angle = _normalize_angle(-math.atan2(-(float(y1) - float(y0)), float(x1) - float(x0)))
    # size from the landmark extent in the rotated frame
    cos, sin = math.cos(angle), math.sin(angle)
    xy = points[:, :2].astype(np.float64)
    centre = (xy.min(0) + xy.max(0)) / 2
    rel = xy - centre
    rx = rel[:, 0] * cos + rel[:, 1] * sin
    ry = -rel[:, 0] * sin + rel[:, 1] * cos
    w, h = rx.max() - rx.min(), ry.max() - ry.min()
    mid_x, mid_y = (rx.max() + rx.min()) / 2, (ry.max() + ry.min()) / 2
    cx = centre[0] + mid_x * cos - mid_y * sin
    cy = centre[1] + mid_x * sin + mid_y * cos
    return Roi(float(cx), float(cy), float(max(w, h)) * ROI_SCALE, angle)


def crop_input(image: BGRImage, roi: Roi, size: int) -> tuple[NDArray[np.float32], NDArray[np.float64]]:
    """The rotated square ``roi`` cut out at ``size`` as a (1, size, size, 3) RGB 0..1 tensor, and its matrix
    (MediaPipe's FaceMesh and hand landmark models read the same input)."""
    m = roi.crop_matrix(size)
    crop = cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return (cv2.cvtColor(crop, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0)[None], m


def crop_to_image(points: NDArray[np.float32], m: NDArray[np.float64], roi_size: float, crop_size: int,
              flip: bool = False) -> NDArray[np.float32]:
    """Points of a crop (x, y in crop pixels, z in crop units) back in image pixels."""
    pts = points.astype(np.float64).copy()
    if flip:
        pts[:, 0] = crop_size - pts[:, 0]
    inv = cv2.invertAffineTransform(m)
    xy = pts[:, :2] @ inv[:, :2].T + inv[:, 2]
    z = pts[:, 2] * (roi_size / crop_size)
    return np.concatenate([xy, z[:, None]], axis=1).astype(np.float32)


def kps_from_mesh(points: NDArray[np.float32]) -> NDArray[np.float32]:
    """The 5-point layout (r eye, l eye, nose, r mouth, l mouth) from 468 mesh points."""
    return np.stack([points[list(ids), :2].mean(0) for ids in _KPS_FROM_MESH]).astype(np.float32)


class FaceMesh:
    """468-point FaceMesh with optional iris refinement (478 points).

    Args:
        mesh: session of ``face_landmark.tflite`` (192x192 RGB in [0, 1]; outputs 1404 coords
            and a face-presence logit).
        iris: optional session of ``iris_landmark.tflite`` (64x64 eye crop; outputs 71 eye
            contour points and 5 iris points).
    """

    MESH_INPUT = "input_1"
    MESH_OUTPUT = 0  # (1, 1, 1, 1404) x, y, z in crop pixels
    FLAG_OUTPUT = 1  # (1, 1, 1, 1) face presence logit
    IRIS_INPUT = "input_1"
    IRIS_OUTPUT = 1  # (1, 15) 5 x (x, y, z)

    def __init__(self, mesh: Session, iris: Session | None = None) -> None:
        self.mesh = mesh
        self.iris = iris

    def run_roi(self, image: BGRImage, roi: Roi) -> tuple[NDArray[np.float32], float]:
        """Landmarks (468|478, 3) in image pixels and the face-presence probability."""
        tensor, m = crop_input(image, roi, MESH_SIZE)
        outputs = self.mesh.run({self.MESH_INPUT: tensor})
        raw = outputs[self.MESH_OUTPUT].reshape(468, 3)
        presence = float(1.0 / (1.0 + math.exp(-float(np.clip(outputs[self.FLAG_OUTPUT].ravel()[0], -50, 50)))))
        points = crop_to_image(raw, m, roi.size, MESH_SIZE)
        if self.iris is not None:
            points = np.concatenate([points, self._iris(image, points)], axis=0)
        return points, presence

    def _iris(self, image: BGRImage, points: NDArray[np.float32]) -> NDArray[np.float32]:
        assert self.iris is not None
        out = []
        for corners, flip in ((LEFT_EYE_CORNERS, False), (RIGHT_EYE_CORNERS, True)):
            a, b = points[corners[0], :2], points[corners[1], :2]
            # the crop is level with the eye line; the second eye is then mirrored, as the model expects
            angle = _normalize_angle(-math.atan2(-(float(b[1]) - float(a[1])), float(b[0]) - float(a[0])))
            centre = (a + b) / 2
            roi = Roi(float(centre[0]), float(centre[1]), float(np.linalg.norm(b - a)) * EYE_ROI_SCALE, angle)
            m = roi.crop_matrix(IRIS_SIZE)
            crop = cv2.warpAffine(image, m, (IRIS_SIZE, IRIS_SIZE), flags=cv2.INTER_LINEAR)
            if flip:
                crop = crop[:, ::-1]
            tensor = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
            iris = self.iris.run({self.IRIS_INPUT: tensor[None]})[self.IRIS_OUTPUT].reshape(5, 3)
            out.append(crop_to_image(iris, m, roi.size, IRIS_SIZE, flip=flip))
        return np.concatenate(out, axis=0)

    def landmarks(self, image: BGRImage, faces: Faces) -> Faces:
        """Add ``landmarks`` (n, 468|478, 3) for every face (needs ``kps``); returns a new Faces."""
        if len(faces) == 0:
            return faces
        if faces.kps is None:
            raise ValueError("FaceMesh.landmarks needs faces with keypoints")
        meshes = [self.run_roi(image, roi_from_detection(faces.xyxy[i], faces.kps[i]))[0] for i in range(len(faces))]
        return replace(faces, landmarks=np.stack(meshes).astype(np.float32))


def _mesh_box(points: NDArray[np.float32]) -> NDArray[np.float32]:
    xy = points[:468, :2]
    return np.concatenate([xy.min(0), xy.max(0)]).astype(np.float32)


def _iou(a: NDArray[np.float32], b: NDArray[np.float32]) -> float:
    w = min(float(a[2]), float(b[2])) - max(float(a[0]), float(b[0]))
    h = min(float(a[3]), float(b[3])) - max(float(a[1]), float(b[1]))
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = float((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])) - inter
    return inter / union if union > 0 else 0.0


def mesh_is_sane(points: NDArray[np.float32], roi: Roi) -> bool:
    """Landmark sanity: the mesh is finite, about the size the ROI was cut for, and inside it.

    The ROI is 1.5x the face (``ROI_SCALE``), so a mesh that fits its face spans about 2/3 of
    the ROI side; one that collapsed (< 0.3) or overflows it (> 1.1), or whose centre left the
    ROI's inner part, is following no face.
    """
    xy = points[:468, :2]
    if not np.isfinite(xy).all():
        return False
    box = _mesh_box(points)
    side = float(max(box[2] - box[0], box[3] - box[1]))
    if not 0.3 * roi.size <= side <= 1.1 * roi.size:
        return False
    cx, cy = float(box[0] + box[2]) / 2, float(box[1] + box[3]) / 2
    return math.hypot(cx - roi.cx, cy - roi.cy) <= 0.3 * roi.size


@dataclass
class _Track:
    roi: Roi
    points: NDArray[np.float32]
    presence: float


class FaceMeshTracker:
    """Landmarks over video frames: detect once, then follow each face from its previous mesh.

    Detection runs on the first frame, every ``redetect_every`` frames, and at once on any
    frame where a tracked face is lost, so no frame is ever returned without trying detection
    when tracking failed. A tracked face is lost when its FaceMesh presence falls below
    ``min_presence`` or its landmarks fail :func:`mesh_is_sane`.

    A fresh detection is kept when its mesh presence reaches ``min_presence``, or, with
    ``trust_detector``, when the detector vouches for the face and the mesh agrees with it
    (sane, and its box overlaps the detection box by IoU >= ``min_detection_iou``): FaceMesh's
    presence score is low on faces the detector finds well (heavily compressed, small,
    turned), and dropping them lost most frames of such streams. ``fallback`` (e.g.
    CenterFace, slower) runs when the detector finds nothing: on every such frame within
    ``fallback_window`` frames of the last face (a face just lost: turned, blurred), otherwise
    once per ``redetect_every`` frames, so that a scene without faces does not pay for it on
    every frame.
    """

    def __init__(self, mesh: FaceMesh, detector: FaceDetector, *, max_faces: int = 1,
                 redetect_every: int = 30, min_presence: float = 0.5, score_threshold: float | None = None,
                 fallback: FaceDetector | None = None, trust_detector: bool = False,
                 min_detection_iou: float = 0.4, fallback_window: int = 15) -> None:
        self.mesh = mesh
        self.detector = detector
        self.fallback = fallback
        self.score_threshold = score_threshold
        self.max_faces = max_faces
        self.redetect_every = redetect_every
        self.min_presence = min_presence
        self.trust_detector = trust_detector
        self.min_detection_iou = min_detection_iou
        self.fallback_window = fallback_window
        self._tracks: list[_Track] = []
        self._frame = 0
        self._last_face = -(10**9)  # frame number of the last frame with a face
        self._last_fallback = -(10**9)
        self.detections_run = 0
        self.fallbacks_run = 0

    def reset(self) -> None:
        self._tracks = []
        self._frame = 0
        self._last_face = self._last_fallback = -(10**9)

    def _keep(self, image: BGRImage, box: NDArray[np.float32], kps: NDArray[np.float32]) -> _Track | None:
        roi = roi_from_detection(box, kps)
        points, presence = self.mesh.run_roi(image, roi)
        if presence >= self.min_presence:
            return _Track(roi, points, presence)
        if not self.trust_detector:
            return None
        # one refinement from the mesh itself (as MediaPipe tracks): a better-centred crop
        refined_roi = roi_from_landmarks(points[:468])
        refined, refined_presence = self.mesh.run_roi(image, refined_roi)
        if refined_presence > presence:
            roi, points, presence = refined_roi, refined, refined_presence
        if presence >= self.min_presence:
            return _Track(roi, points, presence)
        if mesh_is_sane(points, roi) and _iou(_mesh_box(points), box) >= self.min_detection_iou:
            return _Track(roi, points, presence)
        return None

    def _detect(self, image: BGRImage) -> list[_Track]:
        self.detections_run += 1
        faces = self.detector.detect(image, max_faces=self.max_faces, score_threshold=self.score_threshold)
        if len(faces) == 0 and self.fallback is not None and (
                self._frame - self._last_face <= self.fallback_window
                or self._frame - self._last_fallback >= self.redetect_every):
            self.fallbacks_run += 1
            self._last_fallback = self._frame
            faces = self.fallback.detect(image, max_faces=self.max_faces)
        tracks = []
        for i in range(len(faces)):
            assert faces.kps is not None
            track = self._keep(image, faces.xyxy[i], faces.kps[i])
            if track is not None:
                tracks.append(track)
        return tracks

    def _lost(self, track: _Track) -> bool:
        if track.presence < self.min_presence:
            return True
        return self.trust_detector and not mesh_is_sane(track.points, track.roi)

    def process(self, image: BGRImage) -> Faces:
        """Faces with landmarks (boxes from the mesh extent, score = mesh presence) for one frame."""
        due = self._frame % self.redetect_every == 0
        self._frame += 1
        tracks: list[_Track] = []
        if not due and self._tracks:
            for track in self._tracks:
                roi = roi_from_landmarks(track.points[:468])
                points, presence = self.mesh.run_roi(image, roi)
                followed = _Track(roi, points, presence)
                if self._lost(followed):
                    tracks = []
                    break
                tracks.append(followed)
        if not tracks:
            tracks = self._detect(image)
        self._tracks = tracks
        if tracks:
            self._last_face = self._frame
        return faces_from_tracks(tracks)


def faces_from_tracks(tracks: list[_Track]) -> Faces:
    if not tracks:
        return Faces.empty()
    points = np.stack([t.points for t in tracks]).astype(np.float32)
    xy = points[:, :468, :2]
    boxes = np.concatenate([xy.min(1), xy.max(1)], axis=1).astype(np.float32)
    kps = np.stack([kps_from_mesh(p) for p in points])
    return Faces(boxes, np.array([t.presence for t in tracks], np.float32), kps, points)
