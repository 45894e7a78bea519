"""Landmark mesh face swap: real time on CPU, no neural swapper needed.

For each target face:
1. the source face's 3-D FaceMesh is posed onto the target with a 3-D similarity
   transform (so pose and scale follow the target), and the inner face (eyes, brows, nose,
   mouth) takes the source's shape while the outline stays on the target's;
2. a fixed Delaunay triangulation of the mesh maps every target pixel to the source
   through its triangle's affine map — computed for all pixels at once and applied with a
   single ``cv2.remap``. By default (``pose_texture``) the source is not the photo itself but
   its pose-robust UV texture (``texture.py``: unwrapped into a symmetric canonical layout,
   the sides the source's pose hides filled from the mirrored side, several photos merged
   texel by texel), and the target's triangles are painted far to near with back faces
   dropped, so a turned target does not fold its hidden side over its visible one;
3. the warped face takes the target's skin tone and low-frequency shading per region
   (``colour.py``: local LAB means over skin, so light direction and a tanned neck carry over;
   ``colour_transfer='global'`` is the single LAB mean/std transfer of before);
4. it is blended through a feathered mask that excludes hair and the forehead edge and
   keeps the target's mouth interior and eyes when they are open (or ``cv2.seamlessClone``);
   the mask (FaceFusion's box / occlusion / region, padding, blur, Deep-Live-Cam's mouth mask)
   and the target-expression weights of step 1's geometry live in :mod:`faceport.engine.swap.masks`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import cv2
import numpy as np
from numpy.typing import NDArray

from faceport.engine.attributes import head_pose
from faceport.engine.hands import HandLandmarker, hand_silhouette
from faceport.engine.swap import masks
from faceport.engine.swap.colour import match_colour
from faceport.engine.swap.texture import (
    UVTexture,
    build_uv_texture,
    canonical_layout,
    raster_ids,
    signed_area,
    triangle_maps,
)
from faceport.engine.types import BGRImage, Faces
from faceport.errors import InvalidInput

log = logging.getLogger(__name__)

BlendMode = Literal["feather", "seamless"]
ColourTransfer = Literal["regional", "global"]

FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148,
             176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
LIPS_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191)
EYE_IMAGE_LEFT = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
EYE_IMAGE_RIGHT = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
BROWS = (70, 63, 105, 66, 107, 336, 296, 334, 293, 300)
# Points whose 3-D positions define the head pose for alignment (rigid parts of the face).
RIGID = (33, 133, 263, 362, 168, 6, 197, 195, 5, 4, 1, 234, 454, 10, 152, 127, 356)
# Hands over a target face (occlusion mask): the palm detector searches a square three faces wide around the
# face (on the whole frame a hand is too few pixels of its 192x192 input); its palms are kept down to 0.1, since
# a hand over a face scores low there, and the landmark model's presence (>= 0.5) rejects the false palms.
HAND_SEARCH = 3.0
HAND_PALM_SCORE = 0.1
HAND_GROW = 0.05  # the hand's silhouette grows by this fraction of its palm width before the feather


@dataclass(frozen=True, slots=True)
class SwapOptions:
    blend: BlendMode = "feather"
    shape_transfer: float = 1.0  # 0: keep the target's inner-face shape, 1: take the source's
    keep_open_mouth: bool = True
    keep_open_eyes: bool = True
    forehead_keep: float = 0.35  # fraction of the forehead (above the brows) that is swapped
    feather: float = 0.08  # mask blur as a fraction of the face size (at mask_blur 0.3)
    pose_texture: bool = True  # sample a UV texture with hidden sides mirror-filled (False: the photo directly)
    colour_transfer: ColourTransfer = "regional"  # regional: skin tone and shading per region; global: one LAB
    # masks (issue 16, faceport.engine.swap.masks): FaceFusion's face_mask_* options and Deep-Live-Cam's mouth mask
    mask_types: tuple[masks.MaskType, ...] = ("box",)
    mask_regions: tuple[str, ...] = masks.MASK_REGIONS
    mask_blur: float = masks.DEFAULT_BLUR  # FaceFusion's face_mask_blur, 0..1; scales ``feather``
    mask_padding: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # top, right, bottom, left, percent
    mouth_mask: bool = False  # keep the target's whole mouth (lips included)
    keep_expression: bool = True  # lips and eyelids follow the target's landmarks (its expression)

    def __post_init__(self) -> None:
        """Raises: InvalidInput naming the option (``details.field``) for an unknown mask type or region."""
        unknown = [name for name in self.mask_types if name not in masks.MASK_TYPES]
        if unknown:
            raise InvalidInput(f"unknown face mask type {unknown[0]!r}; known: {', '.join(masks.MASK_TYPES)}",
                               details={"field": "mask_types"})
        try:
            masks.expand_regions(self.mask_regions)
        except ValueError as exc:
            raise InvalidInput(str(exc), details={"field": "mask_regions"}) from None
        if not 0.0 <= self.mask_blur <= 1.0 or len(self.mask_padding) != 4 \
                or not all(0.0 <= p <= 100.0 for p in self.mask_padding):
            raise InvalidInput("mask_blur is 0-1 and mask_padding four percentages 0-100",
                               details={"field": "mask_blur" if not 0.0 <= self.mask_blur <= 1.0 else "mask_padding"})


@dataclass(frozen=True, slots=True)
class SourceFace:
    """One source image of the person to put in, with its mesh (468, 3) in its pixels.

    ``levels`` is an image pyramid (halving each step) so a large source face is sampled
    from a level near the target's size — minifying many times with one bilinear remap
    would alias.
    """

    image: BGRImage
    landmarks: NDArray[np.float32]
    yaw: float
    levels: tuple[BGRImage, ...] = ()

    @property
    def size(self) -> float:
        return float(np.ptp(self.landmarks[:, 0]))

    def level_for(self, target_size: float) -> tuple[BGRImage, float]:
        """The smallest pyramid level whose face is still at least ``target_size`` wide, and its scale."""
        image, scale = self.image, 1.0
        for level in self.levels:
            if self.size * scale / 2 < target_size:
                break
            image, scale = level, scale / 2
        return image, scale


@lru_cache(maxsize=1)
def _inner_weights() -> NDArray[np.float32]:
    """Per-mesh-point weight of the source shape: 1 inside the face, 0 on the outline."""
    w = np.ones(468, np.float32)
    w[list(FACE_OVAL)] = 0.0
    return w


def triangulate(points: NDArray[np.float32]) -> NDArray[np.int32]:
    """Delaunay triangles (t, 3) over the 468 mesh points, without the mouth opening and eye slits."""
    xy = points[:, :2].astype(np.float64)
    lo = xy.min(0) - 10
    hi = xy.max(0) + 10
    subdiv = cv2.Subdiv2D((int(lo[0]), int(lo[1]), int(hi[0] - lo[0]) + 1, int(hi[1] - lo[1]) + 1))
    lookup = {}
    for i, (x, y) in enumerate(xy):
        subdiv.insert((float(x), float(y)))
        lookup[(round(float(x), 3), round(float(y), 3))] = i
    tri = []
    holes = [set(LIPS_INNER), set(EYE_IMAGE_LEFT), set(EYE_IMAGE_RIGHT)]
    for t in subdiv.getTriangleList():
        ids = []
        for k in range(3):
            key = (round(float(t[2 * k]), 3), round(float(t[2 * k + 1]), 3))
            if key not in lookup:
                break
            ids.append(lookup[key])
        if len(ids) == 3 and not any(set(ids) <= hole for hole in holes):
            tri.append(ids)
    return np.asarray(tri, np.int32)


def _umeyama(src: NDArray[np.float64], dst: NDArray[np.float64]) -> tuple[float, NDArray[np.float64],
                                                                           NDArray[np.float64]]:
    """Similarity transform (scale, R, t) with dst ≈ scale * R @ src + t (Umeyama 1991)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.eye(src.shape[1])
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1, -1] = -1
    rot = u @ sign @ vt
    scale = float(np.trace(np.diag(sig) @ sign) / max(float((s ** 2).sum() / len(src)), 1e-12))
    return scale, rot, mu_d - scale * rot @ mu_s


