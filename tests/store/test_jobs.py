"""Store and job repository against real SQLite and PostgreSQL databases."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from faceport.errors import InvalidInput, NotFound
from faceport.store import (
    Base,
    JobRecord,
    JobState,
    Store,
    cancel_job,
    complete_job,
    count_jobs_by_state,
    create_job,
    fail_job,
    get_job,
    head_revision,
    list_jobs,
    normalize_url,
    recover_interrupted_jobs,
    start_job,
    update_progress,
)

if TYPE_CHECKING:
    from tests.store.conftest import StoreTarget

NESTED_PARAMS: dict[str, Any] = {
    "source": "clips/démo café.mp4",
    "processors": ["face_swapper", "face_enhancer"],
    "options": {"fps": 15, "scale": 0.5, "keep_audio": True, "region": None},
    "labels": {"ja": "顔のぼかし", "ru": "размытие лица", "emoji": "🙂👍", "rtl": "טשטוש"},
    "frames": [[0, 1, 2], {"nested": {"deeper": [1.5, -2.25e-7, 10**12]}}],
    "empty": {"list": [], "dict": {}, "text": ""},
}


def _assert_utc(moment: datetime | None) -> None:
    assert moment is not None
    assert moment.tzinfo is not None
    assert moment.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - moment) < timedelta(minutes=5)


def _new_job(store: Store, kind: str = "video", params: dict[str, Any] | None = None) -> JobRecord:
    with store.session() as session:
        return create_job(session=session, kind=kind, params=params if params is not None else {"n": 1})


def _job_in_state(store: Store, state: JobState, kind: str = "video") -> JobRecord:
    """Drive a new job to ``state`` through the public transitions."""
    job = _new_job(store, kind=kind)
    with store.session() as session:
        if state is JobState.QUEUED:
            return get_job(session=session, job_id=job.id)
        if state is JobState.CANCELLED:
            return cancel_job(session=session, job_id=job.id)
        if state is JobState.FAILED:
            return fail_job(session=session, job_id=job.id, code="PROCESSING_FAILED", message="boom")
        running = start_job(session=session, job_id=job.id)
        if state is JobState.RUNNING:
            return running
        return complete_job(session=session, job_id=job.id, result={"ok": True})


# --- schema and migrations -------------------------------------------------------------


def test_migrations_create_jobs_table(store: Store, store_target: StoreTarget) -> None:
    inspector = inspect(store.engine)
    schema = store_target.schema
    assert {"jobs", "alembic_version", "users", "refresh_tokens", "revoked_tokens", "api_keys", "subjects",
            "subject_faces", "proctor_clients", "proctor_faces", "proctor_evidence"} <= set(
        inspector.get_table_names(schema=schema))
    columns = {column["name"]: column for column in inspector.get_columns("jobs", schema=schema)}
    assert set(columns) == {
        "id", "kind", "state", "progress", "params", "result", "error",
        "created_at", "updated_at", "started_at", "finished_at", "worker", "lease_until", "attempts",
    }  # fmt: skip
    assert not columns["kind"]["nullable"]
    assert columns["result"]["nullable"]
    assert columns["finished_at"]["nullable"]
    assert inspector.get_pk_constraint("jobs", schema=schema)["constrained_columns"] == ["id"]
    indexed = {tuple(index["column_names"]) for index in inspector.get_indexes("jobs", schema=schema)}
    assert {("kind",), ("state",)} <= indexed
    assert store.revision() == head_revision() == "0008"
    assert store.ping() is True


def test_models_match_migrations(store: Store) -> None:
    # A model change without a migration would leave deployed databases behind.
    with store.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_open_store_twice_is_idempotent(store_target: StoreTarget) -> None:
    first = store_target.open()
    job = _new_job(first)
    second = store_target.open()
    try:
        assert second.revision() == first.revision() == head_revision()
        with second.session() as session:
            assert get_job(session=session, job_id=job.id).params == {"n": 1}
            assert session.execute(text("SELECT COUNT(*) FROM alembic_version")).scalar_one() == 1
    finally:
        first.dispose()
        second.dispose()


PROCESSES = 6

# Every process imports first, then all open at the same instant, to widen the race.
_OPEN_IN_SUBPROCESS = """
import json, sys, time
from faceport.store import open_store, create_job
time.sleep(max(0.0, float(sys.argv[3]) - time.time()))
store = open_store(sys.argv[1], connect_args=json.loads(sys.argv[2]))
with store.session() as session:
    create_job(session=session, kind="concurrent", params={})
