"""Auth repository: users, refresh tokens, revoked access tokens and API keys.

Keyword-only functions over an open session (``session`` first), returning frozen records
detached from the session, like :mod:`faceport.store.jobs`. Hashing, token signing and
policy live in :mod:`faceport.services.auth`; this module only stores and finds.

Usernames are unique regardless of case (``Admin`` and ``admin`` cannot both exist, so one
cannot impersonate the other) and are looked up the same way; e-mail addresses are stored
lower-case. Revocations are conditional ``UPDATE ... WHERE revoked_at IS NULL`` statements, so
two requests racing to rotate one refresh token cannot both win.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from faceport.errors import InvalidInput, NotFound
from faceport.store.models import ApiKey, RefreshToken, RevokedToken, Role, User, utcnow

logger = logging.getLogger(__name__)

MAX_LIST_LIMIT = 1000
ROLES: Final = frozenset(role.value for role in Role)


class _Unset:
    """Marker for "leave this column as it is" (``None`` is a value for nullable columns)."""

    _instance: _Unset | None = None

    def __new__(cls) -> _Unset:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A user as read from the store. ``password_hash`` is an argon2 PHC string; never serialise it."""

    id: str
    username: str
    email: str
    role: str
    full_name: str | None
    is_active: bool
    created_at: datetime
    updated_at: datetime
    password_hash: str = field(repr=False)

    @property
    def is_admin(self) -> bool:
        """Whether the user has the admin role."""
        return self.role == Role.ADMIN.value

    @classmethod
    def from_row(cls, user: User) -> UserRecord:
        """Copy an ORM ``User`` into a detached record."""
        return cls(id=user.id, username=user.username, email=user.email, role=user.role, full_name=user.full_name,
                   is_active=bool(user.is_active), created_at=user.created_at, updated_at=user.updated_at,
                   password_hash=user.password_hash)


@dataclass(frozen=True, slots=True)
class RefreshTokenRecord:
    """One issued refresh token (by ``jti``), its rotation ``family`` and whether it is spent."""

    jti: str
    user_id: str
    family: str
    issued_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    replaced_by: str | None

    @property
    def is_revoked(self) -> bool:
        """Whether the token was rotated, logged out or revoked with its family."""
        return self.revoked_at is not None

    @classmethod
    def from_row(cls, token: RefreshToken) -> RefreshTokenRecord:
        """Copy an ORM ``RefreshToken`` into a detached record."""
        return cls(jti=token.jti, user_id=token.user_id, family=token.family, issued_at=token.issued_at,
                   expires_at=token.expires_at, revoked_at=token.revoked_at, replaced_by=token.replaced_by)


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """An API key without its secret: ``prefix`` identifies it to humans, only the hash is stored."""

    id: str
    name: str
    prefix: str
    role: str
    user_id: str | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def is_revoked(self) -> bool:
        """Whether the key was revoked and is refused."""
        return self.revoked_at is not None

    @classmethod
    def from_row(cls, key: ApiKey) -> ApiKeyRecord:
        """Copy an ORM ``ApiKey`` into a detached record."""
        return cls(id=key.id, name=key.name, prefix=key.prefix, role=key.role, user_id=key.user_id,
                   created_at=key.created_at, last_used_at=key.last_used_at, revoked_at=key.revoked_at)


# ---- users ------------------------------------------------------------------------------------
def create_user(*, session: Session, username: str, email: str, password_hash: str, role: str = Role.USER.value,
                full_name: str | None = None, is_active: bool = True) -> UserRecord:
    """Add a user. Validation of the name, address and password is the caller's (the auth service).

    Args:
        session: Open session; the user is committed with it.
        username: Unique regardless of case.
        email: Unique; stored lower-case.
        password_hash: An argon2 PHC string, never a plain password.
        role: ``"admin"`` or ``"user"``.
        full_name: Optional display name.
        is_active: Whether the account may sign in.

    Returns:
        The new user.

    Raises:
        InvalidInput: The username or e-mail is taken (``details.field`` names which), or the role is unknown.
    """
    _check_role(role)
    email = email.strip().lower()
    _check_unique(session, username=username, email=email, exclude_id=None)
    now = utcnow()
    user = User(id=uuid.uuid4().hex, username=username, email=email, password_hash=password_hash, role=role,
                full_name=full_name, is_active=is_active, created_at=now, updated_at=now)
    _flush_unique(session, user, username=username, email=email)
    logger.debug("created user %s (%s)", user.id, role)
    return UserRecord.from_row(user)


