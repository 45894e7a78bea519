"""Per-face trust signals for seed D's ``/face/deepfake`` and ``/face/analyze``: deepfake cues and anti-spoof.

Blocking; routes call these through the thread pool. Every result names the method that made it.
"""

from __future__ import annotations

from dataclasses import dataclass

from faceport.engine.antispoof import assess_spoof
from faceport.engine.core import FaceEngine
from faceport.engine.deepfake import DeepfakeScore, image_verdict, swap_artefacts
from faceport.engine.types import BGRImage, Faces


@dataclass(frozen=True, slots=True)
class AntiSpoof:
    """One face's presentation-attack verdict (``score``: higher = more likely a spoof)."""

    live: bool
    score: float
    method: str
    cues: dict[str, float]


@dataclass(frozen=True, slots=True)
class DeepfakeReport:
    """Face-swap scores per face (row-aligned with ``faces``), the image's verdict, and the
    optional AI-generated-image verdict (None when not asked for or ``clip_aigen`` is not installed)."""

    faces: Faces
    per_face: list[DeepfakeScore]
    image: DeepfakeScore
    ai_generated: DeepfakeScore | None


def _anti_spoof_for(image: BGRImage, faces: Faces) -> list[AntiSpoof]:
    """Single-image (passive) anti-spoof verdict per face, row-aligned with ``faces``: the same cues and
    thresholds as ``POST /face/anti-spoof`` (engine/antispoof.py: print/device frame, moire, black level)."""
    result = assess_spoof(image, faces)
    return [AntiSpoof(bool(result.live[i]), round(float(result.score[i]), 4), f"passive_cues_v1:{result.method[i]}",
                      {k: float(v) for k, v in result.cues[i].items()}) for i in range(len(faces))]


def deepfake_for(engine: FaceEngine, image: BGRImage, faces: Faces, *, ai_generated: bool = True) -> DeepfakeReport:
    """Deepfake signals for faces already found with FaceMesh landmarks.

    ``ai_generated``: also run the optional whole-image detector when ``clip_aigen`` is installed.
    """
    per_face = swap_artefacts(image, faces)
    ai = engine.clip_probe().score(image) if ai_generated and engine.ai_generated_installed() else None
    return DeepfakeReport(faces, per_face, image_verdict(per_face), ai)


def detect_deepfakes(engine: FaceEngine, image: BGRImage, *, detector: str | None = None,
                     score_threshold: float | None = None, max_faces: int | None = None,
                     ai_generated: bool = True) -> DeepfakeReport:
    """Find faces (with landmarks) and score each for face-swap artefacts; see ``deepfake_for``."""
    faces = engine.detect(image, detector=detector, score_threshold=score_threshold, max_faces=max_faces,
                          landmarks=True)
    return deepfake_for(engine, image, faces, ai_generated=ai_generated)


def trust_signals(engine: FaceEngine, image: BGRImage, faces: Faces) -> tuple[list[AntiSpoof], DeepfakeReport]:
    """Anti-spoof (through ``_anti_spoof_for``) and deepfake signals for faces found with landmarks."""
    return _anti_spoof_for(image, faces), deepfake_for(engine, image, faces)
