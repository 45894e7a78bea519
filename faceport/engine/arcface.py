"""ArcFace identity embedding (optional ``arcface_w600k_r50``): 112x112 aligned crop -> 512-d vector.

The model (insightface's ``w600k_r50.onnx``) takes an ArcFace-aligned 112x112 RGB crop,
scaled ``(x - 127.5) / 127.5``, in NCHW, and returns a 512-d embedding that this class
L2-normalises. Tensor names are read from the session's declared inputs and outputs.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
from numpy.typing import NDArray

from faceport.engine.align import warp_face
from faceport.engine.embed import normalize
from faceport.engine.landmarks import kps_from_mesh
from faceport.engine.models.sessions import Session
from faceport.engine.types import BGRImage, Faces
from faceport.errors import InvalidInput

log = logging.getLogger(__name__)

ARCFACE_SIZE = 112
ARCFACE_MEAN = 127.5
ARCFACE_STD = 127.5


def face_keypoints(faces: Faces) -> NDArray[np.float32]:
    """The (n, 5, 2) keypoints of ``faces``: their own, else derived from the 468-point mesh.

    Raises:
        InvalidInput: the faces have neither keypoints nor landmarks.
    """
    if faces.kps is not None:
        return faces.kps
    if faces.landmarks is not None:
        return np.stack([kps_from_mesh(points) for points in faces.landmarks]).astype(np.float32)
    raise InvalidInput("face alignment needs 5 keypoints or landmarks; the faces have neither")


class ArcFaceEmbedder:
    """512-d ArcFace embeddings of aligned faces.

    Args:
        session: a session of ``w600k_r50.onnx`` (or any ArcFace model with one
            (N, 3, 112, 112) float input and one (N, 512) output). Names come from
            ``session.inputs[0]`` and ``session.outputs[0]``.
    """

    size = ARCFACE_SIZE

    def __init__(self, session: Session) -> None:
        if not session.inputs or not session.outputs:
            raise InvalidInput("an ArcFace session needs one input and one output")
        self.session = session
        self.input_name = session.inputs[0].name
        self.output_name = session.outputs[0].name
        self._output_index = 0
        batch = session.inputs[0].shape[0] if session.inputs[0].shape else None
        # A graph exported with a fixed batch of 1 takes faces one at a time.
        self._batch = batch if isinstance(batch, int) and batch > 0 else None
        dim = session.outputs[0].shape[-1] if session.outputs[0].shape else None
        self.dim = dim if isinstance(dim, int) else 512

    def crops(self, image: BGRImage, faces: Faces) -> NDArray[np.uint8]:
        """Aligned crops, one per face.

        Args:
            image: (H, W, 3) uint8 BGR.
            faces: faces with ``kps`` (n, 5, 2) or ``landmarks``.

        Returns:
            (n, 112, 112, 3) uint8 BGR crops.
        """
        kps = face_keypoints(faces)
        out = np.zeros((len(faces), self.size, self.size, 3), np.uint8)
        for i, points in enumerate(kps):
            out[i] = warp_face(image, points, self.size)[0]
        return out

    @staticmethod
    def blob(crops: NDArray[np.uint8]) -> NDArray[np.float32]:
        """(n, 112, 112, 3) uint8 BGR crops -> (n, 3, 112, 112) float32 RGB in [-1, 1]."""
        rgb = crops[..., ::-1].astype(np.float32)
        return np.ascontiguousarray(((rgb - ARCFACE_MEAN) / ARCFACE_STD).transpose(0, 3, 1, 2), np.float32)

    def embed_crops(self, crops: NDArray[np.uint8]) -> NDArray[np.float32]:
        """Embed ready aligned crops.

        Args:
            crops: (n, 112, 112, 3) uint8 BGR.

        Returns:
            (n, dim) float32, L2-normalised rows.
        """
        if crops.ndim != 4 or crops.shape[1:] != (self.size, self.size, 3):
            raise InvalidInput(f"ArcFace crops: expected shape (n, {self.size}, {self.size}, 3), got {crops.shape}")
        if len(crops) == 0:
            return np.zeros((0, self.dim), np.float32)
        blob = self.blob(crops)
        step = self._batch or len(blob)
        rows = []
        for start in range(0, len(blob), step):
            result = self.session.run({self.input_name: blob[start:start + step]})[self._output_index]
            rows.append(np.asarray(result, np.float32).reshape(min(step, len(blob) - start), -1))
        return normalize(np.concatenate(rows))

    def embed(self, image: BGRImage, faces: Faces) -> Faces:
        """Return ``faces`` with ``embedding`` (n, 512) float32, L2-normalised.

        Args:
            image: (H, W, 3) uint8 BGR, the image the faces were found in.
            faces: faces with ``kps`` (ArcFace order, image-left eye first) or ``landmarks``.

        Raises:
            InvalidInput: the faces have neither keypoints nor landmarks.
        """
        if len(faces) == 0:
            return replace(faces, embedding=np.zeros((0, self.dim), np.float32))
        return replace(faces, embedding=self.embed_crops(self.crops(image, faces)))

    def embed_largest(self, image: BGRImage, faces: Faces) -> NDArray[np.float32]:
        """(dim,) float32 normalised embedding of the largest of ``faces``.

        Raises:
            InvalidInput: ``faces`` is empty.
        """
        if len(faces) == 0:
            raise InvalidInput("no face to embed")
        largest = faces.sorted_by_area()[0]
        return np.asarray(self.embed_crops(self.crops(image, largest))[0], np.float32)
