"""Passive (single-image) presentation-attack detection: is this face a print or a screen held up to the camera?

No learned anti-spoof weights are obtainable offline, so every cue is a measured property of the
image with a physical reason, and every verdict names the cue that decided it:

- ``frame`` (decides): the edge of the paper or the device (bezel) round the face: straight line
  segments (OpenCV LSD) enclosing the face, the bottom side weighing most (a real body continues
  down to the image border; a print or screen ends). ``frame_below`` (an edge across the chest,
  past both sides of the face) is reported only.
- ``moire`` (decides): a display's pixel grid resampled by the camera's pixel grid beats into
  periodic patterns: narrow isolated peaks in the high-frequency spectrum of the face, measured in
  the luminance and in the red-blue chroma channel (the sub-pixel stripes are coloured).
- ``gamut`` (adds to a half-way frame or moire): paper and recaptured screens cannot show deep
  black: the black level round the face. Colourfulness is reported only (black-and-white photos).
- ``specular`` (reported): large, flat, colourless glare on the face (paper or glass reflects a
  light source as a band; skin gives small highlights).
- ``blur`` (reported): the face's high-frequency energy relative to its contrast.

Fingers holding a print are not a cue yet (not built; the synthetic prints carry fingers, but a
skin-colour test was not tried against real backgrounds such as wood and walls). Figures on real
and synthetic attacks are in BENCHMARKS.md; what this cannot catch is in README.md (a print or
screen held so close that no edge is visible passes: the camera's own blur leaves little moire).

:func:`assess_spoof` is the entry point (``faceport.services.antispoof`` and the proctoring
liveness tracker call it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from numpy.typing import NDArray

from faceport.engine.types import BGRImage, Faces

METHOD = "passive_cues_v1"


@dataclass(frozen=True, slots=True)
class SpoofOptions:
    """Thresholds of the passive cues (each cue is scaled to [0, 1] first; see :func:`face_cues`)."""

    frame_threshold: float = 0.75  # share of the four sides enclosed by straight edges
    moire_threshold: float = 0.5  # scaled spectral peak (0.5 = 7.5 MADs; real photos here peak at 7.1)
    min_face: int = 48  # smaller faces are inconclusive (live, score 0)


@dataclass(frozen=True, slots=True)
class SpoofAssessment:
    """Passive spoof verdicts for the faces of one image; row-aligned with the ``Faces`` given.

    Attributes:
        live: (n,) bool, False where a cue found a print or a screen.
        score: (n,) float32 spoof score in [0, 1] (higher = more likely an attack; 0.5 = threshold).
        method: per face, the cue that decided (``frame``, ``moire``, ``combined``) or ``passive`` (none fired)
            or ``too_small``.
        cues: per face, every cue's scaled value in [0, 1] and its raw measurement, by name.
    """

    live: NDArray[np.bool_]
    score: NDArray[np.float32]
    method: tuple[str, ...]
    cues: tuple[dict[str, float], ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        n = len(self.live)
        if self.score.shape != (n,) or len(self.method) != n or len(self.cues) != n:
            raise ValueError(f"SpoofAssessment rows differ: live {n}, score {self.score.shape}, "
                             f"method {len(self.method)}, cues {len(self.cues)}")

    def __len__(self) -> int:
        return len(self.live)


# --- cues ------------------------------------------------------------------------------------------

def _region(image: BGRImage, xyxy: NDArray[np.float32], left: float, top: float, right: float,
            bottom: float) -> tuple[NDArray[np.uint8], tuple[int, int]]:
    """The image around a face box enlarged by the given multiples of its size; returns it and its origin."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in xyxy[:4])
    fw, fh = x2 - x1, y2 - y1
    a, b = int(max(0, x1 - left * fw)), int(max(0, y1 - top * fh))
    c, d = int(min(w, x2 + right * fw)), int(min(h, y2 + bottom * fh))
    return image[b:d, a:c], (a, b)


_LSD = cv2.createLineSegmentDetector(cv2.LSD_REFINE_STD)
# The bottom edge weighs most: a real body continues below the face to the image border, while a
# print or screen ends there; rooms put straight edges beside and above a head (doors, curtains).
SIDE_WEIGHTS = {"bottom": 0.35, "top": 0.25, "left": 0.2, "right": 0.2}
_FRAME_FACE_PX = 64  # the region is scaled so the face box is about this wide before line detection


