"""Named frame processors chained over images and video frames.

A processor edits the faces of one frame: ``process(frame, faces) -> frame``. The pipeline
finds the target faces once per frame (detection on images; detection every N frames plus
FaceMesh tracking on video streams, re-detecting at once when a face is lost) and hands
them to each processor in order. Face selection (all faces, the one nearest a reference
identity, or a position index) happens before the processors run.

Processors: ``face_swapper`` (landmark mesh swap by default, ``inswapper_128`` when
installed), ``face_enhancer`` (classical by default, GFPGAN/CodeFormer when installed).
Later issues register more (``face_blur``, ...).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

import numpy as np

from faceport.engine.core import FaceEngine
from faceport.engine.embed import distances
from faceport.engine.landmarks import FaceMeshTracker
from faceport.engine.types import BGRImage, Faces
from faceport.errors import InvalidInput

log = logging.getLogger(__name__)

FaceSelector = Literal["all", "reference", "index"]


class Processor(Protocol):
    name: str

    def process(self, frame: BGRImage, faces: Faces) -> BGRImage:
        """Return a new frame with ``faces`` (boxes, keypoints, 468/478 landmarks) edited."""
        ...


@dataclass(frozen=True, slots=True)
class PipelineOptions:
    """How target faces are found and chosen (seed B's request fields map here)."""

    detector: str | None = None  # None: the engine's default
    detector_score: float | None = None
    max_faces: int = 8
    selector: FaceSelector = "all"
    face_index: int = 0  # for selector="index": left-to-right position
    reference_embedding: np.ndarray | None = field(default=None, repr=False)  # for selector="reference"
    reference_threshold: float = 0.6  # max distance for the reference match
    redetect_every: int = 10  # video: detection every N frames, tracking in between


ProcessorFactory = Callable[..., Processor]


def available_processors(engine: FaceEngine) -> dict[str, bool]:
    """Processor name → whether its models are installed here."""
    store = engine.cache.store
    needs = {
        "face_swapper": ("blazeface_full", "facemesh"),
        "face_enhancer": ("blazeface_full", "facemesh"),
    }
    return {name: all(store.is_installed(m) for m in models) for name, models in needs.items()}


PROCESSOR_NAMES: tuple[str, ...] = ("face_swapper", "face_enhancer")


def build_processors(engine: FaceEngine, names: Sequence[str], *, sources: Sequence[BGRImage] = (),
                     enhancer_strength: float = 0.6) -> list[Processor]:
    """Processors in the given order.

    Raises:
        InvalidInput: an unknown name (the message lists the known ones), or a swapper without a source.
        NoFace: a source image has no face.
    """
    processors: list[Processor] = []
    for name in names:
        if name == "face_swapper":
            from faceport.engine.swap import build_swapper

            if not sources:
                raise InvalidInput("face_swapper needs a source image with a face", details={"field": "source"})
            processors.append(build_swapper(engine, sources))
        elif name == "face_enhancer":
            from faceport.engine.enhance import build_enhancer

            processors.append(build_enhancer(engine, strength=enhancer_strength))
        else:
            raise InvalidInput(f"unknown processor {name!r}; available: {', '.join(PROCESSOR_NAMES)}",
                               details={"field": "processors", "allowed": list(PROCESSOR_NAMES)})
    return processors


def select_faces(faces: Faces, options: PipelineOptions) -> Faces:
    """Apply the face selector: all, the reference identity's nearest face, or one by position."""
    if len(faces) == 0 or options.selector == "all":
        return faces
    if options.selector == "index":
        order = np.argsort(faces.xyxy[:, 0], kind="stable")
        return faces[int(order[options.face_index])] if options.face_index < len(faces) else Faces.empty()
    if faces.embedding is None or options.reference_embedding is None:
        raise InvalidInput("selector 'reference' needs a reference face and embedded target faces")
    d = distances(options.reference_embedding, faces.embedding)
    best = int(np.argmin(d))
    return faces[best] if d[best] <= options.reference_threshold else Faces.empty()


class Pipeline:
    """Processors run over images, or over the frames of one video stream (``stream()``)."""

    def __init__(self, engine: FaceEngine, processors: Sequence[Processor], options: PipelineOptions | None = None
                 ) -> None:
        self.engine = engine
        self.processors = list(processors)
        self.options = options or PipelineOptions()
        self.most_faces = 0  # the most faces found in one image/frame so far (before selection)

    def _finish(self, frame: BGRImage, faces: Faces) -> BGRImage:
        self.most_faces = max(self.most_faces, len(faces))
        if self.options.selector == "reference" and len(faces):
            faces = self.engine.embedder().embed(frame, faces)
        faces = select_faces(faces, self.options)
        out = frame
        for processor in self.processors:
            if len(faces):
                out = processor.process(out, faces)
        return out

    def process_image(self, image: BGRImage) -> BGRImage:
        faces = self.engine.detect(image, detector=self.options.detector, score_threshold=self.options.detector_score,
                                   max_faces=self.options.max_faces, landmarks=True)
        return self._finish(image, faces)

    def process_faces(self, image: BGRImage, faces: Faces) -> BGRImage:
        """Like :meth:`process_image` on faces the caller already detected (with landmarks)."""
        return self._finish(image, faces)

    def stream(self) -> Callable[[BGRImage], BGRImage]:
        """A per-video frame function: detection every N frames, tracking between, re-detection when lost."""
        tracker: FaceMeshTracker = self.engine.tracker(detector=self.options.detector,
                                                       max_faces=self.options.max_faces,
                                                       redetect_every=self.options.redetect_every)
        tracker.score_threshold = self.options.detector_score

        def run(frame: BGRImage) -> BGRImage:
            faces = tracker.process(frame)
            return self._finish(frame, faces)

        return run


def with_embedding_reference(options: PipelineOptions, embedding: np.ndarray) -> PipelineOptions:
    return replace(options, selector="reference", reference_embedding=embedding)