print(store.revision())
store.dispose()
"""


def test_open_store_concurrently_from_processes(store_target: StoreTarget) -> None:
    start_at = str(time.time() + 3.0)
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _OPEN_IN_SUBPROCESS,
                store_target.url,
                json.dumps(store_target.connect_args),
                start_at,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    outcomes = [process.communicate(timeout=120) for process in processes]
    for process, (stdout, stderr) in zip(processes, outcomes, strict=True):
        assert process.returncode == 0, stderr
        assert stdout.strip() == head_revision()
    store = store_target.open()
    try:
        with store.session() as session:
            assert len(list_jobs(session=session, kind="concurrent")) == PROCESSES
            assert session.execute(text("SELECT COUNT(*) FROM alembic_version")).scalar_one() == 1
    finally:
        store.dispose()


def test_session_rolls_back_on_error(store: Store) -> None:
    created: list[JobRecord] = []
    with pytest.raises(RuntimeError, match="abort"), store.session() as session:
        created.append(create_job(session=session, kind="video", params={}))
        raise RuntimeError("abort")
    with store.session() as session, pytest.raises(NotFound):
        get_job(session=session, job_id=created[0].id)


# --- life cycle --------------------------------------------------------------------------


def test_job_runs_queued_running_completed(store_target: StoreTarget, store: Store) -> None:
    with store.session() as session:
        queued = create_job(session=session, kind="video", params={"fps": 15})
    assert queued.state is JobState.QUEUED
    assert queued.progress == 0.0
    assert queued.started_at is None and queued.finished_at is None and queued.result is None
    assert len(queued.id) == 32 and int(queued.id, 16) >= 0
    _assert_utc(queued.created_at)

    with store.session() as session:
        running = start_job(session=session, job_id=queued.id)
    with store.session() as session:
        halfway = update_progress(session=session, job_id=queued.id, progress=42.5)
    with store.session() as session:
        done = complete_job(session=session, job_id=queued.id, result={"output": "out/clip.mp4", "frames": 300})

    assert running.state is JobState.RUNNING
    _assert_utc(running.started_at)
    assert halfway.progress == 42.5
    assert done.state is JobState.COMPLETED and done.is_terminal

    # Read back through a fresh store: the values are in the database, not in memory.
    store.dispose()
    reopened = store_target.open()
    try:
        with reopened.session() as session:
            stored = get_job(session=session, job_id=queued.id)
    finally:
        reopened.dispose()
    assert stored == done
    assert stored.progress == 100.0
    assert stored.result == {"output": "out/clip.mp4", "frames": 300}
    assert stored.error is None
    assert stored.params == {"fps": 15}
    for moment in (stored.created_at, stored.updated_at, stored.started_at, stored.finished_at):
        _assert_utc(moment)
    assert stored.started_at is not None and stored.finished_at is not None
    assert stored.created_at <= stored.started_at <= stored.finished_at == stored.updated_at


def test_fail_job_records_code_and_message(store: Store) -> None:
    job = _job_in_state(store, JobState.RUNNING)
    with store.session() as session:
        fail_job(session=session, job_id=job.id, code="NO_FACE", message="no face in frame 12")
    with store.session() as session:
        failed = get_job(session=session, job_id=job.id)
    assert failed.state is JobState.FAILED
    assert failed.error == {"code": "NO_FACE", "message": "no face in frame 12"}
    assert failed.result is None
    _assert_utc(failed.finished_at)


@pytest.mark.parametrize(
    ("reported", "stored"),
    [(-5, 0.0), (0, 0.0), (33.3, 33.3), (100, 100.0), (150.0, 100.0)],
)
def test_update_progress_clamps_to_0_100(store: Store, reported: float, stored: float) -> None:
    job = _job_in_state(store, JobState.RUNNING)
    with store.session() as session:
        update_progress(session=session, job_id=job.id, progress=reported)
    with store.session() as session:
        assert get_job(session=session, job_id=job.id).progress == pytest.approx(stored)


@pytest.mark.parametrize("progress", [float("nan"), float("inf"), "50", None])
def test_update_progress_refuses_non_numbers(store: Store, progress: Any) -> None:
    job = _job_in_state(store, JobState.RUNNING)
    with store.session() as session, pytest.raises(InvalidInput):
        update_progress(session=session, job_id=job.id, progress=progress)


Action = Callable[..., JobRecord]
ACTIONS: dict[str, Action] = {
    "start": lambda s, j: start_job(session=s, job_id=j),
    "progress": lambda s, j: update_progress(session=s, job_id=j, progress=10),
    "complete": lambda s, j: complete_job(session=s, job_id=j, result={"ok": 1}),
    "fail": lambda s, j: fail_job(session=s, job_id=j, code="PROCESSING_FAILED", message="x"),
    "cancel": lambda s, j: cancel_job(session=s, job_id=j),
}

Q, R, C, F, X = JobState.QUEUED, JobState.RUNNING, JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED
TRANSITIONS = [
    # (from, action, to) -- InvalidInput means refused and the job is left as it was.
    (Q, "start", R),
    (Q, "progress", InvalidInput),
    (Q, "complete", InvalidInput),
    (Q, "fail", F),
    (Q, "cancel", X),
    (R, "start", InvalidInput),
    (R, "progress", R),
    (R, "complete", C),
    (R, "fail", F),
    (R, "cancel", X),
    (C, "start", InvalidInput),
    (C, "progress", InvalidInput),
    (C, "complete", InvalidInput),
    (C, "fail", InvalidInput),
    (C, "cancel", InvalidInput),
    (F, "start", InvalidInput),
    (F, "complete", InvalidInput),
    (F, "fail", InvalidInput),
    (F, "cancel", InvalidInput),
    (X, "start", InvalidInput),
    (X, "progress", InvalidInput),
    (X, "complete", InvalidInput),
    (X, "cancel", InvalidInput),
]


@pytest.mark.parametrize(("initial", "action", "expected"), TRANSITIONS, ids=lambda v: getattr(v, "__name__", str(v)))
def test_state_transitions(store: Store, initial: JobState, action: str, expected: Any) -> None:
    job = _job_in_state(store, initial)
    if expected is InvalidInput:
        with store.session() as session, pytest.raises(InvalidInput, match=f"it is {initial.value}") as caught:
            ACTIONS[action](session, job.id)
        assert caught.value.code == "INVALID_INPUT"
        assert caught.value.details["state"] == initial.value
        with store.session() as session:
            assert get_job(session=session, job_id=job.id) == job
    else:
        with store.session() as session:
            ACTIONS[action](session, job.id)
        with store.session() as session:
            after = get_job(session=session, job_id=job.id)
        assert after.state is expected
        assert after.is_terminal == (expected in (C, F, X))
        assert (after.finished_at is not None) == after.is_terminal


@pytest.mark.parametrize("action", ["get", *ACTIONS])
def test_unknown_job_id_is_not_found(store: Store, action: str) -> None:
    _new_job(store)
    unknown = "0" * 32
    with store.session() as session, pytest.raises(NotFound) as caught:
        if action == "get":
            get_job(session=session, job_id=unknown)
        else:
            ACTIONS[action](session, unknown)
    assert caught.value.code == "NOT_FOUND"
    assert caught.value.details == {"job_id": unknown}


def test_only_one_of_many_racing_runners_starts_a_job(store: Store) -> None:
    job = _new_job(store)
    barrier = threading.Barrier(6)
    outcomes: list[str] = []
    lock = threading.Lock()

    def race() -> None:
        barrier.wait()
        try:
            with store.session() as session:
                start_job(session=session, job_id=job.id)
            outcome = "started"
        except InvalidInput:
            outcome = "refused"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=race) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == ["refused"] * 5 + ["started"]


# --- restart -----------------------------------------------------------------------------


def test_recover_interrupted_jobs_requeues_running_after_restart(store_target: StoreTarget, store: Store) -> None:
    interrupted = _job_in_state(store, JobState.RUNNING, kind="video")
    with store.session() as session:
        update_progress(session=session, job_id=interrupted.id, progress=40)
    waiting = _job_in_state(store, JobState.QUEUED, kind="batch")
    finished = _job_in_state(store, JobState.COMPLETED, kind="audio")

    store.dispose()  # the process dies; a new one starts
    restarted = store_target.open()
    try:
        with restarted.session() as session:
            recovered = recover_interrupted_jobs(session=session)
        with restarted.session() as session:
            again = recover_interrupted_jobs(session=session)
            requeued = get_job(session=session, job_id=interrupted.id)
            still_waiting = get_job(session=session, job_id=waiting.id)
            still_finished = get_job(session=session, job_id=finished.id)
            queue = list_jobs(session=session, state="queued")
            # A requeued job can run again from the start.
            rerun = start_job(session=session, job_id=interrupted.id)
    finally:
        restarted.dispose()

    assert [job.id for job in recovered] == [interrupted.id]
    assert again == []
    assert requeued == recovered[0]
    assert requeued.state is JobState.QUEUED
    assert requeued.progress == 0.0 and requeued.started_at is None
    assert requeued.params == interrupted.params
    assert still_waiting == waiting
    assert still_finished == finished
    assert {job.id for job in queue} == {interrupted.id, waiting.id}
    assert rerun.state is JobState.RUNNING


# --- data --------------------------------------------------------------------------------


def test_json_params_and_result_round_trip(store_target: StoreTarget, store: Store) -> None:
    created = _new_job(store, params=NESTED_PARAMS)
    result = {"faces": [{"box": [1.5, 2.0, 30.25, 40.0], "label": "Zoë"}], "notes": None, "text": "日本語"}
    with store.session() as session:
        start_job(session=session, job_id=created.id)
        complete_job(session=session, job_id=created.id, result=result)

    store.dispose()
    reopened = store_target.open()
    try:
        with reopened.session() as session:
            stored = get_job(session=session, job_id=created.id)
    finally:
        reopened.dispose()
    assert created.params == NESTED_PARAMS
    assert stored.params == NESTED_PARAMS
    assert stored.result == result


@pytest.mark.parametrize(
    ("kind", "params"),
    [
        ("video", {"handle": object()}),
        ("video", {"score": float("nan")}),
        ("video", ["not", "an", "object"]),
        ("", {}),
        ("x" * 65, {}),
    ],
    ids=["not-serialisable", "nan", "not-a-mapping", "empty-kind", "kind-too-long"],
)
def test_create_job_refuses_bad_input(store: Store, kind: str, params: Any) -> None:
    with store.session() as session, pytest.raises(InvalidInput):
        create_job(session=session, kind=kind, params=params)
    with store.session() as session:
        assert list_jobs(session=session) == []


def test_list_jobs_filters_and_pages(store: Store) -> None:
    videos = [_job_in_state(store, state, kind="video") for state in (Q, R, C, Q, F)]
    batches = [_job_in_state(store, state, kind="batch") for state in (Q, X)]
    everything = videos + batches

    with store.session() as session:
        all_jobs = list_jobs(session=session)
        only_videos = list_jobs(session=session, kind="video")
        queued = list_jobs(session=session, state=JobState.QUEUED)
        queued_videos = list_jobs(session=session, kind="video", state="queued")
        none = list_jobs(session=session, kind="audio")
        pages = [list_jobs(session=session, limit=3, offset=offset) for offset in (0, 3, 6, 9)]

    assert {job.id for job in all_jobs} == {job.id for job in everything}
    assert [job.created_at for job in all_jobs] == sorted((job.created_at for job in all_jobs), reverse=True)
    assert all_jobs[0].id == batches[-1].id  # newest first
    assert {job.id for job in only_videos} == {job.id for job in videos}
    assert {job.id for job in queued} == {videos[0].id, videos[3].id, batches[0].id}
    assert {job.id for job in queued_videos} == {videos[0].id, videos[3].id}
    assert none == []
    assert [len(page) for page in pages] == [3, 3, 1, 0]
    assert [job.id for page in pages for job in page] == [job.id for job in all_jobs]
    with store.session() as session:  # what GET /api/v1/system/status shows as jobs by state
        assert count_jobs_by_state(session=session) == {"queued": 3, "running": 1, "completed": 1, "failed": 1,
                                                        "cancelled": 1}


@pytest.mark.parametrize(
    "query",
    [{"limit": 0}, {"limit": 1001}, {"offset": -1}, {"state": "paused"}],
    ids=["limit-0", "limit-1001", "offset-negative", "unknown-state"],
)
def test_list_jobs_refuses_bad_queries(store: Store, query: dict[str, Any]) -> None:
    with store.session() as session, pytest.raises(InvalidInput):
        list_jobs(session=session, **query)


# --- URLs (no database needed) -----------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p@db:5432/faceport", "postgresql+psycopg://u:p@db:5432/faceport"),
        ("postgres://u@db/faceport", "postgresql+psycopg://u@db/faceport"),
        ("postgresql+psycopg://u@db/faceport", "postgresql+psycopg://u@db/faceport"),
        ("sqlite:////var/lib/faceport/faceport.db", "sqlite:////var/lib/faceport/faceport.db"),
        ("mysql://u@db/faceport", InvalidInput),
        ("not a url", InvalidInput),
    ],
)
def test_normalize_url(given: str, expected: str | type[Exception]) -> None:
    if isinstance(expected, str):
        assert normalize_url(given).render_as_string(hide_password=False) == expected
    else:
        with pytest.raises(expected):
            normalize_url(given)


def test_webhook_deliveries_claim_retry_deliver_and_cascade(store: Store) -> None:
    from datetime import timedelta

    from sqlalchemy import delete

    from faceport.store.models import Job, utcnow
    from faceport.store.webhooks import (
        claim_delivery,
        create_delivery,
        delivery_for_job,
        due_deliveries,
        next_due_at,
        record_attempt,
    )

    with store.session() as session:
        job = create_job(session=session, kind="facefusion.image", params={})
        first = create_delivery(session=session, job_id=job.id, url="https://hooks.example.com/x",
                                payload={"job_id": "api_x", "status": "completed"})
        again = create_delivery(session=session, job_id=job.id, url="https://other.example.com/", payload={})
    assert again.id == first.id and again.url == first.url  # one delivery per job
    with store.session() as session:
        (due,) = due_deliveries(session=session, now=utcnow() + timedelta(seconds=1))
    lease = timedelta(seconds=30)
    with store.session() as session:
        assert claim_delivery(session=session, delivery=due, lease=lease)
    with store.session() as session:  # a second sender with the same view loses the race
        assert not claim_delivery(session=session, delivery=due, lease=lease)
        assert due_deliveries(session=session) == []  # leased
    retry_at = utcnow() + timedelta(minutes=5)
    with store.session() as session:
        pending = record_attempt(session=session, delivery_id=due.id, status=503, error="answered HTTP 503",
                                 state="pending", retry_at=retry_at)
        assert pending.attempts == 1 and pending.last_status == 503 and pending.delivered_at is None
        assert next_due_at(session=session) == retry_at
        assert due_deliveries(session=session) == []
        assert [d.id for d in due_deliveries(session=session, now=retry_at)] == [due.id]
    with store.session() as session:
        done = record_attempt(session=session, delivery_id=due.id, status=200, error=None, state="delivered")
    assert done.state == "delivered" and done.attempts == 2 and done.delivered_at is not None
    assert [h["status"] for h in done.history] == [503, 200]
    with store.session() as session:
        assert next_due_at(session=session) is None
        session.execute(delete(Job).where(Job.id == job.id))
    with store.session() as session:
        assert delivery_for_job(session=session, job_id=job.id) is None  # deleted with its job


# --- claims and leases (Celery workers) ------------------------------------------------------------


def test_claims_are_exclusive_leased_and_fenced(store: Store) -> None:
    from faceport.store import claim_job, orphaned_jobs, renew_lease

    with store.session() as session:
        job = create_job(session=session, kind="video", params={})
    with store.session() as session:
        first = claim_job(session=session, job_id=job.id, worker="w1", lease_seconds=60)
    assert first is not None and first.state is JobState.RUNNING and first.worker == "w1" and first.attempts == 1
    with store.session() as session:  # held under a live lease: a second delivery gets nothing
        assert claim_job(session=session, job_id=job.id, worker="w2", lease_seconds=60) is None
        assert orphaned_jobs(session=session, kinds=("video",)) == []
        assert renew_lease(session=session, job_id=job.id, worker="w2", lease_seconds=60) is None
        update_progress(session=session, job_id=job.id, progress=40.0, worker="w1")
    with store.session() as session:  # w1 dies: its lease runs out
        session.execute(text("UPDATE jobs SET lease_until = :t WHERE id = :id"),
                        {"t": datetime.now(UTC) - timedelta(seconds=1), "id": job.id})
    with store.session() as session:
        assert [r.id for r in orphaned_jobs(session=session, kinds=("video",))] == [job.id]
        taken = claim_job(session=session, job_id=job.id, worker="w2", lease_seconds=60)
    assert taken is not None and taken.worker == "w2" and taken.attempts == 2 and taken.progress == 0.0
    with store.session() as session, pytest.raises(InvalidInput, match="held by w2"):
        complete_job(session=session, job_id=job.id, result={"by": "w1"}, worker="w1")  # the old holder is fenced
    with store.session() as session, pytest.raises(InvalidInput):
        update_progress(session=session, job_id=job.id, progress=50.0, worker="w1")
    with store.session() as session:
        done = complete_job(session=session, job_id=job.id, result={"by": "w2"}, worker="w2")
        assert done.state is JobState.COMPLETED and done.result == {"by": "w2"} and done.lease_until is None
        assert claim_job(session=session, job_id=job.id, worker="w3", lease_seconds=60) is None  # ended: a no-op
        assert get_job(session=session, job_id=job.id).attempts == 2
        local = start_job(session=session, job_id=create_job(session=session, kind="video", params={}).id)
        # a local runner's running job (no lease) is neither orphaned nor claimable by a worker
        assert orphaned_jobs(session=session, kinds=("video",)) == []
        assert claim_job(session=session, job_id=local.id, worker="w3", lease_seconds=60) is None
