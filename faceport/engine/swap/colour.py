"""Colour and light transfer of the mesh swap: the target's skin tone and shading on the source's texture.

A single LAB mean/std transfer over the whole face (the swap's first version) gives every
target one average skin colour: the face looks pale next to a tanned or warm-lit neck in a
group photo, and a face lit from one side comes out evenly lit. Here the statistics are local:

1. **skin only**: the statistics are taken over the face mask without eyes, brows and lips —
   at the target's positions and at the warped source's (the two shapes differ) — so dark
   features do not pull the skin tone;
2. **per region, smoothly**: the mean of each LAB channel is a normalised Gaussian average of the
   skin around every pixel (Gaussian sigma ≈ face/8 for L, face/5 for a and b: forehead, cheeks,
   nose and chin get their own tone, with no steps between them). The source's own low-frequency
   shading is taken out and the target's put in, so the target's light direction carries over;
3. **detail contrast**: what is left after the local mean (pores, wrinkles, the face's own
   small shading) is scaled by the ratio of the two residuals' spreads, and on L also by the
   local illumination ratio (a shadowed cheek has less contrast);
4. where the skin support is thin (the mask's edge, a face almost covered), the local statistics
   fade into the global skin statistics.

The local means run on a copy shrunk so that the face is about 48 px wide (the statistics are
low-frequency); the full-size passes (two LAB conversions, the masked statistics with OpenCV's
double accumulators, the recombination) make the step about 4 ms of CPU for a 250 px face.
"""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray

from faceport.engine.types import BGRImage

LEFT_EYE_AREA = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
RIGHT_EYE_AREA = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
LEFT_BROW = (70, 63, 105, 66, 107, 55, 65, 52, 53, 46)
RIGHT_BROW = (336, 296, 334, 293, 300, 276, 283, 282, 295, 285)
LIPS_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
FEATURES = (LEFT_EYE_AREA, RIGHT_EYE_AREA, LEFT_BROW, RIGHT_BROW, LIPS_OUTER)

WORK_FACE_PX = 48.0  # the statistics are computed on a copy where the face is about this wide
SIGMA_L = 1.0 / 8.0  # local mean scale of L (shading), as a fraction of the face size
SIGMA_AB = 1.0 / 5.0  # local mean scale of a and b (skin tone per region)
MIN_SUPPORT = 0.35  # skin share of the Gaussian window below which the local statistics fade to global


def feature_mask(points: NDArray[np.float32], shape: tuple[int, int], size: float) -> NDArray[np.bool_]:
    """Eyes, brows and lips of one face (mesh points in the crop's pixels), slightly dilated."""
    mask = np.zeros(shape, np.uint8)
    for feature in FEATURES:
        hull = cv2.convexHull(np.round(points[list(feature), :2]).astype(np.int32))
        cv2.fillConvexPoly(mask, hull, 255)
    radius = max(1, round(size * 0.03))
    grown = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1)))
    return np.asarray(grown > 0)


