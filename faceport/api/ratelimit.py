"""Seed D's rate limits: per user, per face-analysis user, per batch submitter, per client IP.

One :class:`RateLimiter` per app, built in the app lifespan (see ``faceport.api.app``) and kept on
``app.state.rate_limiter``. It counts in process memory, or in Redis when ``FACEPORT_REDIS_URL`` is
set so that every worker process shares one bucket per caller. The strategy is a moving window:
a caller gets at most ``amount`` requests in any ``window`` seconds, with no double burst at a
fixed window's edge.

Routers opt in with dependencies::

    router = APIRouter(prefix="/api/v1", dependencies=api_v1_dependencies("user", "face"))
    public = APIRouter(prefix="/api/v1", dependencies=[Depends(rate_limit("ip"))])

The dependency runs before the response exists, so it records the outcome on ``request.state``;
:class:`RateLimitHeadersMiddleware` turns that into ``X-RateLimit-*`` headers on the way out.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from fastapi import Depends, Request
from fastapi.params import Depends as DependsParam
from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from redis.exceptions import RedisError
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from faceport.api.deps import current_principal
from faceport.config import Settings
from faceport.errors import FaceportError

log = logging.getLogger(__name__)

Category = Literal["user", "face", "batch", "ip"]
CATEGORIES: tuple[Category, ...] = get_args(Category)
STATE_KEY = "rate_limits"  # request.state attribute holding this request's RequestLimits

_STORAGE_ERRORS = (StorageError, RedisError, OSError, TimeoutError)
_WARN_EVERY_S = 30.0
_REDIS_TIMEOUT_S = 1.0  # a slow Redis must not hold requests for long: past this the limiter fails open


@dataclass(frozen=True, slots=True)
class LimitStatus:
    """Where one caller stands against one limit after this request.

    Attributes:
        category: which limit (``"user"``, ``"face"``, ``"batch"``, ``"ip"``).
        limit: requests allowed per window.
        remaining: requests left in the window now.
        reset: unix time (seconds) when the oldest counted request leaves the window.
        window_seconds: the window's length.
    """

    category: str
    limit: int
    remaining: int
    reset: float
    window_seconds: int

    def retry_after(self, now: float | None = None) -> int:
        """Whole seconds until one request is allowed again (at least 1)."""
        return max(1, math.ceil(self.reset - (time.time() if now is None else now)))


@dataclass
class RequestLimits:
    """The rate-limit outcome of one request, kept on ``request.state.rate_limits``.

    Attributes:
        tightest: the applied limit with the fewest requests left; reported in the headers.
        exceeded: the limit that refused this request (429), if any.
        degraded: the storage was unreachable and the request was let through uncounted.
        counted: categories already counted for this request, so a limit listed twice counts once.
    """

    tightest: LimitStatus | None = None
    exceeded: LimitStatus | None = None
    degraded: bool = False
    counted: set[str] = field(default_factory=set)

    def record(self, status: LimitStatus) -> None:
        if self.tightest is None or (status.remaining, status.limit) < (self.tightest.remaining, self.tightest.limit):
            self.tightest = status

    def headers(self, now: float | None = None) -> list[tuple[str, str]]:
        """The response headers: ``X-RateLimit-Limit/-Remaining/-Reset``, on 429 also ``Retry-After``."""
        out: list[tuple[str, str]] = []
        shown = self.exceeded or self.tightest
        if shown is not None:
            out += [("X-RateLimit-Limit", str(shown.limit)), ("X-RateLimit-Remaining", str(shown.remaining)),
                    ("X-RateLimit-Reset", str(math.ceil(shown.reset)))]
        if self.exceeded is not None:
            retry = str(self.exceeded.retry_after(now))
            out += [("Retry-After", retry), ("X-RateLimit-Retry-After", retry)]
        if self.degraded:
            out.append(("X-RateLimit-Degraded", "1"))
        return out


def _limits_uri(redis_url: str) -> str:
    """``redis://h:6379/0`` → ``async+redis://h:6379/0``, the scheme ``limits`` wants for asyncio."""
    scheme = urlsplit(redis_url).scheme
    if scheme.startswith("async+"):
        return redis_url
    if scheme == "unix":
        return "async+redis+unix" + redis_url[len("unix"):]
    return "async+" + redis_url


