"""The auth repository on SQLite and PostgreSQL: users, refresh tokens, revocations, API keys."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from faceport.errors import InvalidInput, NotFound
from faceport.store import Store
from faceport.store import users as repo
from faceport.store.models import utcnow

HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"


def _user(store: Store, username: str = "ada", email: str = "ada@example.com", **kwargs: object) -> repo.UserRecord:
    with store.session() as session:
        return repo.create_user(session=session, username=username, email=email, password_hash=HASH,
                                **kwargs)  # type: ignore[arg-type]


def test_users_are_created_found_and_detached(store: Store) -> None:
    user = _user(store, "Ada", "Ada@Example.COM", full_name="Ada Lovelace")
    assert (user.username, user.email, user.role, user.is_active) == ("Ada", "ada@example.com", "user", True)
    assert user.created_at.tzinfo is not None
    with store.session() as session:
        assert repo.get_user(session=session, user_id=user.id) == user
        assert repo.get_user_by_username(session=session, username="aDA").id == user.id
    with store.session() as session, pytest.raises(NotFound):
        repo.get_user_by_username(session=session, username="nobody")


@pytest.mark.parametrize(("username", "email", "field"), [
    ("ADA", "other@example.com", "username"),
    ("grace", "ADA@example.com", "email"),
])
def test_duplicate_username_or_email_names_the_field(store: Store, username: str, email: str, field: str) -> None:
    _user(store)
    with pytest.raises(InvalidInput) as excinfo:
        _user(store, username, email)
    assert excinfo.value.details["field"] == field
    with store.session() as session:
        assert repo.count_users(session=session) == 1


def test_update_user_and_password(store: Store) -> None:
    ada, grace = _user(store), _user(store, "grace", "grace@example.com")
    with store.session() as session:
        updated = repo.update_user(session=session, user_id=ada.id, full_name="Ada", role="admin", is_active=False)
    assert (updated.full_name, updated.role, updated.is_active, updated.email) == ("Ada", "admin", False, ada.email)
    with store.session() as session:
        cleared = repo.update_user(session=session, user_id=ada.id, full_name=None)
        assert cleared.full_name is None and cleared.role == "admin"  # UNSET columns are kept
        assert repo.set_password(session=session, user_id=ada.id, password_hash="$argon2id$new").password_hash == (
            "$argon2id$new")
    with store.session() as session, pytest.raises(InvalidInput) as taken:
        repo.update_user(session=session, user_id=ada.id, email=grace.email.upper())
    assert taken.value.details["field"] == "email"
    with store.session() as session, pytest.raises(InvalidInput) as role:
        repo.update_user(session=session, user_id=ada.id, role="root")
    assert role.value.details["field"] == "role"


def test_count_admins_and_pages(store: Store) -> None:
    for i in range(5):
        _user(store, f"user{i}", f"user{i}@example.com", role="admin" if i < 3 else "user", is_active=i != 0)
    with store.session() as session:
        assert repo.count_admins(session=session) == 2
        assert repo.count_admins(session=session, active_only=False) == 3
        first = repo.list_users(session=session, limit=2)
        rest = repo.list_users(session=session, limit=10, offset=2)
        assert [u.username for u in first + rest] == [f"user{i}" for i in range(5)]
        with pytest.raises(InvalidInput):
            repo.list_users(session=session, limit=0)


@pytest.mark.parametrize("call", [
    lambda s: repo.get_user(session=s, user_id="missing"),
    lambda s: repo.update_user(session=s, user_id="missing", full_name="x"),
    lambda s: repo.set_password(session=s, user_id="missing", password_hash=HASH),
    lambda s: repo.delete_user(session=s, user_id="missing"),
    lambda s: repo.get_refresh_token(session=s, jti="missing"),
    lambda s: repo.revoke_refresh_token(session=s, jti="missing"),
    lambda s: repo.get_api_key(session=s, key_id="missing"),
    lambda s: repo.get_api_key_by_hash(session=s, key_hash="0" * 64),
    lambda s: repo.revoke_api_key(session=s, key_id="missing"),
    lambda s: repo.touch_api_key(session=s, key_id="missing"),
    lambda s: repo.create_api_key(session=s, name="k", role="user", user_id="missing", key_hash="1" * 64,
                                  prefix="fpk_x"),
])
def test_unknown_ids_are_not_found(store: Store, call) -> None:  # type: ignore[no-untyped-def]
    with store.session() as session, pytest.raises(NotFound):
        call(session)


def test_refresh_token_rotation_and_family_revocation(store: Store) -> None:
    user = _user(store)
    expires = utcnow() + timedelta(days=7)
    first, second, other = (uuid.uuid4().hex for _ in range(3))
    with store.session() as session:
        repo.store_refresh_token(session=session, jti=first, user_id=user.id, family=first, expires_at=expires)
        assert repo.revoke_refresh_token(session=session, jti=first, replaced_by=second) is True
        assert repo.revoke_refresh_token(session=session, jti=first, replaced_by="late") is False  # lost the race
        repo.store_refresh_token(session=session, jti=second, user_id=user.id, family=first, expires_at=expires)
        repo.store_refresh_token(session=session, jti=other, user_id=user.id, family=other, expires_at=expires)
    with store.session() as session:
        rotated = repo.get_refresh_token(session=session, jti=first)
        assert rotated.is_revoked and rotated.replaced_by == second
        assert repo.revoke_family(session=session, family=first) == 1  # only the live one
        assert repo.get_refresh_token(session=session, jti=second).is_revoked
        assert not repo.get_refresh_token(session=session, jti=other).is_revoked
        assert repo.revoke_user_refresh_tokens(session=session, user_id=user.id) == 1
        assert repo.get_refresh_token(session=session, jti=other).is_revoked


def test_a_session_is_live_while_its_family_has_a_live_token(store: Store) -> None:
    user = _user(store)
    expires = utcnow() + timedelta(days=7)
    first, second, kept = (uuid.uuid4().hex for _ in range(3))
    with store.session() as session:
        assert repo.is_session_live(session=session, family=first) is False  # never issued
        repo.store_refresh_token(session=session, jti=first, user_id=user.id, family=first, expires_at=expires)
        repo.store_refresh_token(session=session, jti=kept, user_id=user.id, family=kept, expires_at=expires)
        assert repo.is_session_live(session=session, family=first)
        repo.revoke_refresh_token(session=session, jti=first, replaced_by=second)  # rotation: one live token
        repo.store_refresh_token(session=session, jti=second, user_id=user.id, family=first, expires_at=expires)
        assert repo.is_session_live(session=session, family=first)
        # A password change spares the session that made it.
        assert repo.revoke_user_refresh_tokens(session=session, user_id=user.id, except_family=kept) == 1
        assert not repo.is_session_live(session=session, family=first)
        assert repo.is_session_live(session=session, family=kept)


def test_access_token_revocation_is_idempotent_and_purged_after_expiry(store: Store) -> None:
    user = _user(store)
    now = utcnow()
    with store.session() as session:
        repo.revoke_access_token(session=session, jti="live", expires_at=now + timedelta(minutes=15))
        repo.revoke_access_token(session=session, jti="live", expires_at=now + timedelta(minutes=15))
        repo.revoke_access_token(session=session, jti="stale", expires_at=now - timedelta(minutes=1))
        repo.store_refresh_token(session=session, jti="old", user_id=user.id, family="old",
                                 expires_at=now - timedelta(seconds=1))
        repo.store_refresh_token(session=session, jti="new", user_id=user.id, family="new",
                                 expires_at=now + timedelta(days=1))
    with store.session() as session:
        assert repo.is_access_token_revoked(session=session, jti="live")
        assert not repo.is_access_token_revoked(session=session, jti="never")
        assert repo.purge_expired(session=session, now=now) == 2
        assert not repo.is_access_token_revoked(session=session, jti="stale")
        assert repo.is_access_token_revoked(session=session, jti="live")
        assert repo.get_refresh_token(session=session, jti="new").jti == "new"
        with pytest.raises(NotFound):
            repo.get_refresh_token(session=session, jti="old")


def test_api_keys_and_cascade_on_user_delete(store: Store) -> None:
    user = _user(store)
    with store.session() as session:
        service = repo.create_api_key(session=session, name=" svc ", role="admin", user_id=None, key_hash="a" * 64,
                                      prefix="fpk_aaaaaaaa")
        owned = repo.create_api_key(session=session, name="ada", role="user", user_id=user.id, key_hash="b" * 64,
                                    prefix="fpk_bbbbbbbb")
        repo.store_refresh_token(session=session, jti="t", user_id=user.id, family="t",
                                 expires_at=utcnow() + timedelta(days=1))
    assert service.name == "svc" and service.last_used_at is None
    with pytest.raises(InvalidInput) as duplicate, store.session() as session:  # the session rolls back
        repo.create_api_key(session=session, name="again", role="user", user_id=None, key_hash="a" * 64,
                            prefix="fpk_aaaaaaaa")
    assert duplicate.value.details["field"] == "key"
    with store.session() as session:
        assert repo.get_api_key_by_hash(session=session, key_hash="a" * 64).id == service.id
        repo.touch_api_key(session=session, key_id=service.id)
        revoked = repo.revoke_api_key(session=session, key_id=service.id)
        again = repo.revoke_api_key(session=session, key_id=service.id)
        assert revoked.is_revoked and again.revoked_at == revoked.revoked_at
        assert repo.get_api_key(session=session, key_id=service.id).last_used_at is not None
        assert [k.id for k in repo.list_api_keys(session=session, include_revoked=False)] == [owned.id]
        assert [k.id for k in repo.list_api_keys(session=session, user_id=user.id)] == [owned.id]
        repo.delete_user(session=session, user_id=user.id)
    with store.session() as session:
        assert [k.id for k in repo.list_api_keys(session=session)] == [service.id]
        with pytest.raises(NotFound):
            repo.get_refresh_token(session=session, jti="t")
