"""Pose-robust source texture for the mesh swap: the source face unwrapped into a canonical (frontal) layout.

A mesh swap that samples the source photo directly stretches whatever the source shows of a triangle over
the target's version of it: where the source's head is turned, its far cheek is a thin sliver (or hidden
behind the nose) and comes out on a frontal target as a striped, torn smear. Here instead:

1. **canonical layout** (``canonical.py``, shipped): the 3-D FaceMesh (468 points; x, y pixels, z depth on
   the same scale) of frontal real photos, frontalised (rotated into its own face axes, scaled to a unit eye
   distance) and averaged, made exactly left-right symmetric through the mesh's mirror pairs (each point's
   partner: the point nearest its mirror image), so a texel's mirror twin is the horizontally flipped texel;
2. **unwrap**: each source photo is resampled into that layout (a UV texture, one affine per triangle,
   computed for all texels at once, from the source's pyramid level nearest the texture's size);
3. **visibility**: per triangle, the cosine between its 3-D normal in the source and the view direction
   (its projected area over its true area, signed: a back face is negative), smoothed over the texture;
4. **merge and fill**: texels are taken from the photo that sees them best (sharp soft-max over the
   sources' visibility); where even the best photo sees a texel only at a grazing angle and the mirrored
   side is seen better, the mirrored texel is used, through a blurred blend so no seam shows.

The texture is built once per source set (``UVTexture``); the swap then maps target pixels to texels.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from faceport.engine.types import BGRImage

_EYE_LEFT, _EYE_RIGHT, _FOREHEAD, _CHIN = 33, 263, 10, 152
_MIDLINE = (1, 4, 5, 6, 168, 197, 195, 10, 152, 13, 14, 0, 17, 164, 2)
VISIBLE_FULL = 0.35  # visibility (normal · view) from which a texel is trusted fully
VISIBLE_NONE = 0.1  # ... and below which it is not trusted at all
SHADING_NONE = 0.0  # below this visibility not even the source's low-frequency shading is used
SHADING_FULL = 0.1  # ... and from which it is used under the mirrored detail
MIRROR_MARGIN = 0.15  # the mirrored side must be seen this much better to be used (near-frontal: never)


def face_axes(points: NDArray[np.float64]) -> NDArray[np.float64]:
    """Rows: the face's x (eye to eye), y (forehead to chin) and z axes in camera coordinates."""
    x = points[_EYE_RIGHT] - points[_EYE_LEFT]
    x /= max(float(np.linalg.norm(x)), 1e-9)
    y = points[_CHIN] - points[_FOREHEAD]
    y -= x * float(np.dot(y, x))
    y /= max(float(np.linalg.norm(y)), 1e-9)
    return np.stack([x, y, np.cross(x, y)])


def frontalise(landmarks: NDArray[np.float32]) -> NDArray[np.float64]:
    """The mesh (468, 3) in its own face frame, centred, with a unit eye-corner distance."""
    p = landmarks[:468, :3].astype(np.float64)
    q = (p - p.mean(0)) @ face_axes(p).T
    return np.asarray(q / max(float(np.linalg.norm(q[_EYE_RIGHT] - q[_EYE_LEFT])), 1e-9), np.float64)


def mirror_pairs(canonical: NDArray[np.float64]) -> NDArray[np.int64]:
    """Each point's mirror partner (an involution: pairs[pairs] == identity; midline points pair with
    themselves): greedy matching by the 2-D (x, y) distance between a point's mirror image (x -> -x) and the
    other point, closest pairs first. The distance is symmetric, so the matching is too."""
    mirrored = canonical * np.array([-1.0, 1.0, 1.0])
    d = np.sqrt(((mirrored[:, None, :2] - canonical[None, :, :2]) ** 2).sum(-1))
    rows, cols = np.triu_indices(len(canonical))
    pairs = np.full(len(canonical), -1, np.int64)
    left = len(canonical)
    for k in np.argsort(d[rows, cols], kind="stable"):
        i, j = int(rows[k]), int(cols[k])
        if pairs[i] < 0 and pairs[j] < 0:
            pairs[i], pairs[j] = j, i
            left -= 1 if i == j else 2
            if left == 0:
                break
    return pairs


def derive_canonical(meshes: list[NDArray[np.float32]]) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """A symmetric canonical mesh (468, 3) from frontal ``meshes`` (their frontalised average) and its mirror
    pairs. How ``canonical.py`` was made; a turned face's mesh is too lopsided to pair reliably."""
    mean = np.mean([frontalise(m) for m in meshes], axis=0)
    mean[:, 0] -= mean[list(_MIDLINE), 0].mean()
    pairs = mirror_pairs(mean)
    sym = (mean + mean[pairs] * np.array([-1.0, 1.0, 1.0])) / 2
    sym[pairs == np.arange(len(sym)), 0] = 0.0
    return sym, pairs


