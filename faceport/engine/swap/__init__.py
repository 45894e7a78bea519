"""Face swapping: the landmark mesh swap (default) and the optional inswapper_128 path."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from faceport.engine.core import FaceEngine
from faceport.engine.pipeline import Processor
from faceport.engine.swap.mesh import MeshSwapper, SourceFace, SwapOptions, source_faces_from
from faceport.engine.types import BGRImage
from faceport.errors import NoFace

SwapModel = Literal["auto", "mesh", "inswapper_128"]
NEURAL_MODELS = ("inswapper_128", "arcface_w600k_r50")


def neural_swap_installed(engine: FaceEngine) -> bool:
    return all(engine.cache.store.is_installed(name) for name in NEURAL_MODELS)


def build_swapper(engine: FaceEngine, sources: Sequence[BGRImage], *, model: SwapModel = "auto",
                  options: SwapOptions | None = None) -> Processor:
    """The ``face_swapper`` processor for one source person (one or several images of them).

    ``auto`` uses inswapper_128 + ArcFace when a user has installed both
    (``faceport models pull inswapper_128 --from ...``), else the landmark mesh swap.

    Raises:
        NoFace: no source image has a face.
        ModelUnavailable: ``inswapper_128`` asked for but not installed.
    """
    faces = [engine.detect(image, landmarks=True, max_faces=4) for image in sources]
    if model == "inswapper_128" or (model == "auto" and neural_swap_installed(engine)):
        from faceport.engine.swap.inswapper import build_inswapper

        return build_inswapper(engine.cache, list(zip(sources, faces, strict=True)))
    prepared = source_faces_from(list(sources), faces)
    if not prepared:
        raise NoFace("no face found in the source image(s)", details={"field": "source"})
    # hands are found (two small LiteRT models) only when the occlusion mask asks for them
    hands = engine.hands() if options is not None and "occlusion" in options.mask_types else None
    return MeshSwapper(prepared, options, hands)


__all__ = ["MeshSwapper", "SourceFace", "SwapOptions", "build_swapper", "neural_swap_installed"]