def get_user(*, session: Session, user_id: str) -> UserRecord:
    """Read one user by id.

    Raises:
        NotFound: No user has this id.
    """
    return UserRecord.from_row(_load_user(session, user_id))


def get_user_by_username(*, session: Session, username: str) -> UserRecord:
    """Read one user by name, ignoring case.

    Raises:
        NotFound: No user has this name.
    """
    user = session.scalars(select(User).where(func.lower(User.username) == username.lower())).first()
    if user is None:
        raise NotFound(f"user {username!r} not found", details={"username": username})
    return UserRecord.from_row(user)


def list_users(*, session: Session, limit: int = 50, offset: int = 0) -> list[UserRecord]:
    """List users, oldest first (a stable order for pagination).

    Raises:
        InvalidInput: ``limit`` is not 1 to 1000 or ``offset`` is negative.
    """
    _check_page(limit, offset)
    query = select(User).order_by(User.created_at, User.id).limit(limit).offset(offset)
    return [UserRecord.from_row(user) for user in session.scalars(query)]


def count_users(*, session: Session) -> int:
    """Return how many users exist."""
    return int(session.scalar(select(func.count()).select_from(User)) or 0)


def count_admins(*, session: Session, active_only: bool = True) -> int:
    """Return how many users have the admin role (by default only active ones)."""
    query = select(func.count()).select_from(User).where(User.role == Role.ADMIN.value)
    if active_only:
        query = query.where(User.is_active.is_(True))
    return int(session.scalar(query) or 0)


def update_user(*, session: Session, user_id: str, email: str | _Unset = UNSET,
                full_name: str | _Unset | None = UNSET, role: str | _Unset = UNSET,
                is_active: bool | _Unset = UNSET) -> UserRecord:
    """Change a user's columns; arguments left :data:`UNSET` are kept.

    Raises:
        NotFound: No user has this id.
        InvalidInput: The e-mail is taken by another user, or the role is unknown.
    """
    user = _load_user(session, user_id)
    if not isinstance(email, _Unset):
        email = email.strip().lower()
        _check_unique(session, username=None, email=email, exclude_id=user_id)
        user.email = email
    if not isinstance(full_name, _Unset):
        user.full_name = full_name
    if not isinstance(role, _Unset):
        _check_role(role)
        user.role = role
    if not isinstance(is_active, _Unset):
        user.is_active = is_active
    user.updated_at = utcnow()
    _flush_unique(session, user, username=None, email=user.email)
    return UserRecord.from_row(user)


def set_password(*, session: Session, user_id: str, password_hash: str) -> UserRecord:
    """Replace a user's password hash.

    Raises:
        NotFound: No user has this id.
    """
    user = _load_user(session, user_id)
    user.password_hash = password_hash
    user.updated_at = utcnow()
    session.flush()
    return UserRecord.from_row(user)


def delete_user(*, session: Session, user_id: str) -> None:
    """Delete a user; the database cascades to its refresh tokens and API keys.

    Raises:
        NotFound: No user has this id.
    """
    result: Any = session.execute(delete(User).where(User.id == user_id))
    if result.rowcount == 0:
        raise NotFound(f"user {user_id!r} not found", details={"user_id": user_id})


# ---- refresh tokens ---------------------------------------------------------------------------
def store_refresh_token(*, session: Session, jti: str, user_id: str, family: str, expires_at: datetime,
                        issued_at: datetime | None = None) -> RefreshTokenRecord:
    """Record an issued refresh token.

    Args:
        session: Open session.
        jti: The token's unique id (its ``jti`` claim), at most 32 characters.
        user_id: Its owner.
        family: The rotation family: the first token's ``jti``, inherited by every successor.
        expires_at: The token's ``exp``, timezone-aware.
        issued_at: The token's ``iat``; default now.
    """
    token = RefreshToken(jti=jti, user_id=user_id, family=family, issued_at=issued_at or utcnow(),
                         expires_at=expires_at, revoked_at=None, replaced_by=None)
    session.add(token)
    session.flush()
    return RefreshTokenRecord.from_row(token)


def get_refresh_token(*, session: Session, jti: str) -> RefreshTokenRecord:
    """Read one refresh token by ``jti``.

    Raises:
        NotFound: No refresh token has this id (never issued, or purged after expiry).
    """
    token = session.get(RefreshToken, jti, populate_existing=True)
    if token is None:
        raise NotFound(f"refresh token {jti!r} not found", details={"jti": jti})
    return RefreshTokenRecord.from_row(token)


