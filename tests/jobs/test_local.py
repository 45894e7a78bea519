"""The local job runner on a real SQLite store: queue bound, outcomes with stable codes,
progress writes, interruption by stop() and resumption by the next start()."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from faceport.errors import NoFace, QueueFull
from faceport.jobs import LocalJobRunner, ProgressFn
from faceport.store import JobRecord, JobState, Store, list_jobs, open_store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store(f"sqlite:///{tmp_path / 'jobs.db'}")
    yield opened
    opened.dispose()


def _wait(runner: LocalJobRunner, job_id: str) -> JobRecord:
    record = runner.wait(job_id, timeout=30)
    assert record.is_terminal, record
    return record


def test_outcomes_carry_stable_codes_and_finish_hooks_see_them(store: Store) -> None:
    finished: list[JobRecord] = []

    def handler(job: JobRecord, progress: ProgressFn) -> Any:
        if job.params["do"] == "no-face":
            raise NoFace("no face in the target", details={"field": "target"})
        if job.params["do"] == "crash":
            raise RuntimeError("boom")
        return {"doubled": job.params["n"] * 2}

    def on_finish(job: JobRecord) -> None:
        finished.append(job)
        raise RuntimeError("a broken hook changes nothing")

    runner = LocalJobRunner(store, workers=2)
    runner.register("test", handler, on_finish=on_finish)
    runner.start()
    try:
        ok = runner.submit("test", {"do": "ok", "n": 21})
        no_face = runner.submit("test", {"do": "no-face"})
        crash = runner.submit("test", {"do": "crash"})
        assert _wait(runner, ok.id).result == {"doubled": 42}
        failed = _wait(runner, no_face.id)
        assert failed.state == JobState.FAILED and failed.error == {"code": "NO_FACE",
                                                                    "message": "no face in the target"}
        crashed = _wait(runner, crash.id)
        assert crashed.error is not None and crashed.error["code"] == "PROCESSING_FAILED"
        assert "RuntimeError" in crashed.error["message"]
        deadline = time.monotonic() + 5
        while len(finished) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert {j.id: j.state for j in finished} == {ok.id: JobState.COMPLETED, no_face.id: JobState.FAILED,
                                                     crash.id: JobState.FAILED}
    finally:
        runner.stop()


def test_queue_bound_raises_queue_full(store: Store) -> None:
    runner = LocalJobRunner(store, queue_max=2)  # not started: nothing leaves the queue
    runner.register("test", lambda job, progress: None)
    runner.submit("test", {})
    runner.submit("test", {})
    with pytest.raises(QueueFull) as raised:
        runner.submit("test", {})
    assert raised.value.code == "QUEUE_FULL"
    assert runner.pending() == 2
    runner.start()  # the two accepted jobs run
    try:
        deadline = time.monotonic() + 10
        while runner.pending() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert runner.pending() == 0
        runner.submit("test", {})  # room again
    finally:
        runner.stop()


def test_run_inline_reraises_after_recording_the_failure(store: Store) -> None:
    runner = LocalJobRunner(store)

    def handler(job: JobRecord, progress: ProgressFn) -> Any:
        raise NoFace("nothing to swap")

    runner.register("test", handler)
    with pytest.raises(NoFace):
        runner.run_inline("test", {"x": 1})
    with store.session() as session:
        (job,) = list_jobs(session=session, kind="test")
    assert job.state == JobState.FAILED and job.error == {"code": "NO_FACE", "message": "nothing to swap"}


def test_progress_is_written_throttled(store: Store) -> None:
    gate = threading.Event()
    release = threading.Event()

    def handler(job: JobRecord, progress: ProgressFn) -> Any:
        for percent in range(1, 51):
            progress(float(percent))
        gate.set()
        release.wait(10)
        return None

    runner = LocalJobRunner(store, progress_interval_s=0.0)
    runner.register("test", handler)
    runner.start()
    try:
        job = runner.submit("test", {})
        assert gate.wait(10)
        assert runner.get(job.id).progress == 50.0 and runner.get(job.id).state == JobState.RUNNING
        release.set()
        assert _wait(runner, job.id).progress == 100.0
    finally:
        runner.stop()


def test_stop_interrupts_and_the_next_start_runs_the_job_again(store: Store) -> None:
    started = threading.Event()
    runs: list[str] = []

    def slow(job: JobRecord, progress: ProgressFn) -> Any:
        runs.append(job.id)
        started.set()
        for _ in range(1000):
            progress(1.0)  # raises JobInterrupted once the runner stops
            time.sleep(0.01)
        return {"done": True}

    first = LocalJobRunner(store)
    first.register("slow", slow)
    first.start()
    job = first.submit("slow", {})
    waiting = first.submit("slow", {})
    assert started.wait(10)
    first.stop(timeout=10)
    assert first.get(job.id).state == JobState.RUNNING  # left as a crash would leave it
    assert first.get(waiting.id).state == JobState.QUEUED

    def quick(job: JobRecord, progress: ProgressFn) -> Any:
        runs.append(job.id)
        return {"done": True}

    second = LocalJobRunner(store)
    second.register("slow", quick)
    second.start()
    try:
        assert _wait(second, job.id).result == {"done": True}
        assert _wait(second, waiting.id).result == {"done": True}
    finally:
        second.stop()
    assert runs == [job.id, job.id, waiting.id]


def test_a_failed_prepare_records_no_server_path(store: Store) -> None:
    runner = LocalJobRunner(store)
    runner.register("test", lambda job, progress: None)

    def prepare(job: JobRecord) -> None:
        raise FileNotFoundError(2, "No such file or directory", "/srv/faceport/uploads/.staging-1234")

    with pytest.raises(FileNotFoundError):
        runner.submit("test", {}, prepare=prepare)
    with store.session() as session:
        (failed,) = list_jobs(session=session, kind="test")
    assert failed.state == JobState.FAILED and failed.error is not None
    assert failed.error == {"code": "PROCESSING_FAILED", "message": "could not prepare the job: FileNotFoundError"}
