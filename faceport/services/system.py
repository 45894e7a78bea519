"""System facts for health and status endpoints."""

from __future__ import annotations

from faceport.engine.models import ModelStore

# Capability -> models it needs. Later processors (face_swapper, face_enhancer, ...) add rows.
CAPABILITIES: dict[str, tuple[str, ...]] = {
    "face_detection": ("blazeface_full",),
    "face_landmarks": ("facemesh", "iris"),
    "face_recognition": ("blazeface_full", "dlib_shape5", "dlib_resnet_onnx"),
    # seed B processors (as faceport.engine.pipeline.available_processors)
    "face_swapper": ("blazeface_full", "facemesh"),
    "face_enhancer": ("blazeface_full", "facemesh"),
}


def processors_available(models: ModelStore) -> list[str]:
    """Capabilities whose models are all installed (cheap: no hashing, no loading)."""
    return [name for name, needs in CAPABILITIES.items() if all(models.is_installed(m) for m in needs)]
