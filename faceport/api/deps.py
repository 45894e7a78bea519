"""Typed dependencies shared by routers."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from faceport.api.context import AppContext
from faceport.engine.core import FaceEngine
from faceport.errors import FaceportError
from faceport.principal import Principal


def get_context(request: Request) -> AppContext:
    context: AppContext = request.app.state.context
    return context


def get_engine(request: Request) -> FaceEngine:
    return get_context(request).engine


ContextDep = Annotated[AppContext, Depends(get_context)]


# Declared so OpenAPI lists both schemes and /docs offers "Authorize"; the auth service reads the headers itself.
_BEARER_SCHEME = HTTPBearer(auto_error=False, bearerFormat="JWT",
                            description="Access token from POST /api/v1/auth/login (RS256 JWT).")
_API_KEY_SCHEME = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key (fpk_...).")


async def current_principal(
    request: Request,
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER_SCHEME)] = None,
    _api_key: Annotated[str | None, Security(_API_KEY_SCHEME)] = None,
) -> Principal:
    """Authenticate the caller (Bearer JWT or X-API-Key) and remember it on ``request.state``.

    Raises:
        FaceportError: AUTH_REQUIRED (no credentials), AUTH_INVALID, AUTH_EXPIRED.
    """
    ctx = get_context(request)
    principal: Principal = await ctx.auth.authenticate_request(request)
    request.state.principal = principal
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


async def require_admin(principal: CurrentPrincipal) -> Principal:
    """Raises: FaceportError AUTH_FORBIDDEN for a non-admin caller."""
    if not principal.is_admin:
        raise FaceportError("this operation needs the admin role", code="AUTH_FORBIDDEN")
    return principal


AdminPrincipal = Annotated[Principal, Depends(require_admin)]
EngineDep = Annotated[FaceEngine, Depends(get_engine)]


def require_api_key(request: Request) -> None:
    """When ``FACEPORT_API_KEY`` is set, the request must carry it as ``X-API-Key``.

    Raises:
        FaceportError: AUTH_REQUIRED without a key, AUTH_INVALID with a wrong one.
    """
    expected = get_context(request).settings.api_key
    if not expected:
        return
    given = request.headers.get("x-api-key")
    if not given:
        raise FaceportError("X-API-Key header required", code="AUTH_REQUIRED")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise FaceportError("invalid API key", code="AUTH_INVALID")


ApiKeyDep = Depends(require_api_key)
