"""Active liveness sessions in Redis: two server processes (two services) share one session."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from faceport.errors import FaceportError, NotFound
from faceport.principal import Principal
from faceport.services.liveness import LivenessService, RedisSessionStore
from tests import liveness_clips as clips

REDIS_URL = os.environ.get("FACEPORT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ADMIN = Principal("u-admin", "admin", "admin", "jwt")
USER = Principal("u-1", "alice", "user", "jwt")
OTHER = Principal("u-2", "mallory", "user", "jwt")


@pytest.fixture
def prefix() -> Iterator[str]:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Redis at {REDIS_URL} is unreachable in CI: {exc}")
        pytest.skip(f"Redis at {REDIS_URL} is unreachable (start redis-server or set FACEPORT_TEST_REDIS_URL): {exc}")
    name = f"faceport-test-liveness-{uuid.uuid4().hex}"
    yield name
    keys = list(client.scan_iter(match=f"{name}*"))
    if keys:
        client.delete(*keys)
    client.close()


def _service(settings, engine, prefix: str) -> LivenessService:  # type: ignore[no-untyped-def]
    redis_settings = settings.model_copy(update={"redis_url": REDIS_URL, "liveness_redis_prefix": prefix})
    service = LivenessService(redis_settings, engine)
    assert isinstance(service.store, RedisSessionStore)
    return service


def test_a_session_moves_between_processes(settings, engine, prefix: str, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    first, second = _service(settings, engine, prefix), _service(settings, engine, prefix)
    segment = clips.BONA_FIDE[2]
    record = first.create(ADMIN, challenges=list(segment.challenges))
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    ttl = client.pttl(f"{prefix}:{record.id}")
    assert 0 < ttl <= (settings.liveness_session_ttl + settings.liveness_result_ttl) * 1000
    client.close()
    status = "in_progress"
    for i, (t, frame) in enumerate(clips.read_segment(data_dir, segment)):
        report = (first if i % 2 else second).add_frame(record.id, ADMIN, frame, 1000.0 * t)
        status = report.record.state.status
        if status != "in_progress":
            break
    assert status == "passed"
    assert first.get(record.id, ADMIN).state.live is True  # the other process sees the verdict
    with pytest.raises(NotFound):
        second.get(record.id, OTHER)
    first.close()
    second.close()


def test_only_admins_fix_the_sequence_and_users_own_theirs(settings, engine, prefix: str) -> None:  # type: ignore[no-untyped-def]
    service = _service(settings, engine, prefix)
    with pytest.raises(FaceportError) as refused:
        service.create(USER, challenges=["turn_left"])
    assert refused.value.code == "AUTH_FORBIDDEN"
    record = service.create(USER)
    assert len(record.state.challenges) == settings.liveness_challenges
    assert service.get(record.id, USER).owner == USER.owner
    assert service.get(record.id, ADMIN).id == record.id
    with pytest.raises(NotFound):
        service.get(record.id, OTHER)
    service.close()