def frame_cue(image: BGRImage, xyxy: NDArray[np.float32]) -> tuple[float, float, list[str]]:
    """Straight edges round a face: (weighted share of the 4 sides enclosed, 1.0 if an edge cuts the body below,
    the sides found).

    Line segments come from OpenCV's LSD on the image within 3-5 face sizes of the face, scaled so the
    face is 64 px wide. A side counts when segments within 35 degrees of the box's axis, lying outside
    the face box on that side on one line (within 0.1 face sizes and 5 degrees of each other), together cover at
    least 70% of the face's extent along that side: a frame round the face, not a texture beside it.
    Sides weigh as :data:`SIDE_WEIGHTS` (bottom + top + one side, or bottom + both sides, reach 0.75).
    """
    region, (a, b) = _region(image, xyxy, 4.0, 3.0, 4.0, 5.0)
    if region.size == 0:
        return 0.0, 0.0, []
    x1, y1, x2, y2 = (float(v) for v in xyxy[:4])
    scale = min(1.0, _FRAME_FACE_PX / max(x2 - x1, 1.0))
    grey = cv2.cvtColor(region, cv2.COLOR_BGR2GRAY)
    if scale < 1.0:
        grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    fx1, fy1, fx2, fy2 = (x1 - a) * scale, (y1 - b) * scale, (x2 - a) * scale, (y2 - b) * scale
    fw, fh = fx2 - fx1, fy2 - fy1
    detected = _LSD.detect(grey)[0]
    if detected is None:
        return 0.0, 0.0, []
    cx, cy = (fx1 + fx2) / 2, (fy1 + fy2) / 2
    tan = np.tan(np.radians(35))
    lines: dict[str, list[_Segment]] = {"top": [], "bottom": [], "left": [], "right": []}
    below = 0.0
    for lx1, ly1, lx2, ly2 in detected[:, 0, :].astype(np.float64):
        dx, dy = lx2 - lx1, ly2 - ly1
        if np.hypot(dx, dy) < 0.4 * min(fw, fh):
            continue
        if abs(dy) <= tan * abs(dx):  # horizontal-ish: its height at the face centre
            lo, hi = min(lx1, lx2), max(lx1, lx2)
            if hi < fx1 - 1.5 * fw or lo > fx2 + 1.5 * fw:
                continue
            y = ly1 + (cx - lx1) * dy / dx
            side = "top" if y < fy1 - 0.1 * fh else "bottom" if y > fy2 + 0.1 * fh else None
            if side is not None:
                lines[side].append(_Segment(y / fh, float(np.arctan2(dy, dx) % np.pi), max(lo, fx1), min(hi, fx2),
                                            lo, hi, (lx1, ly1, lx2, ly2)))
            if side == "bottom" and y < fy2 + 2.5 * fh and lo <= fx1 - 0.2 * fw and hi >= fx2 + 0.2 * fw:
                below = 1.0  # across the neck and chest, past both sides of the face
        elif abs(dx) <= tan * abs(dy):  # vertical-ish: its x at the face centre
            lo, hi = min(ly1, ly2), max(ly1, ly2)
            if hi < fy1 - 1.5 * fh or lo > fy2 + 1.5 * fh:
                continue
            x = lx1 + (cy - ly1) * dx / dy
            side = "left" if x < fx1 - 0.1 * fw else "right" if x > fx2 + 0.1 * fw else None
            if side is not None:
                lines[side].append(_Segment(x / fw, float(np.arctan2(dy, dx) % np.pi), max(lo, fy1), min(hi, fy2),
                                            lo, hi, (lx1, ly1, lx2, ly2)))
    extent = {"top": fw, "bottom": fw, "left": fh, "right": fh}
    found = [side for side, segments in lines.items() if _groups(segments, extent[side])]
    return round(sum(SIDE_WEIGHTS[side] for side in found), 3), below, found


@dataclass(frozen=True, slots=True)
class _Segment:
    position: float  # across the side, in face sizes
    angle: float  # radians in [0, pi)
    lo: float  # covered interval along the side, clipped to the face's extent
    hi: float
    raw_lo: float  # the segment's own extent along the side
    raw_hi: float
    ends: tuple[float, float, float, float]


def _groups(segments: list[_Segment], extent: float) -> list[list[_Segment]]:
    """Groups of collinear segments (same position within 0.1 face sizes, same angle within 5 degrees, one of
    them covering half of ``extent`` alone) that together cover at least 70% of ``extent``."""
    out = []
    for seed in segments:
        if seed.hi - seed.lo < 0.5 * extent:
            continue
        group = [g for g in segments if abs(g.position - seed.position) <= 0.1 and g.hi > g.lo
                 and min(abs(g.angle - seed.angle), np.pi - abs(g.angle - seed.angle)) <= np.radians(5)]
        total, end = 0.0, -np.inf
        for lo, hi in sorted((g.lo, g.hi) for g in group):
            if hi > end:
                total += hi - max(lo, end)
                end = hi
        if total >= 0.7 * extent:
            out.append(group)
    return out


