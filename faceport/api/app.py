"""App factories: the main app (port 8000: seeds A, B, C, D) and the privacy app (port 5000: seed E)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from faceport import __version__
from faceport.api import health
from faceport.api.context import AppContext
from faceport.api.errors import install_error_handlers
from faceport.api.middleware import TracingMiddleware
from faceport.api.v1 import auth as auth_v1
from faceport.api.v1 import face as face_v1
from faceport.api.v1 import subjects as subjects_v1
from faceport.config import Settings, get_settings

log = logging.getLogger(__name__)


def _lifespan(settings: Settings, context: AppContext | None):  # type: ignore[no-untyped-def]
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = context is None
        ctx = AppContext.create(settings) if owned else context
        assert ctx is not None
        if owned:
            ctx.start()
        app.state.context = ctx
        try:
            yield
        finally:
            if owned:
                ctx.close()

    return lifespan


def _base_app(title: str, description: str, settings: Settings, context: AppContext | None,
              surface: str) -> FastAPI:
    app = FastAPI(title=title, description=description, version=__version__,
                  lifespan=_lifespan(settings, context), docs_url="/docs", redoc_url="/redoc",
                  openapi_url="/openapi.json", max_body_size=settings.max_upload_bytes,
                  # a base64 image field may be as large as the largest image upload, plus encoding
                  form_limits={"max_part_size": settings.max_image_bytes * 4 // 3 + 4096})
    app.state.error_surface = surface
    app.state.settings = settings
    install_error_handlers(app)
    app.add_middleware(TracingMiddleware)
    app.include_router(health.router)
    return app


def create_app(settings: Settings | None = None, *, context: AppContext | None = None) -> FastAPI:
    """The main app (port 8000). Pass ``context`` to share one with the privacy app."""
    settings = settings or get_settings()
    app = _base_app("faceport", "Face AI server: live swap, FaceFusion-style REST, proctoring, face platform API.",
                    settings, context, "plain")
    app.include_router(auth_v1.router)
    app.include_router(face_v1.router)
    app.include_router(subjects_v1.router)
    return app


def create_privacy_app(settings: Settings | None = None, *, context: AppContext | None = None) -> FastAPI:
    """The privacy filter app (port 5000, seed E)."""
    settings = settings or get_settings()
    return _base_app("faceport privacy filter", "Blur faces, plates and text; redact personal data in audio.",
                     settings, context, "privacy")
