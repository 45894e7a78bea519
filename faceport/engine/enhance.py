"""The ``face_enhancer`` processor: classical luminance enhancement, or GFPGAN / CodeFormer when installed.

Classical (default, no weights needed): on the face crop only, inside a soft mask built
from the face's 468-point mesh (the swap's own face region: the outline at 96 % with the
forehead edge pulled down, shrunk a further 3 % of the face so that the outline, the
hairline and a swap's blend seam are never touched; the detection box when there are no
landmarks), the luminance gets an unsharp-mask detail boost. The bilateral denoise and
CLAHE local contrast of the first version are off by default: measured after the swap
(``bench/swap_enhancer.py``) they wiped skin texture into the painted look and raised the
seam metric; they remain as options. Only luminance changes: the same delta is added to B,
G and R, so colour (chroma) is kept. ``strength`` blends the result in.

Neural (optional models): the face is warped to the 512x512 FFHQ 5-point template that
GFPGAN and CodeFormer were trained on, fed as RGB ``(x / 255 - 0.5) / 0.5`` NCHW, and the
(1, 3, 512, 512) output in [-1, 1] is pasted back with a soft mask, blended by ``strength``.
CodeFormer also gets its fidelity ``weight`` input when the model declares one.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Literal

import cv2
import numpy as np
from numpy.typing import NDArray

from faceport.engine.align import FFHQ_TEMPLATE_512, paste_back, warp_face
from faceport.engine.arcface import face_keypoints
from faceport.engine.models.sessions import Session
from faceport.engine.types import BGRImage, Faces
from faceport.errors import InvalidInput

if TYPE_CHECKING:
    from faceport.engine.core import FaceEngine
    from faceport.engine.pipeline import Processor

log = logging.getLogger(__name__)

EnhancerModel = Literal["auto", "classical", "gfpgan_1.4", "codeformer"]
ENHANCER_MODELS: tuple[str, ...] = ("auto", "classical", "gfpgan_1.4", "codeformer")
RESTORER_SIZE = 512
MESH_POINTS = 468  # the face surface; iris points (468..477) lie inside it anyway
_MIN_FACE_PX = 8
# The classical enhancer's default blend (FaceFusion's face_enhancer_blend / 100): chosen in
# BENCHMARKS.md "Swap colour, enhancer, live options (issue 16)" as the blend with the best identity
# that does not raise the seam metric.
DEFAULT_STRENGTH = 0.8
INNER_MARGIN = 0.03  # the enhancer's mask stays this share of the face inside the swap's face region


def _check_strength(strength: float) -> float:
    if not 0.0 <= strength <= 1.0 or math.isnan(strength):
        raise InvalidInput(f"enhancer strength must be in [0, 1], got {strength}",
                           details={"field": "strength", "value": strength})
    return float(strength)


def face_polygon(faces: Faces, index: int) -> NDArray[np.float32]:
    """Outline of one face in image pixels: convex hull of its 468-point mesh, else its box (the crop's extent).

    Args:
        faces: faces with ``xyxy`` and optionally ``landmarks``.
        index: which face.

    Returns:
        (k, 2) float32 polygon vertices (x, y).
    """
    if faces.landmarks is not None:
        points = np.ascontiguousarray(faces.landmarks[index, :MESH_POINTS, :2], np.float32)
        return np.asarray(cv2.convexHull(points).reshape(-1, 2), np.float32)
    x0, y0, x1, y1 = (float(v) for v in faces.xyxy[index])
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)


def polygon_mask(polygon: NDArray[np.float32], origin: tuple[int, int], shape: tuple[int, int], *,
                 feather: int) -> NDArray[np.float32]:
    """Soft mask of a polygon inside a crop: 1 well inside, falling to exactly 0 at its edge.

    The polygon is eroded by ``feather`` pixels and then blurred by the same radius, so the
    soft edge lies inside the polygon and nothing outside it is touched.

    Args:
        polygon: (k, 2) float32 vertices in image pixels.
        origin: (x, y) of the crop's top-left corner in the image.
        shape: (height, width) of the crop.
        feather: soft edge width in pixels (>= 0).

    Returns:
        (height, width) float32 weights in [0, 1].
    """
    mask = np.zeros(shape, np.uint8)
    local = np.rint((polygon - np.array(origin, np.float32)) * 16).astype(np.int32)
    cv2.fillConvexPoly(mask, local, 255, lineType=cv2.LINE_8, shift=4)
    if feather > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * feather + 1, 2 * feather + 1))
        mask = np.asarray(cv2.erode(mask, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0), np.uint8)
        mask = np.asarray(cv2.GaussianBlur(mask, (2 * feather + 1, 2 * feather + 1), 0,
                                           borderType=cv2.BORDER_CONSTANT), np.uint8)
    return np.asarray(mask, np.float32) * np.float32(1.0 / 255.0)


def _inner_region(landmarks: NDArray[np.float32]) -> NDArray[np.float32]:
    """The swap's face region of one mesh (outline at 96 %, forehead edge pulled down), as a convex polygon."""
    from faceport.engine.swap.mesh import SwapOptions, _mask_polygon

    region = _mask_polygon(np.asarray(landmarks, np.float32), SwapOptions().forehead_keep)
    return np.asarray(cv2.convexHull(np.ascontiguousarray(region, np.float32)).reshape(-1, 2), np.float32)


class ClassicalEnhancer:
    """Classical ``face_enhancer``: denoise, CLAHE and detail boost of the face's luminance.

    Args:
        strength: blend in [0, 1]; 0 leaves the frame unchanged, 1 applies the full effect.
        clahe_clip: CLAHE clip limit (local contrast; 1 = none).
        sharpen: unsharp-mask amount (0 = none).
        denoise: bilateral filter colour sigma in grey levels (0 = no denoise).

    Raises:
        InvalidInput: ``strength`` outside [0, 1].
    """

    name: str = "face_enhancer"
    method: str = "classical"

    def __init__(self, strength: float = DEFAULT_STRENGTH, *, clahe_clip: float = 1.0, sharpen: float = 0.8,
                 denoise: float = 0.0) -> None:
        self.strength = _check_strength(strength)
        self.clahe_clip = clahe_clip
        self.sharpen = sharpen
        self.denoise = denoise

    def enhance_luma(self, luma: NDArray[np.uint8], face_px: float) -> NDArray[np.float32]:
        """Enhanced luminance of a face crop.

        Args:
            luma: (h, w) uint8 luminance (BGR -> grey weights).
            face_px: face size in pixels; sets the filter radii.

        Returns:
            (h, w) float32 enhanced luminance (not clipped).
        """
        work = luma
        if self.denoise > 0:
            radius = max(2, min(4, round(face_px / 80)))
            work = np.asarray(cv2.bilateralFilter(work, 2 * radius + 1, self.denoise, radius), np.uint8)
        if self.clahe_clip > 1.0:
            tiles = max(2, min(8, round(face_px / 64)))
            clahe = cv2.createCLAHE(clipLimit=self.clahe_clip, tileGridSize=(tiles, tiles))
            work = np.asarray(clahe.apply(work), np.uint8)
        out = work.astype(np.float32)
        if self.sharpen > 0:
            sigma = max(1.0, face_px / 100.0)
            out += np.float32(self.sharpen) * (out - cv2.GaussianBlur(out, (0, 0), sigma))
        return out

    def process(self, frame: BGRImage, faces: Faces) -> BGRImage:
        """Enhance every face in ``faces``.

        Args:
            frame: (H, W, 3) uint8 BGR; never modified.
            faces: faces with ``xyxy`` and, for a face-shaped mask, ``landmarks`` (n, 468|478, 3).

        Returns:
            A new (H, W, 3) uint8 BGR frame; pixels outside each face's outline are unchanged.
        """
        out = frame.copy()
        if self.strength == 0.0 or len(faces) == 0:
            return out
        h, w = frame.shape[:2]
        for index in range(len(faces)):
            polygon = face_polygon(faces, index)
            x0, y0 = (max(0, math.floor(v)) for v in polygon.min(0))
            x1, y1 = min(w, math.ceil(polygon[:, 0].max()) + 1), min(h, math.ceil(polygon[:, 1].max()) + 1)
            if x1 - x0 < _MIN_FACE_PX or y1 - y0 < _MIN_FACE_PX:
                continue
            face_px = math.sqrt((x1 - x0) * (y1 - y0))
            crop = out[y0:y1, x0:x1]
            feather = max(1, round(face_px * 0.04))
            if faces.landmarks is not None:
                region = _inner_region(faces.landmarks[index])
                inset = feather + round(face_px * INNER_MARGIN)
                weights = polygon_mask(region, (x0, y0), crop.shape[:2], feather=inset)
            else:
                weights = polygon_mask(polygon, (x0, y0), crop.shape[:2], feather=feather)
            luma = np.asarray(cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY), np.uint8)
            delta = (self.enhance_luma(luma, face_px) - luma.astype(np.float32)) * (weights * np.float32(self.strength))
            # Adding one delta to B, G and R moves luminance by delta and leaves chroma alone, as
            # long as no channel clips: cap the delta at each pixel's headroom, or saturated skin
            # (red near 255, blue near 0) would shift hue.
            pixels = crop.astype(np.float32)
            # per-pixel channel min / max on the uint8 channels (numpy's reduction over a 3-long last axis is slow)
            low = cv2.min(cv2.min(crop[:, :, 0], crop[:, :, 1]), crop[:, :, 2]).astype(np.float32)
            high = cv2.max(cv2.max(crop[:, :, 0], crop[:, :, 1]), crop[:, :, 2]).astype(np.float32)
            delta = np.clip(delta, -low, 255.0 - high)
            enhanced = pixels + delta[:, :, None]
            out[y0:y1, x0:x1] = np.clip(np.rint(enhanced), 0, 255).astype(np.uint8)
        return out