def _native_crop(image: BGRImage, xyxy: NDArray[np.float32]) -> NDArray[np.uint8]:
    """The face box at native resolution (BGR); empty when the box is degenerate."""
    h, w = image.shape[:2]
    x1, y1 = max(0, int(xyxy[0])), max(0, int(xyxy[1]))
    x2, y2 = min(w, int(xyxy[2])), min(h, int(xyxy[3]))
    if x2 - x1 < 2 or y2 - y1 < 2:
        return np.zeros((0, 0, 3), np.uint8)
    return image[y1:y2, x1:x2]


def spectral_peak(channel: NDArray[np.float64]) -> float:
    """Strongest isolated peak in the high-frequency band of a square channel's spectrum.

    Each frequency's log magnitude is compared with the median of its ring (same radius) in units
    of the ring's median absolute deviation, so the natural 1/f fall-off cancels. Frequencies on
    the axes and at multiples of 1/8 (JPEG blocks) are left out: compression, not a screen, puts
    energy there.
    """
    side = channel.shape[0]
    g = (channel - channel.mean()) * np.outer(np.hanning(side), np.hanning(side))
    spectrum = np.log1p(np.abs(np.fft.fftshift(np.fft.fft2(g))))
    yy, xx = np.mgrid[:side, :side] - side // 2
    ring = np.round(np.hypot(yy, xx)).astype(np.int64)
    block = side / 8
    near_block = ((np.abs(yy / block - np.round(yy / block)) * block <= 1)
                  & (np.abs(xx / block - np.round(xx / block)) * block <= 1))
    keep = (ring >= int(side * 0.12)) & (ring < int(side * 0.48)) & (np.abs(yy) > 1) & (np.abs(xx) > 1) & ~near_block
    rings, values = ring[keep], spectrum[keep]
    order = np.argsort(rings, kind="stable")
    rings, values = rings[order], values[order]
    bounds = np.flatnonzero(np.diff(rings)) + 1
    best = 0.0
    for part in np.split(values, bounds):
        if len(part) < 8:
            continue
        med = float(np.median(part))
        spread = float(np.median(np.abs(part - med))) + 1e-6
        best = max(best, float((part.max() - med) / spread))
    return best


def moire_cue(image: BGRImage, xyxy: NDArray[np.float32]) -> tuple[float, float]:
    """(luminance, red-blue chroma) spectral peak scores of the face at native resolution (0 if under 64 px)."""
    crop = _native_crop(image, xyxy)
    if min(crop.shape[:2]) < 64:
        return 0.0, 0.0
    side = min(crop.shape[0], crop.shape[1], 256)
    square = cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA).astype(np.float64)
    luma = square @ np.array([0.114, 0.587, 0.299])
    chroma = square[..., 2] - square[..., 0]
    return spectral_peak(luma), spectral_peak(chroma)


def gamut_cue(image: BGRImage, xyxy: NDArray[np.float32]) -> tuple[float, float]:
    """(black level, colourfulness) of the face and its surroundings (one face size round it).

    Black level: the 2nd percentile of luminance (0..255); colourfulness: Hasler and Suesstrunk's
    measure. A print or a recaptured screen lifts the black level and compresses colour.
    """
    region, _ = _region(image, xyxy, 0.5, 0.5, 0.5, 1.0)
    if region.size == 0:
        return 0.0, 0.0
    scale = 160 / max(region.shape[:2])
    if scale < 1:  # statistics of a 160-px version: the same percentiles at a fraction of the cost
        region = np.asarray(cv2.resize(region, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA), np.uint8)
    f = region.reshape(-1, 3).astype(np.float32)
    luma = f @ np.array([0.114, 0.587, 0.299], np.float32)
    rg = f[:, 2] - f[:, 1]
    yb = 0.5 * (f[:, 2] + f[:, 1]) - f[:, 0]
    colourful = float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))
    return float(np.percentile(luma, 2)), colourful


def specular_cue(image: BGRImage, xyxy: NDArray[np.float32]) -> float:
    """Share of the face box covered by its largest flat, colourless, near-white blob (glare)."""
    crop = _native_crop(image, xyxy)
    if crop.size == 0:
        return 0.0
    hsv = cv2.cvtColor(crop, cv2.COLOR_BGR2HSV)
    glare = ((hsv[..., 2] >= 235) & (hsv[..., 1] <= 40)).astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(glare, connectivity=8)
    if count <= 1:
        return 0.0
    return float(stats[1:, cv2.CC_STAT_AREA].max()) / glare.size


