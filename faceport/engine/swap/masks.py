"""Blend masks of the mesh swap, as FaceFusion names them: box, occlusion, region, plus a mouth mask.

FaceFusion builds one mask per ``face_mask_types`` entry and takes their minimum; so does this
module, for one target face, in the pixel box the swapper works in:

* ``box``: the target's face outline with the forehead edge pulled down to below the hairline
  (the mesh swap's historical mask), shrunk by ``face_mask_padding`` (top, right, bottom, left,
  percent of the face's height / width, along the face's own axes).
* ``region``: the union of the chosen parts of the face, drawn from the target's FaceMesh
  landmarks (FaceFusion uses a BiSeNet face parser; there are no such weights offline, so the
  parts are mesh polygons): ``skin`` (the face oval), ``left-eyebrow``, ``right-eyebrow``,
  ``left-eye``, ``right-eye``, ``nose``, ``mouth`` (between the lips), ``upper-lip``,
  ``lower-lip``. Left and right are the person's own (a frontal photo's left eye is on the
  image's right). The issue's coarse names ``eyebrows``, ``eyes`` and ``lips`` mean both parts.
* ``occlusion``: a classical stand-in for FaceFusion's XSeg occluder (no neural occluder weights
  are available offline). A skin colour model — a Gaussian in (L, a, b) — is fitted on each face's
  own cheek, nose and lower-forehead samples (robustly: the worst third of the samples is refitted
  away, so a hand or a fringe over some of them does not become "skin"). On the **source** side,
  pixels of the warped source face that are not its skin and not one of its mesh features (eyes,
  brows, lips) — a glasses frame, a strand of hair, a scarf — are not pasted: they are filled from
  the source's surrounding skin (``cv2.inpaint``). On the **target** side, a pixel inside the face
  that is not the target's skin and not a mesh feature — a hand, a microphone, a fringe, a
  beard — keeps the target. It is a colour heuristic: an occluder the colour of the face's skin
  (the person's own hand, in the same light) is only partly found, so hands are also found by shape:
  MediaPipe's palm detector and hand landmarks (:mod:`faceport.engine.hands`, when the swapper is given
  them) search around each target face, and a found hand's silhouette (palm polygon and finger bones,
  a finger thick) keeps the target whatever its colour.

``mouth_mask`` (Deep-Live-Cam's mouth mask) keeps the target's whole mouth, lips included, with a
soft edge, so speech stays the target's.

The target's expression: the lips and eyelids of the posed mesh follow the target's landmarks
(:func:`expression_weights`), so an open or smiling mouth and closed eyes come from the target
and the target's mouth interior and eyes, kept through the mesh's holes, line up with the source
lips around them (no doubled lips or teeth).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
from numpy.typing import NDArray

from faceport.engine.types import BGRImage

MaskType = Literal["box", "occlusion", "region"]
MASK_TYPES: tuple[MaskType, ...] = ("box", "occlusion", "region")
MASK_REGIONS = ("skin", "left-eyebrow", "right-eyebrow", "left-eye", "right-eye", "nose", "mouth", "upper-lip",
                "lower-lip")
REGION_ALIASES: dict[str, tuple[str, ...]] = {
    "eyebrows": ("left-eyebrow", "right-eyebrow"),
    "eyes": ("left-eye", "right-eye"),
    "lips": ("upper-lip", "lower-lip"),
}
DEFAULT_BLUR = 0.3  # FaceFusion's face_mask_blur default; the mesh swap's feather is scaled by blur / 0.3

FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148,
             176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
LIPS_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
LIPS_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191)
UPPER_LIP = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191, 78)
LOWER_LIP = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95, 78)
# the lip rings between the outer and inner contours (MediaPipe's 80 lip points minus the two above)
LIPS_MIDDLE = (76, 77, 90, 180, 85, 16, 315, 404, 320, 307, 306, 408, 304, 303, 302, 11, 72, 73, 74, 184,
               62, 96, 89, 179, 86, 15, 316, 403, 319, 325, 292, 407, 272, 271, 268, 12, 38, 41, 42, 183)
RIGHT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)  # the person's right
LEFT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
RIGHT_EYEBROW = (70, 63, 105, 66, 107, 55, 65, 52, 53, 46)
LEFT_EYEBROW = (300, 293, 334, 296, 336, 285, 295, 282, 283, 276)
NOSE = (168, 6, 197, 195, 5, 4, 1, 2, 98, 97, 326, 327, 129, 358, 49, 279, 48, 278, 64, 294, 114, 343, 188, 412,
        122, 351, 217, 437, 209, 429, 102, 331)
# skin samples for the colour model: cheeks, nose bridge and sides, lower forehead, chin
SKIN_SAMPLES = (50, 101, 36, 205, 187, 123, 117, 118, 280, 330, 266, 425, 411, 352, 346, 347, 197, 195, 5, 6,
                151, 9, 108, 337, 69, 299, 199, 175, 200, 18, 32, 262, 207, 427, 216, 436)

_OPEN_MOUTH = 0.12  # inner-lip gap / mouth width above which the mouth counts as open
_OPEN_EYE = 0.18


def expand_regions(names: Iterable[str]) -> tuple[str, ...]:
    """FaceFusion region names, with the coarse aliases (eyebrows, eyes, lips) expanded; order kept, no repeats.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    out: list[str] = []
    for name in names:
        parts = REGION_ALIASES.get(name, (name,))
        for part in parts:
            if part not in MASK_REGIONS:
                raise ValueError(f"unknown face mask region {name!r}; known: "
                                 f"{', '.join((*MASK_REGIONS, *REGION_ALIASES))}")
            if part not in out:
                out.append(part)
    return tuple(out)


