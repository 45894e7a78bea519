"""An independent judge of a swap's skin colour: does the face match its own neck and light?

The swap's colour step reads only pixels inside the face mask; this judge compares the
result's cheeks with the target's skin *outside* the mask (along the jaw), in CIEDE2000,
and the left/right light balance of the cheeks with the target's. It uses the target's
mesh only to place its patches. Written out here (no scikit-image in the venv);
checked against Sharma, Wu & Dalal's published test pairs in tests/engine/test_swap_colour.py.
"""

from __future__ import annotations

import cv2
import numpy as np

LEFT_CHEEK, RIGHT_CHEEK = 205, 425  # mesh points in the middle of each cheek


def ciede2000(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    """CIEDE2000 colour difference of CIELAB colours (L 0-100, a/b signed), element-wise over the last axis."""
    l1, a1, b1 = np.moveaxis(np.asarray(lab1, np.float64), -1, 0)
    l2, a2, b2 = np.moveaxis(np.asarray(lab2, np.float64), -1, 0)
    c1, c2 = np.hypot(a1, b1), np.hypot(a2, b2)
    c_bar7 = ((c1 + c2) / 2) ** 7
    g = 0.5 * (1 - np.sqrt(c_bar7 / (c_bar7 + 25.0 ** 7)))
    a1p, a2p = a1 * (1 + g), a2 * (1 + g)
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p = np.degrees(np.arctan2(b1, a1p)) % 360
    h2p = np.degrees(np.arctan2(b2, a2p)) % 360
    dlp, dcp = l2 - l1, c2p - c1p
    dh = h2p - h1p
    dh = np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh))
    dh = np.where(c1p * c2p == 0, 0.0, dh)
    dhp = 2 * np.sqrt(c1p * c2p) * np.sin(np.radians(dh / 2))
    lbar, cbar = (l1 + l2) / 2, (c1p + c2p) / 2
    hsum = h1p + h2p
    wrapped = np.where(hsum < 360, (hsum + 360) / 2, (hsum - 360) / 2)
    hbar = np.where(c1p * c2p == 0, hsum, np.where(np.abs(h1p - h2p) <= 180, hsum / 2, wrapped))
    t = (1 - 0.17 * np.cos(np.radians(hbar - 30)) + 0.24 * np.cos(np.radians(2 * hbar))
         + 0.32 * np.cos(np.radians(3 * hbar + 6)) - 0.20 * np.cos(np.radians(4 * hbar - 63)))
    sl = 1 + 0.015 * (lbar - 50) ** 2 / np.sqrt(20 + (lbar - 50) ** 2)
    sc, sh = 1 + 0.045 * cbar, 1 + 0.015 * cbar * t
    cbar7 = cbar ** 7
    rt = (-2 * np.sqrt(cbar7 / (cbar7 + 25.0 ** 7))
          * np.sin(np.radians(60 * np.exp(-(((hbar - 275) / 25) ** 2)))))
    return np.sqrt((dlp / sl) ** 2 + (dcp / sc) ** 2 + (dhp / sh) ** 2 + rt * (dcp / sc) * (dhp / sh))


def to_cielab(bgr_pixels: np.ndarray) -> np.ndarray:
    """(n, 3) uint8 BGR -> (n, 3) CIELAB (L 0-100) through OpenCV's float conversion (D65, sRGB)."""
    pixels = np.asarray(bgr_pixels, np.float32).reshape(-1, 1, 3) / 255.0
    return np.asarray(cv2.cvtColor(pixels, cv2.COLOR_BGR2LAB), np.float64).reshape(-1, 3)


