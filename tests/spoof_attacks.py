"""Synthetic presentation attacks made from real photos: printed and screen recaptures, simulated.

These are SYNTHETIC: no physical print or screen was photographed. Each attack renders what the
physical process does to the light, then passes the result through a simple webcam model
(defocus blur, sensor noise, JPEG):

- ``print_border``: the photo printed (contrast and gamut compressed, raised black level, warm
  paper tint, paper grain), a white paper margin round it, held in two fingers, tilted in
  perspective in front of a real background, with a soft glare band.
- ``print_closeup``: the same print held so close that it fills the frame: no margin, no
  background, no fingers.
- ``screen_bezel``: the photo shown on a display: every display pixel rendered as red, green and
  blue sub-pixel stripes with a dark matrix between them, a blue-shifted white point, a black
  bezel and device body, tilted and resampled to the camera's grid (which is what makes moire).
- ``screen_closeup``: the same display filling the frame (no bezel in view).
- ``camera_only`` (bona fide control): the real photo through the webcam model alone, to check
  that the cues answer the print or screen and not the camera's blur, noise or JPEG.

:func:`attack_stream` makes frame sequences for the proctoring checks: a printed photo held in the hand,
a tablet replaying a real clip, and a still photo of the client with fresh sensor noise on every frame.

Used by tests/engine/test_antispoof.py, tests/services/test_proctor_spoof.py and bench/antispoof.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

Image = NDArray[np.uint8]
FRAME = (640, 480)  # camera frame, width x height


def _camera(image: Image, rng: np.random.Generator, *, blur: tuple[float, float] = (0.5, 1.1)) -> Image:
    """Webcam model: defocus, sensor noise, JPEG at quality 75-92."""
    sigma = rng.uniform(*blur)
    out = cv2.GaussianBlur(image, (0, 0), sigma).astype(np.float32)
    out += rng.normal(0, rng.uniform(1.5, 3.5), out.shape).astype(np.float32)
    ok, buf = cv2.imencode(".jpg", np.clip(out, 0, 255).astype(np.uint8),
                           [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(75, 93))])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def _fit(photo: Image, size: tuple[int, int]) -> Image:
    """Centre-crop ``photo`` to the aspect of ``size`` (w, h) and resize to it."""
    w, h = size
    ph, pw = photo.shape[:2]
    scale = max(w / pw, h / ph)
    resized = cv2.resize(photo, (max(w, round(pw * scale)), max(h, round(ph * scale))), interpolation=cv2.INTER_AREA)
    y0, x0 = (resized.shape[0] - h) // 2, (resized.shape[1] - w) // 2
    return resized[y0:y0 + h, x0:x0 + w].copy()


def _printed(photo: Image, rng: np.random.Generator) -> NDArray[np.float32]:
    """Reflective print: contrast and saturation compressed, black level raised, warm tint, grain."""
    img = photo.astype(np.float32) / 255
    grey = img.mean(axis=2, keepdims=True)
    img = grey + (img - grey) * rng.uniform(0.6, 0.8)  # ink gamut
    img = rng.uniform(0.08, 0.16) + img * rng.uniform(0.72, 0.84)  # paper white, ink black
    img *= np.array([0.93, 0.98, 1.0], np.float32)  # warm paper (BGR)
    h, w = img.shape[:2]
    grain = cv2.resize(rng.normal(0, 1, (h // 3 + 1, w // 3 + 1)).astype(np.float32), (w, h))
    return np.clip(img * (1 + 0.02 * grain[..., None]), 0, 1)


def _glare(shape: tuple[int, int], rng: np.random.Generator, strength: float) -> NDArray[np.float32]:
    """A soft diagonal reflection band (0..strength)."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    d = (xx - w * rng.uniform(0.3, 0.7)) * np.cos(angle) + (yy - h * rng.uniform(0.3, 0.7)) * np.sin(angle)
    return strength * np.exp(-(d / (0.12 * max(h, w))) ** 2)