class _Restorer:
    """Shared 512x512 FFHQ-aligned pre/post-processing of GFPGAN-style restorers."""

    name: str = "face_enhancer"
    method: str = ""
    size = RESTORER_SIZE

    def __init__(self, session: Session, *, strength: float = 1.0, mask_erode: float = 0.1,
                 mask_blur: float = 0.1) -> None:
        if not session.inputs or not session.outputs:
            raise InvalidInput(f"a {self.method} session needs an image input and one output")
        self.session = session
        self.strength = _check_strength(strength)
        self.mask_erode = mask_erode
        self.mask_blur = mask_blur
        self.input_name = session.inputs[0].name

    @staticmethod
    def blob(crop: BGRImage) -> NDArray[np.float32]:
        """(512, 512, 3) uint8 BGR -> (1, 3, 512, 512) float32 RGB in [-1, 1]."""
        rgb = crop[:, :, ::-1].astype(np.float32) * np.float32(1.0 / 255.0)
        return np.ascontiguousarray(((rgb - 0.5) / 0.5).transpose(2, 0, 1)[None], np.float32)

    @staticmethod
    def to_image(pred: NDArray[np.generic], size: int) -> BGRImage:
        """(1, 3, S, S) RGB in [-1, 1] -> (S, S, 3) uint8 BGR."""
        rgb = np.clip(np.asarray(pred, np.float32).reshape(3, size, size).transpose(1, 2, 0), -1.0, 1.0)
        return np.ascontiguousarray(np.rint((rgb + 1.0) * 127.5).astype(np.uint8)[:, :, ::-1])

    def feeds(self, blob: NDArray[np.float32]) -> dict[str, NDArray[np.generic]]:
        return {self.input_name: blob}

    def restore_crop(self, crop: BGRImage) -> BGRImage:
        """Restore one aligned crop: (512, 512, 3) uint8 BGR in and out."""
        pred = self.session.run(self.feeds(self.blob(crop)))[0]
        return self.to_image(pred, self.size)

    def process(self, frame: BGRImage, faces: Faces) -> BGRImage:
        """Restore every face in ``faces``.

        Args:
            frame: (H, W, 3) uint8 BGR; never modified.
            faces: faces with ``kps`` (ArcFace order) or ``landmarks``.

        Returns:
            A new (H, W, 3) uint8 BGR frame; pixels outside each face's soft mask are unchanged.
        """
        out = frame.copy()
        if self.strength == 0.0 or len(faces) == 0:
            return out
        for kps in face_keypoints(faces):
            crop, m = warp_face(out, kps, self.size, FFHQ_TEMPLATE_512)
            out = paste_back(out, self.restore_crop(crop), m, erode=self.mask_erode, blur=self.mask_blur,
                             strength=self.strength)
        return out


