"""``FaceEngine``: the one object services use for detection, landmarks and embeddings.

It owns no model globals: every call asks the ``ModelCache`` for its sessions, so idle
models can be evicted and reloaded transparently.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from faceport.engine.deepfake import CLIP_HEAD_FILE, CLIP_MODEL, ClipProbe, ProbeHead
from faceport.engine.demographics import AGE_MODEL, EMOTION_MODEL, GENDER_MODEL, DemographicsAnalyzer
from faceport.engine.detect import DETECTORS, BlazeFace, CenterFace, FaceDetector, YuNet
from faceport.engine.embed import DEFAULT_THRESHOLD, Comparison, DlibEmbedder, OnnxDlibEmbedder, compare
from faceport.engine.hands import HandLandmarker
from faceport.engine.landmarks import FaceMesh, FaceMeshTracker
from faceport.engine.models.cache import ModelCache
from faceport.engine.types import BGRImage, Faces
from faceport.errors import InvalidInput, NoFace

EMBEDDERS = ("onnx", "dlib")  # the embedding model of each: dlib_resnet_onnx, dlib_resnet


@dataclass(frozen=True, slots=True)
class EngineOptions:
    detector: str = "yunet"
    detector_score: float | None = None  # None: each detector's own default
    verify_threshold: float = DEFAULT_THRESHOLD
    centerface_max_side: int = 640
    yunet_max_side: int = 640
    iris: bool = True  # FaceMesh 478 points (468 + iris) instead of 468
    embedder: str = "onnx"  # "onnx": dlib's ResNet on onnxruntime (dlib_resnet_onnx); "dlib": dlib itself


class FaceEngine:
    """Detection, landmarks, alignment + embedding and comparison over a model cache."""

    def __init__(self, cache: ModelCache, options: EngineOptions | None = None) -> None:
        self.cache = cache
        self.options = options or EngineOptions()
        if self.options.detector not in DETECTORS:
            raise InvalidInput(f"unknown detector {self.options.detector!r}; choose one of {', '.join(DETECTORS)}")
        if self.options.embedder not in EMBEDDERS:
            raise InvalidInput(f"unknown embedder {self.options.embedder!r}; choose one of {', '.join(EMBEDDERS)}")

    def with_threads(self, threads: int | None) -> FaceEngine:
        """This engine for one job that runs its models with ``threads`` inference threads.

        The sessions are the cache's ``<model>@<n>threads`` variants, so other work keeps its own.
        """
        if threads is None:
            return self
        return FaceEngine(self.cache.with_threads(threads), self.options)  # type: ignore[arg-type]

    def detector(self, name: str | None = None) -> FaceDetector:
        """A detector by name (``blazeface_short``, ``blazeface_full``, ``centerface``, ``yunet``).

        Raises:
            InvalidInput: unknown name (the message lists the known ones).
        """
        name = name or self.options.detector
        if name == "centerface":
            return CenterFace(self.cache.get("centerface"), max_side=self.options.centerface_max_side)
        if name == "yunet":
            return YuNet(self.cache.get("yunet"), max_side=self.options.yunet_max_side)
        if name in ("blazeface_short", "blazeface_full"):
            return BlazeFace(self.cache.get(name), name)
        raise InvalidInput(f"unknown detector {name!r}; choose one of {', '.join(DETECTORS)}",
                           details={"field": "detector", "allowed": list(DETECTORS)})

    def facemesh(self, iris: bool | None = None) -> FaceMesh:
        """FaceMesh, with the iris model when ``iris`` (``None``: the engine's ``iris`` option)."""
        iris = self.options.iris if iris is None else iris
        return FaceMesh(self.cache.get("facemesh"), self.cache.get("iris") if iris else None)

    def hands(self) -> HandLandmarker:
        """MediaPipe's palm detector + 21-point hand landmarks."""
        return HandLandmarker(self.cache.get("palm_detection"), self.cache.get("hand_landmark"))

    def embedder(self) -> DlibEmbedder:
        """dlib alignment + the ResNet on onnxruntime (default) or on dlib (``embedder="dlib"``)."""
        if self.options.embedder == "dlib":
            return DlibEmbedder(self.cache.get("dlib_shape5"), self.cache.get("dlib_resnet"))
        return OnnxDlibEmbedder(self.cache.get("dlib_shape5"), self.cache.get("dlib_resnet_onnx"))

    def demographics(self) -> DemographicsAnalyzer:
        """Apparent age (Cydral age-v1), gender (Cydral gender-v1) and expression (FER) per face."""
        return DemographicsAnalyzer(self.cache.get("dlib_shape5"), self.cache.get(AGE_MODEL),
                                    self.cache.get(GENDER_MODEL), self.cache.get(EMOTION_MODEL))

    def ai_generated_installed(self) -> bool:
        """Whether the optional AI-generated-image detector (``faceport models pull clip_aigen``) is installed."""
        return self.cache.store.is_installed(CLIP_MODEL)

    def clip_probe(self) -> ClipProbe:
        """The optional AI-generated-image detector (CLIP ViT-B/16 int8 + linear probe).

        Raises:
            ModelUnavailable: ``clip_aigen`` is not installed (the message names the pull command).
        """
        session = self.cache.get(CLIP_MODEL)
        return ClipProbe(session, _probe_head(self.cache.store.file_path(CLIP_MODEL, CLIP_HEAD_FILE)))

    def detect(self, image: BGRImage, *, detector: str | None = None, score_threshold: float | None = None,
               max_faces: int | None = None, landmarks: bool = False, embed: bool = False) -> Faces:
        """Find faces, optionally with 468/478 landmarks and embeddings. Nothing found → ``Faces.empty()``."""
        threshold = score_threshold if score_threshold is not None else self.options.detector_score
        faces = self.detector(detector).detect(image, score_threshold=threshold, max_faces=max_faces)
        if landmarks and len(faces):
            faces = self.facemesh().landmarks(image, faces)
        if embed:
            faces = self.embedder().embed(image, faces)
        return faces

    def embed_largest(self, image: BGRImage, *, detector: str | None = None) -> Faces:
        """The largest face with its embedding.

        Raises:
            NoFace: no face in the image.
        """
        faces = self.detect(image, detector=detector)
        if len(faces) == 0:
            raise NoFace("no face detected in the image")
        return self.embedder().embed(image, faces.sorted_by_area()[0])

    def compare(self, a: Faces, b: Faces, *, threshold: float | None = None) -> Comparison:
        if a.embedding is None or b.embedding is None or not len(a) or not len(b):
            raise InvalidInput("compare needs one embedded face on each side")
        return compare(a.embedding[0], b.embedding[0], threshold=threshold or self.options.verify_threshold)

    def verify(self, image_a: BGRImage, image_b: BGRImage, *, threshold: float | None = None) -> Comparison:
        """Are the largest faces of two images the same person?"""
        return self.compare(self.embed_largest(image_a), self.embed_largest(image_b), threshold=threshold)

    def tracker(self, *, detector: str | None = None, max_faces: int = 1, redetect_every: int = 30,
                fallback: str | None = None, trust_detector: bool = False,
                iris: bool | None = None) -> FaceMeshTracker:
        """A landmark tracker for the frames of one video stream (not shared between streams).

        ``fallback`` names a detector run when ``detector`` finds nothing; ``trust_detector``: see
        :class:`FaceMeshTracker`; ``iris``: whether faces get the 10 iris points (``None``: the engine's
        ``iris`` option) — a caller that reads only the 468 mesh points saves the two eye crops per face.
        """
        return FaceMeshTracker(self.facemesh(iris), self.detector(detector), max_faces=max_faces,
                               redetect_every=redetect_every,
                               fallback=self.detector(fallback) if fallback else None, trust_detector=trust_detector)


@functools.lru_cache(maxsize=4)
def _probe_head(path: Path) -> ProbeHead:
    return ProbeHead.load(path)