def _place(card: NDArray[np.float32], background: Image, rng: np.random.Generator, *,
           height_share: tuple[float, float], tilt: float) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Warp a flat card (float BGR 0..1) into a camera frame over ``background``; returns frame and card quad."""
    fw, fh = FRAME
    bg = _fit(background, FRAME).astype(np.float32) / 255
    ch, cw = card.shape[:2]
    target_h = fh * rng.uniform(*height_share)
    target_w = target_h * cw / ch
    cx, cy = fw / 2 + rng.uniform(-0.08, 0.08) * fw, fh / 2 + rng.uniform(-0.05, 0.05) * fh
    quad = np.float32([[cx - target_w / 2, cy - target_h / 2], [cx + target_w / 2, cy - target_h / 2],
                       [cx + target_w / 2, cy + target_h / 2], [cx - target_w / 2, cy + target_h / 2]])
    quad = (quad + rng.uniform(-tilt, tilt, (4, 2)) * [target_w, target_h]).astype(np.float32)
    src = np.float32([[0, 0], [cw, 0], [cw, ch], [0, ch]])
    m = cv2.getPerspectiveTransform(src, quad)
    warped = cv2.warpPerspective(card, m, FRAME, flags=cv2.INTER_AREA if cw > fw else cv2.INTER_LINEAR)
    mask = cv2.warpPerspective(np.ones((ch, cw), np.float32), m, FRAME, flags=cv2.INTER_LINEAR)[..., None]
    return bg * (1 - mask) + warped * mask, quad


def _fingers(frame: NDArray[np.float32], quad: NDArray[np.float32], rng: np.random.Generator) -> None:
    """Draw one or two shaded fingertips over the card's left/right edges (in place)."""
    skin = np.array([rng.uniform(0.45, 0.6), rng.uniform(0.55, 0.7), rng.uniform(0.75, 0.9)], np.float32)
    h = float(np.linalg.norm(quad[3] - quad[0]))
    for a, b in rng.permutation([(0, 3), (1, 2)])[: int(rng.integers(1, 3))]:
        t = rng.uniform(0.55, 0.85)
        p = quad[a] * (1 - t) + quad[b] * t
        direction = 1 if a == 1 else -1
        centre = (int(p[0] - direction * 0.02 * h), int(p[1]))
        axes = (int(0.07 * h), int(0.035 * h))
        layer = np.zeros(frame.shape[:2], np.float32)
        cv2.ellipse(layer, centre, axes, float(rng.uniform(-20, 20)), 0, 360, 1.0, -1)
        layer = cv2.GaussianBlur(layer, (0, 0), 1.5)[..., None]
        shade = skin * (0.85 + 0.15 * rng.random())
        frame[:] = frame * (1 - layer) + shade * layer


def print_attack(photo: Image, background: Image, rng: np.random.Generator, *, closeup: bool = False) -> Image:
    """A print of ``photo`` recaptured by a webcam (see the module docstring)."""
    printed = _printed(_fit(photo, (600, 800)) if photo.shape[0] >= photo.shape[1] else _fit(photo, (800, 600)), rng)
    if closeup:
        frame = _fit((printed * 255).astype(np.uint8), FRAME).astype(np.float32) / 255
        h, w = frame.shape[:2]
        src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
        dst = (src + rng.uniform(-0.03, 0.03, (4, 2)) * [w, h]).astype(np.float32)
        frame = cv2.warpPerspective(frame, cv2.getPerspectiveTransform(src, dst), FRAME,
                                    borderMode=cv2.BORDER_REFLECT)
    else:
        margin = int(rng.uniform(0.04, 0.1) * max(printed.shape[:2]))
        paper = np.array([0.9, 0.95, 0.97], np.float32) * rng.uniform(0.85, 1.0)
        card = cv2.copyMakeBorder(printed, margin, margin, margin, margin, cv2.BORDER_CONSTANT,
                                  value=[float(c) for c in paper])
        frame, quad = _place(card, _background(background, rng), rng, height_share=(0.7, 0.92), tilt=0.05)
        _fingers(frame, quad, rng)
    frame = np.clip(frame + _glare(frame.shape[:2], rng, rng.uniform(0.0, 0.25))[..., None], 0, 1)
    return _camera((frame * 255).astype(np.uint8), rng)


