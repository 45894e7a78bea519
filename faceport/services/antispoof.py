"""Passive anti-spoof of one image: detection, then :func:`faceport.engine.antispoof.assess_spoof` per face."""

from __future__ import annotations

from faceport.engine.antispoof import SpoofAssessment, SpoofOptions, assess_spoof
from faceport.engine.core import FaceEngine
from faceport.engine.types import BGRImage, Faces

METHOD_DESCRIPTION = ("passive_cues_v1: frame (LSD line segments enclosing the face, with corners), "
                      "moire (isolated spectral peaks, luminance and red-blue chroma), gamut (black level); "
                      "glare, blur, colourfulness reported only. Heuristic, no learned model; see README.")


def check_image(engine: FaceEngine, image: BGRImage, *, detector: str | None = None,
                score_threshold: float | None = None, max_faces: int | None = None,
                options: SpoofOptions | None = None) -> tuple[Faces, SpoofAssessment]:
    """Detect the faces of ``image`` (BGR) and judge each one; no face gives empty results (blocking)."""
    faces = engine.detect(image, detector=detector, score_threshold=score_threshold, max_faces=max_faces)
    return faces, assess_spoof(image, faces, options)
