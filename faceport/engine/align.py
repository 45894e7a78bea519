"""Five-point face alignment: similarity transform to a template, aligned crops, soft paste-back.

The neural face models (ArcFace, inswapper, GFPGAN, CodeFormer) all take a face warped so
that its five keypoints (right eye, left eye, nose tip, right mouth corner, left mouth
corner of the person, i.e. image-left eye first) land on fixed template points. This module
estimates that warp, cuts the crop, and pastes an edited crop back through the inverse warp
with a soft (eroded + blurred) mask, so only the face region changes and no seam shows.
"""

from __future__ import annotations

import logging
import math

import cv2
import numpy as np
from numpy.typing import NDArray

from faceport.engine.types import BGRImage

log = logging.getLogger(__name__)

# insightface's ``arcface_dst``: keypoints of a 112x112 ArcFace crop, (x, y) pixels.
ARCFACE_TEMPLATE_112: NDArray[np.float32] = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    np.float32,
)
# The FFHQ 5-point layout at 512x512 that GFPGAN and CodeFormer were trained on (facexlib's
# ``FaceRestoreHelper`` template): the face sits lower and smaller than in an ArcFace crop.
FFHQ_TEMPLATE_512: NDArray[np.float32] = np.array(
    [[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935], [201.26117, 371.41043],
     [313.08905, 371.15118]],
    np.float32,
)

Affine = NDArray[np.float64]  # (2, 3) image pixels -> crop pixels


def arcface_template(size: int) -> NDArray[np.float32]:
    """The ArcFace template for a ``size`` x ``size`` crop, as insightface scales it.

    Sizes that are a multiple of 112 scale the 112 template; others use the 128 variant
    (scale ``size / 128`` and an x offset of ``8 * size / 128``), which inswapper_128 uses.

    Args:
        size: crop side in pixels (> 0).

    Returns:
        (5, 2) float32 keypoint positions in crop pixels.

    Raises:
        ValueError: ``size`` is not positive.
    """
    if size <= 0:
        raise ValueError(f"crop size must be positive, got {size}")
    if size % 112 == 0:
        ratio, dx = size / 112.0, 0.0
    else:
        ratio = size / 128.0
        dx = 8.0 * ratio
    out = ARCFACE_TEMPLATE_112 * np.float32(ratio)
    out[:, 0] += np.float32(dx)
    return np.asarray(out, np.float32)


