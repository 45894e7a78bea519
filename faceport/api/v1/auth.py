"""Seed D authentication: ``/api/v1/auth/*``.

Public: ``POST /auth/register``, ``POST /auth/login`` and ``POST /auth/refresh`` (which
authenticates by the refresh token in its body). Everything else needs ``Authorization: Bearer``
or ``X-API-Key``; API-key management and the user list need the admin role.
Blocking work (argon2, database) runs on a worker thread.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from faceport.api.deps import AdminPrincipal, CurrentPrincipal, current_principal, get_context
from faceport.api.envelope import Envelope, ok
from faceport.api.ratelimit import rate_limit
from faceport.errors import NotFound
from faceport.services.auth import AuthService, TokenPair
from faceport.store.users import ApiKeyRecord, UserRecord

router = APIRouter(prefix="/api/v1", tags=["auth"])

# Anonymous routes count against the caller's IP; the others against the authenticated caller.
PUBLIC = [Depends(rate_limit("ip"))]
AUTHENTICATED = [Depends(current_principal), Depends(rate_limit("user"))]


def get_auth(request: Request) -> AuthService:
    auth: AuthService = get_context(request).auth
    return auth


AuthDep = Annotated[AuthService, Depends(get_auth)]


# ---- schemas ----------------------------------------------------------------------------------
class UserCreate(BaseModel):
    """``POST /auth/register``. Rules: username 3-64 of ``A-Z a-z 0-9 _ . -``, password at least 8."""

    model_config = ConfigDict(extra="forbid")

    username: str = Field(max_length=64, examples=["ada"])
    email: str = Field(max_length=255, examples=["ada@example.com"])
    password: str = Field(max_length=1024, repr=False, examples=["correct horse battery"])
    full_name: str | None = Field(default=None, max_length=255)


class LoginRequest(BaseModel):
    """``POST /auth/login``."""

    username: str = Field(max_length=256)
    password: str = Field(max_length=4096, repr=False)


class RefreshRequest(BaseModel):
    """``POST /auth/refresh``: the refresh token from login or the previous refresh."""

    refresh_token: str = Field(max_length=8192, repr=False)


class LogoutRequest(BaseModel):
    """``POST /auth/logout``: ends this session; ``all: true`` ends every session of the account.

    ``refresh_token`` (optional) ends that token's session too.
    """

    refresh_token: str | None = Field(default=None, max_length=8192, repr=False)
    all: bool = Field(default=False, description="sign out everywhere: every session of the account")


class ProfileUpdate(BaseModel):
    """``PUT /auth/profile``. A new ``password`` needs ``current_password``; ``full_name: null`` clears it."""

    model_config = ConfigDict(extra="forbid")

    email: str | None = Field(default=None, max_length=255)
    full_name: str | None = Field(default=None, max_length=255)
    password: str | None = Field(default=None, max_length=1024, repr=False)
    current_password: str | None = Field(default=None, max_length=1024, repr=False)


class UserPublic(BaseModel):
    """A user as the API shows it: never the password hash."""

    id: str
    username: str
    email: str
    role: Literal["admin", "user"]
    full_name: str | None
    created_at: datetime
    is_active: bool

    @classmethod
    def from_record(cls, user: UserRecord) -> UserPublic:
        return cls(id=user.id, username=user.username, email=user.email, role="admin" if user.is_admin else "user",
                   full_name=user.full_name, created_at=user.created_at, is_active=user.is_active)


class UserPage(BaseModel):
    items: list[UserPublic]
    total: int
    limit: int
    offset: int


class TokenPairOut(BaseModel):
    """Seed D's token response; ``expires_in`` is the access token's lifetime in seconds."""

    access_token: str
    refresh_token: str
    token_type: Literal["bearer"]
    expires_in: int

    @classmethod
    def from_pair(cls, pair: TokenPair) -> TokenPairOut:
        return cls(access_token=pair.access_token, refresh_token=pair.refresh_token, token_type="bearer",
                   expires_in=pair.expires_in)


class LogoutOut(BaseModel):
    logged_out: bool
    refresh_tokens_revoked: int


class ApiKeyCreate(BaseModel):
    """``POST /auth/api-keys``: a service key (no ``user_id``) or a key acting for a user."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128, examples=["ingest-worker"])
    role: Literal["admin", "user"] = "user"
    user_id: str | None = Field(default=None, max_length=32)


class ApiKeyPublic(BaseModel):
    """An API key without its secret; ``prefix`` is its first characters, to recognise it."""

    id: str
    name: str
    prefix: str
    role: Literal["admin", "user"]
    user_id: str | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def from_record(cls, key: ApiKeyRecord) -> ApiKeyPublic:
        return cls(id=key.id, name=key.name, prefix=key.prefix, role="admin" if key.role == "admin" else "user",
                   user_id=key.user_id, created_at=key.created_at, last_used_at=key.last_used_at,
                   revoked_at=key.revoked_at)


class ApiKeyCreated(ApiKeyPublic):
    """The new key: ``key`` is shown this once and cannot be recovered; send it as ``X-API-Key``."""

    key: str


class ApiKeyList(BaseModel):
    items: list[ApiKeyPublic]
    total: int


def _dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json")


# ---- public routes ----------------------------------------------------------------------------
@router.post("/auth/register", response_model=Envelope[UserPublic], status_code=201, dependencies=PUBLIC,
             summary="Create an account (role user)")
