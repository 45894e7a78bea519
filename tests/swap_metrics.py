"""Judges for the face swap that the swap itself does not use (shared by tests/engine and bench/swap_quality.py).

- ``seam_ratio``: gradient energy in a thin band along the blend boundary, swapped vs original.
- ``cheek_stripes``: the streak (one-directional) energy of the far cheek's fine texture after the swap, over
  the target's own cheek texture energy there (a stretched, torn far cheek smears into parallel streaks).
- ``far_cheek``: which cheek the source sees worse (its hidden side: the one a mesh swap has to stretch).
- ``HogJudge``: dlib's HOG frontal detector (realism floor: does a classical detector still see a face?).

The polygon for the seam band is rebuilt here from the landmarks (the outline with the forehead pulled down
to 35 % above the brows, shrunk 4 %), the same shape as the swap's default mask but not imported from it:
a judge should not move when the code under test moves.
"""

from __future__ import annotations

import cv2
import numpy as np

FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148,
             176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
BROWS = (70, 63, 105, 66, 107, 336, 296, 334, 293, 300)
# cheek patches between the lower eyelid, the nose side and the jaw (FaceMesh indices)
CHEEK_A = (116, 117, 118, 119, 100, 142, 203, 206, 216, 192, 213, 147, 123)
CHEEK_B = (345, 346, 347, 348, 329, 371, 423, 426, 436, 416, 433, 376, 352)


def face_polygon(points: np.ndarray, forehead_keep: float = 0.35) -> np.ndarray:
    """The face outline with the forehead pulled down towards the brows (as the default swap mask)."""
    oval = points[list(FACE_OVAL), :2].astype(np.float64)
    x_axis = points[263, :2] - points[33, :2]
    x_axis = x_axis / max(float(np.linalg.norm(x_axis)), 1e-6)
    up = np.array([x_axis[1], -x_axis[0]])
    origin = points[1, :2].astype(np.float64)
    brow_up = float(((points[list(BROWS), :2] - origin) @ up).max())
    excess = np.clip((oval - origin) @ up - brow_up, 0, None)
    oval = oval - np.outer(excess * (1 - forehead_keep), up)
    centre = oval.mean(0)
    return (oval - centre) * 0.96 + centre


def seam_ratio(original: np.ndarray, swapped: np.ndarray, landmarks: np.ndarray) -> float:
    """Gradient energy in a thin band along the blend boundary, swapped vs original (1.0 = no visible seam)."""
    band = np.zeros(original.shape[:2], np.uint8)
    polygon = np.round(face_polygon(landmarks)).astype(np.int32)
    cv2.polylines(band, [polygon], True, 255, thickness=max(3, int(np.ptp(polygon[:, 0]) * 0.04)))

    def energy(image: np.ndarray) -> float:
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32)
        gx, gy = cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1)
        return float(np.sqrt(gx ** 2 + gy ** 2)[band > 0].mean())

    return energy(swapped) / max(energy(original), 1e-6)


def _hull_width(points: np.ndarray, ids: tuple[int, ...]) -> float:
    return float(np.ptp(points[list(ids), 0]))


def far_cheek(source_landmarks: np.ndarray) -> tuple[int, ...]:
    """The cheek the source photo shows narrower (turned away): the side a swap must stretch."""
    a, b = _hull_width(source_landmarks, CHEEK_A), _hull_width(source_landmarks, CHEEK_B)
    return CHEEK_A if a < b else CHEEK_B


def cheek_mask(shape: tuple[int, ...], landmarks: np.ndarray, cheek: tuple[int, ...]) -> np.ndarray:
    mask = np.zeros(shape[:2], np.uint8)
    hull = cv2.convexHull(np.round(landmarks[list(cheek), :2]).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 255)
    size = float(np.ptp(landmarks[:, 0]))
    return cv2.erode(mask, np.ones((3, 3), np.uint8), iterations=max(1, int(size * 0.01))) > 0


def structure(image: np.ndarray, mask: np.ndarray, face_size: float) -> tuple[float, float]:
    """Eigenvalues (λ1 ≥ λ2) of the structure tensor of the fine texture (detail below ~2 % of the face
    width, band-passed) averaged inside ``mask``: λ1 - λ2 is the energy of parallel streaks, λ1 + λ2 all of it."""
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32)
    sigma = max(1.0, face_size * 0.02)
    fine = gray - cv2.GaussianBlur(gray, (0, 0), sigma)
    gx, gy = cv2.Sobel(fine, cv2.CV_32F, 1, 0), cv2.Sobel(fine, cv2.CV_32F, 0, 1)
    if mask.sum() < 16:
        return 0.0, 0.0
    jxx, jyy, jxy = float((gx * gx)[mask].mean()), float((gy * gy)[mask].mean()), float((gx * gy)[mask].mean())
    tr, det = jxx + jyy, jxx * jyy - jxy * jxy
    disc = max(tr * tr / 4 - det, 0.0) ** 0.5
    return tr / 2 + disc, tr / 2 - disc


def cheek_stripes(target: np.ndarray, swapped: np.ndarray, target_landmarks: np.ndarray,
                  source_landmarks: np.ndarray) -> float:
    """Streak energy on the far cheek (the source's hidden side) after the swap — the directional part
    λ1 - λ2 of the fine texture's structure tensor — over ALL the fine-texture energy λ1 + λ2 of the
    target's own cheek there. On the unswapped target this is its cheek's coherence (0.1-0.5); a cheek
    stretched into a striped smear scores well above 1; a smooth, skin-like cheek stays low."""
    cheek = far_cheek(source_landmarks)
    mask = cheek_mask(target.shape, target_landmarks, cheek)
    size = float(np.ptp(target_landmarks[:, 0]))
    l1, l2 = structure(swapped, mask, size)
    t1, t2 = structure(target, mask, size)
    return (l1 - l2) / max(t1 + t2, 1e-6)


class HogJudge:
    """dlib's HOG frontal detector (upsampled once, frame scaled to ≤ ``max_side``)."""

    def __init__(self, max_side: int = 640) -> None:
        import dlib

        self.hog = dlib.get_frontal_face_detector()
        self.max_side = max_side

    def boxes(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else image
        found = self.hog(cv2.cvtColor(small, cv2.COLOR_BGR2RGB), 1)
        return np.array([[r.left(), r.top(), r.right(), r.bottom()] for r in found], np.float32).reshape(-1, 4) / scale

    def finds(self, image: np.ndarray, box: np.ndarray, min_iou: float = 0.3) -> bool:
        """Whether a HOG face overlaps ``box`` (x1, y1, x2, y2) by IoU ≥ ``min_iou`` or sits with its centre in it."""
        for b in self.boxes(image):
            x1, y1 = max(b[0], box[0]), max(b[1], box[1])
            x2, y2 = min(b[2], box[2]), min(b[3], box[3])
            inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
            union = (b[2] - b[0]) * (b[3] - b[1]) + (box[2] - box[0]) * (box[3] - box[1]) - inter
            cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
            if inter / max(union, 1e-6) >= min_iou or (box[0] <= cx <= box[2] and box[1] <= cy <= box[3]):
                return True
        return False
