"""Neural face swap with InsightFace's inswapper_128 (optional model), insightface-style.

Pre/post-processing follows insightface's ``INSwapper``:

- target: the face warped to the 128x128 ArcFace-128 template (x offset 8), RGB, ``x / 255``,
  NCHW float32, fed as input ``target``;
- source: the source identity's L2-normalised ArcFace (w600k_r50) embedding (1, 512) times
  ``emap``, L2-normalised again, fed as input ``source``. ``emap`` is the model file's LAST
  graph initializer (512, 512), read with the ``onnx`` package;
- output (1, 3, 128, 128) RGB in [0, 1] -> BGR uint8, pasted back through the inverse warp
  with an eroded and blurred mask, so nothing outside the face crop changes.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from faceport.engine.align import paste_back, warp_face
from faceport.engine.arcface import ArcFaceEmbedder, face_keypoints
from faceport.engine.embed import normalize
from faceport.engine.models.sessions import Session
from faceport.engine.types import BGRImage, Faces
from faceport.errors import InvalidInput, ModelLoadFailed, NoFace

if TYPE_CHECKING:
    from faceport.engine.models.cache import ModelCache

log = logging.getLogger(__name__)

INSWAPPER_MODEL = "inswapper_128"
ARCFACE_MODEL = "arcface_w600k_r50"
INSWAPPER_SIZE = 128


def _emap_from_proto(proto: object, origin: str) -> NDArray[np.float32]:
    from onnx import ModelProto, numpy_helper

    if not isinstance(proto, ModelProto) or not proto.graph.initializer:
        raise ModelLoadFailed(f"{origin}: the model has no graph initializers, so no emap",
                              details={"model": INSWAPPER_MODEL})
    emap = np.asarray(numpy_helper.to_array(proto.graph.initializer[-1]), np.float32)
    if emap.ndim != 2 or emap.shape[0] != emap.shape[1]:
        raise ModelLoadFailed(f"{origin}: the last initializer has shape {emap.shape}; an inswapper emap is "
                              "a square (512, 512) matrix", details={"model": INSWAPPER_MODEL})
    return emap


@functools.lru_cache(maxsize=4)
def _emap_from_file(path: str, mtime_ns: int, size: int) -> NDArray[np.float32]:
    # (mtime, size) in the key: a re-installed file is read again, an unchanged one only once.
    import onnx

    emap = _emap_from_proto(onnx.load(path, load_external_data=False), path)
    emap.setflags(write=False)
    return emap


def read_emap(model: str | Path | bytes) -> NDArray[np.float32]:
    """The inswapper ``emap``: the model's last graph initializer, as insightface reads it.

    Args:
        model: path of ``inswapper_128.onnx``, or its bytes.

    Returns:
        (512, 512) float32 matrix (read-only when read from a file; cached per file version).

    Raises:
        ModelLoadFailed: the model cannot be parsed or its last initializer is not square.
    """
    from google.protobuf.message import DecodeError

    try:
        if isinstance(model, bytes):
            import onnx

            return _emap_from_proto(onnx.load_from_string(model), "model bytes")
        path = Path(model)
        stat = path.stat()
        return _emap_from_file(str(path), stat.st_mtime_ns, stat.st_size)
    except ModelLoadFailed:
        raise
    except (OSError, ValueError, DecodeError) as exc:
        origin = "model bytes" if isinstance(model, bytes) else str(model)
        raise ModelLoadFailed(f"cannot read the inswapper emap from {origin}: {exc}",
                              details={"model": INSWAPPER_MODEL}) from exc


def source_latent(embedding: NDArray[np.floating], emap: NDArray[np.float32]) -> NDArray[np.float32]:
    """The inswapper ``source`` input: normalised embedding times ``emap``, normalised.

    Args:
        embedding: (512,) or (1, 512) ArcFace embedding of the source face.
        emap: (512, 512) matrix from ``read_emap``.

    Returns:
        (1, 512) float32, unit L2 norm.

    Raises:
        InvalidInput: the embedding does not match ``emap``.
    """
    vector = np.asarray(embedding, np.float32).reshape(1, -1)
    if vector.shape[1] != emap.shape[0]:
        raise InvalidInput(f"source embedding has {vector.shape[1]} values; the swapper needs {emap.shape[0]} "
                           "(an ArcFace w600k_r50 embedding)")
    latent = normalize(vector) @ emap
    return normalize(np.asarray(latent, np.float32))


class InswapperSwapper:
    """The ``face_swapper`` processor backed by inswapper_128.

    Args:
        session: session of ``inswapper_128.onnx`` (inputs ``target`` (1, 3, 128, 128) and
            ``source`` (1, 512); one output (1, 3, 128, 128)).
        arcface: the ArcFace embedder that made ``source_embedding`` (and makes new ones
            through ``with_source``).
        source_embedding: (512,) or (1, 512) ArcFace embedding of the source identity.
        model: the model file (path or bytes) the session was built from; its last
            initializer is the ``emap``. Give either this or ``emap``.
        emap: an already read (512, 512) emap (``read_emap``), to skip re-reading the file.
        mask_erode: erosion of the paste-back mask, as a fraction of the 128 px crop.
        mask_blur: blur of the paste-back mask, as a fraction of the crop.

    Raises:
        InvalidInput: neither ``model`` nor ``emap`` given, or a mismatched embedding.
        ModelLoadFailed: the emap cannot be read from ``model``.
    """

    name: str = "face_swapper"
    method: str = INSWAPPER_MODEL
    size = INSWAPPER_SIZE

    def __init__(self, session: Session, arcface: ArcFaceEmbedder, source_embedding: NDArray[np.floating], *,
                 model: str | Path | bytes | None = None, emap: NDArray[np.float32] | None = None,
                 mask_erode: float = 0.1, mask_blur: float = 0.1) -> None:
        if emap is None:
            if model is None:
                raise InvalidInput("InswapperSwapper needs the model file (or its emap) to read the emap from")
            emap = read_emap(model)
        if len(session.inputs) < 2 or not session.outputs:
            raise InvalidInput("an inswapper session needs inputs 'target' and 'source' and one output")
        self.session = session
        self.arcface = arcface
        self.emap = emap
        self.latent = source_latent(source_embedding, emap)
        names = [i.name for i in session.inputs]
        # insightface feeds inputs by position (target first); the declared names win when present.
        self.target_name = "target" if "target" in names else names[0]
        self.source_name = "source" if "source" in names else next(n for n in names if n != self.target_name)
        self.mask_erode = mask_erode
        self.mask_blur = mask_blur

    def with_source(self, image: BGRImage, faces: Faces) -> InswapperSwapper:
        """A swapper for a new source identity: the largest of ``faces`` in ``image``.

        Raises:
            NoFace: ``faces`` is empty.
        """
        if len(faces) == 0:
            raise NoFace("no face in the source image")
        return InswapperSwapper(self.session, self.arcface, self.arcface.embed_largest(image, faces), emap=self.emap,
                                mask_erode=self.mask_erode, mask_blur=self.mask_blur)

    @staticmethod
    def blob(crop: BGRImage) -> NDArray[np.float32]:
        """(128, 128, 3) uint8 BGR crop -> (1, 3, 128, 128) float32 RGB in [0, 1]."""
        rgb = crop[:, :, ::-1].astype(np.float32) / 255.0
        return np.ascontiguousarray(rgb.transpose(2, 0, 1)[None], np.float32)

    def swap_crop(self, crop: BGRImage) -> BGRImage:
        """Run the model on one aligned crop.

        Args:
            crop: (128, 128, 3) uint8 BGR target face crop.

        Returns:
            (128, 128, 3) uint8 BGR swapped crop.
        """
        pred = self.session.run({self.target_name: self.blob(crop), self.source_name: self.latent})[0]
        rgb = np.asarray(pred, np.float32).reshape(3, self.size, self.size).transpose(1, 2, 0)
        return np.ascontiguousarray(np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)[:, :, ::-1])

    def process(self, frame: BGRImage, faces: Faces) -> BGRImage:
        """Swap every face in ``faces`` to the source identity.

        Args:
            frame: (H, W, 3) uint8 BGR; never modified.
            faces: target faces with ``kps`` (ArcFace order) or ``landmarks``.

        Returns:
            A new (H, W, 3) uint8 BGR frame; pixels outside each face's soft mask are unchanged.
        """
        out = frame.copy()
        if len(faces) == 0:
            return out
        for kps in face_keypoints(faces):
            crop, m = warp_face(out, kps, self.size)
            out = paste_back(out, self.swap_crop(crop), m, erode=self.mask_erode, blur=self.mask_blur)
        return out


def build_inswapper(cache: ModelCache, sources: Sequence[tuple[BGRImage, Faces]]) -> InswapperSwapper:
    """An inswapper ``face_swapper`` for the identity in the source images.

    The largest face of each source image is embedded with ArcFace; several sources are
    averaged (then normalised), which steadies the identity as FaceFusion does.

    Args:
        cache: model cache holding (or able to load) ``inswapper_128`` and ``arcface_w600k_r50``.
        sources: (image, faces) pairs: (H, W, 3) uint8 BGR images with their detected faces
            (``kps`` or ``landmarks`` needed).

    Raises:
        NoFace: no source image has a face.
        ModelUnavailable: either model is not installed (the message names the pull command).
        ModelLoadFailed: a model file cannot be loaded or has no emap.
    """
    arcface = ArcFaceEmbedder(cache.get(ARCFACE_MODEL))
    embeddings = [arcface.embed_largest(image, faces) for image, faces in sources if len(faces)]
    if not embeddings:
        raise NoFace("no face detected in the source image(s)")
    identity = normalize(np.mean(np.stack(embeddings), axis=0, keepdims=True))
    session = cache.get(INSWAPPER_MODEL)
    return InswapperSwapper(session, arcface, identity, model=cache.store.path(INSWAPPER_MODEL))