class GfpganEnhancer(_Restorer):
    """GFPGAN v1.4 ``face_enhancer`` (optional model ``gfpgan_1.4``).

    Args:
        session: session of ``GFPGANv1.4.onnx``: one input (1, 3, 512, 512) float32 RGB in
            [-1, 1], output (1, 3, 512, 512) in [-1, 1]. The input name is read from it.
        strength: blend of the restored face in [0, 1].
        mask_erode: paste-back mask erosion as a fraction of 512.
        mask_blur: paste-back mask blur as a fraction of 512.
    """

    method = "gfpgan_1.4"


class CodeFormerEnhancer(_Restorer):
    """CodeFormer ``face_enhancer`` (optional model ``codeformer``).

    Args:
        session: session of ``codeformer.onnx``: image input (1, 3, 512, 512) float32 RGB in
            [-1, 1], optionally a fidelity input ``weight`` (double or float, scalar or (1,)),
            output (1, 3, 512, 512) in [-1, 1].
        fidelity: CodeFormer's ``w`` in [0, 1]: 0 favours quality, 1 favours the input's identity.
        strength: blend of the restored face in [0, 1].
        mask_erode: paste-back mask erosion as a fraction of 512.
        mask_blur: paste-back mask blur as a fraction of 512.
    """

    method = "codeformer"
    WEIGHT_INPUT = "weight"

    def __init__(self, session: Session, *, fidelity: float = 0.5, strength: float = 1.0, mask_erode: float = 0.1,
                 mask_blur: float = 0.1) -> None:
        super().__init__(session, strength=strength, mask_erode=mask_erode, mask_blur=mask_blur)
        if not 0.0 <= fidelity <= 1.0:
            raise InvalidInput(f"CodeFormer fidelity must be in [0, 1], got {fidelity}")
        images = [i for i in session.inputs if i.name != self.WEIGHT_INPUT]
        if not images:
            raise InvalidInput("the CodeFormer session declares no image input")
        self.input_name = images[0].name
        self.fidelity = fidelity
        self.weight: NDArray[np.generic] | None = None
        declared = next((i for i in session.inputs if i.name == self.WEIGHT_INPUT), None)
        if declared is not None:
            dtype = np.float64 if "double" in declared.dtype else np.float32
            shape = tuple(d if isinstance(d, int) and d > 0 else 1 for d in declared.shape)
            self.weight = np.full(shape, fidelity, dtype)

    def feeds(self, blob: NDArray[np.float32]) -> dict[str, NDArray[np.generic]]:
        feeds: dict[str, NDArray[np.generic]] = {self.input_name: blob}
        if self.weight is not None:
            feeds[self.WEIGHT_INPUT] = self.weight
        return feeds


