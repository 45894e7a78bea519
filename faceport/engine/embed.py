"""dlib 5-point alignment and the 128-d ResNet identity embedding; ``compare`` for two embeddings.

The ResNet runs on onnxruntime by default (``OnnxDlibEmbedder``: dlib's network converted to
ONNX at pull time, see ``faceport.engine.models.dlib_onnx``; its descriptors equal dlib's to
about 1e-6) or on dlib itself (``DlibEmbedder``, the reference). Both align with dlib's
5-point predictor and ``get_face_chip`` (150x150, padding 0.25), so their chips are identical.

Distances are Euclidean between L2-normalised embeddings (range [0, 2]). Two faces are
the same person when the distance is at most ``DEFAULT_THRESHOLD`` = 0.42: dlib's own
operating point (0.6 on raw descriptors) divided by the typical raw descriptor norm
(about 1.42), so the two agree. Checked on ../shared/data/pairs/pairs.csv (see
BENCHMARKS.md). ``similarity = 1 - distance / 2`` maps distances to [0, 1]; the threshold
is a similarity of 0.79.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import cast

import cv2
import numpy as np
from numpy.typing import NDArray

from faceport.engine.models.dlib_onnx import INPUT_NAME
from faceport.engine.models.sessions import DlibModel, Session
from faceport.engine.types import BGRImage, Faces, RGBImage

DEFAULT_THRESHOLD = 0.42
CHIP_SIZE = 150
CHIP_PADDING = 0.25


@dataclass(frozen=True, slots=True)
class Comparison:
    distance: float
    similarity: float  # in [0, 1]
    match: bool
    threshold: float


def normalize(vectors: NDArray[np.float32]) -> NDArray[np.float32]:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.asarray(vectors / np.maximum(norms, 1e-12), np.float32)


def compare(a: NDArray[np.float32], b: NDArray[np.float32], *, threshold: float = DEFAULT_THRESHOLD) -> Comparison:
    """Compare two embeddings (each (d,), normalised here to be safe).

    Raises:
        ValueError: shapes differ.
    """
    if a.shape != b.shape:
        raise ValueError(f"embeddings differ in shape: {a.shape} vs {b.shape}")
    distance = float(np.linalg.norm(normalize(a) - normalize(b)))
    return Comparison(distance, float(np.clip(1.0 - distance / 2.0, 0.0, 1.0)), distance <= threshold, threshold)


def distances(query: NDArray[np.float32], gallery: NDArray[np.float32]) -> NDArray[np.float32]:
    """Distances from one (d,) embedding to each row of a (n, d) gallery (both normalised)."""
    return np.asarray(np.linalg.norm(gallery - query[None, :], axis=1), np.float32)


class DlibEmbedder:
    """Align with dlib's 5-point predictor, embed with dlib's ResNet (128-d).

    Args:
        shape5: ``shape_predictor_5_face_landmarks.dat``.
        resnet: ``dlib_face_recognition_resnet_model_v1.dat``.
        jitters: extra jittered re-samplings per face (0 = plain; more is slower, slightly better).
    """

    dim = 128

    def __init__(self, shape5: DlibModel, resnet: DlibModel, *, jitters: int = 0) -> None:
        self.shape5 = shape5
        self.resnet = resnet
        self.jitters = max(0, jitters)

    def chips(self, image: BGRImage, faces: Faces) -> list[NDArray[np.uint8]]:
        """Aligned 150x150 RGB face chips, one per face."""
        import dlib

        rgb = cast(RGBImage, cv2.cvtColor(image, cv2.COLOR_BGR2RGB))  # stubs say MatLike; depth stays uint8
        shapes = self._shapes(rgb, faces)
        return [np.asarray(dlib.get_face_chip(rgb, s, size=CHIP_SIZE, padding=CHIP_PADDING)) for s in shapes]

    def _shapes(self, rgb: NDArray[np.uint8], faces: Faces) -> list[object]:
        import dlib

        out = []
        h, w = rgb.shape[:2]
        for x1, y1, x2, y2 in faces.xyxy:
            rect = dlib.rectangle(int(max(0, x1)), int(max(0, y1)), int(min(w - 1, x2)), int(min(h - 1, y2)))
            with self.shape5.lock:
                out.append(self.shape5.native(rgb, rect))
        return out

    def embed(self, image: BGRImage, faces: Faces) -> Faces:
        """Return ``faces`` with ``embedding`` (n, 128) float32, L2-normalised.

        Args:
            image: (H, W, 3) uint8 BGR, the image the faces were found in.
            faces: boxes in that image's pixels.
        """
        if len(faces) == 0:
            return replace(faces, embedding=np.zeros((0, self.dim), np.float32))
        import dlib

        rgb = cast(RGBImage, cv2.cvtColor(image, cv2.COLOR_BGR2RGB))  # stubs say MatLike; depth stays uint8
        shapes = self._shapes(rgb, faces)
        chips = [dlib.get_face_chip(rgb, s, size=CHIP_SIZE, padding=CHIP_PADDING) for s in shapes]
        return replace(faces, embedding=normalize(self.descriptors(chips)))

    def descriptors(self, chips: list[NDArray[np.uint8]]) -> NDArray[np.float32]:
        """dlib's raw (unnormalised) descriptors, (n, 128), of aligned 150x150 RGB chips."""
        with self.resnet.lock:
            vectors = self.resnet.native.compute_face_descriptor(chips, self.jitters)
        return np.asarray([np.asarray(v) for v in vectors], np.float32).reshape(len(chips), self.dim)


class OnnxDlibEmbedder(DlibEmbedder):
    """The same alignment and network with the ResNet on onnxruntime (model ``dlib_resnet_onnx``).

    All faces of one image go through the network as one batch. dlib's jittering (random
    re-crops averaged) is not offered; the engine embeds plain chips (``jitters=0``) either way.

    Args:
        shape5: ``shape_predictor_5_face_landmarks.dat``.
        session: the converted network (input ``chips``: (n, 150, 150, 3) uint8 RGB).
    """

    def __init__(self, shape5: DlibModel, session: Session) -> None:
        self.shape5 = shape5
        self.session = session
        self.jitters = 0

    def descriptors(self, chips: list[NDArray[np.uint8]]) -> NDArray[np.float32]:
        if not chips:
            return np.zeros((0, self.dim), np.float32)
        batch = np.ascontiguousarray(np.stack([np.asarray(c, np.uint8) for c in chips]))
        return np.asarray(self.session.run({INPUT_NAME: batch})[0], np.float32)
