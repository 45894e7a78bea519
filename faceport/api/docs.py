"""API documentation of both apps: offline ``/docs`` and ``/redoc``, and an OpenAPI schema that tells the truth.

Pages: Swagger UI at ``/docs``, ReDoc at ``/redoc``, the schema at ``/openapi.json`` and (seed D)
``/docs/openapi.json``. Their JavaScript, CSS and favicon come from the ``fastapi-offline`` wheel,
served at ``/docs/assets``; the pages name no external host (no CDN, no Google Fonts), so they
render on a machine without internet.

Schema: FastAPI documents a 422 that this server never sends (validation errors are 400 in each
surface's envelope, see :mod:`faceport.api.errors`). :func:`document_errors` drops it and adds, per
operation, the error statuses the route can really return, derived from its dependencies and
parameters so routers need not repeat them:

=========================================================  =================
what the route has                                         documented
=========================================================  =================
parameters (query, header), a request body, or ``/api/v1``  400
a request body (or a POST/PUT/PATCH: the app's size limit)  413
authentication (JWT/API key; a static key when one is set)  401
the admin role                                             403
path parameters (someone else's object is not found)       404
a rate limit (when rate limits are enabled)                429
an image upload, or a body on a job-queueing router         503
=========================================================  =================

Each with the surface's error body: seed D's ``{success, error{code, message, details}, meta}``
under ``/api/v1``, seed E's ``{error, message, code}`` on the privacy app, ``{detail, code,
details}`` elsewhere. A status the route declares itself (seed A's ``/upload_source``) is kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import fastapi.routing
import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from faceport.api.errors import _PLATFORM_CODES, STATUS_BY_CODE, Surface
from faceport.config import Settings

ASSETS_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"
ASSETS_URL = "/docs/assets"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
# The pages may load nothing but this server's assets: ReDoc's bundle would otherwise fetch its
# sidebar logo from a CDN. Inline scripts and styles are the pages' own (FastAPI's templates).
DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; "
            "frame-ancestors 'self'")
# Routers whose requests queue jobs: they may answer 503 (QUEUE_FULL, MODEL_UNAVAILABLE, ...), as may every
# operation taking an image upload (multipart), which runs a model.
JOB_TAGS = frozenset({"facefusion", "privacy"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_AUTH_CALLS = frozenset({"current_principal", "require_metrics_key"})
_STATIC_KEY_CALLS = frozenset({"require_api_key", "require_live_key"})
_ADMIN_CALLS = frozenset({"require_admin"})
_SUMMARY = {400: "Bad request", 401: "Authentication required or invalid", 403: "Forbidden (admin role needed)",
            404: "Not found", 413: "Payload too large", 429: "Rate limit exceeded", 503: "Service unavailable"}


class PlatformErrorDetail(BaseModel):
    code: str = Field(examples=["INVALID_INPUT"])
    message: str
    details: dict[str, Any]


class PlatformErrorMeta(BaseModel):
    timestamp: str
    request_id: str | None


class PlatformError(BaseModel):
    """Seed D's error envelope (``/api/v1`` on the main app)."""

    success: Literal[False]
    error: PlatformErrorDetail
    meta: PlatformErrorMeta


class PrivacyError(BaseModel):
    """Seed E's error body (the privacy app)."""

    error: str = Field(examples=["Bad request"])
    message: str
    code: str = Field(examples=["INVALID_INPUT"])


class PlainError(BaseModel):
    """The error body of the main app outside ``/api/v1`` (seeds A and B, health, metrics)."""

    detail: str
    code: str = Field(examples=["INVALID_INPUT"])
    details: dict[str, Any]


ERROR_MODELS: dict[Surface, type[BaseModel]] = {"platform": PlatformError, "privacy": PrivacyError,
                                                "plain": PlainError}


def _walk(dependant: Dependant) -> Iterator[Dependant]:
    yield dependant
    for sub in dependant.dependencies:
        yield from _walk(sub)


def _calls(dependant: Dependant) -> set[str]:
    return {name for d in _walk(dependant) if (name := getattr(d.call, "__qualname__", None))}


def _has(dependant: Dependant, kind: str) -> bool:
    return any(getattr(d, kind) for d in _walk(dependant))


def api_routes(app: FastAPI) -> Iterator[Any]:
    """Every API route of ``app`` with its effective path, tags and dependencies.

    FastAPI from 0.16x includes routers lazily (``app.routes`` holds the included routers, and
    ``fastapi.routing.iter_route_contexts`` resolves them); older versions copy the routes.
    """
    iter_route_contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    routes: Iterator[Any] = iter_route_contexts(app.routes) if iter_route_contexts else iter(app.routes)
    for route in routes:
        if isinstance(getattr(route, "original_route", route), APIRoute):
            yield route


