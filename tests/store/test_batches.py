"""The batch repository on SQLite and PostgreSQL: owners, counts, idempotent items, paging, expiry and purge."""

from __future__ import annotations

from datetime import timedelta

import pytest

from faceport.errors import InvalidInput, NotFound
from faceport.store import batches as repo
from faceport.store import cancel_job, create_job, start_job
from faceport.store.models import utcnow


def _batch(store, owner: str, total: int = 3) -> str:  # type: ignore[no-untyped-def]
    with store.session() as session:
        job = create_job(session=session, kind="batch", params={"owner": owner})
        repo.create_batch(session=session, batch_id=job.id, owner=owner, operation="detect", total=total)
    return job.id


def test_items_are_stored_once_counted_and_paged_in_order(store) -> None:  # type: ignore[no-untyped-def]
    batch_id = _batch(store, "ada", total=3)
    with store.session() as session:
        start_job(session=session, job_id=batch_id)
        assert repo.save_item(session=session, batch_id=batch_id, index=2, name="c.jpg", status="error",
                              error={"code": "INVALID_IMAGE", "message": "not an image"})
        assert repo.save_item(session=session, batch_id=batch_id, index=0, name="a.jpg", status="ok",
                              result={"faces": [], "count": 0})
        # a job that runs again stores nothing twice
        assert not repo.save_item(session=session, batch_id=batch_id, index=0, name="a.jpg", status="ok",
                                  result={"count": 99})
        assert repo.done_indexes(session=session, batch_id=batch_id) == {0, 2}
    with store.session() as session:
        record = repo.get_batch(session=session, batch_id=batch_id, owner="ada")
        assert (record.total, record.processed, record.succeeded, record.failed) == (3, 2, 1, 1)
        assert record.job.state == "running"
        items, count = repo.list_items(session=session, batch_id=batch_id, limit=1)
        assert count == 2 and [i.index for i in items] == [0] and items[0].result == {"faces": [], "count": 0}
        errors, count = repo.list_items(session=session, batch_id=batch_id, status="error")
        assert count == 1 and errors[0].error == {"code": "INVALID_IMAGE", "message": "not an image"}
        with pytest.raises(InvalidInput):
            repo.save_item(session=session, batch_id=batch_id, index=5, name="x", status="maybe")
        with pytest.raises(InvalidInput):
            repo.list_items(session=session, batch_id=batch_id, status="maybe")


def test_owners_see_their_batches_admins_all(store) -> None:  # type: ignore[no-untyped-def]
    mine, theirs = _batch(store, "ada"), _batch(store, "bob")
    with store.session() as session:
        with pytest.raises(NotFound):
            repo.get_batch(session=session, batch_id=theirs, owner="ada")
        with pytest.raises(NotFound):
            repo.get_batch(session=session, batch_id="0" * 32)
        records, total = repo.list_batches(session=session, owner="ada")
        assert total == 1 and [r.id for r in records] == [mine]
        records, total = repo.list_batches(session=session, owner=None)
        assert total == 2 and {r.id for r in records} == {mine, theirs}
        cancel_job(session=session, job_id=theirs)
    with store.session() as session:
        records, total = repo.list_batches(session=session, owner=None, state="cancelled")
        assert total == 1 and records[0].id == theirs
        with pytest.raises(InvalidInput):
            repo.list_batches(session=session, owner=None, state="sleeping")


def test_expired_batches_are_deleted_with_items_and_job(store) -> None:  # type: ignore[no-untyped-def]
    old, fresh = _batch(store, "ada"), _batch(store, "ada")
    with store.session() as session:
        repo.save_item(session=session, batch_id=old, index=0, name="a", status="ok", result={})
        repo.set_expiry(session=session, batch_id=old, expires_at=utcnow() - timedelta(seconds=1))
        repo.set_expiry(session=session, batch_id=fresh, expires_at=utcnow() + timedelta(hours=1))
    with store.session() as session:
        assert repo.expired_batches(session=session) == [old]
        assert repo.delete_batches(session=session, batch_ids=[old]) == 1
    with store.session() as session:
        assert repo.job_state(session=session, job_id=old) is None
        with pytest.raises(NotFound):
            repo.get_batch(session=session, batch_id=old)
        assert repo.list_items(session=session, batch_id=old) == ([], 0)
        assert repo.get_batch(session=session, batch_id=fresh).id == fresh
