"""Authentication and accounts (seed D): argon2id passwords, RS256 JWTs with rotation, API keys.

- Passwords: argon2id (argon2-cffi defaults), at least 8 characters. Login answers the same
  ``AUTH_INVALID`` message for an unknown user and a wrong password, and hashes a dummy
  password for unknown users so both take about as long.
- JWTs: RS256 only, issuer ``faceport``; claims ``sub`` (user id), ``username``, ``role``, ``jti``,
  ``iat``, ``exp``, ``typ`` (``access`` | ``refresh``). The key pair comes from
  ``FACEPORT_JWT_PRIVATE_KEY_PATH``/``FACEPORT_JWT_PUBLIC_KEY_PATH`` or is created once as
  ``$FACEPORT_HOME/jwt_private.pem`` (mode 0600) and ``jwt_public.pem``; processes starting at
  once agree on one pair (each writes a temporary file and hard-links it into place; the
  losers read the winner's).
- Refresh tokens rotate: each use revokes the token and links its successor. Using a
  rotated token again means it was copied; the whole family is revoked and the request refused.
- Sessions: a login starts a session, the refresh-token family. Access tokens carry it as
  ``sid`` and every request checks that the family still has a live refresh token (one
  indexed read), so revoking a session refuses its access tokens at once, in every process:
  after refresh-token reuse, logout, logout everywhere (``{"all": true}``) and a password
  change (which spares only the session that made it). Access tokens without ``sid``
  (issued before sessions existed) are answered ``AUTH_EXPIRED``: refreshing replaces them.
- Logout revokes the access token's ``jti`` until it would expire, and its session.
- API keys: ``fpk_`` + 32 random bytes (urlsafe base64), shown once; only their sha256 is kept.
  The operator's ``FACEPORT_API_KEY`` (seeds B and E) is also accepted on ``/api/v1``, with the user role.

Roles and the active flag are read from the database on every request, so demoting or
deactivating a user takes effect at once, not when their token expires.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import logging
import os
import re
import secrets
import tempfile
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from filelock import FileLock
from starlette.concurrency import run_in_threadpool

from faceport.errors import FaceportError, InvalidInput, MissingField, NotFound
from faceport.principal import Principal
from faceport.store import users as repo
from faceport.store.models import Role
from faceport.store.users import UNSET, ApiKeyRecord, UserRecord

if TYPE_CHECKING:
    from starlette.requests import Request

    from faceport.config import Settings
    from faceport.store import Store

log = logging.getLogger(__name__)

ISSUER: Final = "faceport"
ALGORITHM: Final = "RS256"
API_KEY_PREFIX: Final = "fpk_"
PRIVATE_KEY_FILE: Final = "jwt_private.pem"
PUBLIC_KEY_FILE: Final = "jwt_public.pem"
RSA_KEY_BITS: Final = 2048
MIN_PASSWORD_LENGTH: Final = 8
MAX_PASSWORD_LENGTH: Final = 1024  # argon2 takes any length; a bound keeps a login from being a CPU sink
CLOCK_LEEWAY_S: Final = 5  # seconds of clock skew tolerated between API nodes
API_KEY_TOUCH_INTERVAL = timedelta(seconds=60)  # last_used_at is written at most this often per key

USERNAME_RE: Final = re.compile(r"^[A-Za-z0-9_.-]{3,64}$")
EMAIL_RE: Final = re.compile(r"^[^@\s]+@[^@\s.]+(\.[^@\s.]+)+$")
REQUIRED_CLAIMS: Final = ["exp", "iat", "sub", "jti", "typ", "iss"]

TokenType = Literal["access", "refresh"]

HOW_TO_AUTHENTICATE: Final = (
    "authentication required: send 'Authorization: Bearer <access_token>' "
    "(get one from POST /api/v1/auth/login) or 'X-API-Key: <key>'"
)
BAD_CREDENTIALS: Final = "invalid username or password"


def _invalid(message: str) -> FaceportError:
    return FaceportError(message, code="AUTH_INVALID")


# ---- keys -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KeyPair:
    """The RS256 key pair: ``private_key`` signs, ``public_key`` verifies; ``kid`` names the pair."""

    private_key: rsa.RSAPrivateKey
    public_key: rsa.RSAPublicKey
    public_pem: bytes
    kid: str
    private_path: Path | None = None
    public_path: Path | None = None


def _public_pem(public_key: rsa.RSAPublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _make_pair(private_key: rsa.RSAPrivateKey, private_path: Path | None, public_path: Path | None) -> KeyPair:
    public_key = private_key.public_key()
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return KeyPair(private_key=private_key, public_key=public_key, public_pem=_public_pem(public_key),
                   kid=hashlib.sha256(der).hexdigest()[:16], private_path=private_path, public_path=public_path)


def _read_private_key(path: Path) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise InvalidInput(f"cannot read the JWT private key {path}: {exc}",
                           details={"setting": "FACEPORT_JWT_PRIVATE_KEY_PATH"}) from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise InvalidInput(f"JWT private key {path} is not an RSA key (RS256 needs one)",
                           details={"setting": "FACEPORT_JWT_PRIVATE_KEY_PATH"})
    if key.key_size < RSA_KEY_BITS:
        raise InvalidInput(f"JWT private key {path} has {key.key_size} bits; use at least {RSA_KEY_BITS}",
                           details={"setting": "FACEPORT_JWT_PRIVATE_KEY_PATH"})
    if os.name == "posix" and path.stat().st_mode & 0o077:
        log.warning("JWT private key %s is readable by other users; chmod 600 it", path)
    return key


def _read_public_key(path: Path) -> rsa.RSAPublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"cannot read the JWT public key {path}: {exc}",
                           details={"setting": "FACEPORT_JWT_PUBLIC_KEY_PATH"}) from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise InvalidInput(f"JWT public key {path} is not an RSA key",
                           details={"setting": "FACEPORT_JWT_PUBLIC_KEY_PATH"})
    return key


def _publish(path: Path, data: bytes, mode: int) -> bool:
    """Create ``path`` with ``data`` atomically unless it exists; return whether this call created it.

    The bytes go to a temporary file in the same directory, which is then hard-linked to
    ``path``: the link either appears complete or fails because another process won.
    """
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
            # A filesystem without hard links: serialise check-and-rename with a lock file instead.
            with FileLock(str(path) + ".lock"):
                if path.exists():
                    return False
                os.replace(tmp, path)
                return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def load_or_create_keys(*, home: Path, private_path: Path | None = None, public_path: Path | None = None) -> KeyPair:
    """Load the RS256 key pair, creating it under ``home`` on first start.

    Args:
        home: ``$FACEPORT_HOME``; holds ``jwt_private.pem`` (0600) and ``jwt_public.pem`` by default.
        private_path: A PEM RSA private key to use instead (``FACEPORT_JWT_PRIVATE_KEY_PATH``).
        public_path: Its PEM public key (``FACEPORT_JWT_PUBLIC_KEY_PATH``); must match the private key.
            Without it the public key is derived from the private one.

    Returns:
        The key pair.

    Raises:
        InvalidInput: A configured file is missing or unreadable, not RSA, too short, or the two keys
            do not belong together; or only a public key is configured.
    """
    if private_path is None and public_path is not None:
        raise InvalidInput("FACEPORT_JWT_PUBLIC_KEY_PATH is set without FACEPORT_JWT_PRIVATE_KEY_PATH; "
                           "the server signs tokens and needs the private key",
                           details={"setting": "FACEPORT_JWT_PRIVATE_KEY_PATH"})
    if private_path is not None:
        pair = _make_pair(_read_private_key(private_path), private_path, public_path)
        if public_path is not None and _public_pem(_read_public_key(public_path)) != pair.public_pem:
            raise InvalidInput(f"JWT public key {public_path} does not match the private key {private_path}",
                               details={"setting": "FACEPORT_JWT_PUBLIC_KEY_PATH"})
        return pair

    home.mkdir(parents=True, exist_ok=True)
    private_path, public_path = home / PRIVATE_KEY_FILE, home / PUBLIC_KEY_FILE
    if not private_path.exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        if _publish(private_path, pem, 0o600):
            log.info("created the JWT signing key %s", private_path)
    pair = _make_pair(_read_private_key(private_path), private_path, public_path)
    if not public_path.exists():
        _publish(public_path, pair.public_pem, 0o644)
    elif _public_pem(_read_public_key(public_path)) != pair.public_pem:
        # The private key is the truth; a stale public file would mislead whoever verifies with it.
        log.warning("%s does not match %s; rewriting it", public_path, private_path)
        fd, tmp = tempfile.mkstemp(prefix=f".{public_path.name}.", dir=home)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pair.public_pem)
        os.chmod(tmp, 0o644)
        os.replace(tmp, public_path)
    return pair


# ---- results ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TokenPair:
    """What login and refresh return (seed D): a bearer access token and its refresh token."""

    access_token: str
    refresh_token: str
    expires_in: int  # seconds the access token is valid
    token_type: str = "bearer"

    def as_dict(self) -> dict[str, Any]:
        """The wire form: ``{access_token, refresh_token, token_type, expires_in}``."""
        return {"access_token": self.access_token, "refresh_token": self.refresh_token,
                "token_type": self.token_type, "expires_in": self.expires_in}


@dataclass(frozen=True, slots=True)
class CreatedApiKey:
    """A new API key: its record and the plaintext, which is never shown again."""

    record: ApiKeyRecord
    key: str


@dataclass(frozen=True, slots=True)
class LogoutResult:
    """What a logout revoked."""

    access_token_revoked: bool
    refresh_tokens_revoked: int


# ---- the service ------------------------------------------------------------------------------
class AuthService:
    """Accounts, tokens and API keys over one :class:`~faceport.store.Store`. Thread-safe.

    Build it with :func:`build_auth`. Methods are blocking (argon2, database); call them from a
    worker thread in async code. :meth:`authenticate_request` does that itself.
    """

    def __init__(self, *, store: Store, keys: KeyPair, access_ttl: int = 900, refresh_ttl: int = 604800,
                 static_api_key: str | None = None, hasher: PasswordHasher | None = None) -> None:
        """Wire the service.

        Args:
            store: The migrated store holding users, tokens and keys.
            keys: The RS256 key pair (:func:`load_or_create_keys`).
            access_ttl: Seconds an access token is valid.
            refresh_ttl: Seconds a refresh token is valid.
            static_api_key: The operator's ``FACEPORT_API_KEY``, accepted as a user-role service key.
            hasher: The argon2id hasher; argon2-cffi's defaults when omitted.
        """
        if access_ttl <= 0 or refresh_ttl <= 0:
            raise InvalidInput("token lifetimes must be positive")
        self.store = store
        self.keys = keys
        self.access_ttl = int(access_ttl)
        self.refresh_ttl = int(refresh_ttl)
        self._static_api_key = static_api_key or None
        self.hasher = hasher or PasswordHasher()
        self._dummy_hash: str | None = None
        self._dummy_lock = threading.Lock()

    # -- passwords ----------------------------------------------------------------------------
    def hash_password(self, password: str) -> str:
        """Return the argon2id PHC string of a password that passes the policy.

        Raises:
            InvalidInput: Shorter than 8 or longer than 1024 characters (``details.field`` is ``password``).
        """
        check_password(password)
        return self.hasher.hash(password)

    def verify_password(self, password_hash: str, password: str) -> bool:
        """Whether ``password`` matches ``password_hash``; never raises for a mismatch or a malformed hash."""
        try:
            return bool(self.hasher.verify(password_hash, password))
        except VerifyMismatchError:
            return False
        except (VerificationError, InvalidHashError):
            log.warning("a stored password hash could not be verified (malformed?)")
            return False

    def _burn_dummy_hash(self, password: str) -> None:
        """Spend the time of one verification, so an unknown username is not faster than a wrong password."""
        with self._dummy_lock:
            if self._dummy_hash is None:
                self._dummy_hash = self.hasher.hash(secrets.token_urlsafe(16))
        self.verify_password(self._dummy_hash, password[:MAX_PASSWORD_LENGTH])

    # -- accounts -----------------------------------------------------------------------------
    def register(self, username: str, email: str, password: str, full_name: str | None = None) -> UserRecord:
        """Create an account with the user role.

        Raises:
            InvalidInput: Bad or taken username/e-mail, or a password outside the policy;
                ``details.field`` names the field.
        """
        username, email = check_username(username), check_email(email)
        password_hash = self.hash_password(password)
        with self.store.session() as session:
            user = repo.create_user(session=session, username=username, email=email, password_hash=password_hash,
                                    role=Role.USER.value, full_name=_clean_full_name(full_name))
        log.info("registered user %s (%s)", user.username, user.id)
        return user

    def create_admin(self, username: str, password: str, email: str | None = None) -> tuple[UserRecord, bool]:
        """Create an admin, or promote an existing user to admin and set their password.

        Args:
            username: The admin's name; an existing user of this name (any case) is promoted.
            password: The new password (policy applies).
            email: Their address; default ``<username>@faceport.invalid`` for a new account. For an
                existing user it replaces the address when given.

        Returns:
            The admin and whether it was created (``False``: an existing user was promoted/updated).

        Raises:
            InvalidInput: Bad username, e-mail or password, or the e-mail is taken by someone else.
        """
        username = check_username(username)
        email = check_email(email) if email is not None else None
        password_hash = self.hash_password(password)
        with self.store.session() as session:
            try:
                existing = repo.get_user_by_username(session=session, username=username)
            except NotFound:
                user = repo.create_user(session=session, username=username,
                                        email=email or f"{username.lower()}@faceport.invalid",
                                        password_hash=password_hash, role=Role.ADMIN.value)
                log.info("created admin %s (%s)", user.username, user.id)
                return user, True
            repo.set_password(session=session, user_id=existing.id, password_hash=password_hash)
            user = repo.update_user(session=session, user_id=existing.id, role=Role.ADMIN.value, is_active=True,
                                    email=email if email is not None else UNSET)
        log.info("promoted %s (%s) to admin and set a new password", user.username, user.id)
        return user, False

    def get_user(self, user_id: str) -> UserRecord:
        """Read a user.

        Raises:
            NotFound: No such user.
        """
        with self.store.session() as session:
            return repo.get_user(session=session, user_id=user_id)

    def list_users(self, *, limit: int = 50, offset: int = 0) -> tuple[list[UserRecord], int]:
        """Return one page of users (oldest first) and the total count."""
        with self.store.session() as session:
            return (repo.list_users(session=session, limit=limit, offset=offset),
                    repo.count_users(session=session))

    def count_admins(self) -> int:
        """How many active admins exist."""
        with self.store.session() as session:
            return repo.count_admins(session=session)

    def update_profile(self, user_id: str, *, email: str | None = None, full_name: str | None = None,
                       clear_full_name: bool = False, password: str | None = None,
                       current_password: str | None = None, keep_session: str | None = None) -> UserRecord:
        """Change a user's own e-mail, display name or password.

        A new password needs the current one; setting it ends the user's other sessions at
        once: their refresh tokens are revoked, and with them their access tokens.

        Args:
            keep_session: The session (``Principal.session_id``) making the change, which
                stays signed in; ``None`` ends every session.

        Raises:
            MissingField: ``password`` without ``current_password``.
            InvalidInput: Wrong current password, bad or taken e-mail, password outside the policy.
            NotFound: The user no longer exists.
        """
        new_hash: str | None = None
        if password is not None:
            if not current_password:
                raise MissingField("current_password is required to change the password",
                                   details={"field": "current_password"})
            user = self.get_user(user_id)
            if not self.verify_password(user.password_hash, current_password):
                raise InvalidInput("current_password is wrong",
                                   details={"field": "current_password", "validation": "mismatch"})
            new_hash = self.hash_password(password)
        checked_email = check_email(email) if email is not None else None
        with self.store.session() as session:
            if new_hash is not None:
                repo.set_password(session=session, user_id=user_id, password_hash=new_hash)
                revoked = repo.revoke_user_refresh_tokens(session=session, user_id=user_id, except_family=keep_session)
                log.info("user %s changed their password; %d refresh token(s) of other sessions revoked",
                         user_id, revoked)
            name: Any = UNSET  # UNSET keeps the current name
            if clear_full_name:
                name = None
            elif full_name is not None:
                name = _clean_full_name(full_name)
            return repo.update_user(session=session, user_id=user_id, full_name=name,
                                    email=checked_email if checked_email is not None else UNSET)

    def set_active(self, user_id: str, active: bool) -> UserRecord:
        """Activate or deactivate an account; a deactivated user's tokens and keys are refused at once."""
        with self.store.session() as session:
            return repo.update_user(session=session, user_id=user_id, is_active=active)

    def delete_user(self, user_id: str) -> None:
        """Delete an account with its refresh tokens and API keys.

        Raises:
            NotFound: No such user.
        """
        with self.store.session() as session:
            repo.delete_user(session=session, user_id=user_id)

    # -- tokens -------------------------------------------------------------------------------
    def _encode(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self.keys.private_key, algorithm=ALGORITHM, headers={"kid": self.keys.kid})

    def _claims(self, user: UserRecord, typ: TokenType, jti: str, now: datetime, ttl: int,
                sid: str | None = None) -> dict[str, Any]:
        iat = int(now.timestamp())
        claims = {"iss": ISSUER, "sub": user.id, "username": user.username, "role": user.role, "jti": jti,
                  "typ": typ, "iat": iat, "exp": iat + ttl}
        if sid is not None:
            claims["sid"] = sid
        return claims

    def issue_access_token(self, user: UserRecord, *, session_id: str, now: datetime | None = None) -> str:
        """Sign an access token of session ``session_id`` (a refresh family) valid ``access_ttl`` seconds."""
        return self._encode(self._claims(user, "access", uuid.uuid4().hex, now or datetime.now(UTC), self.access_ttl,
                                         sid=session_id))

    def _issue_pair(self, session: Any, user: UserRecord, family: str | None, jti: str | None = None) -> TokenPair:
        now = datetime.now(UTC).replace(microsecond=0)
        jti = jti or uuid.uuid4().hex
        family = family or jti
        repo.store_refresh_token(session=session, jti=jti, user_id=user.id, family=family, issued_at=now,
                                 expires_at=now + timedelta(seconds=self.refresh_ttl))
        refresh = self._encode(self._claims(user, "refresh", jti, now, self.refresh_ttl))
        return TokenPair(access_token=self.issue_access_token(user, session_id=family, now=now),
                         refresh_token=refresh, expires_in=self.access_ttl)

    def decode_token(self, token: str, *, typ: TokenType) -> dict[str, Any]:
        """Verify a token's signature (RS256 only), issuer, required claims and type.

        Raises:
            FaceportError: AUTH_EXPIRED when it has expired, AUTH_INVALID for anything else
                (other algorithms including ``none`` and HS256, bad signature, wrong issuer or type).
        """
        if not isinstance(token, str) or not token or len(token) > 8192:
            raise _invalid("malformed token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise _invalid("malformed token") from exc
        if header.get("alg") != ALGORITHM:
            # PyJWT refuses these too (algorithms=[RS256]); checked first so no other path can accept them.
            raise _invalid(f"token algorithm {header.get('alg')!r} is not accepted; tokens are {ALGORITHM}")
        try:
            claims: dict[str, Any] = jwt.decode(token, self.keys.public_key, algorithms=[ALGORITHM], issuer=ISSUER,
                                                options={"require": REQUIRED_CLAIMS}, leeway=CLOCK_LEEWAY_S)
        except jwt.ExpiredSignatureError as exc:
            raise FaceportError(f"{typ} token expired; "
                                + ("refresh it with POST /api/v1/auth/refresh" if typ == "access"
                                   else "sign in again with POST /api/v1/auth/login"),
                                code="AUTH_EXPIRED") from exc
        except jwt.InvalidTokenError as exc:
            raise _invalid(f"invalid token: {exc}") from exc
        if claims.get("typ") != typ:
            raise _invalid(f"a {claims.get('typ')!r} token cannot be used as an {typ} token"
                           if typ == "access" else f"expected a {typ} token, got {claims.get('typ')!r}")
        for name in ("sub", "jti"):
            if not isinstance(claims.get(name), str) or not claims[name] or len(claims[name]) > 32:
                raise _invalid(f"invalid token: bad {name!r} claim")
        return claims

    def _active_user(self, session: Any, user_id: str) -> UserRecord:
        try:
            user = repo.get_user(session=session, user_id=user_id)
        except NotFound:
            raise _invalid("the token's user no longer exists") from None
        if not user.is_active:
            raise _invalid("this account is deactivated")
        return user

    def authenticate_token(self, token: str) -> Principal:
        """Authenticate an access token (blocking: it reads the revocation list and the user).

        Raises:
            FaceportError: AUTH_EXPIRED (also for a token without a session, issued before
                sessions existed), or AUTH_INVALID (bad token, revoked, its session ended,
                user deleted or deactivated).
        """
        claims = self.decode_token(token, typ="access")
        sid = claims.get("sid")
        if sid is None:
            raise FaceportError("this access token predates sign-in sessions; refresh it with "
                                "POST /api/v1/auth/refresh", code="AUTH_EXPIRED")
        if not isinstance(sid, str) or not sid or len(sid) > 32:
            raise _invalid("invalid token: bad 'sid' claim")
        with self.store.session() as session:
            if repo.is_access_token_revoked(session=session, jti=claims["jti"]):
                raise _invalid("this token was revoked (logged out); sign in again")
            if not repo.is_session_live(session=session, family=sid):
                raise _invalid("this session was revoked (logged out, password changed or refresh token reuse); "
                               "sign in again")
            user = self._active_user(session, claims["sub"])
        return Principal(user_id=user.id, username=user.username, role=_role(user.role), method="jwt",
                         token_id=claims["jti"], session_id=sid)

    def login(self, username: str, password: str) -> TokenPair:
        """Check a username and password and issue a token pair (a new refresh family).

        Raises:
            FaceportError: AUTH_INVALID with the same message whether the user is unknown,
                deactivated or the password wrong.
        """
        if not isinstance(username, str) or not isinstance(password, str) or len(password) > MAX_PASSWORD_LENGTH:
            self._burn_dummy_hash(password if isinstance(password, str) else "")
            raise _invalid(BAD_CREDENTIALS)
        with self.store.session() as session:
            try:
                user: UserRecord | None = repo.get_user_by_username(session=session, username=username)
            except NotFound:
                user = None
        if user is None:
            self._burn_dummy_hash(password)
            raise _invalid(BAD_CREDENTIALS)
        if not self.verify_password(user.password_hash, password) or not user.is_active:
            raise _invalid(BAD_CREDENTIALS)
        with self.store.session() as session:
            if self.hasher.check_needs_rehash(user.password_hash):
                repo.set_password(session=session, user_id=user.id, password_hash=self.hasher.hash(password))
            pair = self._issue_pair(session, user, family=None)
        log.info("user %s signed in", user.username)
        return pair

    def refresh(self, refresh_token: str) -> TokenPair:
        """Exchange a refresh token for a new pair, rotating it.

        The presented token is revoked and linked to its successor. Presenting a token that
        was already rotated means two parties hold it: the whole family is revoked, so the
        thief's and the user's tokens all stop working, and the request is refused.

        Raises:
            FaceportError: AUTH_EXPIRED, or AUTH_INVALID (bad, revoked or reused token, user gone).
        """
        claims = self.decode_token(refresh_token, typ="refresh")
        jti = claims["jti"]
        reused_family: str | None = None
        with self.store.session() as session:
            try:
                stored = repo.get_refresh_token(session=session, jti=jti)
            except NotFound:
                raise _invalid("unknown refresh token; sign in again") from None
            if stored.user_id != claims["sub"]:
                raise _invalid("invalid refresh token")
            if stored.is_revoked:
                if stored.replaced_by is None:
                    raise _invalid("this refresh token was revoked (logged out); sign in again")
                reused_family = stored.family
            else:
                user = self._active_user(session, stored.user_id)
                successor = uuid.uuid4().hex
                if repo.revoke_refresh_token(session=session, jti=jti, replaced_by=successor):
                    return self._issue_pair(session, user, family=stored.family, jti=successor)
                reused_family = stored.family  # a concurrent request rotated it first: the same token, used twice
        # Outside the block above: the family revocation must commit although the request fails.
        with self.store.session() as session:
            revoked = repo.revoke_family(session=session, family=reused_family)
        log.warning("refresh token reuse detected (user %s, family %s): %d token(s) revoked",
                    claims["sub"], reused_family, revoked)
        raise _invalid("refresh token reuse detected; every session of this sign-in was revoked, sign in again")

    def logout(self, principal: Principal, refresh_token: str | None = None, *,
               everywhere: bool = False) -> LogoutResult:
        """End the caller's session: its access token, its refresh family, and the given refresh token's family.

        The access token's ``jti`` is refused for ``access_ttl`` seconds, which outlasts the token;
        the session's other access tokens are refused because the session is.

        Args:
            principal: The caller, signed in with a bearer token.
            refresh_token: A refresh token of the caller whose family ends too.
            everywhere: End every session of the account (every refresh family), not just this one.

        Raises:
            InvalidInput: The caller authenticated with an API key (revoke it instead).
            FaceportError: AUTH_INVALID for a refresh token that is not valid or not the caller's.
        """
        if principal.method != "jwt" or principal.token_id is None:
            raise InvalidInput("logout ends a bearer-token session; revoke an API key with "
                               "DELETE /api/v1/auth/api-keys/{key_id}", details={"field": "Authorization"})
        family: str | None = None
        if refresh_token:
            try:
                claims = self.decode_token(refresh_token, typ="refresh")
            except FaceportError as exc:
                if exc.code != "AUTH_EXPIRED":
                    raise
                claims = None  # an expired refresh token is harmless already
            if claims is not None:
                if claims["sub"] != principal.user_id:
                    raise _invalid("this refresh token belongs to another user")
                with self.store.session() as session:
                    try:
                        family = repo.get_refresh_token(session=session, jti=claims["jti"]).family
                    except NotFound:
                        family = None
        now = datetime.now(UTC)
        families = {f for f in (principal.session_id, family) if f}
        with self.store.session() as session:
            repo.revoke_access_token(session=session, jti=principal.token_id,
                                     expires_at=now + timedelta(seconds=self.access_ttl + CLOCK_LEEWAY_S))
            if everywhere and principal.user_id is not None:
                count = repo.revoke_user_refresh_tokens(session=session, user_id=principal.user_id)
            else:
                count = sum(repo.revoke_family(session=session, family=f) for f in sorted(families))
            repo.purge_expired(session=session, now=now)
        log.info("user %s signed out%s", principal.username, " everywhere" if everywhere else "")
        return LogoutResult(access_token_revoked=True, refresh_tokens_revoked=count)

    # -- API keys -----------------------------------------------------------------------------
    def create_api_key(self, name: str, role: str = Role.USER.value, user_id: str | None = None) -> CreatedApiKey:
        """Create an API key; the plaintext is returned here once and never stored.

        Raises:
            InvalidInput: Empty name or unknown role.
            NotFound: ``user_id`` names no user.
        """
        key = API_KEY_PREFIX + secrets.token_urlsafe(32)
        with self.store.session() as session:
            record = repo.create_api_key(session=session, name=name, role=role, user_id=user_id,
                                         key_hash=_key_hash(key), prefix=key[:12])
        log.info("created API key %s (%s, role %s)", record.id, record.name, record.role)
        return CreatedApiKey(record=record, key=key)

    def list_api_keys(self, *, include_revoked: bool = True) -> list[ApiKeyRecord]:
        """Every API key, oldest first, without secrets."""
        with self.store.session() as session:
            return repo.list_api_keys(session=session, include_revoked=include_revoked)

    def revoke_api_key(self, key_id: str) -> ApiKeyRecord:
        """Revoke an API key; it is refused from the next request on.

        Raises:
            NotFound: No such key.
        """
        with self.store.session() as session:
            record = repo.revoke_api_key(session=session, key_id=key_id)
        log.info("revoked API key %s (%s)", record.id, record.name)
        return record

    def authenticate_api_key(self, key: str) -> Principal:
        """Authenticate an ``X-API-Key`` value (blocking: one indexed read, a write at most once a minute).

        Raises:
            FaceportError: AUTH_INVALID for an unknown or revoked key, or one whose user is deactivated or gone.
        """
        if not isinstance(key, str) or not key or len(key) > 512:
            raise _invalid("invalid API key")
        if self._static_api_key and hmac.compare_digest(key.encode(), self._static_api_key.encode()):
            return Principal(user_id=None, username="apikey:FACEPORT_API_KEY", role="user", method="api_key",
                             token_id="settings")
        with self.store.session() as session:
            try:
                record = repo.get_api_key_by_hash(session=session, key_hash=_key_hash(key))
            except NotFound:
                raise _invalid("invalid API key") from None
            if record.is_revoked:
                raise _invalid("this API key was revoked")
            role = _role(record.role)
            if record.user_id is not None:
                owner = self._active_user(session, record.user_id)
                if not owner.is_admin:
                    role = "user"  # a key never grants more than its owner has
            now = datetime.now(UTC)
            if record.last_used_at is None or now - record.last_used_at > API_KEY_TOUCH_INTERVAL:
                repo.touch_api_key(session=session, key_id=record.id, when=now)
        return Principal(user_id=record.user_id, username=f"apikey:{record.name}", role=role, method="api_key",
                         token_id=record.id)

    # -- requests -----------------------------------------------------------------------------
    def authenticate_headers(self, authorization: str | None, api_key: str | None) -> Principal:
        """Authenticate from the two header values (blocking). A Bearer token wins over an API key.

        Raises:
            FaceportError: AUTH_REQUIRED without credentials (the message says how to send them),
                AUTH_INVALID or AUTH_EXPIRED for bad ones.
        """
        if authorization is not None and authorization.strip():
            scheme, _, token = authorization.strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise _invalid("the Authorization header must be 'Bearer <access_token>'")
            return self.authenticate_token(token.strip())
        if api_key is not None and api_key.strip():
            return self.authenticate_api_key(api_key.strip())
        raise FaceportError(HOW_TO_AUTHENTICATE, code="AUTH_REQUIRED")

    async def authenticate_request(self, request: Request) -> Principal:
        """Authenticate an HTTP request by ``Authorization: Bearer <jwt>`` or ``X-API-Key``.

        The database reads run on Starlette's thread pool, not the inference pool, so a busy
        model never delays authentication.

        Raises:
            FaceportError: AUTH_REQUIRED, AUTH_INVALID or AUTH_EXPIRED.
        """
        authorization = request.headers.get("authorization")
        api_key = request.headers.get("x-api-key")
        if not (authorization and authorization.strip()) and not (api_key and api_key.strip()):
            raise FaceportError(HOW_TO_AUTHENTICATE, code="AUTH_REQUIRED")
        return await run_in_threadpool(self.authenticate_headers, authorization, api_key)

    def purge_expired(self) -> int:
        """Delete revocation rows and refresh tokens past their expiry; returns how many."""
        with self.store.session() as session:
            return repo.purge_expired(session=session)


# ---- validation -------------------------------------------------------------------------------
def check_username(username: str) -> str:
    """Return the username if it is 3 to 64 characters of ``A-Z a-z 0-9 _ . -``.

    Raises:
        InvalidInput: Otherwise, with ``details.field == "username"``.
    """
    if not isinstance(username, str) or not USERNAME_RE.match(username):
        raise InvalidInput("username must be 3 to 64 characters: letters, digits, '_', '.' or '-'",
                           details={"field": "username", "validation": "pattern"})
    return username


def check_email(email: str) -> str:
    """Return the e-mail address lower-cased and stripped if it looks like ``name@domain.tld``.

    Raises:
        InvalidInput: Otherwise, with ``details.field == "email"``.
    """
    cleaned = email.strip().lower() if isinstance(email, str) else ""
    if len(cleaned) > 255 or not EMAIL_RE.match(cleaned):
        raise InvalidInput("email must be an address like name@example.com",
                           details={"field": "email", "validation": "format"})
    return cleaned


def check_password(password: str) -> None:
    """Enforce the password policy: 8 to 1024 characters.

    Raises:
        InvalidInput: Otherwise, with ``details.field == "password"``.
    """
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"password must be at least {MIN_PASSWORD_LENGTH} characters",
                           details={"field": "password", "validation": "min_length"})
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidInput(f"password must be at most {MAX_PASSWORD_LENGTH} characters",
                           details={"field": "password", "validation": "max_length"})