def build_enhancer(engine: FaceEngine, *, strength: float = DEFAULT_STRENGTH, model: str = "auto") -> Processor:
    """The ``face_enhancer`` processor.

    Args:
        engine: the face engine (its model cache and store).
        strength: blend in [0, 1] (0 = unchanged, 1 = full effect).
        model: ``auto`` (``gfpgan_1.4`` if installed, else ``codeformer`` if installed, else
            classical), ``classical``, ``gfpgan_1.4`` or ``codeformer``.

    Raises:
        InvalidInput: unknown ``model`` or ``strength`` outside [0, 1].
        ModelUnavailable: a named neural model is not installed.
    """
    strength = _check_strength(strength)
    if model not in ENHANCER_MODELS:
        raise InvalidInput(f"unknown enhancer model {model!r}; choose one of {', '.join(ENHANCER_MODELS)}",
                           details={"field": "model", "allowed": list(ENHANCER_MODELS)})
    if model == "auto":
        store = engine.cache.store
        model = next((name for name in ("gfpgan_1.4", "codeformer") if store.is_installed(name)), "classical")
    log.debug("face_enhancer uses %s", model)
    if model == "gfpgan_1.4":
        return GfpganEnhancer(engine.cache.get("gfpgan_1.4"), strength=strength)
    if model == "codeformer":
        return CodeFormerEnhancer(engine.cache.get("codeformer"), strength=strength)
    return ClassicalEnhancer(strength)
