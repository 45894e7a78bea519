"""Per-face trust signals for seed D's ``/face/deepfake`` and ``/face/analyze``: deepfake cues and anti-spoof.

Blocking; routes call these through the thread pool. Every result names the method that made it.
"""

from __future__ import annotations

from dataclasses import dataclass

from faceport.engine.core import FaceEngine
from faceport.engine.deepfake import DeepfakeScore, image_verdict, swap_artefacts
from faceport.engine.liveness import single_image_liveness
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
    """Single-image anti-spoof verdict per face (row-aligned with ``faces``).

    TODO(merge with helper "spoof"): switch this adapter to the engine's ``assess_spoof(image, faces)``
    (engine/antispoof.py, issue #13 point 2) once it is on main; today it uses the single-image
    cues of engine/liveness.py (screen moire, a border around the face).
    """
    out = []
    for i in range(len(faces)):
        result = single_image_liveness(image, faces.xyxy[i])
        out.append(AntiSpoof(result.live, round(float(result.score), 4),
                             f"liveness.{result.method} (single image: screen moire, device/print border)",
                             dict(result.details)))
    return out


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
