"""``GET /metrics``: Prometheus text format, behind an API key (seed D).

Each app gets its own ``CollectorRegistry`` (never the process-wide default), so tests and the
two apps of one process do not share counters. Series:

- ``faceport_http_requests_total{method, route, status}`` and
  ``faceport_http_request_duration_seconds{method, route}``: ``route`` is the route template
  (``/api/v1/subjects/{subject_id}``), ``"unmatched"`` when no route matched, so a scanner
  probing random paths cannot blow up the number of series.
- ``faceport_rate_limited_total{category}``: requests refused with 429.
- ``faceport_model_loads_total``, ``faceport_models_loaded``, ``faceport_model_memory_bytes``:
  read from the model cache at scrape time.
- ``faceport_gallery_subjects``, ``faceport_gallery_faces``: read from the gallery at scrape time.
"""

from __future__ import annotations

import hmac
import inspect
import time
from collections.abc import Iterator, Mapping
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from faceport.api.deps import get_context
from faceport.api.ratelimit import CATEGORIES, STATE_KEY, RequestLimits
from faceport.errors import FaceportError

UNMATCHED = "unmatched"
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class PlatformMetrics:
    """The metrics of one app and the registry that exposes them.

    Args:
        app: the app whose ``state.context`` (model cache, gallery) is read at scrape time.
    """

    def __init__(self, app: FastAPI) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("faceport_http_requests", "HTTP requests by route template and status.",
                                ["method", "route", "status"], registry=self.registry)
        self.duration = Histogram("faceport_http_request_duration_seconds",
                                  "Time from request to the last response byte.", ["method", "route"],
                                  buckets=_BUCKETS, registry=self.registry)
        self.rate_limited = Counter("faceport_rate_limited", "Requests refused by a rate limit (429).",
                                    ["category"], registry=self.registry)
        for category in CATEGORIES:  # present from the start, so alerts on increase() see the first one
            self.rate_limited.labels(category=category)
        self.registry.register(ContextCollector(app))

    def observe(self, *, method: str, route: str, status: int, seconds: float, state: Mapping[str, Any]) -> None:
        self.requests.labels(method=method, route=route, status=str(status)).inc()
        self.duration.labels(method=method, route=route).observe(seconds)
        limits = state.get(STATE_KEY)
        if isinstance(limits, RequestLimits) and limits.exceeded is not None:
            self.rate_limited.labels(category=limits.exceeded.category).inc()

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition and its content type: OpenMetrics when ``accept`` asks for it, else Prometheus text."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type


class ContextCollector(Collector):
    """Model-cache and gallery figures, read when Prometheus scrapes (nothing to keep in sync)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        ctx = getattr(self.app.state, "context", None)
        cache = getattr(ctx, "cache", None)
        loads, loaded, memory = 0, 0, 0
        if cache is not None:
            loads, loaded, memory = cache.load_count, len(cache.info()), cache.memory_bytes()
        subjects, faces = gallery_counts(getattr(ctx, "gallery", None))
        yield CounterMetricFamily("faceport_model_loads", "Models loaded since start (reloads included).",
                                  value=loads)
        yield GaugeMetricFamily("faceport_models_loaded", "Models in the cache now.", value=loaded)
        yield GaugeMetricFamily("faceport_model_memory_bytes", "Memory held by the loaded models.", value=memory)
        yield GaugeMetricFamily("faceport_gallery_subjects", "Subjects in the recognition gallery.", value=subjects)
        yield GaugeMetricFamily("faceport_gallery_faces", "Enrolled faces in the recognition gallery.", value=faces)


def gallery_counts(gallery: Any) -> tuple[int, int]:
    """``(subjects, faces)`` from ``gallery.stats()``; ``(0, 0)`` when there is no gallery.

    Examples:
        >>> gallery_counts(None)
        (0, 0)
        >>> class G:
        ...     def stats(self): return {"subjects": 2, "faces": 5}
        >>> gallery_counts(G())
        (2, 5)
    """
    if gallery is None:
        return 0, 0
    stats = getattr(gallery, "stats", None)
    if callable(stats):
        counts = stats()
        return int(counts.get("subjects", 0)), int(counts.get("faces", 0))
    return 0, int(getattr(gallery, "size", 0) or 0)  # an index without subject counts: faces only


def route_template(scope: Scope) -> str:
    """The matched route's path template, or ``"unmatched"``.

    FastAPI keeps routes of an included router under their own path (without the include prefix)
    in ``scope["route"]`` and records the full template on its effective route context; the
    latter is preferred when present.
    """
    effective = scope.get("fastapi", {}).get("effective_route_context")
    for candidate in (effective, scope.get("route")):
        template = getattr(candidate, "path_format", None) or getattr(candidate, "path", None)
        if isinstance(template, str) and template:
            return template
    return UNMATCHED


class MetricsMiddleware:
    """Counts and times every HTTP request (pure ASGI: streamed bodies are timed to the end)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}  # what the server error handler will answer if the app raises

        async def send_with_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            metrics: PlatformMetrics | None = getattr(scope["app"].state, "metrics", None) if "app" in scope else None
            if metrics is not None:
                metrics.observe(method=scope["method"], route=route_template(scope), status=status["code"],
                                seconds=time.perf_counter() - started, state=scope.get("state", {}))


async def require_metrics_key(request: Request) -> None:
    """``X-API-Key`` equal to ``FACEPORT_API_KEY`` or accepted by the auth service.

    Raises:
        FaceportError: AUTH_REQUIRED without a key, AUTH_INVALID with a key nobody accepts.
    """
    given = request.headers.get("x-api-key")
    if not given:
        raise FaceportError("X-API-Key header required for /metrics", code="AUTH_REQUIRED")
    ctx = get_context(request)
    expected = ctx.settings.api_key
    if expected and hmac.compare_digest(given.encode(), expected.encode()):
        return
    if ctx.auth is not None:
        authenticate = ctx.auth.authenticate_api_key
        if inspect.iscoroutinefunction(authenticate):
            principal = await authenticate(given)
        else:
            principal = await ctx.run(authenticate, given)  # a database lookup: not on the event loop
        if principal is not None:
            return
    raise FaceportError("invalid API key", code="AUTH_INVALID")


router = APIRouter(tags=["system"])


@router.get("/metrics", summary="Prometheus metrics", dependencies=[Depends(require_metrics_key)],
            response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
async def metrics(request: Request) -> Response:
    platform_metrics: PlatformMetrics = request.app.state.metrics
    body, content_type = platform_metrics.render(request.headers.get("accept", ""))
    return Response(body, media_type=content_type)


def install_metrics(app: FastAPI) -> PlatformMetrics:
    """Give ``app`` its own registry, the request-counting middleware and ``GET /metrics``.

    Call after the other middleware is added, so the count includes requests they refuse.
    """
    platform_metrics = PlatformMetrics(app)
    app.state.metrics = platform_metrics
    app.add_middleware(MetricsMiddleware)
    app.include_router(router)
    return platform_metrics
