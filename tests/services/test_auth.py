"""The auth service on a real SQLite store: argon2id, RS256 tokens, rotation, revocation, API keys, key files."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jwt
import pytest
from argon2 import PasswordHasher, Type, extract_parameters
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select

from faceport.config import Settings
from faceport.errors import FaceportError, InvalidInput, MissingField
from faceport.services.auth import AuthService, build_auth, load_or_create_keys
from faceport.store import Store, open_store
from faceport.store import users as repo
from faceport.store.models import ApiKey, RevokedToken

PASSWORD = "s3cret-passw0rd"


@pytest.fixture(autouse=True)
def _no_key_paths_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FACEPORT_JWT_PRIVATE_KEY_PATH", "FACEPORT_JWT_PUBLIC_KEY_PATH", "FACEPORT_API_KEY",
                 "FACEPORT_ACCESS_TOKEN_TTL", "FACEPORT_REFRESH_TOKEN_TTL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store(f"sqlite:///{tmp_path / 'auth.db'}")
    yield opened
    opened.dispose()


@pytest.fixture
def auth_settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", access_token_ttl=900, refresh_token_ttl=3600)


@pytest.fixture
def auth(auth_settings: Settings, store: Store) -> AuthService:
    return build_auth(auth_settings, store)


def _code(excinfo: pytest.ExceptionInfo[FaceportError]) -> str:
    return excinfo.value.code


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hand_made(header: dict[str, Any], claims: dict[str, Any], sign: Callable[[bytes], bytes]) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}".encode()
    return f"{signing_input.decode()}.{_b64(sign(signing_input))}"


def _access_claims(auth: AuthService, user_id: str, sid: Any, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": "faceport", "sub": user_id, "username": "ada", "role": "user", "jti": os.urandom(16).hex(),
              "typ": "access", "iat": now, "exp": now + 600, "sid": sid}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


# ---- passwords and accounts -------------------------------------------------------------------
def test_passwords_are_stored_as_argon2id_hashes(auth: AuthService, store: Store) -> None:
    user = auth.register("ada", "Ada@Example.com", PASSWORD)
    with store.session() as session:
        stored = repo.get_user(session=session, user_id=user.id)
    assert stored.password_hash.startswith("$argon2id$")
    assert extract_parameters(stored.password_hash).type is Type.ID
    assert PASSWORD not in stored.password_hash
    assert PasswordHasher().verify(stored.password_hash, PASSWORD)
    assert stored.email == "ada@example.com" and stored.role == "user" and stored.is_active
    assert "password_hash" not in repr(stored)


REGISTER_CASES: list[tuple[str, dict[str, str], str | None]] = [
    ("valid", {"username": "grace.h-1_x", "email": "grace@example.org", "password": "12345678"}, None),
    ("username too short", {"username": "ab"}, "username"),
    ("username too long", {"username": "a" * 65}, "username"),
    ("username with a space", {"username": "bad name"}, "username"),
    ("username with a slash", {"username": "../etc"}, "username"),
    ("email without at", {"email": "grace.example.org"}, "email"),
    ("email without a dot in the domain", {"email": "grace@localhost"}, "email"),
    ("email with a space", {"email": "gr ace@example.org"}, "email"),
    ("password of 7 characters", {"password": "1234567"}, "password"),
    ("username taken in another case", {"username": "ADA"}, "username"),
    ("email taken in another case", {"email": "ADA@example.com"}, "email"),
]


@pytest.mark.parametrize(("changes", "field"), [pytest.param(c, f, id=i) for i, c, f in REGISTER_CASES])
def test_register_rules(auth: AuthService, changes: dict[str, str], field: str | None) -> None:
    auth.register("ada", "ada@example.com", PASSWORD)
    request = {"username": "grace", "email": "grace@example.org", "password": PASSWORD, **changes}
    if field is None:
        user = auth.register(**request)
        assert (user.username, user.role) == (request["username"], "user")
        return
    with pytest.raises(InvalidInput) as excinfo:
        auth.register(**request)
    assert excinfo.value.details["field"] == field


class CountingHasher(PasswordHasher):
    """A real argon2id hasher that counts verifications (the expensive step login must always pay)."""

    def __init__(self) -> None:
        super().__init__()
        self.verifications = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        self.verifications += 1
        return super().verify(hash, password)


def test_login_answers_alike_for_unknown_user_wrong_password_and_deactivated(auth: AuthService,
                                                                           store: Store) -> None:
    hasher = CountingHasher()
    service = AuthService(store=store, keys=auth.keys, hasher=hasher)
    user = service.register("ada", "ada@example.com", PASSWORD)
    messages = []
    for username, password in (("nobody", PASSWORD), ("ada", "wrong-password")):
        before = hasher.verifications
        with pytest.raises(FaceportError) as excinfo:
            service.login(username, password)
        assert _code(excinfo) == "AUTH_INVALID"
        assert hasher.verifications == before + 1  # an argon2 verification either way: similar timing
        messages.append(excinfo.value.message)
    service.set_active(user.id, False)
    with pytest.raises(FaceportError) as excinfo:
        service.login("ada", PASSWORD)
    messages.append(excinfo.value.message)
    assert len(set(messages)) == 1
    service.set_active(user.id, True)
    assert service.login("ADA", PASSWORD).token_type == "bearer"  # usernames are case-insensitive


def test_login_issues_an_rs256_access_and_refresh_pair(auth: AuthService) -> None:
    user = auth.register("ada", "ada@example.com", PASSWORD)
    pair = auth.login("ada", PASSWORD)
    assert pair.as_dict().keys() == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert (pair.token_type, pair.expires_in) == ("bearer", 900)
    header = jwt.get_unverified_header(pair.access_token)
    assert header["alg"] == "RS256" and header["kid"] == auth.keys.kid
    access = jwt.decode(pair.access_token, auth.keys.public_key, algorithms=["RS256"], issuer="faceport")
    refresh = jwt.decode(pair.refresh_token, auth.keys.public_key, algorithms=["RS256"], issuer="faceport")
    assert (access["sub"], access["username"], access["role"], access["typ"]) == (user.id, "ada", "user", "access")
    assert access["exp"] - access["iat"] == 900
    assert refresh["typ"] == "refresh" and refresh["exp"] - refresh["iat"] == 3600
    assert access["jti"] != refresh["jti"]
    principal = auth.authenticate_token(pair.access_token)
    assert (principal.user_id, principal.role, principal.method, principal.token_id) == (user.id, "user", "jwt",
                                                                                           access["jti"])


# ---- token verification: one table, the passing token first ----------------------------------
def _other_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


TOKEN_CASES: list[tuple[str, Callable[[AuthService, str, str], str], str | None]] = [
    ("valid", lambda a, uid, sid: jwt.encode(_access_claims(a, uid, sid), a.keys.private_key, algorithm="RS256"), None),
    ("expired an hour ago",
     lambda a, uid, sid: jwt.encode(_access_claims(a, uid, sid, iat=int(time.time()) - 7200,
                                                   exp=int(time.time()) - 3600),
                               a.keys.private_key, algorithm="RS256"), "AUTH_EXPIRED"),
    ("alg none",
     lambda a, uid, sid: _hand_made({"alg": "none", "typ": "JWT"}, _access_claims(a, uid, sid), lambda _: b""),
     "AUTH_INVALID"),
    ("alg None, signature kept",
     lambda a, uid, sid: _hand_made({"alg": "None", "typ": "JWT"}, _access_claims(a, uid, sid), lambda _: b"x" * 32),
     "AUTH_INVALID"),
    ("HS256 keyed with the public key PEM (algorithm confusion)",
     lambda a, uid, sid: _hand_made({"alg": "HS256", "typ": "JWT"}, _access_claims(a, uid, sid),
                               lambda data: hmac.new(a.keys.public_pem, data, hashlib.sha256).digest()),
     "AUTH_INVALID"),
    ("signed by another RSA key",
     lambda a, uid, sid: jwt.encode(_access_claims(a, uid, sid), _other_key(), algorithm="RS256"), "AUTH_INVALID"),
    ("RS512 with the right key",
     lambda a, uid, sid: jwt.encode(_access_claims(a, uid, sid), a.keys.private_key, algorithm="RS512"),
     "AUTH_INVALID"),
    ("payload changed after signing",
     lambda a, uid, sid: _tamper(jwt.encode(_access_claims(a, uid, sid), a.keys.private_key, algorithm="RS256")),
     "AUTH_INVALID"),
    ("wrong issuer",
     lambda a, uid, sid: jwt.encode(_access_claims(a, uid, sid, iss="someone-else"), a.keys.private_key,
                                    algorithm="RS256"),
     "AUTH_INVALID"),
    ("no jti",
     lambda a, uid, sid: jwt.encode(_access_claims(a, uid, sid, jti=None), a.keys.private_key, algorithm="RS256"),
     "AUTH_INVALID"),
    ("no exp",
     lambda a, uid, sid: jwt.encode(_access_claims(a, uid, sid, exp=None), a.keys.private_key, algorithm="RS256"),
     "AUTH_INVALID"),
    ("no typ",
     lambda a, uid, sid: jwt.encode(_access_claims(a, uid, sid, typ=None), a.keys.private_key, algorithm="RS256"),
     "AUTH_INVALID"),
    ("a refresh token used as access token",
     lambda a, uid, sid: jwt.encode(_access_claims(a, uid, sid, typ="refresh"), a.keys.private_key, algorithm="RS256"),
     "AUTH_INVALID"),
    ("unknown user",
     lambda a, uid, sid: jwt.encode(_access_claims(a, "0" * 32, sid), a.keys.private_key, algorithm="RS256"),
     "AUTH_INVALID"),
    ("not a JWT", lambda a, uid, sid: "not.a.jwt", "AUTH_INVALID"),
    ("no session (issued before sessions existed): refresh it",
     lambda a, uid, sid: jwt.encode(_access_claims(a, uid, None), a.keys.private_key, algorithm="RS256"),
     "AUTH_EXPIRED"),
    ("a session that never existed",
     lambda a, uid, sid: jwt.encode(_access_claims(a, uid, "f" * 32), a.keys.private_key, algorithm="RS256"),
     "AUTH_INVALID"),
    ("sid not a string",
     lambda a, uid, sid: jwt.encode(_access_claims(a, uid, ["x"]), a.keys.private_key, algorithm="RS256"),
     "AUTH_INVALID"),
]


def _tamper(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["role"] = "admin"
    return f"{header}.{_b64(json.dumps(claims).encode())}.{signature}"


@pytest.mark.parametrize(("make", "code"), [pytest.param(m, c, id=i) for i, m, c in TOKEN_CASES])
def test_access_token_verification(auth: AuthService, make: Callable[[AuthService, str, str], str],
                                   code: str | None) -> None:
    user = auth.register("ada", "ada@example.com", PASSWORD)
    session_id = _sid(auth.login("ada", PASSWORD).access_token)
    token = make(auth, user.id, session_id)
    if code is None:
        assert auth.authenticate_token(token).user_id == user.id
        return
    with pytest.raises(FaceportError) as excinfo:
        auth.authenticate_token(token)
    assert _code(excinfo) == code, excinfo.value.message


def test_hs256_forgery_is_well_formed(auth: AuthService) -> None:
    """The algorithm-confusion token above really carries a valid HMAC over the public key PEM."""
    token = TOKEN_CASES[4][1](auth, "u" * 32, "s" * 32)
    signing_input, _, signature = token.rpartition(".")
    expected = hmac.new(auth.keys.public_pem, signing_input.encode(), hashlib.sha256).digest()
    assert _b64(expected) == signature
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


def test_refresh_token_is_refused_as_access_and_access_as_refresh(auth: AuthService) -> None:
    auth.register("ada", "ada@example.com", PASSWORD)
    pair = auth.login("ada", PASSWORD)
    with pytest.raises(FaceportError) as as_access:
        auth.authenticate_token(pair.refresh_token)
    with pytest.raises(FaceportError) as as_refresh:
        auth.refresh(pair.access_token)
    assert _code(as_access) == _code(as_refresh) == "AUTH_INVALID"
    assert auth.authenticate_token(pair.access_token).username == "ada"


def test_expired_refresh_token_is_auth_expired(auth: AuthService) -> None:
    user = auth.register("ada", "ada@example.com", PASSWORD)
    past = int(time.time()) - 7200
    claims = _access_claims(auth, user.id, None, typ="refresh", iat=past, exp=past + 60)
    token = jwt.encode(claims, auth.keys.private_key,
                       algorithm="RS256")
    with pytest.raises(FaceportError) as excinfo:
        auth.refresh(token)
    assert _code(excinfo) == "AUTH_EXPIRED"


# ---- rotation, reuse, logout ------------------------------------------------------------------
def _jti(token: str) -> str:
    return str(jwt.decode(token, options={"verify_signature": False})["jti"])


def _sid(token: str) -> str:
    return str(jwt.decode(token, options={"verify_signature": False})["sid"])


def test_refresh_rotates_and_reuse_revokes_the_whole_family(auth: AuthService, store: Store) -> None:
    auth.register("ada", "ada@example.com", PASSWORD)
    first = auth.login("ada", PASSWORD)
    other_session = auth.login("ada", PASSWORD)  # another device: its own family
    second = auth.refresh(first.refresh_token)
    assert auth.authenticate_token(second.access_token).username == "ada"
    with store.session() as session:
        old = repo.get_refresh_token(session=session, jti=_jti(first.refresh_token))
        new = repo.get_refresh_token(session=session, jti=_jti(second.refresh_token))
    assert old.is_revoked and old.replaced_by == new.jti
    assert new.family == old.family and not new.is_revoked

    assert _sid(first.access_token) == _sid(second.access_token) == new.family  # one session throughout

    with pytest.raises(FaceportError) as reuse:
        auth.refresh(first.refresh_token)  # a copy of the rotated token: theft
    assert _code(reuse) == "AUTH_INVALID" and "reuse" in reuse.value.message
    with store.session() as session:
        assert repo.get_refresh_token(session=session, jti=new.jti).is_revoked
    with pytest.raises(FaceportError) as successor:
        auth.refresh(second.refresh_token)  # the legitimate successor died with its family
    assert _code(successor) == "AUTH_INVALID"
    # Every access token of the revoked session is refused at once, not when it expires.
    for token in (first.access_token, second.access_token):
        with pytest.raises(FaceportError) as access:
            auth.authenticate_token(token)
        assert _code(access) == "AUTH_INVALID" and "session was revoked" in access.value.message
    assert auth.authenticate_token(other_session.access_token).username == "ada"  # other sessions live on
    assert auth.refresh(other_session.refresh_token).token_type == "bearer"  # other families are untouched


def test_one_refresh_token_used_concurrently_wins_once(auth: AuthService) -> None:
    auth.register("ada", "ada@example.com", PASSWORD)
    pair = auth.login("ada", PASSWORD)
    barrier = threading.Barrier(6)

    def attempt(_: int) -> str:
        barrier.wait()
        try:
            auth.refresh(pair.refresh_token)
        except FaceportError as exc:
            return exc.code
        return "ok"

    with ThreadPoolExecutor(max_workers=6) as pool:
        outcomes = list(pool.map(attempt, range(6)))
    assert sorted(outcomes) == ["AUTH_INVALID"] * 5 + ["ok"]


def test_logout_revokes_the_access_token_and_the_refresh_family(auth: AuthService, store: Store) -> None:
    auth.register("ada", "ada@example.com", PASSWORD)
    first = auth.login("ada", PASSWORD)
    pair = auth.refresh(first.refresh_token)
    principal = auth.authenticate_token(pair.access_token)
    result = auth.logout(principal, pair.refresh_token)
    assert result.access_token_revoked and result.refresh_tokens_revoked == 1
    with pytest.raises(FaceportError) as access:
        auth.authenticate_token(pair.access_token)
    with pytest.raises(FaceportError) as refresh:
        auth.refresh(pair.refresh_token)
    assert _code(access) == _code(refresh) == "AUTH_INVALID"
    exp = jwt.decode(pair.access_token, options={"verify_signature": False})["exp"]
    with store.session() as session:
        row = session.scalars(select(RevokedToken).where(RevokedToken.jti == principal.token_id)).one()
        assert row.expires_at.timestamp() >= exp  # refused for as long as the token would live
    with pytest.raises(FaceportError) as sibling:
        auth.authenticate_token(first.access_token)  # an earlier access token of the same session
    assert _code(sibling) == "AUTH_INVALID"
    fresh = auth.login("ada", PASSWORD)  # logging out ends one session, not the account
    assert auth.authenticate_token(fresh.access_token).username == "ada"


def test_logout_without_a_refresh_token_still_ends_the_session(auth: AuthService) -> None:
    auth.register("ada", "ada@example.com", PASSWORD)
    pair = auth.login("ada", PASSWORD)
    other = auth.login("ada", PASSWORD)
    result = auth.logout(auth.authenticate_token(pair.access_token))
    assert result.refresh_tokens_revoked == 1
    with pytest.raises(FaceportError) as refresh:
        auth.refresh(pair.refresh_token)
    assert _code(refresh) == "AUTH_INVALID"
    assert auth.authenticate_token(other.access_token).username == "ada"


def test_logout_everywhere_ends_every_session_of_the_account_only(auth: AuthService) -> None:
    auth.register("ada", "ada@example.com", PASSWORD)
    auth.register("bob", "bob@example.com", PASSWORD)
    sessions = [auth.login("ada", PASSWORD) for _ in range(3)]
    rotated = auth.refresh(sessions[1].refresh_token)
    bob = auth.login("bob", PASSWORD)
    result = auth.logout(auth.authenticate_token(sessions[0].access_token), everywhere=True)
    assert result.access_token_revoked and result.refresh_tokens_revoked == 3
    for pair in (*sessions, rotated):
        with pytest.raises(FaceportError) as access:
            auth.authenticate_token(pair.access_token)
        assert _code(access) == "AUTH_INVALID"
    with pytest.raises(FaceportError) as refresh:
        auth.refresh(rotated.refresh_token)
    assert _code(refresh) == "AUTH_INVALID"
    assert auth.authenticate_token(bob.access_token).username == "bob"  # another account is untouched
    assert auth.authenticate_token(auth.login("ada", PASSWORD).access_token).username == "ada"


def test_logout_refuses_someone_elses_refresh_token(auth: AuthService) -> None:
    auth.register("ada", "ada@example.com", PASSWORD)
    auth.register("bob", "bob@example.com", PASSWORD)
    ada, bob = auth.login("ada", PASSWORD), auth.login("bob", PASSWORD)
    with pytest.raises(FaceportError) as excinfo:
        auth.logout(auth.authenticate_token(ada.access_token), bob.refresh_token)
    assert _code(excinfo) == "AUTH_INVALID"
    assert auth.refresh(bob.refresh_token).token_type == "bearer"


def test_tokens_of_deactivated_and_deleted_users_are_refused(auth: AuthService) -> None:
    user = auth.register("ada", "ada@example.com", PASSWORD)
    pair = auth.login("ada", PASSWORD)
    auth.set_active(user.id, False)
    for attempt in (lambda: auth.authenticate_token(pair.access_token), lambda: auth.refresh(pair.refresh_token)):
        with pytest.raises(FaceportError) as excinfo:
            attempt()
        assert _code(excinfo) == "AUTH_INVALID"
    auth.set_active(user.id, True)
    assert auth.authenticate_token(pair.access_token).user_id == user.id
    auth.delete_user(user.id)
    with pytest.raises(FaceportError) as excinfo:
        auth.authenticate_token(pair.access_token)
    assert _code(excinfo) == "AUTH_INVALID"


def test_role_comes_from_the_database_not_the_token(auth: AuthService, store: Store) -> None:
    user = auth.register("ada", "ada@example.com", PASSWORD)
    token = auth.login("ada", PASSWORD).access_token
    with store.session() as session:
        repo.update_user(session=session, user_id=user.id, role="admin")
    assert auth.authenticate_token(token).is_admin  # promotion applies at once
    with store.session() as session:
        repo.update_user(session=session, user_id=user.id, role="user")
    assert not auth.authenticate_token(token).is_admin  # and so does demotion


def test_changing_the_password_needs_the_current_one_and_ends_other_sessions(auth: AuthService) -> None:
    user = auth.register("ada", "ada@example.com", PASSWORD)
    auth.register("bob", "bob@example.com", PASSWORD)
    bob = auth.login("bob", PASSWORD)
    pair = auth.login("ada", PASSWORD)
    changing = auth.login("ada", PASSWORD)  # the session that changes the password
    changer = auth.authenticate_token(changing.access_token)
    with pytest.raises(MissingField) as missing:
        auth.update_profile(user.id, password="brand-new-password")
    assert missing.value.details["field"] == "current_password"
    with pytest.raises(InvalidInput) as wrong:
        auth.update_profile(user.id, password="brand-new-password", current_password="not-it")
    assert wrong.value.details["field"] == "current_password"
    assert auth.authenticate_token(pair.access_token).username == "ada"  # failed attempts change nothing
    updated = auth.update_profile(user.id, password="brand-new-password", current_password=PASSWORD,
                                  full_name="Ada Lovelace", keep_session=changer.session_id)
    assert updated.full_name == "Ada Lovelace"
    with pytest.raises(FaceportError):
        auth.login("ada", PASSWORD)
    assert auth.login("ada", "brand-new-password").token_type == "bearer"
    with pytest.raises(FaceportError) as old_session:
        auth.refresh(pair.refresh_token)
    assert _code(old_session) == "AUTH_INVALID"
    with pytest.raises(FaceportError) as old_access:
        auth.authenticate_token(pair.access_token)  # refused at once, not after its 15 minutes
    assert _code(old_access) == "AUTH_INVALID"
    assert auth.authenticate_token(changing.access_token).session_id == changer.session_id  # the changer stays
    assert auth.refresh(changing.refresh_token).token_type == "bearer"
    assert auth.authenticate_token(bob.access_token).username == "bob"


def test_create_admin_creates_then_promotes(auth: AuthService) -> None:
    admin, created = auth.create_admin("root", "root-password")
    assert created and admin.role == "admin" and admin.email == "root@faceport.invalid"
    assert auth.count_admins() == 1
    auth.register("bob", "bob@example.com", PASSWORD)
    bob, created = auth.create_admin("bob", "promoted-password")
    assert not created and bob.role == "admin" and bob.email == "bob@example.com"
    assert auth.authenticate_token(auth.login("bob", "promoted-password").access_token).is_admin
    with pytest.raises(FaceportError):
        auth.login("bob", PASSWORD)
    assert auth.count_admins() == 2


def test_credentials_are_read_from_headers(auth: AuthService) -> None:
    auth.register("ada", "ada@example.com", PASSWORD)
    token = auth.login("ada", PASSWORD).access_token
    assert auth.authenticate_headers(f"Bearer {token}", None).username == "ada"
    assert auth.authenticate_headers(f"bearer  {token} ", None).username == "ada"
    with pytest.raises(FaceportError) as none:
        auth.authenticate_headers(None, None)
    assert _code(none) == "AUTH_REQUIRED"
    assert "Authorization: Bearer" in none.value.message and "X-API-Key" in none.value.message
    with pytest.raises(FaceportError) as basic:
        auth.authenticate_headers("Basic YWRhOnB3", None)
    assert _code(basic) == "AUTH_INVALID"


# ---- API keys ---------------------------------------------------------------------------------
def test_api_keys_are_shown_once_stored_hashed_and_revocable(auth: AuthService, store: Store) -> None:
    created = auth.create_api_key("ingest", "admin")
    key = created.key
    assert key.startswith("fpk_") and len(base64.urlsafe_b64decode(key[4:] + "=")) == 32
    with store.session() as session:
        row = session.scalars(select(ApiKey).where(ApiKey.id == created.record.id)).one()
        stored = [str(getattr(row, column.key)) for column in ApiKey.__table__.columns]
    assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert not any(key in value or key[4:] in value for value in stored)  # the secret itself is nowhere
    assert created.record.prefix == key[:12]

    principal = auth.authenticate_api_key(key)
    assert (principal.method, principal.role, principal.token_id, principal.user_id) == (
        "api_key", "admin", created.record.id, None)
    assert auth.list_api_keys()[0].last_used_at is not None
    for bad in (key[:-1] + ("A" if key[-1] != "A" else "B"), "fpk_nothing", ""):
        with pytest.raises(FaceportError) as excinfo:
            auth.authenticate_api_key(bad)
        assert _code(excinfo) == "AUTH_INVALID"
    auth.revoke_api_key(created.record.id)
    with pytest.raises(FaceportError) as revoked:
        auth.authenticate_api_key(key)
    assert _code(revoked) == "AUTH_INVALID"
    assert auth.list_api_keys()[0].is_revoked


def test_a_user_key_never_exceeds_its_owner_and_dies_with_them(auth: AuthService) -> None:
    user = auth.register("ada", "ada@example.com", PASSWORD)
    key = auth.create_api_key("ada's script", "admin", user_id=user.id).key
    principal = auth.authenticate_api_key(key)
    assert principal.user_id == user.id and principal.role == "user"
    auth.delete_user(user.id)
    with pytest.raises(FaceportError) as excinfo:
        auth.authenticate_api_key(key)
    assert _code(excinfo) == "AUTH_INVALID"


def test_the_configured_api_key_is_a_user_role_service_key(auth_settings: Settings, store: Store) -> None:
    service = build_auth(auth_settings.model_copy(update={"api_key": "operator-key"}), store)
    principal = service.authenticate_api_key("operator-key")
    assert principal.method == "api_key" and principal.role == "user"
    with pytest.raises(FaceportError):
        service.authenticate_api_key("operator-key-")


# ---- key files --------------------------------------------------------------------------------
def test_key_files_are_created_private_and_reused_after_a_restart(auth_settings: Settings, store: Store) -> None:
    first = build_auth(auth_settings, store)
    private, public = auth_settings.home / "jwt_private.pem", auth_settings.home / "jwt_public.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert public.read_bytes() == first.keys.public_pem
    first.register("ada", "ada@example.com", PASSWORD)
    token = first.login("ada", PASSWORD).access_token
    restarted = build_auth(auth_settings, store)
    assert restarted.keys.public_pem == first.keys.public_pem
    assert restarted.authenticate_token(token).username == "ada"  # tokens survive a restart


def test_concurrent_starts_on_a_fresh_home_agree_on_one_key_pair(auth_settings: Settings, store: Store) -> None:
    barrier = threading.Barrier(8)

    def start(_: int) -> bytes:
        barrier.wait()
        return build_auth(auth_settings, store).keys.public_pem

    with ThreadPoolExecutor(max_workers=8) as pool:
        pems = set(pool.map(start, range(8)))
    assert len(pems) == 1
    assert pems == {(auth_settings.home / "jwt_public.pem").read_bytes()}
    assert sorted(p.name for p in auth_settings.home.iterdir()) == ["jwt_private.pem", "jwt_public.pem"]


def _write_key(path: Path, key: rsa.RSAPrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def test_configured_key_paths_are_used_and_checked(tmp_path: Path) -> None:
    key, other = _other_key(), _other_key()
    _write_key(tmp_path / "signing.pem", key)
    public = tmp_path / "signing.pub"
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    wrong = tmp_path / "other.pub"
    wrong.write_bytes(other.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo))
    home = tmp_path / "home"
    pair = load_or_create_keys(home=home, private_path=tmp_path / "signing.pem", public_path=public)
    assert pair.public_pem == public.read_bytes()
    assert not (home / "jwt_private.pem").exists()  # nothing generated when keys are configured
    cases: list[tuple[Path | None, Path | None]] = [
        (tmp_path / "signing.pem", wrong),  # a public key of another pair
        (None, public),  # verification only: the server must sign
        (tmp_path / "missing.pem", None),
        (public, None),  # a public key where the private one belongs
    ]
    for private_path, public_path in cases:
        with pytest.raises(InvalidInput):
            load_or_create_keys(home=home, private_path=private_path, public_path=public_path)