def _mask_polygon(points: NDArray[np.float32], forehead_keep: float) -> NDArray[np.float32]:
    """The face outline with the forehead pulled down towards the brows (no hairline in the mask)."""
    oval = points[list(FACE_OVAL), :2].astype(np.float64)
    x_axis = points[263, :2] - points[33, :2]
    x_axis = x_axis / max(float(np.linalg.norm(x_axis)), 1e-6)
    up = np.array([x_axis[1], -x_axis[0]])  # perpendicular, pointing up the face
    origin = points[1, :2].astype(np.float64)
    brow_up = float(((points[list(BROWS), :2] - origin) @ up).max())
    rel = oval - origin
    height = rel @ up
    excess = np.clip(height - brow_up, 0, None)
    oval = oval - np.outer(excess * (1 - forehead_keep), up)
    centre = oval.mean(0)
    return np.asarray((oval - centre) * 0.96 + centre, np.float32)


class MeshSwapper:
    """``face_swapper`` processor: puts the source person's face onto every given target face."""

    name = "face_swapper"

    def __init__(self, sources: list[SourceFace], options: SwapOptions | None = None,
                 hands: HandLandmarker | None = None) -> None:
        """``hands``: with ``occlusion`` in the mask types, a hand found over a target face is kept on top."""
        if not sources:
            raise ValueError("MeshSwapper needs at least one source face")
        self.sources = sources
        self.options = options or SwapOptions()
        self.hands = hands if "occlusion" in self.options.mask_types else None
        frontal = min(sources, key=lambda s: abs(s.yaw))
        self.uv: UVTexture | None = None
        if self.options.pose_texture:
            canonical, _pairs = canonical_layout()
            self.triangles = triangulate(np.asarray(canonical * 200.0, np.float32))
            self.uv = build_uv_texture([(s.image, s.landmarks, s.levels) for s in sources], self.triangles,
                                       canonical)
            self._front_sign = np.sign(signed_area(self.uv.uv[self.triangles]))
        else:
            self.triangles = triangulate(frontal.landmarks)

    def _pick_source(self, target_yaw: float) -> SourceFace:
        return min(self.sources, key=lambda s: abs(s.yaw - target_yaw))

    def _geometry(self, source: SourceFace, target: NDArray[np.float32]) -> NDArray[np.float32]:
        """Target-space positions of the mesh: source shape posed on the target, outline kept."""
        src = source.landmarks[:468].astype(np.float64)
        tgt = target[:468].astype(np.float64)
        rigid = list(RIGID)
        scale, rot, shift = _umeyama(src[rigid], tgt[rigid])
        posed = (scale * (rot @ src.T)).T + shift
        w = _inner_weights()[:, None] * self.options.shape_transfer
        if self.options.keep_expression:
            w = w * masks.expression_weights(target)[:, None]
        return (tgt[:, :2] * (1 - w) + posed[:, :2] * w).astype(np.float32)

    def process(self, frame: BGRImage, faces: Faces) -> BGRImage:
        """Swap every face in ``faces`` (they need 468/478 landmarks). Returns a new frame."""
        if faces.landmarks is None or len(faces) == 0:
            return frame
        out = frame.copy()
        for i in range(len(faces)):
            target = faces.landmarks[i]
            source = self._pick_source(head_pose(target).yaw)
            out = self._swap_one(out, source, target)
        return out

    def _hands_over(self, frame: BGRImage, target: NDArray[np.float32]) -> NDArray[np.float32] | None:
        """(n, 21, 3) landmarks of the hands found in a square around one target face (three faces wide)."""
        if self.hands is None:
            return None
        xy = target[:468, :2]
        (x0, y0), (x1, y1) = xy.min(0), xy.max(0)
        side = float(max(x1 - x0, y1 - y0)) * HAND_SEARCH
        found = self.hands.detect(frame, region=(float(x0 + x1) / 2, float(y0 + y1) / 2, side),
                                  score_threshold=HAND_PALM_SCORE, max_hands=2)
        return found.landmarks if len(found) else None

    def _swap_one(self, frame: BGRImage, source: SourceFace, target: NDArray[np.float32]) -> BGRImage:
        """``frame`` with one face swapped: ``frame`` itself, pasted into (the caller owns its copy)."""
        hands = self._hands_over(frame, target)
        h, w = frame.shape[:2]
        geometry = self._geometry(source, target)
        polygon = _mask_polygon(target, self.options.forehead_keep)
        x0, y0 = np.floor(np.minimum(polygon.min(0), geometry.min(0))).astype(int) - 2
        x1, y1 = np.ceil(np.maximum(polygon.max(0), geometry.max(0))).astype(int) + 3
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
        if x1 - x0 < 8 or y1 - y0 < 8:
            return frame
        bw, bh = x1 - x0, y1 - y0
        offset = np.array([x0, y0], np.float32)

        # 1. triangle id per pixel of the box (rasterised), then every pixel's source position at once
        tri_dst = geometry[self.triangles] - offset  # (t, 3, 2)
        ids, warped = self._sample(source, target, geometry, tri_dst, bh, bw)

        # 2. the mask (faceport.engine.swap.masks): box / region / occlusion, minus the target's open mouth, open
        #    eyes and (mouth_mask) whole mouth; occlusion also cleans the source texture of what is not its skin
        opts = self.options
        inputs = masks.MaskInputs(target=target[:468, :2] - offset, geometry=geometry - offset,
                                  polygon=polygon - offset, covered=ids > 0, warped=warped,
                                  region=frame[y0:y1, x0:x1],
                                  hands=None if hands is None else hand_silhouette(hands, (bh, bw), (x0, y0),
                                                                                   grow=HAND_GROW),
                                  source_mouth_open=opts.keep_expression and masks.mouth_open(source.landmarks))
        mask, warped = masks.build_mask(inputs, types=opts.mask_types, regions=opts.mask_regions,
                                        padding=opts.mask_padding, mouth_mask=opts.mouth_mask,
                                        keep_open_mouth=opts.keep_open_mouth, keep_open_eyes=opts.keep_open_eyes)
        size = float(max(np.ptp(polygon[:, 0]), np.ptp(polygon[:, 1])))
        region = frame[y0:y1, x0:x1]

        # 3. colour and light: the target's skin tone and shading per region (colour.py)
        inside = mask > 127
        if inside.sum() < 16:
            return frame
        warped = _match_colour(warped, region, inside, target[:468, :2] - offset, geometry - offset,
                               local=opts.colour_transfer == "regional")

        # 4. blend
        if self.options.blend == "seamless":
            centre = (int(x0 + bw / 2), int(y0 + bh / 2))
            full = np.zeros((h, w), np.uint8)
            full[y0:y1, x0:x1] = cv2.erode(mask, np.ones((3, 3), np.uint8))
            canvas = frame.copy()
            canvas[y0:y1, x0:x1] = warped
            return np.asarray(cv2.seamlessClone(canvas, frame, full, centre, cv2.NORMAL_CLONE), np.uint8)
        soft = masks.feather(mask, size, self.options.feather, self.options.mask_blur)
        alpha = (soft.astype(np.float32) / 255.0)[..., None]
        base = region.astype(np.float32)
        blended = warped.astype(np.float32)  # region + (warped - region) * alpha, in place
        blended -= base
        blended *= alpha
        blended += base
        blended += 0.5
        frame[y0:y1, x0:x1] = blended.astype(np.uint8)
        return frame

    def _sample(self, source: SourceFace, target: NDArray[np.float32], geometry: NDArray[np.float32],
                tri_dst: NDArray[np.float32], bh: int, bw: int) -> tuple[NDArray[np.uint16], BGRImage]:
        """Step 1: triangle id + 1 per pixel of the box, and the source face warped onto it."""
        if self.uv is None:
            return self._sample_photo(source, geometry, tri_dst, bh, bw)
        tri = tri_dst.astype(np.float64)
        # far to near (FaceMesh z grows away from the camera), back faces of the target dropped
        depth = target[:468, 2][self.triangles].mean(1)
        front = np.sign(signed_area(tri)) == self._front_sign
        order = np.argsort(-depth)
        ids = raster_ids(tri, (bh, bw), order[front[order]])
        texture, scale = self.uv.level_for(float(np.ptp(geometry[:, 0])))
        map_x, map_y = triangle_maps(ids, tri, self.uv.uv[self.triangles], scale)
        warped = np.asarray(cv2.remap(texture, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE),
                            np.uint8)
        return ids, warped

    def _sample_photo(self, source: SourceFace, geometry: NDArray[np.float32], tri_dst: NDArray[np.float32],
                      bh: int, bw: int) -> tuple[NDArray[np.uint16], BGRImage]:
        """The pre-UV path: every pixel sampled from the source photo itself (``pose_texture=False``)."""
        ids = np.zeros((bh, bw), np.uint16)
        for t, pts in enumerate(np.round(tri_dst).astype(np.int32)):
            cv2.fillConvexPoly(ids, pts, t + 1)
        tri_src = source.landmarks[:468, :2][self.triangles].astype(np.float64)  # (t, 3, 2)
        dst_h = np.concatenate([tri_dst.astype(np.float64), np.ones((len(tri_dst), 3, 1))], axis=2)  # (t,3,3)
        det = np.linalg.det(dst_h)
        valid = np.abs(det) > 1e-6
        affine = np.zeros((len(tri_dst), 2, 3))
        affine[valid] = np.transpose(np.linalg.solve(dst_h[valid], tri_src[valid]), (0, 2, 1))
        ys, xs = np.nonzero(ids)
        tri_of = ids[ys, xs].astype(np.int64) - 1
        keep = valid[tri_of]
        ys, xs, tri_of = ys[keep], xs[keep], tri_of[keep]
        image, scale = source.level_for(float(np.ptp(geometry[:, 0])))
        a = affine[tri_of] * scale
        map_x = np.full((bh, bw), -1.0, np.float32)
        map_y = np.full((bh, bw), -1.0, np.float32)
        map_x[ys, xs] = a[:, 0, 0] * xs + a[:, 0, 1] * ys + a[:, 0, 2]
        map_y[ys, xs] = a[:, 1, 0] * xs + a[:, 1, 1] * ys + a[:, 1, 2]
        warped = np.asarray(cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE),
                            np.uint8)
        return ids, warped


