"""The engine: numpy in, numpy out. Never imports fastapi, socketio, sqlalchemy or faceport.api."""

from faceport.engine.types import BGRImage, Faces, ModelFile, ModelSource, ModelSpec

__all__ = ["BGRImage", "Faces", "ModelFile", "ModelSource", "ModelSpec"]
