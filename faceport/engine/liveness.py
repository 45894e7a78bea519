"""Heuristic face liveness (presentation-attack) checks over a client's recent frames. No learned
anti-spoof model is used; every result names its method.

Per frame, passive cues (:func:`faceport.engine.antispoof.assess_spoof`: the print or device frame
round the face, moire, gamut). They decide once a print or screen is seen in ``passive_fraction``
of the window (``passive:<cue>``), or when the frame's sides seen over the window add up to a
frame (``passive:frame_window``: a device held still keeps its edges where they are while the face
on it moves; a room's lines beside a head do not add up to four sides).

Temporal (a :class:`LivenessTracker` per stream, frames in memory only):

- ``planar_motion``: a photo or a screen tilted in the hand moves as a rigid plane, so the image
  features of the face region between two frames are explained by one homography. ORB features
  of the face crop are matched and both a RANSAC homography and a similarity (rotation, scale,
  shift) fitted; a pair counts as planar when the face moved (median displacement over
  ``planar_min_displacement`` px of a 256-px crop), the homography explains at least
  ``planar_min_inliers`` of the matches and at least ``planar_min_gain`` more than the similarity.
  A real head shows parallax (nose against cheeks) and non-rigid changes; small or in-plane motion
  (a real head between two consecutive 24 fps frames) fits both models and is no evidence.
- ``frozen_frame``: the same still resent: consecutive face crops differ by less than sensor noise.
- ``still_face``: no blink and the face within ``still_max_displacement`` crop pixels of an anchor
  frame for ``still_frames`` frames spanning ``still_seconds``: a photo held still, whatever noise
  is added to it (ORB keypoints sit on the photo's structure, not on the noise).
- ``blink`` (eye aspect ratio from the FaceMesh eye contour) and ``micro_motion`` (non-rigid
  landmark motion left after an affine fit) are reported as live signals; a blink in the window
  vetoes a planar-motion decision and restarts the still-face count.

:func:`single_image_liveness` (moire and a border on 3-4 sides) is the older single-image check,
kept for callers of it; :mod:`faceport.engine.antispoof` replaces it.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import cv2
import numpy as np
from numpy.typing import NDArray

from faceport.engine.antispoof import SIDE_WEIGHTS, SpoofAssessment, SpoofOptions, assess_spoof
from faceport.engine.types import BGRImage, Faces

CROP_SIZE = 256
# FaceMesh eye contour points: (corner, corner, top1, bottom1, top2, bottom2) per eye.
_EYES = ((33, 133, 159, 145, 158, 153), (362, 263, 386, 374, 385, 380))


@dataclass(frozen=True, slots=True)
class LivenessOptions:
    """Thresholds of the heuristic checks (crop pixels refer to a 256x256 face crop)."""

    window: int = 6  # frames kept per stream
    min_pairs: int = 3  # frame pairs needed before a temporal decision
    planar_min_displacement: float = 2.0
    planar_min_inliers: float = 0.7
    planar_fraction: float = 0.6  # share of moving pairs that must be planar
    frozen_max_difference: float = 0.4  # mean absolute grey difference of two crops
    blink_drop: float = 0.65  # EAR below this share of the window median = a blink
    moire_threshold: float = 1000.0
    border_threshold: float = 0.75
    # A pair is planar evidence only when a homography explains the matches clearly better than a
    # similarity (rotation, scale, shift): small or in-plane motion (a real head between two
    # consecutive 24 fps frames) fits both and says nothing.
    planar_min_gain: float = 0.2
    # Passive cues (faceport.engine.antispoof) over the window: spoof when this share of the frames
    # (at least min_pairs + 1 of them) was judged a print or screen.
    passive_fraction: float = 0.5
    # Still face: no blink and the face region moved under still_max_displacement crop pixels away
    # from an anchor frame for still_frames frames spanning still_seconds: a photo (noise added or
    # not) held still. A live person blinks or moves within seconds.
    still_max_displacement: float = 2.0
    still_frames: int = 12
    still_seconds: float = 8.0


@dataclass(frozen=True, slots=True)
class LivenessResult:
    """One liveness decision.

    Attributes:
        live: False when a check found a presentation attack.
        score: spoof score in [0, 1] of the deciding method (higher = more likely a spoof).
        method: the check that decided (``planar_motion``, ``frozen_frame``, ``moire``,
            ``border``, or ``insufficient_frames`` / ``temporal`` when nothing fired).
        details: every measured value, by name.
    """

    live: bool
    score: float
    method: str
    details: dict[str, float] = field(default_factory=dict)


def face_crop(image: BGRImage, xyxy: NDArray[np.float32], *, margin: float = 0.25) -> NDArray[np.uint8]:
    """A square grey (256, 256) uint8 crop around a face box, enlarged by ``margin`` per side."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in xyxy[:4])
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    half = max(x2 - x1, y2 - y1) * (0.5 + margin)
    a, b = int(max(0, cx - half)), int(max(0, cy - half))
    c, d = int(min(w, cx + half)), int(min(h, cy + half))
    if c - a < 4 or d - b < 4:
        return np.zeros((CROP_SIZE, CROP_SIZE), np.uint8)
    gray = cv2.cvtColor(image[b:d, a:c], cv2.COLOR_BGR2GRAY)
    return np.asarray(cv2.resize(gray, (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_AREA), np.uint8)


def _native_crop(image: BGRImage, xyxy: NDArray[np.float32]) -> NDArray[np.uint8]:
    h, w = image.shape[:2]
    x1, y1 = max(0, int(xyxy[0])), max(0, int(xyxy[1]))
    x2, y2 = min(w, int(xyxy[2])), min(h, int(xyxy[3]))
    if x2 - x1 < 2 or y2 - y1 < 2:
        return np.zeros((0, 0), np.uint8)
    return np.asarray(cv2.cvtColor(image[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY), np.uint8)


def eye_aspect_ratio(landmarks: NDArray[np.float32]) -> float:
    """Mean eye aspect ratio of both eyes from (468|478, 2|3) FaceMesh points; ~0.25-0.35 open, <0.15 closed."""
    ratios = []
    for c1, c2, t1, b1, t2, b2 in _EYES:
        p = landmarks[:, :2].astype(np.float64)
        width = float(np.linalg.norm(p[c1] - p[c2]))
        height = float(np.linalg.norm(p[t1] - p[b1]) + np.linalg.norm(p[t2] - p[b2])) / 2
        ratios.append(height / max(width, 1e-6))
    return float(np.mean(ratios))


def non_rigid_motion(a: NDArray[np.float32], b: NDArray[np.float32]) -> float:
    """Landmark motion left after the best affine map from ``a`` to ``b``, relative to face size."""
    pa, pb = a[:468, :2].astype(np.float64), b[:468, :2].astype(np.float64)
    centre = pa.mean(0)
    scale = max(float(np.sqrt(((pa - centre) ** 2).sum(1).mean())), 1e-6)
    an, bn = (pa - centre) / scale, (pb - centre) / scale
    design = np.c_[an, np.ones(len(an))]
    coef, *_ = np.linalg.lstsq(design, bn, rcond=None)
    return float(np.sqrt(((design @ coef - bn) ** 2).sum(1)).mean())


@dataclass(frozen=True, slots=True)
class PairMotion:
    """How the face region moved between two crops."""

    matches: int
    inlier_ratio: float
    displacement: float  # median feature displacement, crop pixels
    difference: float  # mean absolute grey difference
    similarity_ratio: float = 0.0  # share of matches a similarity transform explains (same tolerance)


@dataclass(frozen=True, slots=True)
class CropFeatures:
    """A grey face crop with its ORB keypoint positions and descriptors (computed once per frame)."""

    crop: NDArray[np.uint8]
    points: NDArray[np.float32]  # (k, 2)
    descriptors: NDArray[np.uint8] | None


def crop_features(crop: NDArray[np.uint8]) -> CropFeatures:
    """ORB (500 features) of a (256, 256) grey face crop."""
    keypoints, descriptors = cv2.ORB.create(500).detectAndCompute(crop, None)
    points = np.array([k.pt for k in keypoints], np.float32).reshape(-1, 2)
    return CropFeatures(crop, points, None if descriptors is None else np.asarray(descriptors, np.uint8))


def pair_motion(prev: NDArray[np.uint8] | CropFeatures, cur: NDArray[np.uint8] | CropFeatures) -> PairMotion:
    """Fit one homography (and a similarity) to ORB matches between two (256, 256) grey face crops."""
    a = prev if isinstance(prev, CropFeatures) else crop_features(prev)
    b = cur if isinstance(cur, CropFeatures) else crop_features(cur)
    difference = float(np.abs(a.crop.astype(np.int16) - b.crop.astype(np.int16)).mean())
    if a.descriptors is None or b.descriptors is None:
        return PairMotion(0, 0.0, 0.0, difference)
    matches = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(a.descriptors, b.descriptors)
    if len(matches) < 12:
        return PairMotion(len(matches), 0.0, 0.0, difference)
    p1 = a.points[[m.queryIdx for m in matches]]
    p2 = b.points[[m.trainIdx for m in matches]]
    homography, mask = cv2.findHomography(p1, p2, cv2.RANSAC, 2.0)
    if homography is None or mask is None:
        return PairMotion(len(matches), 0.0, 0.0, difference)
    inliers = mask.ravel().astype(bool)
    displacement = float(np.median(np.linalg.norm(p2[inliers] - p1[inliers], axis=1))) if inliers.any() else 0.0
    _, similar = cv2.estimateAffinePartial2D(p1, p2, method=cv2.RANSAC, ransacReprojThreshold=2.0)
    similarity = float(similar.mean()) if similar is not None else 0.0
    return PairMotion(len(matches), float(inliers.mean()), displacement, difference, similarity)


def moire_score(crop: NDArray[np.uint8]) -> float:
    """Strongest isolated peak of the high-frequency spectrum of a grey face crop at native resolution.

    Each frequency's magnitude is divided by the median of its ring (same radius), so the
    natural 1/f fall-off and upscaling blur cancel out; a screen's pixel grid beating
    against the camera's leaves narrow peaks many times their ring's median. Crops under
    64 px carry too little high frequency and score 0 (inconclusive).
    """
    if min(crop.shape[:2]) < 64:
        return 0.0
    side = min(crop.shape[0], crop.shape[1], 256)
    g = cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA).astype(np.float64)
    g = (g - g.mean()) * np.outer(np.hanning(side), np.hanning(side))
    spectrum = np.log1p(np.abs(np.fft.fftshift(np.fft.fft2(g))))
    yy, xx = np.mgrid[:side, :side]
    ring = np.round(np.hypot(yy - side / 2, xx - side / 2)).astype(np.int64)
    lo, hi = int(side * 0.15), int(side * 0.45)
    best = 0.0
    for r in range(lo, hi):
        values = spectrum[ring == r]
        spread = float(np.median(np.abs(values - np.median(values)))) + 1e-6
        best = max(best, float((values.max() - np.median(values)) / spread))
    return best


def border_score(image: BGRImage, xyxy: NDArray[np.float32]) -> float:
    """Share of the four sides around a face (within 2.5 face sizes) that hold a long straight edge.

    A hand-held photo or phone shows its frame as straight lines parallel to the face box
    on three or four sides; a room rarely frames a face that way. Returns 0, 0.25, ... 1.
    """
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in xyxy[:4])
    fw, fh = x2 - x1, y2 - y1
    a, b = int(max(0, x1 - 1.25 * fw)), int(max(0, y1 - 1.0 * fh))
    c, d = int(min(w, x2 + 1.25 * fw)), int(min(h, y2 + 1.5 * fh))
    region = cv2.cvtColor(image[b:d, a:c], cv2.COLOR_BGR2GRAY)
    if region.size == 0:
        return 0.0
    edges = cv2.Canny(cv2.GaussianBlur(region, (5, 5), 0), 60, 160)
    lines = cv2.HoughLinesP(edges, 1, np.pi / 180, threshold=60, minLineLength=int(0.8 * min(fw, fh)),
                            maxLineGap=8)
    if lines is None:
        return 0.0
    fx1, fy1, fx2, fy2 = x1 - a, y1 - b, x2 - a, y2 - b
    sides = set()
    for lx1, ly1, lx2, ly2 in lines[:, 0, :].astype(np.float64):
        dx, dy = lx2 - lx1, ly2 - ly1
        if abs(dy) <= 0.15 * abs(dx):  # horizontal
            y = (ly1 + ly2) / 2
            spans = min(lx1, lx2) <= fx1 + 0.2 * fw and max(lx1, lx2) >= fx2 - 0.2 * fw
            if spans and y < fy1 - 0.1 * fh:
                sides.add("top")
            elif spans and y > fy2 + 0.1 * fh:
                sides.add("bottom")
        elif abs(dx) <= 0.15 * abs(dy):  # vertical
            x = (lx1 + lx2) / 2
            spans = min(ly1, ly2) <= fy1 + 0.2 * fh and max(ly1, ly2) >= fy2 - 0.2 * fh
            if spans and x < fx1 - 0.1 * fw:
                sides.add("left")
            elif spans and x > fx2 + 0.1 * fw:
                sides.add("right")
    return len(sides) / 4