def expression_weights(points: NDArray[np.float32]) -> NDArray[np.float32]:
    """Per mesh point, how much of the source's shape it takes (0: the target's position, its expression).

    The lips and eyelids are the target's (0); the weight rises smoothly to 1 over a quarter of the face's
    width around the mouth and a tenth around the eyes, so the cheeks and chin bend with the target's mouth
    instead of stretching one ring of triangles.
    """
    xy = points[:468, :2].astype(np.float64)
    width = max(float(np.ptp(xy[:, 0])), 1e-6)
    weights = np.ones(468, np.float64)
    for indices, reach in (((*LIPS_OUTER, *LIPS_INNER, *LIPS_MIDDLE), 0.25), ((*RIGHT_EYE, *LEFT_EYE), 0.10)):
        anchor = xy[list(indices)]
        dx, dy = xy[:, 0, None] - anchor[None, :, 0], xy[:, 1, None] - anchor[None, :, 1]
        nearest = np.sqrt((dx * dx + dy * dy).min(1))
        weights = np.minimum(weights, np.clip(nearest / (reach * width), 0.0, 1.0) ** 0.5)
    return weights.astype(np.float32)


@dataclass(frozen=True, slots=True)
class MaskInputs:
    """What the mask needs of one target face, all in the swap box's pixels (offset already taken off)."""

    target: NDArray[np.float32]  # (468+, 2+) target landmarks, box pixels
    geometry: NDArray[np.float32]  # (468, 2) the posed source mesh, box pixels
    polygon: NDArray[np.float32]  # the box mask's outline (face outline, forehead pulled down), box pixels
    covered: NDArray[np.bool_]  # (bh, bw) pixels the warped source covers
    warped: BGRImage  # (bh, bw, 3) the warped source
    region: BGRImage  # (bh, bw, 3) the target's pixels
    source_mouth_open: bool = False  # the source shows its teeth / mouth interior
    hands: NDArray[np.uint8] | None = None  # (bh, bw) 0/255 silhouettes of hands found over the face (occlusion)


def _fill(shape: tuple[int, int], points: NDArray[np.float32], hull: bool = False) -> NDArray[np.uint8]:
    mask = np.zeros(shape, np.uint8)
    pts = np.round(points[:, :2]).astype(np.int32)
    cv2.fillPoly(mask, [np.asarray(cv2.convexHull(pts), np.int32) if hull else pts], 255)
    return mask


def mouth_open(points: NDArray[np.float32]) -> bool:
    """Whether a face's mouth is open (its inner lips apart by more than 12% of the mouth's width)."""
    return openness(points, 13, 14, 78, 308) > _OPEN_MOUTH


def openness(points: NDArray[np.float32], top: int, bottom: int, left: int, right: int) -> float:
    width = float(np.linalg.norm(points[left, :2] - points[right, :2]))
    return float(np.linalg.norm(points[top, :2] - points[bottom, :2])) / max(width, 1e-6)