def _local_means(images: tuple[NDArray[np.float32], ...], weight: NDArray[np.float32],
                 sigmas: tuple[float, ...]) -> tuple[list[NDArray[np.float32]], NDArray[np.float32]]:
    """Normalised Gaussian mean of each channel of each image over ``weight``, and the support (weight density).

    Channels with the same sigma are blurred together, and the weight once per distinct sigma (the images share it).
    """
    means = [np.empty_like(image) for image in images]
    support = np.empty(images[0].shape, np.float32)
    for sigma in dict.fromkeys(sigmas):
        idx = [c for c, s in enumerate(sigmas) if s == sigma]
        w = cv2.GaussianBlur(weight, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
        support[..., idx] = w[..., None]
        for image, mean in zip(images, means, strict=True):
            num = cv2.GaussianBlur(image[..., idx] * weight[..., None], (0, 0), sigma,
                                   borderType=cv2.BORDER_REPLICATE).reshape(*weight.shape, len(idx))
            mean[..., idx] = num / np.maximum(w, 1e-4)[..., None]
    return means, support


def match_colour(warped: BGRImage, region: BGRImage, inside: NDArray[np.bool_],
                 target_points: NDArray[np.float32] | None = None,
                 warped_points: NDArray[np.float32] | None = None, *, local: bool = True) -> BGRImage:
    """The warped source face recoloured and relit as the target face in ``region``.

    Args:
        warped: (h, w, 3) uint8 BGR, the source face warped onto the target's crop.
        region: (h, w, 3) uint8 BGR, the target's crop (same size).
        inside: (h, w) bool, the face mask (where the swap shows).
        target_points: (468, 2+) the target's mesh in the crop's pixels (its eyes, brows, lips are left out
            of the statistics); ``None``: the whole mask counts.
        warped_points: (468, 2+) where the source's mesh lies in the crop after warping; ``None``: as the target.
        local: per-region tone and shading (default); ``False``: one global LAB mean/std transfer.

    Returns:
        (h, w, 3) uint8 BGR.
    """
    h, w = inside.shape
    size = float(np.sqrt(max(int(inside.sum()), 1)))  # about the face's side in pixels
    skin = inside.copy()
    for points in (target_points, warped_points):
        if points is not None:
            skin &= ~feature_mask(points, (h, w), size)
    if skin.sum() < 16:
        skin = inside
    src_lab = cv2.cvtColor(warped, cv2.COLOR_BGR2LAB)
    dst_lab = cv2.cvtColor(region, cv2.COLOR_BGR2LAB)
    src, dst = src_lab.astype(np.float32), dst_lab.astype(np.float32)
    if not local:  # the first version's transfer, exactly: statistics over the whole mask, truncated
        g_s, g_d = src[inside], dst[inside]
        gain = np.clip((g_d.std(0) + 1e-3) / (g_s.std(0) + 1e-3), 0.2, 2.5)
        matched = np.clip((src - g_s.mean(0)) * gain + g_d.mean(0), 0, 255).astype(np.uint8)
        return np.asarray(cv2.cvtColor(matched, cv2.COLOR_LAB2BGR), np.uint8)

    # masked statistics with OpenCV (double accumulators; numpy's boolean indexing copies every skin pixel)
    skin8 = skin.astype(np.uint8)
    s_mean = np.asarray(cv2.mean(src_lab, mask=skin8)[:3], np.float32)
    d_mean = np.asarray(cv2.mean(dst_lab, mask=skin8)[:3], np.float32)
    f = min(1.0, WORK_FACE_PX / max(size, 1.0))
    sw, sh = max(4, round(w * f)), max(4, round(h * f))
    small_src = np.asarray(cv2.resize(src, (sw, sh), interpolation=cv2.INTER_AREA), np.float32)
    small_dst = np.asarray(cv2.resize(dst, (sw, sh), interpolation=cv2.INTER_AREA), np.float32)
    weight = np.asarray(cv2.resize(skin.astype(np.float32), (sw, sh), interpolation=cv2.INTER_AREA), np.float32)
    face = size * f
    sigmas = (max(1.0, face * SIGMA_L), max(1.0, face * SIGMA_AB), max(1.0, face * SIGMA_AB))
    (ms, md), support = _local_means((small_src, small_dst), weight, sigmas)
    # trust in the local statistics: the skin share of each pixel's window, relative to a full window
    trust = np.clip(support / MIN_SUPPORT, 0.0, 1.0)
    ms = trust * ms + (1 - trust) * s_mean
    md = trust * md + (1 - trust) * d_mean
    ms = cv2.resize(ms, (w, h), interpolation=cv2.INTER_LINEAR)
    md = cv2.resize(md, (w, h), interpolation=cv2.INTER_LINEAR)
    # detail contrast: the spread of what the local means leave, target over source
    s_detail = np.asarray(cv2.subtract(src, ms), np.float32)
    d_detail = np.asarray(cv2.subtract(dst, md), np.float32)
    s_res = np.asarray(cv2.meanStdDev(s_detail, mask=skin8)[1].ravel(), np.float32) + 1e-3
    d_res = np.asarray(cv2.meanStdDev(d_detail, mask=skin8)[1].ravel(), np.float32) + 1e-3
    gain = np.clip(d_res / s_res, [0.7, 0.8, 0.8], [1.5, 1.25, 1.25]).astype(np.float32)
    # a shadowed region has less contrast than a lit one: scale L's detail by the local light
    light = np.clip(md[..., 0] / max(float(d_mean[0]), 1.0), 0.6, 1.4)
    out = s_detail
    out *= gain
    out[..., 0] *= light
    out += md
    return _to_bgr(out)


def _to_bgr(lab: NDArray[np.float32]) -> BGRImage:
    return np.asarray(cv2.cvtColor(np.clip(lab + 0.5, 0, 255).astype(np.uint8), cv2.COLOR_LAB2BGR), np.uint8)


__all__ = ["FEATURES", "feature_mask", "match_colour"]
