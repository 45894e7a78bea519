"""App factories: the main app (port 8000: seeds A, B, C, D) and the privacy app (port 5000: seed E)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.types import ASGIApp

from faceport import __version__
from faceport.api import facefusion, health
from faceport.api.audit import AuditLog, AuditMiddleware
from faceport.api.context import AppContext
from faceport.api.docs import install_docs
from faceport.api.errors import install_error_handlers
from faceport.api.live_swap import install_live_swap
from faceport.api.metrics import install_metrics
from faceport.api.middleware import BodyTooLargeMiddleware, CorsMiddleware, TracingMiddleware
from faceport.api.ratelimit import RateLimiter, RateLimitHeadersMiddleware
from faceport.api.v1 import auth as auth_v1
from faceport.api.v1 import batch as batch_v1
from faceport.api.v1 import face as face_v1
from faceport.api.v1 import liveness as liveness_v1
from faceport.api.v1 import proctor as proctor_v1
from faceport.api.v1 import subjects as subjects_v1
from faceport.api.v1 import system as system_v1
from faceport.api.versioning import ApiVersionMiddleware
from faceport.config import Settings, get_settings
from faceport.realtime.platform_ws import install_platform_ws
from faceport.realtime.proctor import install_proctor

log = logging.getLogger(__name__)

# The main app's seed D layers, innermost first, all inside tracing (see ``_base_app``).
PLATFORM_MIDDLEWARE = (RateLimitHeadersMiddleware, ApiVersionMiddleware)


def _lifespan(settings: Settings, context: AppContext | None):  # type: ignore[no-untyped-def]
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # per app, built inside the serving event loop: its Redis connections belong to that loop
        app.state.rate_limiter = RateLimiter(settings)
        owned = context is None
        ctx = AppContext.create(settings) if owned else context
        assert ctx is not None
        if owned:
            ctx.start()
        app.state.context = ctx
        try:
            yield
        finally:
            await app.state.rate_limiter.aclose()
            if getattr(app.state, "ws_hub", None) is not None:
                await app.state.ws_hub.aclose()
            app.state.audit.close()
            if owned:
                ctx.close()

    return lifespan


def _base_app(title: str, description: str, settings: Settings, context: AppContext | None,
              surface: str, *, inner_middleware: Sequence[Callable[..., ASGIApp]] = (),
              own_body_limits: bool = False) -> FastAPI:
    # Starlette's body limit answers a plain-text 413; an app that limits bodies in its routes
    # (own_body_limits) answers its own error body instead
    app = FastAPI(title=title, description=description, version=__version__,
                  lifespan=_lifespan(settings, context), docs_url=None, redoc_url=None,  # local assets: see docs.py
                  openapi_url="/openapi.json", max_body_size=None,  # limited inside tracing, below
                  # a base64 image field may be as large as the largest image upload, plus encoding
                  form_limits={"max_part_size": settings.max_image_bytes * 4 // 3 + 4096})
    app.state.error_surface = surface
    app.state.settings = settings
    install_error_handlers(app)
    if not own_body_limits:
        # FastAPI's own app-level limit sits outside every middleware and answers plain text; this one
        # sits inside tracing, and its plain-text 413 becomes the surface's FILE_TOO_LARGE body
        app.add_middleware(RequestBodyLimitMiddleware, max_body_size=settings.max_upload_bytes)
        app.add_middleware(BodyTooLargeMiddleware, surface=surface)
    for middleware in inner_middleware:  # inside tracing: their responses carry the request id
        app.add_middleware(middleware)
    app.add_middleware(CorsMiddleware, origins=settings.cors_origins)  # inside tracing: preflights carry the id
    app.add_middleware(TracingMiddleware)
    app.state.audit = AuditLog(settings, "privacy" if surface == "privacy" else "main")
    app.add_middleware(AuditMiddleware, audit=app.state.audit)  # outermost: sees the final status
    install_docs(app, settings, surface)
    app.include_router(health.router)
    return app


def create_app(settings: Settings | None = None, *, context: AppContext | None = None) -> FastAPI:
    """The main app (port 8000). Pass ``context`` to share one with the privacy app."""
    settings = settings or get_settings()
    app = _base_app("faceport", "Face AI server: live swap, FaceFusion-style REST, proctoring, face platform API.",
                    settings, context, "plain", inner_middleware=PLATFORM_MIDDLEWARE)
    app.include_router(auth_v1.router)
    app.include_router(liveness_v1.router)  # before face_v1: its paths sit under /face/anti-spoof
    app.include_router(face_v1.router)
    app.include_router(subjects_v1.router)
    app.include_router(proctor_v1.router)
    app.include_router(system_v1.router)
    app.include_router(batch_v1.router)
    app.include_router(facefusion.router, max_body_size=facefusion.body_limit(settings))
    install_live_swap(app, settings)  # seed A: /, /upload_source, /status, /socket.io
    install_proctor(app)  # seed C: /ws
    install_platform_ws(app, settings)  # seed D: /ws/face-analysis, /ws/system-status, /ws/notifications
    install_metrics(app)
    return app


def create_privacy_app(settings: Settings | None = None, *, context: AppContext | None = None) -> FastAPI:
    """The privacy filter app (port 5000, seed E)."""
    settings = settings or get_settings()
    app = _base_app("faceport privacy filter", "Blur faces, plates and text; redact personal data in audio.",
                    settings, context, "privacy", own_body_limits=True)  # api/privacy.py limits its bodies
    from faceport.api import privacy
    from faceport.api.privastream import install_privastream

    app.include_router(privacy.router)
    install_privastream(app, settings)  # seed E live: /socket.io, /rooms (WHIP/WHEP), /live
    return app