def single_image_liveness(image: BGRImage, xyxy: NDArray[np.float32],
                          options: LivenessOptions | None = None) -> LivenessResult:
    """Screen moire and a rectangular border around one face in one image."""
    opts = options or LivenessOptions()
    moire = moire_score(_native_crop(image, xyxy))
    border = border_score(image, xyxy)
    details = {"moire": round(moire, 3), "border": border}
    if border >= opts.border_threshold:
        return LivenessResult(False, border, "border", details)
    if moire >= opts.moire_threshold:
        return LivenessResult(False, min(1.0, moire / (2 * opts.moire_threshold)), "moire", details)
    return LivenessResult(True, max(border / 2, min(0.5, moire / (2 * opts.moire_threshold))), "single_image",
                          details)


@dataclass(slots=True)
class _Frame:
    crop: CropFeatures
    landmarks: NDArray[np.float32] | None
    ear: float | None


@dataclass(slots=True)
class _Still:
    """The anchor of the current still segment: its crop, when it began, and how many frames since."""

    crop: CropFeatures
    since: float
    frames: int = 0
    displacement: float = 0.0


class LivenessTracker:
    """Liveness of one stream (one client): passive cues per frame plus temporal checks over its frames.

    Keeps its last ``window`` face crops and one anchor crop in memory. Not thread-safe: one
    stream's frames are processed one at a time.
    """

    def __init__(self, options: LivenessOptions | None = None,
                 spoof_options: SpoofOptions | None = None) -> None:
        self.options = options or LivenessOptions()
        self.spoof_options = spoof_options or SpoofOptions()
        self._frames: deque[_Frame] = deque(maxlen=self.options.window)
        self._pairs: deque[PairMotion] = deque(maxlen=self.options.window - 1)
        self._motions: deque[float] = deque(maxlen=self.options.window - 1)
        self._passive: deque[bool] = deque(maxlen=self.options.window)
        self._sides: deque[frozenset[str]] = deque(maxlen=self.options.window)
        self._still: _Still | None = None

    def reset(self) -> None:
        self._frames.clear()
        self._pairs.clear()
        self._motions.clear()
        self._passive.clear()
        self._sides.clear()
        self._still = None

    def update(self, image: BGRImage, xyxy: NDArray[np.float32],
               landmarks: NDArray[np.float32] | None = None, *, now: float | None = None) -> LivenessResult:
        """Add one frame's face (box in pixels, optional (468|478, 3) landmarks) and decide.

        Passive cues (:func:`faceport.engine.antispoof.assess_spoof`) are judged on every frame and
        decide once they hold for ``passive_fraction`` of the window; then the temporal checks
        (frozen frame, planar motion, still face) once ``min_pairs`` frame pairs are known.
        ``now`` is the frame's time in seconds (default: ``time.monotonic()``).
        """
        opts = self.options
        now = time.monotonic() if now is None else now
        passive = assess_spoof(image, Faces(xyxy=np.asarray(xyxy, np.float32)[None, :4],
                                            score=np.ones(1, np.float32)), self.spoof_options)
        frame = _Frame(crop_features(face_crop(image, xyxy)), landmarks,
                       eye_aspect_ratio(landmarks) if landmarks is not None else None)
        if self._frames:
            prev = self._frames[-1]
            self._pairs.append(pair_motion(prev.crop, frame.crop))
            if prev.landmarks is not None and landmarks is not None:
                self._motions.append(non_rigid_motion(prev.landmarks, landmarks))
        self._frames.append(frame)
        self._passive.append(not bool(passive.live[0]))
        self._sides.append(frozenset(side for side in SIDE_WEIGHTS if passive.cues[0].get(f"frame_{side}")))
        details: dict[str, float] = {f"passive_{k}": v for k, v in passive.cues[0].items()
                                     if k.endswith("_score")}
        details["passive_score"] = round(float(passive.score[0]), 4)
        spoof_share = sum(self._passive) / len(self._passive)
        details["passive_spoof_share"] = round(spoof_share, 3)
        # A device or print held still keeps its edges where they are while its content moves: the
        # sides seen over the window add up (a room's edges beside a head do not make a frame).
        union = round(sum(SIDE_WEIGHTS[side] for side in frozenset().union(*self._sides)), 3)
        details["passive_frame_window"] = union
        if len(self._passive) >= opts.min_pairs + 1:
            if spoof_share >= opts.passive_fraction:
                return LivenessResult(False, round(spoof_share, 3), "passive:" + _last_spoof_method(passive),
                                      details)
            if union >= self.spoof_options.frame_threshold:
                return LivenessResult(False, union, "passive:frame_window", details)
        blink = self._blink()
        still = self._still_check(frame.crop, now, blink, details)
        temporal = self._temporal(details, blink)
        if temporal is not None and not temporal.live:
            return temporal
        if still is not None:
            return still
        if temporal is not None:
            return temporal
        return LivenessResult(True, float(passive.score[0]), "insufficient_frames", details)

    def _blink(self) -> bool:
        ears = [f.ear for f in self._frames if f.ear is not None]
        return len(ears) >= 3 and min(ears) < self.options.blink_drop * float(np.median(ears))

    def _still_check(self, crop: CropFeatures, now: float, blink: bool,
                     details: dict[str, float]) -> LivenessResult | None:
        """Spoof when the face stayed put (no blink, under ``still_max_displacement``) for long enough."""
        opts = self.options
        if self._still is None:
            self._still = _Still(crop, now)
            return None
        motion = pair_motion(self._still.crop, crop)
        moved = motion.displacement >= opts.still_max_displacement or motion.inlier_ratio < 0.5
        if blink or moved:
            self._still = _Still(crop, now)
            details.update({"still_frames": 0.0, "still_seconds": 0.0})
            return None
        self._still.frames += 1
        seconds = now - self._still.since
        details.update({"still_frames": float(self._still.frames), "still_seconds": round(seconds, 2)})
        if self._still.frames >= opts.still_frames and seconds >= opts.still_seconds:
            return LivenessResult(False, 1.0, "still_face", details)
        return None

    def _temporal(self, details: dict[str, float], blink: bool) -> LivenessResult | None:
        opts = self.options
        pairs = list(self._pairs)
        if len(pairs) < opts.min_pairs:
            return None
        frozen = sum(p.difference < opts.frozen_max_difference for p in pairs)
        moving = [p for p in pairs if p.displacement >= opts.planar_min_displacement]
        planar = sum(p.inlier_ratio >= opts.planar_min_inliers
                     and p.inlier_ratio - p.similarity_ratio >= opts.planar_min_gain for p in moving)
        planar_share = planar / len(moving) if moving else 0.0
        details.update({
            "pairs": float(len(pairs)), "frozen_pairs": float(frozen), "moving_pairs": float(len(moving)),
            "planar_share": round(planar_share, 3), "blink": float(blink),
            "micro_motion": round(float(np.median(self._motions)), 5) if self._motions else 0.0,
            "mean_inlier_ratio": round(float(np.mean([p.inlier_ratio for p in pairs])), 3),
        })
        if frozen == len(pairs):
            return LivenessResult(False, 1.0, "frozen_frame", details)
        if not blink and len(moving) >= opts.min_pairs - 1 and planar_share >= opts.planar_fraction:
            return LivenessResult(False, round(planar_share, 3), "planar_motion", details)
        return LivenessResult(True, round(planar_share * 0.5, 3), "blink" if blink else "planar_motion", details)


def _last_spoof_method(assessment: SpoofAssessment) -> str:
    method = assessment.method[0]
    return method if method not in ("passive", "too_small") else "window"