def _match_colour(warped: BGRImage, region: BGRImage, inside: NDArray[np.bool_],
                  target_points: NDArray[np.float32] | None = None, warped_points: NDArray[np.float32] | None = None,
                  *, local: bool = True) -> BGRImage:
    return match_colour(warped, region, inside, target_points, warped_points, local=local)


def source_faces_from(images: list[BGRImage], faces_per_image: list[Faces]) -> list[SourceFace]:
    """The largest face of each source image, with its mesh (468 points used)."""
    out = []
    for image, faces in zip(images, faces_per_image, strict=True):
        if len(faces) == 0 or faces.landmarks is None:
            continue
        largest = faces.sorted_by_area()[0]
        assert largest.landmarks is not None
        lm = largest.landmarks[0][:468].astype(np.float32)
        levels: list[BGRImage] = []
        level = image
        while min(level.shape[:2]) > 64 and float(np.ptp(lm[:, 0])) / 2 ** (len(levels) + 1) >= 24:
            level = np.asarray(cv2.pyrDown(level), np.uint8)
            levels.append(level)
        out.append(SourceFace(image=image, landmarks=lm, yaw=head_pose(lm).yaw, levels=tuple(levels)))
    return out


__all__ = ["MeshSwapper", "SourceFace", "SwapOptions", "source_faces_from", "triangulate"]