def _disc(image: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray:
    mask = np.zeros(image.shape[:2], np.uint8)
    cv2.circle(mask, (round(centre[0]), round(centre[1])), max(2, round(radius)), 255, -1)
    return image[mask > 0]


def patch_lab(image: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray:
    """Median CIELAB colour of a disc (robust to a stray pore or hair)."""
    return np.median(to_cielab(_disc(image, centre, radius)), axis=0)


def face_size(landmarks: np.ndarray) -> float:
    return float(np.ptp(landmarks[:468, 0]))


FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148,
             176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
MOUTH_CORNERS = (61, 291)


def jaw_band(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Skin pixels of the target just outside the swap's mask, along the jaw (below the mouth corners).

    The band runs from 4 % of the face size outside the swap's mask (``_mask_polygon``: the face
    oval shrunk to 96 %; the feathered edge stays inside it) to the oval grown to 108 %; only pixels
    a classical YCrCb skin rule accepts count (Chai & Ngan: Cr 133-173, Cb 77-127), so the
    background, a collar or hair beside the jaw are left out. (n, 3) uint8 BGR.
    """
    from faceport.engine.swap.mesh import _mask_polygon

    size = face_size(landmarks)
    h, w = image.shape[:2]
    oval = landmarks[list(FACE_OVAL), :2].astype(np.float64)
    centre = oval.mean(0)
    outer = np.zeros((h, w), np.uint8)
    cv2.fillPoly(outer, [np.round((oval - centre) * 1.08 + centre).astype(np.int32)], 255)
    inner = np.zeros((h, w), np.uint8)
    cv2.fillPoly(inner, [np.round(_mask_polygon(landmarks, 0.35)).astype(np.int32)], 255)
    grow = max(1, round(0.04 * size))
    inner = cv2.dilate(inner, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1)))
    band = (outer > 0) & (inner == 0)
    # below the mouth corners, along the face's own up axis
    x_axis = landmarks[263, :2] - landmarks[33, :2]
    x_axis = x_axis / max(float(np.linalg.norm(x_axis)), 1e-6)
    up = np.array([x_axis[1], -x_axis[0]])
    ys, xs = np.mgrid[0:h, 0:w]
    mouth = landmarks[list(MOUTH_CORNERS), :2].mean(0)
    band &= ((xs - mouth[0]) * up[0] + (ys - mouth[1]) * up[1]) < 0
    ycc = cv2.cvtColor(image, cv2.COLOR_BGR2YCrCb)
    skin = (ycc[..., 1] >= 133) & (ycc[..., 1] <= 173) & (ycc[..., 2] >= 77) & (ycc[..., 2] <= 127)
    return np.asarray(image[band & skin])


def jaw_visible(image: np.ndarray, landmarks: np.ndarray) -> bool:
    """Enough skin pixels in the jaw band to judge (at least 30 and 2 % of the face's area)."""
    return len(jaw_band(image, landmarks)) >= max(30, 0.02 * face_size(landmarks) ** 2)


def cheeks_vs_jaw(result: np.ndarray, target: np.ndarray, landmarks: np.ndarray) -> float:
    """Skin-tone difference (CIEDE2000 at equal lightness) of the result's cheeks and the target's jaw skin.

    The jaw lies in the face's own shadow, so its lightness says little about tone: its CIELAB
    colour is scaled (L, a and b alike, as a darker light does) until its L* equals the cheeks'.
    """
    r = 0.05 * face_size(landmarks)
    cheeks = np.mean([patch_lab(result, landmarks[i, :2], r) for i in (LEFT_CHEEK, RIGHT_CHEEK)], axis=0)
    jaw = np.median(to_cielab(jaw_band(target, landmarks)), axis=0)
    jaw = jaw * (cheeks[0] / max(float(jaw[0]), 1.0))
    return float(ciede2000(cheeks, jaw))


def cheek_light_balance(image: np.ndarray, landmarks: np.ndarray) -> float:
    """L* of the image-left cheek minus the image-right cheek (the light's direction across the face)."""
    r = 0.05 * face_size(landmarks)
    return float(patch_lab(image, landmarks[LEFT_CHEEK, :2], r)[0] - patch_lab(image, landmarks[RIGHT_CHEEK, :2], r)[0])


def off_tone_share(result: np.ndarray, target: np.ndarray, landmarks: np.ndarray, *, threshold: float = 12.0) -> float:
    """Share of the result's face skin whose tone is off the target's jaw skin (pale or dark patches, streaks).

    Face skin: inside the swap's mask, eyes, brows and lips left out. Each pixel's CIELAB colour is
    compared with the jaw's at equal lightness (as in :func:`cheeks_vs_jaw`) and also in lightness
    against the result's own skin median; a pixel counts as off when its CIEDE2000 to the jaw tone
    is over ``threshold``.
    """
    from faceport.engine.swap.colour import feature_mask
    from faceport.engine.swap.mesh import _mask_polygon

    h, w = result.shape[:2]
    inside = np.zeros((h, w), np.uint8)
    cv2.fillPoly(inside, [np.round(_mask_polygon(landmarks, 0.35)).astype(np.int32)], 255)
    size = face_size(landmarks)
    grow = max(1, round(0.05 * size))
    inside = cv2.erode(inside, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1)))
    skin = (inside > 0) & ~feature_mask(landmarks[:468, :2].astype(np.float32), (h, w), size)
    lab = to_cielab(result[skin])
    jaw = np.median(to_cielab(jaw_band(target, landmarks)), axis=0)
    scaled = jaw[None, :] * (lab[:, :1] / max(float(jaw[0]), 1.0))
    return float((ciede2000(lab, scaled) > threshold).mean())