def blur_cue(image: BGRImage, xyxy: NDArray[np.float32]) -> float:
    """Variance of the Laplacian of the grey face (resized to 128 px) over its grey variance (lower = blurrier)."""
    crop = _native_crop(image, xyxy)
    if crop.size == 0:
        return 0.0
    grey = cv2.resize(cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY), (128, 128), interpolation=cv2.INTER_AREA)
    g = grey.astype(np.float64)
    return float(cv2.Laplacian(g, cv2.CV_64F).var() / max(g.var(), 1.0))


def face_cues(image: BGRImage, xyxy: NDArray[np.float32]) -> dict[str, float]:
    """Every cue for one face, raw and scaled to [0, 1] (``*_score`` keys; 1 = attack-like)."""
    sides, below, found = frame_cue(image, xyxy)
    moire_luma, moire_chroma = moire_cue(image, xyxy)
    black, colourful = gamut_cue(image, xyxy)
    glare = specular_cue(image, xyxy)
    sharp = blur_cue(image, xyxy)
    return {
        "frame_sides": sides, "frame_below": below,  # sides weighted as SIDE_WEIGHTS
        **{f"frame_{side}": float(side in found) for side in SIDE_WEIGHTS},
        "moire_luma": round(moire_luma, 3), "moire_chroma": round(moire_chroma, 3),
        "black_level": round(black, 2), "colourfulness": round(colourful, 2),
        "glare": round(glare, 4), "sharpness": round(sharp, 4),
        "frame_score": round(sides, 3),
        "moire_score": round(_scale(max(moire_luma, moire_chroma), 5.0, 10.0), 3),
        "gamut_score": round(_scale(black, 20.0, 50.0), 3),
        "specular_score": round(_scale(glare, 0.01, 0.08), 3),
        "blur_score": round(1 - _scale(sharp, 0.05, 0.4), 3),
    }


def _scale(value: float, lo: float, hi: float) -> float:
    """Linear map of ``value`` from [lo, hi] to [0, 1], clipped."""
    return float(np.clip((value - lo) / (hi - lo), 0.0, 1.0))


def decide(cues: dict[str, float], options: SpoofOptions | None = None) -> tuple[bool, float, str]:
    """(live, spoof score in [0, 1] with 0.5 the threshold, deciding cue) from :func:`face_cues`' values.

    ``frame`` and ``moire`` decide alone at their thresholds; ``combined`` is the mean of the stronger of
    the two and the gamut (black level) cue, counted only when that strong cue is at least 0.4. Specular
    glare and blur are reported but do not decide: on the measured sets they did not separate.
    """
    opts = options or SpoofOptions()
    frame = 0.5 * cues["frame_score"] / opts.frame_threshold
    moire = 0.5 * cues["moire_score"] / opts.moire_threshold
    candidates = {"frame": frame, "moire": moire}
    strong = max(frame, moire)
    if strong >= 0.4:
        candidates["combined"] = 0.5 * strong + 0.5 * cues["gamut_score"]
    method, score = max(candidates.items(), key=lambda kv: kv[1])
    score = float(min(1.0, score))
    if score >= 0.5:
        return False, round(score, 4), method
    return True, round(score, 4), "passive"


def assess_spoof(image: BGRImage, faces: Faces, options: SpoofOptions | None = None) -> SpoofAssessment:
    """Passive spoof verdict for every face of one image.

    Args:
        image: (H, W, 3) uint8 BGR, the whole frame (the cues look round the face too).
        faces: the image's faces (boxes in pixels); landmarks are not needed.
        options: thresholds; defaults as measured in BENCHMARKS.md.

    Returns:
        A :class:`SpoofAssessment` with one row per face (empty for no faces).
    """
    opts = options or SpoofOptions()
    live: list[bool] = []
    scores: list[float] = []
    methods: list[str] = []
    cues: list[dict[str, float]] = []
    for i in range(len(faces)):
        xyxy = faces.xyxy[i]
        if min(xyxy[2] - xyxy[0], xyxy[3] - xyxy[1]) < opts.min_face:
            live.append(True)
            scores.append(0.0)
            methods.append("too_small")
            cues.append({})
            continue
        values = face_cues(image, xyxy)
        ok, score, method = decide(values, opts)
        live.append(ok)
        scores.append(score)
        methods.append(method)
        cues.append(values)
    return SpoofAssessment(np.array(live, bool), np.array(scores, np.float32), tuple(methods), tuple(cues))