def canonical_layout() -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """The shipped canonical mesh and mirror pairs (``canonical.py``): one fixed UV layout for every source."""
    from faceport.engine.swap.canonical import CANONICAL, MIRROR

    return CANONICAL, MIRROR


def signed_area(tri: NDArray[np.float64]) -> NDArray[np.float64]:
    """Twice the signed 2-D area of triangles (t, 3, >=2)."""
    u, v = tri[:, 1, :2] - tri[:, 0, :2], tri[:, 2, :2] - tri[:, 0, :2]
    return np.asarray(u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0], np.float64)


def visibility(landmarks: NDArray[np.float32], triangles: NDArray[np.int32],
               canonical_sign: NDArray[np.float64]) -> NDArray[np.float64]:
    """Per triangle: cos(normal, view direction) in this photo, signed (negative: a back face)."""
    tri = landmarks[:468, :3].astype(np.float64)[triangles]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    return np.asarray(signed_area(tri) * canonical_sign / np.maximum(np.linalg.norm(normal, axis=1), 1e-9))


def raster_ids(triangles_xy: NDArray[np.float64], shape: tuple[int, int],
               order: NDArray[np.int64] | None = None) -> NDArray[np.uint16]:
    """Triangle id + 1 per pixel (0: none), painted in ``order`` (later ones on top)."""
    ids = np.zeros(shape, np.uint16)
    polygons = list(np.round(triangles_xy).astype(np.int32))
    for t in (range(len(polygons)) if order is None else order.tolist()):  # plain ints: no numpy scalars per call
        cv2.fillConvexPoly(ids, polygons[t], t + 1)
    return ids


def triangle_maps(ids: NDArray[np.uint16], tri_dst: NDArray[np.float64], tri_src: NDArray[np.float64],
                  scale: float = 1.0) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """``cv2.remap`` maps sending every pixel of triangle t in ``ids`` through the affine tri_dst[t] -> tri_src[t]."""
    dst_h = np.concatenate([tri_dst[:, :, :2], np.ones((len(tri_dst), 3, 1))], axis=2)
    valid = np.abs(np.linalg.det(dst_h)) > 1e-6
    affine = np.zeros((len(tri_dst), 2, 3))
    affine[valid] = np.transpose(np.linalg.solve(dst_h[valid], tri_src[valid, :, :2]), (0, 2, 1))
    # per-triangle coefficients, looked up per pixel through ``ids`` (row 0, and a degenerate triangle: -1,
    # outside the source); the same float64 sums, pixel by pixel, as solving per pixel would give
    table = np.zeros((len(tri_dst) + 1, 2, 3))
    table[0, :, 2] = -1.0
    table[1:][valid] = affine[valid] * scale
    table[1:][~valid] = table[0]
    ys = np.arange(ids.shape[0], dtype=np.float64)[:, None]
    xs = np.arange(ids.shape[1], dtype=np.float64)[None, :]
    coef = np.ascontiguousarray(table.reshape(-1, 6).T)  # (6, t + 1)
    map_x = (coef[0].take(ids) * xs + coef[1].take(ids) * ys + coef[2].take(ids)).astype(np.float32)
    map_y = (coef[3].take(ids) * xs + coef[4].take(ids) * ys + coef[5].take(ids)).astype(np.float32)
    return map_x, map_y


def _smoothstep(x: NDArray[np.float32], lo: float, hi: float) -> NDArray[np.float32]:
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return np.asarray(t * t * (3 - 2 * t), np.float32)


@dataclass(frozen=True, slots=True)
class UVTexture:
    """The merged source texture in the canonical layout, with its pyramid and the layout's texel coordinates.

    ``uv``: (468, 2) texel position of every mesh point; ``levels``: the texture halved per step;
    ``face_width``: the face's width in texels at level 0; ``mirrored``: share of face texels filled
    from the mirrored side (a diagnostic).
    """

    texture: BGRImage
    uv: NDArray[np.float64]
    levels: tuple[BGRImage, ...]
    face_width: float
    mirrored: float

    def level_for(self, target_width: float) -> tuple[BGRImage, float]:
        image, scale = self.texture, 1.0
        for level in self.levels:
            if self.face_width * scale / 2 < target_width:
                break
            image, scale = level, scale / 2
        return image, scale