def _face_axes(points: NDArray[np.float32]) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Origin (nose tip), unit right axis (eye to eye, image right) and up axis of a face."""
    x_axis = (points[263, :2] - points[33, :2]).astype(np.float64)
    x_axis /= max(float(np.linalg.norm(x_axis)), 1e-6)
    up = np.array([x_axis[1], -x_axis[0]])
    return points[1, :2].astype(np.float64), x_axis, up


def box_mask(inputs: MaskInputs, padding: Sequence[float]) -> NDArray[np.uint8]:
    """The face outline polygon, its top/right/bottom/left cut by ``padding`` percent of the face's extent."""
    shape = inputs.covered.shape
    mask = _fill(shape, inputs.polygon)
    if any(p > 0 for p in padding):
        origin, right, up = _face_axes(inputs.target)
        rel = inputs.polygon.astype(np.float64) - origin
        u, v = rel @ right, rel @ up
        ys, xs = np.mgrid[0:shape[0], 0:shape[1]]
        grid = np.stack([xs, ys], -1).astype(np.float64) - origin
        gu, gv = grid @ right, grid @ up
        top, rgt, bottom, left = (float(p) / 100.0 for p in padding)
        height, width = float(v.max() - v.min()), float(u.max() - u.min())
        keep = ((gv <= v.max() - top * height) & (gv >= v.min() + bottom * height)
                & (gu <= u.max() - rgt * width) & (gu >= u.min() + left * width))
        mask[~keep] = 0
    return mask


def region_mask(inputs: MaskInputs, regions: Sequence[str]) -> NDArray[np.uint8]:
    """The union of the named mesh regions of the target face."""
    shape = inputs.covered.shape
    target = inputs.target
    polygons = {"left-eyebrow": (LEFT_EYEBROW, True), "right-eyebrow": (RIGHT_EYEBROW, True),
                "left-eye": (LEFT_EYE, False), "right-eye": (RIGHT_EYE, False), "nose": (NOSE, True),
                "mouth": (LIPS_INNER, False), "upper-lip": (UPPER_LIP, False), "lower-lip": (LOWER_LIP, False)}
    mask = np.zeros(shape, np.uint8)
    for name in regions:
        if name == "skin":
            mask |= _fill(shape, target[list(FACE_OVAL)])
        else:
            indices, hull = polygons[name]
            mask |= _fill(shape, target[list(indices)], hull=hull)
    return mask


def _features(points: NDArray[np.float32], shape: tuple[int, int], size: float, *,
              grow: float = 0.03) -> NDArray[np.bool_]:
    """Eyes, lips (grown by ``grow`` of the face size) and brows of a face: not skin-coloured, not occluders."""
    mask = np.zeros(shape, np.uint8)
    parts: tuple[tuple[int, ...], ...] = (LEFT_EYE, RIGHT_EYE, LIPS_OUTER)
    for indices in parts:
        mask |= _fill(shape, points[list(indices)], hull=indices is not LIPS_OUTER)
    k = int(size * grow) | 1
    if k > 1:
        mask = np.asarray(cv2.dilate(mask, np.ones((k, k), np.uint8)), np.uint8)
    for brow in (LEFT_EYEBROW, RIGHT_EYEBROW):
        mask |= _fill(shape, points[list(brow)], hull=True)
    return mask > 0


@dataclass(frozen=True, slots=True)
class SkinModel:
    """A Gaussian over (L, a, b) of a face's skin; ``distance`` is its Mahalanobis distance."""

    mean: NDArray[np.float64]
    inverse: NDArray[np.float64]

    @classmethod
    def fit(cls, image: BGRImage, points: NDArray[np.float32], size: float) -> SkinModel | None:
        """Fitted on small patches around the skin sample points; the worst third refitted away."""
        lab = cv2.cvtColor(image, cv2.COLOR_BGR2LAB).astype(np.float64)
        h, w = image.shape[:2]
        r = max(1, int(size * 0.015))
        samples = []
        for x, y in np.round(points[list(SKIN_SAMPLES), :2]).astype(int):
            if r <= x < w - r and r <= y < h - r:
                samples.append(lab[y - r:y + r + 1, x - r:x + r + 1].reshape(-1, 3))
        if len(samples) < 8:
            return None
        data = np.concatenate(samples)
        keep = np.ones(len(data), bool)
        for _ in range(2):
            mean = data[keep].mean(0)
            cov = np.cov(data[keep].T) + np.diag([4.0, 1.0, 1.0])
            inverse = np.linalg.inv(cov)
            d = np.einsum("ij,jk,ik->i", data - mean, inverse, data - mean)
            keep = d <= np.quantile(d, 0.67)
        mean = data[keep].mean(0)
        # the kept two thirds are a truncated sample: widen back to the whole skin's spread, luminance most
        # (shading varies more across a face than hue does)
        cov = np.cov(data[keep].T) * np.array([[4.0, 2.0, 2.0], [2.0, 2.0, 2.0], [2.0, 2.0, 2.0]])
        cov += np.diag([16.0, 2.0, 2.0])
        return cls(mean=mean, inverse=np.linalg.inv(cov))

    def distance(self, image: BGRImage) -> NDArray[np.float32]:
        lab = cv2.cvtColor(image, cv2.COLOR_BGR2LAB).astype(np.float32) - self.mean.astype(np.float32)
        inv = self.inverse.astype(np.float32)
        return np.asarray(np.sqrt(np.einsum("hwi,ij,hwj->hw", lab, inv, lab)), np.float32)


