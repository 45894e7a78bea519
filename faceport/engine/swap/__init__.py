"""Face swapping: the landmark mesh swap (default) and the optional inswapper_128 path."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from faceport.engine.core import FaceEngine
from faceport.engine.swap.mesh import MeshSwapper, SourceFace, SwapOptions, source_faces_from
from faceport.engine.types import BGRImage
from faceport.errors import NoFace

SwapModel = Literal["auto", "mesh", "inswapper_128"]


def build_swapper(engine: FaceEngine, sources: Sequence[BGRImage], *, model: SwapModel = "auto",
                  options: SwapOptions | None = None) -> MeshSwapper:
    """The ``face_swapper`` processor for one source person (one or several images of them).

    Raises:
        NoFace: no source image has a face.
    """
    faces = [engine.detect(image, landmarks=True, max_faces=4) for image in sources]
    prepared = source_faces_from(list(sources), faces)
    if not prepared:
        raise NoFace("no face found in the source image(s)", details={"field": "source"})
    return MeshSwapper(prepared, options)


__all__ = ["MeshSwapper", "SourceFace", "SwapOptions", "build_swapper"]