def _display(photo: Image, rng: np.random.Generator, pixels_high: int) -> NDArray[np.float32]:
    """The light of a display showing ``photo`` at ``pixels_high`` display rows: RGB stripes, black matrix."""
    ph, pw = photo.shape[:2]
    cols = round(pixels_high * pw / ph)
    shown = cv2.resize(photo, (cols, pixels_high), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    shown = np.clip(shown * np.array([1.06, 0.98, 0.9], np.float32), 0, 1) ** 0.9  # cool white point (BGR)
    k = 3  # physical samples per display pixel
    physical = np.zeros((pixels_high * k, cols * k, 3), np.float32)
    for sub, channel in enumerate((2, 1, 0)):  # R, G, B stripes left to right
        physical[:, sub::k, channel] = np.repeat(shown[..., channel], k, axis=0)
    physical[k - 1::k, :, :] *= 0.6  # black matrix between rows
    return physical * 2.6  # each stripe carries one channel: restore brightness


def screen_attack(photo: Image, background: Image, rng: np.random.Generator, *, closeup: bool = False) -> Image:
    """``photo`` shown on a phone or tablet display and recaptured by a webcam (see the module docstring)."""
    fitted = _fit(photo, (480, 640)) if photo.shape[0] >= photo.shape[1] else _fit(photo, (640, 480))
    rows = int(rng.integers(400, 640)) if not closeup else int(rng.integers(520, 760))
    screen = np.clip(_display(fitted, rng, rows), 0, 1.4)
    # Camera optics: a blur of about half a camera pixel, in display samples (the rest aliases: moire).
    per_camera_pixel = screen.shape[0] / (FRAME[1] * (1.1 if closeup else 0.75))
    screen = cv2.GaussianBlur(screen, (0, 0), 0.5 * per_camera_pixel)
    if closeup:
        h, w = screen.shape[:2]
        fw, fh = FRAME
        scale = max(fw / w, fh / h) * rng.uniform(1.05, 1.25)
        m = np.float32([[scale, 0, (fw - w * scale) / 2], [0, scale, (fh - h * scale) / 2]])
        m[:, :2] = m[:, :2] @ cv2.getRotationMatrix2D((0, 0), float(rng.uniform(-4, 4)), 1.0)[:, :2]
        frame = cv2.warpAffine(screen, m, FRAME, flags=cv2.INTER_LINEAR)
    else:
        bezel = int(rng.uniform(0.03, 0.08) * max(screen.shape[:2]))
        body = np.float32([rng.uniform(0.02, 0.12)] * 3)
        card = cv2.copyMakeBorder(screen, bezel, bezel, bezel, bezel, cv2.BORDER_CONSTANT,
                                  value=[float(c) for c in body])
        frame, _ = _place(card, _background(background, rng), rng, height_share=(0.6, 0.9), tilt=0.04)
    frame = np.clip(frame + _glare(frame.shape[:2], rng, rng.uniform(0.05, 0.3))[..., None], 0, 1)
    return _camera((frame * 255).astype(np.uint8), rng, blur=(0.6, 1.0))


def camera_only(photo: Image, background: Image, rng: np.random.Generator) -> Image:
    """Bona fide control: the real photo through the webcam model only."""
    del background
    fitted = _fit(photo, (480, 640)) if photo.shape[0] >= photo.shape[1] else _fit(photo, FRAME)
    return _camera(fitted, rng)


def portrait(photo: Image, xyxy: NDArray[np.float32], *, widths: float = 2.4) -> Image:
    """A 3:4 portrait crop round one face box (the face about 1/``widths`` of its width), kept inside the photo."""
    x1, y1, x2, y2 = (float(v) for v in xyxy[:4])
    ph, pw = photo.shape[:2]
    side = max(x2 - x1, y2 - y1)
    w = min(widths * side, pw, ph * 3 / 4)
    h = w * 4 / 3
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2 + 0.25 * side
    a = int(np.clip(cx - w / 2, 0, pw - w))
    b = int(np.clip(cy - h / 2, 0, ph - h))
    return photo[b:b + int(h), a:a + int(w)].copy()


def _background(background: Image, rng: np.random.Generator) -> Image:
    return cv2.flip(background, 1) if rng.random() < 0.5 else background


ATTACKS: dict[str, Callable[[Image, Image, np.random.Generator], Image]] = {
    "print_border": lambda p, b, r: print_attack(p, b, r),
    "print_closeup": lambda p, b, r: print_attack(p, b, r, closeup=True),
    "screen_bezel": lambda p, b, r: screen_attack(p, b, r),
    "screen_closeup": lambda p, b, r: screen_attack(p, b, r, closeup=True),
}


def clip_frames(path: Path, step: int, count: int) -> list[tuple[float, Image]]:
    """Every ``step``-th frame of a video (BGR) with its time in seconds, ``count`` at most."""
    import av

    frames = []
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i % step == 0:
                frames.append((float(frame.time or 0.0), frame.to_ndarray(format="bgr24")))
            if len(frames) >= count:
                break
    return frames


STREAMS = ("printed_photo", "tablet_replay", "noisy_still", "real_print_still")


def attack_stream(engine: Any, data_dir: Path, kind: str) -> list[Image]:
    """Frames of one attack on a proctoring client (``engine``: a FaceEngine, to find the face to frame).

    ``printed_photo``: the client's photo printed and held (10 frames, a new pose each); ``tablet_replay``: a
    real clip (pf_WolfgangLanger_Pexels) on a tablet held still (10 frames, 0.5 s apart, fresh camera noise);
    ``noisy_still``: the client's photo with Gaussian noise (sigma 8) on every frame (16 frames);
    ``real_print_still``: the real recaptured print of the shared data (Silent-Face ``image_F1``, which the
    passive cues miss) with fresh sensor noise (sigma 3) on every frame (16 frames).
    """
    def largest_portrait(image: Image) -> Image:
        return portrait(image, engine.detect(image).sorted_by_area().xyxy[0])

    background = cv2.imread(str(data_dir / "negatives/sk_coffee.png"), cv2.IMREAD_COLOR)
    client = cv2.imread(str(data_dir / "identity/obama/fr_obama2.jpg"), cv2.IMREAD_COLOR)
    if kind == "printed_photo":
        photo = largest_portrait(client)
        return [print_attack(photo, background, np.random.default_rng(i)) for i in range(10)]
    if kind == "tablet_replay":
        out = []
        for i, (_, frame) in enumerate(clip_frames(data_dir / "video/pf_WolfgangLanger_Pexels.mp4", 12, 10)):
            shown = screen_attack(largest_portrait(frame), background, np.random.default_rng(5))
            noise = np.random.default_rng(100 + i).normal(0, 2, shown.shape)
            out.append(np.clip(shown + noise, 0, 255).astype(np.uint8))
        return out
    if kind == "noisy_still":
        rng = np.random.default_rng(0)
        return [np.clip(client + rng.normal(0, 8, client.shape), 0, 255).astype(np.uint8) for _ in range(16)]
    if kind == "real_print_still":
        rng = np.random.default_rng(1)
        poster = cv2.imread(str(data_dir / "spoof/sf_image_F1.jpg"), cv2.IMREAD_COLOR)
        return [np.clip(poster + rng.normal(0, 3, poster.shape), 0, 255).astype(np.uint8) for _ in range(16)]
    raise ValueError(f"unknown attack stream {kind!r}; expected one of {STREAMS}")