def not_skin(image: BGRImage, points: NDArray[np.float32], size: float, low: float, high: float
             ) -> NDArray[np.bool_] | None:
    """Blobs of ``image`` that are not the face's own skin colour (hysteresis on the Mahalanobis distance).

    A blob is the connected pixels beyond ``low`` distances that reach beyond ``high`` somewhere, so a frame
    or a fringe is taken whole while a wrinkle or a shadow (mildly off the skin colour) is not.
    """
    model = SkinModel.fit(image, points, size)
    if model is None:
        return None
    distance = model.distance(image)
    k = max(3, int(size * 0.015) | 1)
    weak = cv2.morphologyEx((distance > low).astype(np.uint8), cv2.MORPH_OPEN, np.ones((k, k), np.uint8))
    strong = cv2.morphologyEx((distance > high).astype(np.uint8), cv2.MORPH_OPEN, np.ones((k, k), np.uint8))
    count, labels = cv2.connectedComponents(weak, connectivity=8)
    hit = np.zeros(count, bool)
    hit[np.unique(labels[(strong > 0) & (weak > 0)])] = True
    hit[0] = False
    return np.asarray(hit[labels], bool)


# Mahalanobis distances from a face's skin model: a blob beyond LOW that reaches beyond HIGH is not skin
SOURCE_LOW, SOURCE_HIGH = 3.0, 5.0  # the source: glasses frames, hair strands
TARGET_LOW, TARGET_HIGH = 3.5, 6.0


def source_cleanup(inputs: MaskInputs, size: float) -> BGRImage:
    """The warped source with what is not its skin (glasses frames, hair strands) filled from its own skin.

    The fill is the local mean of the surrounding source skin (a normalised convolution over the skin pixels
    only, so no colour from outside the face or from the occluder leaks in) plus the target's fine detail.
    """
    other = not_skin(inputs.warped, inputs.geometry, size, SOURCE_LOW, SOURCE_HIGH)
    if other is None:
        return inputs.warped
    shape = inputs.covered.shape
    face = _fill(shape, inputs.geometry[list(FACE_OVAL)]) > 0
    features = _features(inputs.geometry, shape, size)
    foreign = face & inputs.covered & other & ~features
    if not foreign.any():
        return inputs.warped
    k = max(3, int(size * 0.02) | 1)
    holes = cv2.dilate(foreign.astype(np.uint8), np.ones((k, k), np.uint8)) > 0
    holes &= ~features
    good = (inputs.covered & ~other & ~holes & ~features).astype(np.float32)
    sigma = max(2.0, size * 0.04)
    weight = cv2.GaussianBlur(good, (0, 0), sigma)
    total = cv2.GaussianBlur(inputs.warped.astype(np.float32) * good[..., None], (0, 0), sigma)
    fill = total / np.maximum(weight, 1e-3)[..., None]
    # the fill's texture is the target's own fine detail there (its pores and creases, not a flat patch)
    target = inputs.region.astype(np.float32)
    fill += target - cv2.GaussianBlur(target, (0, 0), max(1.0, size * 0.01))
    soft = cv2.GaussianBlur((holes & (weight > 0.02)).astype(np.float32), (0, 0), max(1.0, size * 0.008))[..., None]
    out = inputs.warped.astype(np.float32) * (1 - soft) + np.clip(fill, 0, 255) * soft
    return np.asarray(np.clip(out + 0.5, 0, 255), np.uint8)