def revoke_refresh_token(*, session: Session, jti: str, replaced_by: str | None = None) -> bool:
    """Revoke a refresh token unless it already is, linking its successor when it was rotated.

    Args:
        session: Open session.
        jti: The token to revoke.
        replaced_by: The ``jti`` of the token issued in its place (rotation); ``None`` for logout.

    Returns:
        Whether this call revoked it: ``False`` when it was already revoked, e.g. by a
        concurrent rotation (the caller should then treat the use as reuse).

    Raises:
        NotFound: No refresh token has this id.
    """
    result: Any = session.execute(
        update(RefreshToken)
        .where(RefreshToken.jti == jti, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow(), replaced_by=replaced_by)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount:
        return True
    get_refresh_token(session=session, jti=jti)  # NotFound for an unknown id
    return False


def revoke_family(*, session: Session, family: str) -> int:
    """Revoke every live refresh token of a rotation family (reuse detected, or logout).

    Returns:
        How many tokens this call revoked.
    """
    result: Any = session.execute(
        update(RefreshToken)
        .where(RefreshToken.family == family, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)


def revoke_user_refresh_tokens(*, session: Session, user_id: str, except_family: str | None = None) -> int:
    """Revoke every live refresh token of a user (logout everywhere; password changed).

    Args:
        session: Open session.
        user_id: Whose tokens.
        except_family: A family (sign-in session) to leave alive, e.g. the one changing the password.

    Returns:
        How many tokens this call revoked.
    """
    query = update(RefreshToken).where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
    if except_family is not None:
        query = query.where(RefreshToken.family != except_family)
    result: Any = session.execute(query.values(revoked_at=utcnow()).execution_options(synchronize_session=False))
    return int(result.rowcount or 0)


def is_session_live(*, session: Session, family: str) -> bool:
    """Whether a sign-in session (refresh-token family) still has a live refresh token.

    A family is live from login until it is logged out, revoked for reuse or by a password
    change; rotation always leaves exactly one live token. One probe of
    ``ix_refresh_tokens_family_revoked_at``, so it runs on every authenticated request.
    """
    query = select(RefreshToken.jti).where(RefreshToken.family == family, RefreshToken.revoked_at.is_(None))
    return session.scalar(query.limit(1)) is not None


# ---- revoked access tokens --------------------------------------------------------------------
def revoke_access_token(*, session: Session, jti: str, expires_at: datetime) -> None:
    """Refuse an access token from now until ``expires_at`` (its ``exp``); idempotent."""
    # INSERT ... ON CONFLICT DO NOTHING: a concurrent logout of the same token is not an error.
    dialect = session.get_bind().dialect.name
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    session.execute(insert(RevokedToken).values(jti=jti, expires_at=expires_at)
                    .on_conflict_do_nothing(index_elements=[RevokedToken.jti]))


def is_access_token_revoked(*, session: Session, jti: str) -> bool:
    """Return whether an access token was revoked (logout) before its expiry."""
    return session.scalar(select(RevokedToken.jti).where(RevokedToken.jti == jti)) is not None


def purge_expired(*, session: Session, now: datetime | None = None) -> int:
    """Delete revocation rows and refresh tokens whose tokens have expired anyway.

    An expired token is refused by its signature check, so its rows are no longer needed.

    Returns:
        How many rows were deleted.
    """
    now = now or utcnow()
    revoked: Any = session.execute(delete(RevokedToken).where(RevokedToken.expires_at < now))
    refresh: Any = session.execute(delete(RefreshToken).where(RefreshToken.expires_at < now))
    return int(revoked.rowcount or 0) + int(refresh.rowcount or 0)


# ---- API keys ---------------------------------------------------------------------------------
def create_api_key(*, session: Session, name: str, role: str, user_id: str | None, key_hash: str,
                   prefix: str) -> ApiKeyRecord:
    """Store a new API key by its hash.

    Args:
        session: Open session.
        name: What the key is for, 1 to 128 characters.
        role: ``"admin"`` or ``"user"``.
        user_id: The user the key acts for, or ``None`` for a service key.
        key_hash: Hex sha256 of the whole key.
        prefix: The key's first characters, shown in listings.

    Raises:
        InvalidInput: Empty or too long name, unknown role, or an identical key hash exists.
        NotFound: ``user_id`` names no user.
    """
    _check_role(role)
    name = name.strip()
    if not name or len(name) > 128:
        raise InvalidInput("API key name must be 1 to 128 characters", details={"field": "name"})
    if user_id is not None:
        _load_user(session, user_id)
    key = ApiKey(id=uuid.uuid4().hex, name=name, key_hash=key_hash, prefix=prefix, role=role, user_id=user_id,
                 created_at=utcnow(), last_used_at=None, revoked_at=None)
    session.add(key)
    try:
        session.flush()
    except IntegrityError as exc:  # the caller's session must now roll back (Store.session() does)
        raise InvalidInput("an API key with this hash already exists", details={"field": "key"}) from exc
    return ApiKeyRecord.from_row(key)


def get_api_key(*, session: Session, key_id: str) -> ApiKeyRecord:
    """Read one API key by id.

    Raises:
        NotFound: No key has this id.
    """
    return ApiKeyRecord.from_row(_load_key(session, key_id))


def get_api_key_by_hash(*, session: Session, key_hash: str) -> ApiKeyRecord:
    """Find an API key by the sha256 of its plaintext.

    Raises:
        NotFound: No key has this hash.
    """
    key = session.scalars(select(ApiKey).where(ApiKey.key_hash == key_hash)).first()
    if key is None:
        raise NotFound("API key not found")
    return ApiKeyRecord.from_row(key)


def list_api_keys(*, session: Session, include_revoked: bool = True, user_id: str | None = None) -> list[ApiKeyRecord]:
    """List API keys, oldest first.

    Args:
        session: Open session.
        include_revoked: Whether revoked keys are listed too.
        user_id: Only the keys of this user.
    """
    query = select(ApiKey)
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    if user_id is not None:
        query = query.where(ApiKey.user_id == user_id)
    return [ApiKeyRecord.from_row(key) for key in session.scalars(query.order_by(ApiKey.created_at, ApiKey.id))]


def revoke_api_key(*, session: Session, key_id: str) -> ApiKeyRecord:
    """Revoke an API key; revoking a revoked key keeps its first revocation time.

    Raises:
        NotFound: No key has this id.
    """
    key = _load_key(session, key_id)
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        session.flush()
    return ApiKeyRecord.from_row(key)


def touch_api_key(*, session: Session, key_id: str, when: datetime | None = None) -> None:
    """Record that an API key was just used.

    Raises:
        NotFound: No key has this id.
    """
    result: Any = session.execute(update(ApiKey).where(ApiKey.id == key_id)
                                  .values(last_used_at=when or utcnow())
                                  .execution_options(synchronize_session=False))
    if result.rowcount == 0:
        raise NotFound(f"API key {key_id!r} not found", details={"key_id": key_id})


# ---- helpers ----------------------------------------------------------------------------------
def _load_user(session: Session, user_id: str) -> User:
    user = session.get(User, user_id, populate_existing=True)
    if user is None:
        raise NotFound(f"user {user_id!r} not found", details={"user_id": user_id})
    return user


def _load_key(session: Session, key_id: str) -> ApiKey:
    key = session.get(ApiKey, key_id, populate_existing=True)
    if key is None:
        raise NotFound(f"API key {key_id!r} not found", details={"key_id": key_id})
    return key


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise InvalidInput(f"unknown role {role!r}; expected one of {', '.join(sorted(ROLES))}",
                           details={"field": "role", "allowed": sorted(ROLES)})


def _check_page(limit: int, offset: int) -> None:
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIST_LIMIT}, got {limit}", details={"field": "limit"})
    if offset < 0:
        raise InvalidInput(f"offset must be at least 0, got {offset}", details={"field": "offset"})


def _taken(field_name: str) -> InvalidInput:
    return InvalidInput(f"{field_name} is already taken", details={"field": field_name, "validation": "unique"})


def _check_unique(session: Session, *, username: str | None, email: str | None, exclude_id: str | None) -> None:
    """Refuse a taken username (any case) or e-mail, with ``details.field`` naming it."""
    if username is not None:
        query = select(User.id).where(func.lower(User.username) == username.lower())
        if exclude_id is not None:
            query = query.where(User.id != exclude_id)
        if session.scalar(query) is not None:
            raise _taken("username")
    if email is not None:
        query = select(User.id).where(User.email == email)
        if exclude_id is not None:
            query = query.where(User.id != exclude_id)
        if session.scalar(query) is not None:
            raise _taken("email")


def _flush_unique(session: Session, user: User, *, username: str | None, email: str) -> None:
    """Flush; a unique violation from a concurrent writer becomes InvalidInput.

    After it the session must roll back, which ``Store.session()`` does when the error leaves it.
    """
    session.add(user)
    try:
        session.flush()
    except IntegrityError as exc:
        text = str(exc.orig).lower()
        field_name = "email" if "email" in text else "username" if username is not None else "email"
        raise _taken(field_name) from exc