def error_statuses(route: Any, method: str, settings: Settings, surface: Surface, *,
                   uploads: bool = False) -> list[int]:
    """The error statuses ``route`` can answer for ``method``, from its dependencies and parameters.

    Args:
        route: an API route (or FastAPI's route context of one).
        method: the HTTP method of the operation.
        settings: decide whether a static API key and rate limits apply.
        surface: the error surface of the operation.
        uploads: whether the operation takes multipart uploads (images, media).

    Returns:
        The statuses, ascending (see the module's table).
    """
    dependant = route.dependant
    calls = _calls(dependant)
    # any body may exceed the app's max body size (413), whether or not the route reads one
    has_body = (_has(dependant, "body_params") or bool((route.openapi_extra or {}).get("requestBody"))
                or method.upper() in _BODY_METHODS)
    has_params = any(_has(dependant, kind) for kind in ("query_params", "header_params", "cookie_params"))
    statuses: set[int] = set()
    if has_body or has_params or surface == "platform":
        statuses.add(400)
    if has_body:
        statuses.add(413)
        if uploads or JOB_TAGS.intersection(str(t) for t in route.tags or ()):
            statuses.add(503)
    if calls & _AUTH_CALLS or (calls & _STATIC_KEY_CALLS and settings.api_key):
        statuses.add(401)
    if calls & _ADMIN_CALLS:
        statuses.add(403)
    if _has(dependant, "path_params"):
        statuses.add(404)
    if settings.rate_limits_enabled and any(name.startswith("rate_limit.") for name in calls):
        statuses.add(429)
    return sorted(statuses)


def _codes(status: int, surface: Surface) -> list[str]:
    codes = [code for code, code_status in STATUS_BY_CODE.items() if code_status == status]
    if surface == "platform":
        codes = [_PLATFORM_CODES.get(code, code) for code in codes]
    return sorted(set(codes))


def _surface(path: str, app_surface: Surface) -> Surface:
    if app_surface == "privacy":
        return "privacy"
    return "platform" if path == "/api/v1" or path.startswith("/api/v1/") else "plain"


_VERSION_HEADER = {"name": "X-API-Version", "in": "header", "required": False,
                   "description": "Seed D's header versioning: v1 (current, the default) or v0 (deprecated: "
                                  "answered with Deprecation, Sunset and Link headers); others are refused with "
                                  "400 UNSUPPORTED_VERSION.",
                   "schema": {"type": "string", "enum": ["v1", "v0"], "default": "v1"}}


def document_errors(schema: dict[str, Any], app: FastAPI, settings: Settings, app_surface: Surface) -> None:
    """Replace FastAPI's 422 by the statuses each operation really answers, with its surface's error model."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in ERROR_MODELS.values():
        model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(model_schema.pop("$defs", {}))
        components[model.__name__] = model_schema
    for route in api_routes(app):
        if not route.include_in_schema:
            continue
        surface = _surface(route.path_format, app_surface)
        ref = {"$ref": f"#/components/schemas/{ERROR_MODELS[surface].__name__}"}
        for method in route.methods:
            operation = schema.get("paths", {}).get(route.path_format, {}).get(method.lower())
            if operation is None:
                continue
            uploads = "multipart/form-data" in operation.get("requestBody", {}).get("content", {})
            statuses = error_statuses(route, method, settings, surface, uploads=uploads)
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            for status in statuses:
                responses.setdefault(str(status), {
                    "description": f"{_SUMMARY[status]}: {', '.join(_codes(status, surface))}"})
            for status, response in responses.items():
                # a route's own error entries (409, 503 ...) get the surface's envelope model too
                if status[:1] in "45" and "content" not in response:
                    response["content"] = {"application/json": {"schema": ref}}
            if surface == "platform":
                params = operation.setdefault("parameters", [])
                if not any(p.get("name", "").lower() == "x-api-version" for p in params):
                    params.append(dict(_VERSION_HEADER))
    text = repr(schema["paths"])
    for unused in ("HTTPValidationError", "ValidationError"):
        if f"#/components/schemas/{unused}'" not in text:
            components.pop(unused, None)


def _offline(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = DOCS_CSP
    return page


def install_docs(app: FastAPI, settings: Settings, surface: Surface) -> None:
    """Serve ``/docs``, ``/redoc``, ``/docs/openapi.json`` from local assets and install the truthful schema.

    The app must be created with ``docs_url=None, redoc_url=None``.
    """
    openapi_url = app.openapi_url or "/openapi.json"

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes, servers=app.servers or None)
            document_errors(schema, app, settings, surface)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS_DIR), name="docs-assets")

    def root(request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        base = root(request)
        return _offline(get_swagger_ui_html(openapi_url=f"{base}{openapi_url}", title=f"{app.title} - Swagger UI",
                                   swagger_js_url=f"{base}{ASSETS_URL}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{base}{ASSETS_URL}/swagger-ui.css",
                                   swagger_favicon_url=f"{base}{ASSETS_URL}/favicon.png",
                                   oauth2_redirect_url=f"{base}{OAUTH2_REDIRECT_URL}",
                                   # no badge that would ask swagger.io to validate the schema
                                   swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": True}))

    @app.get(OAUTH2_REDIRECT_URL, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        base = root(request)
        return _offline(get_redoc_html(openapi_url=f"{base}{openapi_url}", title=f"{app.title} - ReDoc",
                                       redoc_js_url=f"{base}{ASSETS_URL}/redoc.standalone.js",
                                       redoc_favicon_url=f"{base}{ASSETS_URL}/favicon.png", with_google_fonts=False))

    @app.get("/docs/openapi.json", include_in_schema=False)
    async def docs_openapi() -> JSONResponse:
        """Seed D's address of the same schema."""
        return JSONResponse(app.openapi())