def target_occluders(inputs: MaskInputs, size: float) -> NDArray[np.bool_]:
    """Target pixels inside the face that are neither its skin nor a mesh feature: kept as they are."""
    shape = inputs.covered.shape
    other = not_skin(inputs.region, inputs.target, size, TARGET_LOW, TARGET_HIGH)
    if other is None:
        return np.zeros(shape, bool)
    face = _fill(shape, inputs.target[list(FACE_OVAL)]) > 0
    occluder = (face & other & ~_features(inputs.target, shape, size, grow=0.0)).astype(np.uint8)
    # an occluder grows into the face from its edge or covers a part of it: drop isolated specks (moles, pores)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(occluder, connectivity=8)
    small = stats[:, cv2.CC_STAT_AREA] < (size * 0.06) ** 2
    small[0] = False
    occluder[small[labels]] = 0
    return occluder > 0


def mouth_region(target: NDArray[np.float32], shape: tuple[int, int], size: float, grow: float = 0.06
                 ) -> NDArray[np.uint8]:
    """Deep-Live-Cam's mouth mask: the target's lips and mouth, grown by ``grow`` of the face size."""
    mask = _fill(shape, target[list(LIPS_OUTER)], hull=True)
    k = max(3, int(size * grow) | 1)
    return np.asarray(cv2.dilate(mask, np.ones((k, k), np.uint8)), np.uint8)


def build_mask(inputs: MaskInputs, *, types: Sequence[str], regions: Sequence[str], padding: Sequence[float],
               mouth_mask: bool, keep_open_mouth: bool, keep_open_eyes: bool
               ) -> tuple[NDArray[np.uint8], BGRImage]:
    """The hard (0/255) blend mask of one face and the source texture to blend (cleaned when ``occlusion``).

    The masks of ``types`` are intersected (FaceFusion's minimum); pixels the warped source does not
    cover are 0; the target's open mouth and open eyes, and its whole mouth with ``mouth_mask``, are 0.
    """
    shape = inputs.covered.shape
    size = float(max(np.ptp(inputs.polygon[:, 0]), np.ptp(inputs.polygon[:, 1])))
    mask = np.full(shape, 255, np.uint8)
    warped = inputs.warped
    if "box" in types or not types:
        mask &= box_mask(inputs, padding)
    if "region" in types:
        mask &= region_mask(inputs, regions)
    if "occlusion" in types:
        warped = source_cleanup(inputs, size)
        mask[target_occluders(inputs, size)] = 0
        if inputs.hands is not None:
            # a hand found by the hand model is kept whatever its colour (the skin model misses the face's own
            # skin tone); the feather then erodes the mask, so the hand's edge stays the target's too
            mask[inputs.hands > 0] = 0
    mask[~inputs.covered] = 0
    target = inputs.target
    if keep_open_mouth and mouth_open(target):
        cv2.fillPoly(mask, [np.round(target[list(LIPS_INNER), :2]).astype(np.int32)], 0)
    if keep_open_eyes:
        for eye, (top, bottom, left, right) in ((RIGHT_EYE, (159, 145, 33, 133)), (LEFT_EYE, (386, 374, 362, 263))):
            if openness(target, top, bottom, left, right) > _OPEN_EYE:
                cv2.fillPoly(mask, [np.round(target[list(eye), :2]).astype(np.int32)], 0)
    if mouth_mask:
        mask[mouth_region(target, shape, size) > 0] = 0
    elif inputs.source_mouth_open:
        # the source's lips frame its teeth: bent into the target's mouth they would show teeth on the lips
        # (doubled, gap-toothed); the target's own lips are kept
        mask[mouth_region(target, shape, size, grow=0.02) > 0] = 0
    return mask, warped


def feather(mask: NDArray[np.uint8], size: float, feather_fraction: float, blur: float) -> NDArray[np.uint8]:
    """The soft mask: eroded then blurred over ``feather_fraction * blur / 0.3`` of the face size."""
    scale = feather_fraction * blur / DEFAULT_BLUR
    if scale <= 0:
        return mask
    k = max(3, int(size * scale) | 1)
    eroded = cv2.erode(mask, np.ones((3, 3), np.uint8), iterations=max(1, k // 4))
    return np.asarray(cv2.GaussianBlur(eroded, (k, k), 0), np.uint8)


__all__ = ["DEFAULT_BLUR", "MASK_REGIONS", "MASK_TYPES", "REGION_ALIASES", "MaskInputs", "MaskType", "SkinModel",
           "build_mask", "expand_regions", "expression_weights", "feather"]