def _similarity_lstsq(src: NDArray[np.float64], dst: NDArray[np.float64]) -> Affine:
    """Least-squares similarity (Umeyama without reflection) taking ``src`` to ``dst``."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    var = float((s**2).sum())
    if var <= 1e-12:
        raise ValueError("keypoints are degenerate (all at one point)")
    a = float((s * d).sum()) / var  # scale * cos
    b = float((s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum()) / var  # scale * sin
    m = np.array([[a, -b, 0.0], [b, a, 0.0]])
    m[:, 2] = mu_d - m[:, :2] @ mu_s
    return m


def estimate_norm(kps: NDArray[np.floating], size: int = 112,
                  template: NDArray[np.float32] | None = None) -> Affine:
    """Similarity transform taking five face keypoints onto the alignment template.

    Args:
        kps: (5, 2) keypoints in image pixels: right eye, left eye (of the person; image-left
            eye first), nose tip, right mouth corner, left mouth corner.
        size: crop side in pixels; selects ``arcface_template(size)`` when ``template`` is None.
        template: (5, 2) target positions in crop pixels (for example ``FFHQ_TEMPLATE_512``).

    Returns:
        (2, 3) float64 affine matrix mapping image pixels to crop pixels (rotation, uniform
        scale and translation only).

    Raises:
        ValueError: ``kps`` or ``template`` is not (5, 2), or the keypoints are degenerate.
    """
    src = np.asarray(kps, np.float64)
    dst = np.asarray(arcface_template(size) if template is None else template, np.float64)
    if src.shape != (5, 2) or dst.shape != (5, 2):
        raise ValueError(f"expected (5, 2) keypoints and template, got {src.shape} and {dst.shape}")
    if not np.isfinite(src).all():
        raise ValueError("keypoints contain NaN or infinity")
    m, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.LMEDS)
    if m is None or not np.isfinite(m).all():
        # LMEDS gives up on near-degenerate layouts; least squares still has an answer.
        log.debug("estimateAffinePartial2D found no transform; using least squares")
        return _similarity_lstsq(src, dst)
    return np.asarray(m, np.float64)


def warp_face(image: BGRImage, kps: NDArray[np.floating], size: int = 112,
              template: NDArray[np.float32] | None = None) -> tuple[BGRImage, Affine]:
    """Cut the aligned ``size`` x ``size`` face crop.

    Args:
        image: (H, W, 3) uint8 BGR (any channel order works; it is kept).
        kps: (5, 2) keypoints in image pixels (see ``estimate_norm``).
        size: crop side in pixels.
        template: (5, 2) target keypoints in crop pixels; default ``arcface_template(size)``.

    Returns:
        ``(crop, M)``: (size, size, 3) uint8 crop in the image's channel order (outside the
        image is black), and the (2, 3) float64 image -> crop matrix.
    """
    m = estimate_norm(kps, size, template)
    crop = cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=(0, 0, 0))
    return np.asarray(crop, np.uint8), m


def soft_mask(mask: NDArray[np.generic] | None, size: int, *, erode: float = 0.1,
              blur: float = 0.1) -> NDArray[np.float32]:
    """Erode then blur a crop-space mask so it falls smoothly to zero before its edge.

    Args:
        mask: (size, size) mask in crop pixels, non-zero where the crop should be used (uint8
            0/255, bool or float in [0, 1]); None means the whole crop.
        size: crop side in pixels.
        erode: erosion kernel as a fraction of ``size`` (insightface uses about a tenth).
        blur: Gaussian blur kernel as a fraction of ``size``.

    Returns:
        (size, size) float32 weights in [0, 1]; zero on the crop border, so the warped crop's
        edges never reach the frame.

    Raises:
        ValueError: ``mask`` is not (size, size).
    """
    if mask is None:
        m = np.ones((size, size), np.float32)
    else:
        if mask.shape[:2] != (size, size) or mask.ndim != 2:
            raise ValueError(f"mask: expected shape ({size}, {size}), got {mask.shape}")
        m = mask.astype(np.float32)
        if mask.dtype == np.uint8:
            m /= 255.0
        m = np.clip(m, 0.0, 1.0)
    # zero a one-pixel border so erosion also eats in from the crop's edge
    m[0, :] = m[-1, :] = m[:, 0] = m[:, -1] = 0.0
    k_erode = max(1, round(size * erode))
    if k_erode > 1:
        m = np.asarray(cv2.erode(m, np.ones((k_erode, k_erode), np.uint8), borderType=cv2.BORDER_CONSTANT,
                                 borderValue=0), np.float32)
    k_blur = max(3, round(size * blur)) | 1
    m = np.asarray(cv2.GaussianBlur(m, (k_blur, k_blur), 0, borderType=cv2.BORDER_CONSTANT), np.float32)
    # Gaussian tails are tiny but non-zero: clamp them so pixels far outside stay exact
    m[m < 1e-3] = 0.0
    return np.asarray(np.clip(m, 0.0, 1.0), np.float32)


def paste_back(frame: BGRImage, crop: BGRImage, m: Affine, mask: NDArray[np.generic] | None = None, *,
               erode: float = 0.1, blur: float = 0.1, strength: float = 1.0) -> BGRImage:
    """Blend an edited aligned crop back into a copy of the frame through the inverse warp.

    Args:
        frame: (H, W, 3) uint8 BGR frame the crop was cut from; never modified.
        crop: (S, S, 3) uint8 crop in the frame's channel order.
        m: (2, 3) frame -> crop matrix returned by ``warp_face``.
        mask: (S, S) crop-space mask of where to use the crop (see ``soft_mask``); None = the
            whole crop. It is eroded and blurred before use.
        erode: erosion as a fraction of ``S``.
        blur: blur as a fraction of ``S``.
        strength: overall blend weight in [0, 1] (0 returns an unchanged copy).

    Returns:
        A new (H, W, 3) uint8 BGR frame. Pixels where the soft mask is zero are bit-identical
        to ``frame``.

    Raises:
        ValueError: the crop is not square, or the mask does not match it.
    """
    if crop.ndim != 3 or crop.shape[0] != crop.shape[1]:
        raise ValueError(f"crop: expected shape (S, S, 3), got {crop.shape}")
    size = crop.shape[0]
    weights = soft_mask(mask, size, erode=erode, blur=blur) * np.float32(np.clip(strength, 0.0, 1.0))
    return blend_crop(frame, crop, m, weights)


def blend_crop(frame: BGRImage, crop: BGRImage, m: Affine, weights: NDArray[np.float32]) -> BGRImage:
    """Blend a crop into a copy of the frame with ready crop-space weights (no softening).

    Only the frame rectangle the crop covers is warped, so cost follows the face size, not
    the frame size.

    Args:
        frame: (H, W, 3) uint8 frame; never modified.
        crop: (S, S, 3) uint8 crop in the frame's channel order.
        m: (2, 3) frame -> crop matrix.
        weights: (S, S) float32 blend weights in [0, 1].

    Returns:
        A new (H, W, 3) uint8 frame; bit-identical to ``frame`` where the warped weight is 0.
    """
    out = frame.copy()
    size = crop.shape[0]
    inv = cv2.invertAffineTransform(m)
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64) @ inv[:, :2].T + inv[:, 2]
    h, w = frame.shape[:2]
    x0 = max(0, math.floor(corners[:, 0].min()) - 1)
    y0 = max(0, math.floor(corners[:, 1].min()) - 1)
    x1 = min(w, math.ceil(corners[:, 0].max()) + 2)
    y1 = min(h, math.ceil(corners[:, 1].max()) + 2)
    if x1 <= x0 or y1 <= y0:
        return out
    local = inv.copy()
    local[:, 2] -= (x0, y0)
    dsize = (x1 - x0, y1 - y0)
    warped = cv2.warpAffine(crop, local, dsize, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(weights, local, dsize, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                           borderValue=0.0)
    alpha = np.clip(alpha, 0.0, 1.0)[:, :, None]
    roi = out[y0:y1, x0:x1].astype(np.float32)
    blended = roi + alpha * (warped.astype(np.float32) - roi)
    out[y0:y1, x0:x1] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out
