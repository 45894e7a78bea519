"""Model manifest, offline store, runtime sessions and the model cache."""

from faceport.engine.models.cache import LoadedModel, ModelCache
from faceport.engine.models.manifest import DEFAULT_MODELS, MODELS, OPTIONAL_MODELS, get_spec
from faceport.engine.models.store import ModelStatus, ModelStore

__all__ = ["DEFAULT_MODELS", "MODELS", "OPTIONAL_MODELS", "LoadedModel", "ModelCache", "ModelStatus",
           "ModelStore", "get_spec"]
