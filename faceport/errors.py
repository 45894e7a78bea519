"""Domain errors. Each carries a stable ``code``; ``faceport.api.errors`` maps codes to HTTP.

The engine raises these; it never raises HTTP errors. Codes are part of the public API:
never rename one.
"""

from __future__ import annotations

from typing import Any


class FaceportError(Exception):
    """Base of every error a user may see; ``code`` is stable, ``message`` is for humans."""

    code: str = "PROCESSING_FAILED"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = dict(details or {})
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class InvalidInput(FaceportError):
    code = "INVALID_INPUT"


class MissingField(FaceportError):
    code = "MISSING_FIELD"


class InvalidFormat(FaceportError):
    code = "INVALID_FORMAT"


class InvalidImage(FaceportError):
    """Bytes that are not a decodable, supported, reasonably sized image."""

    code = "INVALID_IMAGE"


class FileTooLarge(FaceportError):
    code = "FILE_TOO_LARGE"


class NoFace(FaceportError):
    code = "NO_FACE"


class NotFound(FaceportError):
    code = "NOT_FOUND"


class ModelUnavailable(FaceportError):
    """A model file is not installed; the message names the command that installs it."""

    code = "MODEL_UNAVAILABLE"


class ModelLoadFailed(FaceportError):
    """A model file exists but could not be loaded, even after one re-fetch."""

    code = "MODEL_LOAD_FAILED"


class ModelFetchFailed(FaceportError):
    code = "MODEL_FETCH_FAILED"


class ProcessingFailed(FaceportError):
    code = "PROCESSING_FAILED"


class StorageUnavailable(FaceportError):
    """A folder the server writes to is read-only, full or missing; ``details["setting"]`` names its setting."""

    code = "STORAGE_UNAVAILABLE"


class OutputExists(FaceportError):
    """The requested output file exists and the request did not ask to overwrite it."""

    code = "OUTPUT_EXISTS"


class QueueFull(FaceportError):
    code = "QUEUE_FULL"


class StateUnavailable(FaceportError):
    """The shared state (Redis) cannot be reached; retrying shortly may succeed."""

    code = "STATE_UNAVAILABLE"


class VramExhausted(FaceportError):
    code = "VRAM_EXHAUSTED"


class UnsupportedLanguage(FaceportError):
    """Speech in a language faceport cannot fully redact offline, and the caller chose to fail."""

    code = "UNSUPPORTED_LANGUAGE"