async def register(request: Request, body: UserCreate, auth: AuthDep) -> dict[str, Any]:
    user = await run_in_threadpool(auth.register, body.username, body.email, body.password, body.full_name)
    return ok(request, _dump(UserPublic.from_record(user)))


@router.post("/auth/login", response_model=Envelope[TokenPairOut], dependencies=PUBLIC,
             summary="Exchange a username and password for tokens")
async def login(request: Request, body: LoginRequest, auth: AuthDep) -> dict[str, Any]:
    pair = await run_in_threadpool(auth.login, body.username, body.password)
    return ok(request, _dump(TokenPairOut.from_pair(pair)))


@router.post("/auth/refresh", response_model=Envelope[TokenPairOut], dependencies=PUBLIC,
             summary="Rotate a refresh token into a new token pair")
async def refresh(request: Request, body: RefreshRequest, auth: AuthDep) -> dict[str, Any]:
    pair = await run_in_threadpool(auth.refresh, body.refresh_token)
    return ok(request, _dump(TokenPairOut.from_pair(pair)))


# ---- the caller's own account -----------------------------------------------------------------
@router.post("/auth/logout", response_model=Envelope[LogoutOut], dependencies=AUTHENTICATED,
             summary="End this session (or every session with {\"all\": true}); its tokens are refused at once")
async def logout(request: Request, principal: CurrentPrincipal, auth: AuthDep,
                 body: LogoutRequest | None = None) -> dict[str, Any]:
    result = await run_in_threadpool(lambda: auth.logout(principal, body.refresh_token if body else None,
                                                         everywhere=bool(body and body.all)))
    return ok(request, _dump(LogoutOut(logged_out=result.access_token_revoked,
                                       refresh_tokens_revoked=result.refresh_tokens_revoked)))


def _own_user_id(user_id: str | None) -> str:
    if user_id is None:
        raise NotFound("this API key acts for no user, so it has no profile; sign in as a user",
                       details={"field": "X-API-Key"})
    return user_id


@router.get("/auth/profile", response_model=Envelope[UserPublic], dependencies=AUTHENTICATED,
            summary="The signed-in user")
async def get_profile(request: Request, principal: CurrentPrincipal, auth: AuthDep) -> dict[str, Any]:
    user = await run_in_threadpool(auth.get_user, _own_user_id(principal.user_id))
    return ok(request, _dump(UserPublic.from_record(user)))


@router.put("/auth/profile", response_model=Envelope[UserPublic], dependencies=AUTHENTICATED,
            summary="Change e-mail, full name or password (password needs current_password)")
async def update_profile(request: Request, body: ProfileUpdate, principal: CurrentPrincipal,
                         auth: AuthDep) -> dict[str, Any]:
    user_id = _own_user_id(principal.user_id)
    clear_name = "full_name" in body.model_fields_set and body.full_name is None
    user = await run_in_threadpool(lambda: auth.update_profile(
        user_id, email=body.email, full_name=body.full_name, clear_full_name=clear_name, password=body.password,
        current_password=body.current_password, keep_session=principal.session_id))
    return ok(request, _dump(UserPublic.from_record(user)))


# ---- admin ------------------------------------------------------------------------------------
@router.get("/auth/users", response_model=Envelope[UserPage], dependencies=AUTHENTICATED,
            summary="List users (admin)")
async def list_users(request: Request, _admin: AdminPrincipal, auth: AuthDep,
                     limit: Annotated[int, Query(ge=1, le=100)] = 20,
                     offset: Annotated[int, Query(ge=0, le=100_000_000)] = 0) -> dict[str, Any]:
    users, total = await run_in_threadpool(lambda: auth.list_users(limit=limit, offset=offset))
    page = UserPage(items=[UserPublic.from_record(u) for u in users], total=total, limit=limit, offset=offset)
    return ok(request, _dump(page))


@router.post("/auth/api-keys", response_model=Envelope[ApiKeyCreated], status_code=201,
             dependencies=AUTHENTICATED, summary="Create an API key (admin); the key is shown once")
async def create_api_key(request: Request, body: ApiKeyCreate, _admin: AdminPrincipal,
                         auth: AuthDep) -> dict[str, Any]:
    created = await run_in_threadpool(auth.create_api_key, body.name, body.role, body.user_id)
    public = ApiKeyPublic.from_record(created.record)
    return ok(request, _dump(ApiKeyCreated(**public.model_dump(), key=created.key)))


@router.get("/auth/api-keys", response_model=Envelope[ApiKeyList], dependencies=AUTHENTICATED,
            summary="List API keys (admin), without their secrets")
async def list_api_keys(request: Request, _admin: AdminPrincipal, auth: AuthDep) -> dict[str, Any]:
    keys = await run_in_threadpool(auth.list_api_keys)
    return ok(request, _dump(ApiKeyList(items=[ApiKeyPublic.from_record(k) for k in keys], total=len(keys))))


@router.delete("/auth/api-keys/{key_id}", response_model=Envelope[ApiKeyPublic], dependencies=AUTHENTICATED,
               summary="Revoke an API key (admin)")
async def revoke_api_key(request: Request, key_id: str, _admin: AdminPrincipal, auth: AuthDep) -> dict[str, Any]:
    record = await run_in_threadpool(auth.revoke_api_key, key_id)
    return ok(request, _dump(ApiKeyPublic.from_record(record)))