def _clean_full_name(full_name: str | None) -> str | None:
    if full_name is None:
        return None
    cleaned = full_name.strip()
    if len(cleaned) > 255:
        raise InvalidInput("full_name must be at most 255 characters", details={"field": "full_name"})
    return cleaned or None


def _key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _role(role: str) -> Literal["admin", "user"]:
    return "admin" if role == Role.ADMIN.value else "user"


def build_auth(settings: Settings, store: Store) -> AuthService:
    """Build the auth service from settings: load (or create) the key pair, purge stale revocations.

    Args:
        settings: ``jwt_private_key_path``, ``jwt_public_key_path``, ``access_token_ttl``,
            ``refresh_token_ttl``, ``api_key`` and ``home`` are read.
        store: The migrated store.

    Raises:
        InvalidInput: The configured key files are unusable (see :func:`load_or_create_keys`).
    """
    keys = load_or_create_keys(home=settings.home, private_path=settings.jwt_private_key_path,
                               public_path=settings.jwt_public_key_path)
    service = AuthService(store=store, keys=keys, access_ttl=settings.access_token_ttl,
                          refresh_ttl=settings.refresh_token_ttl, static_api_key=settings.api_key)
    purged = service.purge_expired()
    if purged:
        log.info("purged %d expired token row(s)", purged)
    if service.count_admins() == 0:
        log.info("no admin account yet; create one with: faceport users create-admin --username NAME")
    return service