def build_uv_texture(sources: list[tuple[BGRImage, NDArray[np.float32], tuple[BGRImage, ...]]],
                     triangles: NDArray[np.int32], canonical: NDArray[np.float64], *,
                     max_width: int = 512, mirror_fill: bool = True) -> UVTexture:
    """Unwrap each source (image, (468, 3) mesh, pyramid levels) into the canonical layout and merge them.

    The texture's face width is the largest source face width (at most ``max_width`` texels).
    """
    widths = [float(np.ptp(lm[:468, 0])) for _, lm, _ in sources]
    width = float(min(max_width, max(64.0, max(widths))))
    c = canonical[:, :2]
    s = width / float(np.ptp(c[:, 0]))
    margin = 4
    w_tex = int(np.ceil(width)) + 2 * margin
    w_tex += w_tex % 2  # even: the mirror of column u is column w-1-u, symmetric about (w-1)/2
    h_tex = int(np.ceil(np.ptp(c[:, 1]) * s)) + 2 * margin
    uv = np.stack([(w_tex - 1) / 2 + c[:, 0] * s, margin + (c[:, 1] - c[:, 1].min()) * s], axis=1)
    tri_uv = uv[triangles]
    canonical_sign = np.sign(signed_area(tri_uv))
    ids = raster_ids(tri_uv, (h_tex, w_tex))
    inside = ids > 0
    # texels just outside the mesh take their neighbouring triangle's map (no black bleeding at the edge)
    grown = ids.copy()
    for _ in range(3):
        dil = cv2.dilate(grown, np.ones((3, 3), np.uint8))
        grown = np.where(grown == 0, dil, grown)
    blur = max(1.0, width * 0.02)
    textures, weights = [], []
    for (image, lm, levels), face_w in zip(sources, widths, strict=True):
        level, scale = image, 1.0
        for down in levels:
            if face_w * scale / 2 < width:
                break
            level, scale = down, scale / 2
        map_x, map_y = triangle_maps(grown, tri_uv, lm[:468, :2].astype(np.float64)[triangles], 1.0)
        map_x, map_y = map_x * scale, map_y * scale
        textures.append(np.asarray(cv2.remap(level, map_x, map_y, cv2.INTER_LINEAR,
                                             borderMode=cv2.BORDER_REPLICATE), np.float32))
        vis = visibility(lm, triangles, canonical_sign)
        per_texel = np.where(grown > 0, vis[np.maximum(grown.astype(np.int64) - 1, 0)], 0.0).astype(np.float32)
        weights.append(cv2.GaussianBlur(per_texel, (0, 0), blur))
    vis_stack = np.stack(weights)  # (k, h, w)
    soft = np.exp(12.0 * (vis_stack - vis_stack.max(0, keepdims=True)))  # each texel from the best-seeing photo
    soft /= soft.sum(0, keepdims=True)
    real = (np.stack(textures) * soft[..., None]).sum(0)
    seen = (vis_stack * soft).sum(0)
    out = real
    mirrored_share = 0.0
    if mirror_fill:
        mirror = real[:, ::-1]
        seen_m = seen[:, ::-1]
        trust = _smoothstep(seen, VISIBLE_NONE, VISIBLE_FULL)
        better = _smoothstep(seen_m - seen, MIRROR_MARGIN, MIRROR_MARGIN + 0.2)
        take = cv2.GaussianBlur((1.0 - trust) * better, (0, 0), blur * 1.5)
        take = np.where(inside[:, ::-1] | inside, take, 0.0)[..., None]
        # the mirror gives the detail; the shading stays the source's own where its low frequencies are
        # still usable (a squeezed cheek is smeared, not wrongly lit), so a side-lit face stays side-lit
        low_sigma = max(2.0, width * 0.06)
        low_real = cv2.GaussianBlur(real, (0, 0), low_sigma)
        low_mirror = cv2.GaussianBlur(mirror, (0, 0), low_sigma)
        own_light = _smoothstep(cv2.GaussianBlur(seen, (0, 0), low_sigma), SHADING_NONE, SHADING_FULL)[..., None]
        filled = mirror + (low_real - low_mirror) * own_light
        out = real * (1.0 - take) + filled * take
        mirrored_share = float(take[inside].mean()) if inside.any() else 0.0
    texture = np.asarray(np.clip(out + 0.5, 0, 255), np.uint8)
    levels_out: list[BGRImage] = []
    level_img = texture
    while min(level_img.shape[:2]) > 32:
        level_img = np.asarray(cv2.pyrDown(level_img), np.uint8)
        levels_out.append(level_img)
    return UVTexture(texture=texture, uv=uv, levels=tuple(levels_out), face_width=width, mirrored=mirrored_share)


__all__ = ["UVTexture", "build_uv_texture", "canonical_layout", "derive_canonical", "frontalise", "mirror_pairs",
           "raster_ids", "signed_area", "triangle_maps", "visibility"]