class RateLimiter:
    """The limits of one app, counted in memory or in Redis.

    Failure policy: when Redis cannot be reached (refused, timed out after about a second, any
    Redis error) the request is let through uncounted, a warning is logged (at most every 30 s)
    and the response carries ``X-RateLimit-Degraded: 1``. Limits protect capacity; refusing all
    traffic because the counter store is down would turn a Redis outage into a full API outage.
    Authentication still applies, so failing open never lets anonymous callers in.

    Args:
        settings: the ``rate_limit_*`` settings and ``redis_url``.
    """

    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.rate_limits_enabled
        self.items: dict[str, RateLimitItem] = {
            "user": parse(settings.rate_limit_user),
            "face": parse(settings.rate_limit_face),
            "batch": parse(settings.rate_limit_batch),
            "ip": parse(settings.rate_limit_ip),
        }
        self._pool: Any = None
        self.storage: Storage
        if settings.redis_url:
            from redis.asyncio import ConnectionPool

            # The pool is ours so that aclose() can disconnect it; it connects on first use,
            # inside the event loop that serves requests.
            self._pool = ConnectionPool.from_url(settings.redis_url, socket_connect_timeout=_REDIS_TIMEOUT_S,
                                                 socket_timeout=_REDIS_TIMEOUT_S)
            self.storage = RedisStorage(_limits_uri(settings.redis_url), implementation="redispy",
                                        key_prefix=settings.rate_limit_key_prefix, wrap_exceptions=True,
                                        connection_pool=self._pool)
            self.backend = "redis"
        else:
            self.storage = MemoryStorage()
            self.backend = "memory"
        self.strategy = MovingWindowRateLimiter(self.storage)
        self._last_warning = -math.inf

    async def aclose(self) -> None:
        """Disconnect from Redis; in-memory counters are simply dropped."""
        if self._pool is not None:
            await self._pool.disconnect()

    async def check(self, limits: RequestLimits, categories: Sequence[str], *, rate_key: str | None,
                    client_ip: str | None) -> None:
        """Count one request against ``categories`` and record the outcome on ``limits``.

        With several categories every one is tested before any is counted, so a request refused
        by one limit does not use up the others.

        Args:
            limits: this request's outcome, updated in place.
            categories: the limits to apply, e.g. ``("user", "face")``.
            rate_key: the principal's ``rate_key``; ``None`` for an anonymous caller.
            client_ip: the peer address; anonymous callers and the ``"ip"`` limit count against it.

        Raises:
            FaceportError: RATE_LIMITED when a limit is used up.
            KeyError: for a category that is not one of ``CATEGORIES``.
        """
        if not self.enabled:
            return
        pending = [(c, self.items[c], self._identity(c, rate_key, client_ip))
                   for c in dict.fromkeys(categories) if c not in limits.counted]
        if not pending:
            return
        limits.counted.update(c for c, _, _ in pending)
        try:
            refused = await self._consume(pending)
            if refused is not None:
                category, item, identity = refused
                limits.exceeded = await self._status(category, item, identity)
                limits.record(limits.exceeded)
            else:
                for category, item, identity in pending:
                    limits.record(await self._status(category, item, identity))
        except _STORAGE_ERRORS as exc:
            limits.degraded = True
            self._warn(exc)
            return
        if limits.exceeded is not None:
            raise _rate_limited(limits.exceeded)

    async def _consume(self, pending: list[tuple[str, RateLimitItem, str]]) -> tuple[str, RateLimitItem, str] | None:
        if len(pending) > 1:
            for entry in pending:
                if not await self.strategy.test(entry[1], entry[0], entry[2]):
                    return entry
        for entry in pending:
            # A moving window does not count a refused hit, so a caller hammering at the limit
            # gets back in as soon as the oldest request leaves the window.
            if not await self.strategy.hit(entry[1], entry[0], entry[2]):
                return entry
        return None

    async def _status(self, category: str, item: RateLimitItem, identity: str) -> LimitStatus:
        stats = await self.strategy.get_window_stats(item, category, identity)
        return LimitStatus(category=category, limit=item.amount, remaining=max(0, stats.remaining),
                           reset=stats.reset_time, window_seconds=item.get_expiry())

    @staticmethod
    def _identity(category: str, rate_key: str | None, client_ip: str | None) -> str:
        if category != "ip" and rate_key:
            return rate_key
        return f"ip:{client_ip or 'unknown'}"

    def _warn(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_warning >= _WARN_EVERY_S:
            self._last_warning = now
            log.warning("rate-limit storage (%s) unreachable, letting requests through uncounted: %s",
                        self.backend, exc)


def _rate_limited(status: LimitStatus) -> FaceportError:
    retry = status.retry_after()
    return FaceportError(
        f"rate limit for {status.category} requests exceeded: {status.limit} per {status.window_seconds} s; "
        f"retry in {retry} s",
        code="RATE_LIMITED",
        details={"limit": status.limit, "window_seconds": status.window_seconds, "category": status.category,
                 "retry_after": retry},
    )


def request_limits(request: Request) -> RequestLimits:
    """This request's :class:`RequestLimits`, created on first use."""
    limits: RequestLimits | None = getattr(request.state, STATE_KEY, None)
    if limits is None:
        limits = RequestLimits()
        setattr(request.state, STATE_KEY, limits)
    return limits


@cache  # one function per category tuple, so FastAPI runs a limit listed twice on a route once
def rate_limit(*categories: Category) -> Callable[[Request], Awaitable[None]]:
    """A FastAPI dependency that counts the request against ``categories``.

    List it after ``current_principal`` so that ``request.state.principal`` is set: the request is
    then counted against the principal's ``rate_key``; without a principal (and always for
    ``"ip"``) against the client's IP address (``request.client.host``; behind a proxy run
    uvicorn with ``--proxy-headers --forwarded-allow-ips`` so that is the real client).

    Args:
        categories: one or more of ``"user"``, ``"face"``, ``"batch"``, ``"ip"``.

    Returns:
        The dependency, e.g. ``Depends(rate_limit("face"))``.

    Raises:
        ValueError: for an unknown category (when the router is built, not per request).
    """
    unknown = [c for c in categories if c not in CATEGORIES]
    if unknown or not categories:
        raise ValueError(f"rate_limit: unknown categories {unknown}; choose from {', '.join(CATEGORIES)}")

    async def check_rate_limit(request: Request) -> None:
        limiter: RateLimiter | None = getattr(request.app.state, "rate_limiter", None)
        if limiter is None:
            return
        principal = getattr(request.state, "principal", None)
        await limiter.check(request_limits(request), categories,
                            rate_key=getattr(principal, "rate_key", None),
                            client_ip=request.client.host if request.client else None)

    check_rate_limit.__name__ = f"rate_limit_{'_'.join(categories)}"
    return check_rate_limit


def api_v1_dependencies(*categories: Category) -> list[DependsParam]:
    """Router dependencies for an authenticated ``/api/v1`` router: authenticate, then count.

    Args:
        categories: the limits to apply after authentication; default ``("user",)``.

    Returns:
        ``[Depends(current_principal), Depends(rate_limit(*categories))]``.
    """
    return [Depends(current_principal), Depends(rate_limit(*(categories or ("user",))))]


class RateLimitHeadersMiddleware:
    """Adds the headers of ``request.state.rate_limits`` to the response (pure ASGI: streams pass through)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_limits(message: Message) -> None:
            if message["type"] == "http.response.start":
                limits = scope.get("state", {}).get(STATE_KEY)
                if isinstance(limits, RequestLimits):
                    headers = MutableHeaders(scope=message)
                    for name, value in limits.headers():
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_limits)
