"""Named frame processors chained over images and video frames.

A processor edits the faces of one frame: ``process(frame, faces) -> frame``. The pipeline
finds the target faces once per frame (detection on images; detection every N frames plus
FaceMesh tracking on video streams, re-detecting at once when a face is lost) and hands
them to each processor in order. Face selection happens before the processors run, as
FaceFusion's selector does: ``many`` (alias ``all``: every face, faces smaller than a minimum size
left out), ``one`` (the first face in ``order``), ``index`` (the face at a position in ``order``) or
``reference`` (the face nearest a reference identity, within a distance); optionally only faces of
one apparent gender and an age range (Cydral age/gender models).

Processors: ``face_swapper`` (landmark mesh swap by default, ``inswapper_128`` when
installed), ``face_enhancer`` (classical by default, GFPGAN/CodeFormer when installed).
Later issues register more (``face_blur``, ...).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np
from numpy.typing import NDArray

from faceport.engine.core import FaceEngine
from faceport.engine.demographics import Demographics
from faceport.engine.embed import distances
from faceport.engine.landmarks import FaceMeshTracker
from faceport.engine.types import BGRImage, Faces
from faceport.errors import InvalidInput

if TYPE_CHECKING:
    from faceport.engine.swap.mesh import SwapOptions

log = logging.getLogger(__name__)

FaceSelector = Literal["all", "many", "one", "reference", "index"]
# FaceFusion's face_selector_order values
FaceOrder = Literal["left-right", "right-left", "top-bottom", "bottom-top", "small-large", "large-small",
                    "best-worst", "worst-best"]
FACE_ORDERS: tuple[str, ...] = ("left-right", "right-left", "top-bottom", "bottom-top", "small-large",
                                "large-small", "best-worst", "worst-best")
Gender = Literal["female", "male"]


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
    face_index: int = 0  # for selector="index": position in ``order``
    order: FaceOrder = "left-right"
    reference_embedding: np.ndarray | None = field(default=None, repr=False)  # for selector="reference"
    reference_threshold: float = 0.6  # max distance for the reference match
    gender: Gender | None = None  # only faces of this apparent gender
    age_start: int | None = None  # only faces of at least this apparent age (years)
    age_end: int | None = None  # only faces of at most this apparent age
    min_face_px: int = 0  # many/all/one: faces whose shorter box side is smaller are left alone
    min_face_ratio: float = 0.0  # ... or smaller than this share of the largest face's side
    redetect_every: int = 10  # video: detection every N frames, tracking in between

    @property
    def needs_demographics(self) -> bool:
        return self.gender is not None or self.age_start is not None or self.age_end is not None


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
                     enhancer_strength: float | None = None,
                     swap_options: SwapOptions | None = None) -> list[Processor]:
    """Processors in the given order; ``swap_options`` are the mesh swapper's (masks, colour, blend).

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
            processors.append(build_swapper(engine, sources, options=swap_options))
        elif name == "face_enhancer":
            from faceport.engine.enhance import DEFAULT_STRENGTH, build_enhancer

            strength = DEFAULT_STRENGTH if enhancer_strength is None else enhancer_strength
            processors.append(build_enhancer(engine, strength=strength))
        else:
            raise InvalidInput(f"unknown processor {name!r}; available: {', '.join(PROCESSOR_NAMES)}",
                               details={"field": "processors", "allowed": list(PROCESSOR_NAMES)})
    return processors


def order_faces(faces: Faces, order: FaceOrder) -> NDArray[np.intp]:
    """Row indices of ``faces`` in FaceFusion's ``face_selector_order`` (stable; ties keep detection order)."""
    xyxy = faces.xyxy
    area = (xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1])
    keys: dict[str, NDArray[np.float32]] = {
        "left-right": xyxy[:, 0], "right-left": -xyxy[:, 2], "top-bottom": xyxy[:, 1], "bottom-top": -xyxy[:, 3],
        "small-large": area, "large-small": -area, "best-worst": -faces.score, "worst-best": faces.score}
    if order not in keys:
        raise InvalidInput(f"unknown face order {order!r}; known: {', '.join(FACE_ORDERS)}",
                           details={"field": "face_selector_order", "allowed": list(FACE_ORDERS)})
    return np.argsort(keys[order], kind="stable")


def large_enough(faces: Faces, options: PipelineOptions) -> NDArray[np.bool_]:
    """Which faces pass the minimum size (shorter box side, in pixels and relative to the largest face)."""
    if len(faces) == 0:
        return np.zeros(0, bool)
    sides = np.minimum(faces.xyxy[:, 2] - faces.xyxy[:, 0], faces.xyxy[:, 3] - faces.xyxy[:, 1])
    floor = max(float(options.min_face_px), float(options.min_face_ratio) * float(sides.max()))
    return np.asarray(sides >= floor, bool)


def demographic_mask(demographics: Demographics, options: PipelineOptions) -> NDArray[np.bool_]:
    """Which faces match the gender and age filters (all when none is set)."""
    keep = np.ones(len(demographics), bool)
    if options.gender is not None:
        keep &= np.asarray([demographics.gender_label(i) == options.gender for i in range(len(demographics))], bool)
    if options.age_start is not None:
        keep &= demographics.age >= options.age_start
    if options.age_end is not None:
        keep &= demographics.age <= options.age_end
    return keep


def select_faces(faces: Faces, options: PipelineOptions, demographics: Demographics | None = None) -> Faces:
    """Apply the face selector (see the module docstring).

    Args:
        faces: the faces found (with embeddings in reference mode).
        options: selector, order, filters.
        demographics: row-aligned estimates, needed when a gender or age filter is set.

    Raises:
        InvalidInput: reference mode without a reference or embeddings; a gender/age filter without estimates.
    """
    if len(faces) == 0:
        return faces
    keep = np.ones(len(faces), bool)
    if options.needs_demographics:
        if demographics is None or len(demographics) != len(faces):
            raise InvalidInput("a gender or age filter needs the demographics of the faces")
        keep &= demographic_mask(demographics, options)
    if options.selector in ("all", "many", "one"):
        keep &= large_enough(faces, options)
    ordered = [int(i) for i in order_faces(faces, options.order) if keep[i]]
    if not ordered:
        return Faces.empty()
    if options.selector in ("all", "many"):
        return faces[np.asarray(sorted(ordered), np.intp)]
    if options.selector == "one":
        return faces[ordered[0]]
    if options.selector == "index":
        return faces[ordered[options.face_index]] if options.face_index < len(ordered) else Faces.empty()
    if faces.embedding is None or options.reference_embedding is None:
        raise InvalidInput("selector 'reference' needs a reference face and embedded target faces")
    candidates = np.asarray(ordered, np.intp)
    d = distances(options.reference_embedding, faces.embedding[candidates])
    best = int(np.argmin(d))
    return faces[int(candidates[best])] if d[best] <= options.reference_threshold else Faces.empty()


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
        demographics = (self.engine.demographics().analyze(frame, faces)
                        if self.options.needs_demographics and len(faces) else None)
        faces = select_faces(faces, self.options, demographics)
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
