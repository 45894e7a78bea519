"""The Celery job runner for real: the privacy app (seed E) as API node in this process, ``faceport worker``
subprocesses on one PostgreSQL schema and one Redis, real privacy jobs (faces blurred in a video made from a
committed photo).

Covers: a job through Celery; a cancelled job stops on the worker; kill -9 of the worker running a job mid-way:
the job is run again by the other worker and completes exactly once (one completion in the workers' logs, two
attempts in the row, a valid output and no partial file left), progress moving again after the kill.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest

from tests.cluster import clear_redis_keys, faceport_env, postgres_schema, require_redis, start_worker
from tests.conftest import FIXTURES

PRIVACY_MODELS = ("yunet", "centerface")
CONFIG = {"video": {"face_detection": True, "plate_detection": False, "text_detection": False},
          "audio": {"enabled": False}}
LEASE_S = 3.0


def write_clip(path: Path, frames: int, size: tuple[int, int] = (640, 480), fps: int = 25) -> None:
    """A video of Grace Hopper's portrait drifting across the frame (H.264), ``frames`` long."""
    photo = cv2.imread(str(FIXTURES / "mpl_grace_hopper.jpg"))
    width, height = size
    face = cv2.resize(photo, (height * photo.shape[1] // photo.shape[0], height))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for index in range(frames):
            canvas = np.full((height, width, 3), 90, np.uint8)
            x = int((width - face.shape[1]) * (0.5 + 0.5 * np.sin(index / 15)))
            canvas[:, x:x + face.shape[1]] = face
            for packet in stream.encode(av.VideoFrame.from_ndarray(canvas, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def frame_count(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[dict[str, Any]]:
    """An API node (the privacy app, in this process) and two Celery workers, on PostgreSQL and Redis."""
    from fastapi.testclient import TestClient

    from faceport.api.app import create_privacy_app
    from faceport.config import Settings
    from faceport.engine.models import ModelStore

    redis_url = require_redis()
    store = ModelStore(models_dir)
    missing = [name for name in PRIVACY_MODELS if not store.is_installed(name)]
    if missing:
        assert all(result.installed for result in store.pull(missing))
    home = tmp_path_factory.mktemp("celery-home")
    logs = tmp_path_factory.mktemp("celery-logs")
    queue = f"faceport-test-{uuid.uuid4().hex[:8]}"
    with postgres_schema() as database_url:
        common = {"home": home, "models_dir": models_dir, "database_url": database_url, "redis_url": redis_url,
                  "jobs": "celery", "celery_queue": queue, "job_lease_seconds": LEASE_S, "pull_on_start": False,
                  "model_idle_ttl": 0, "detector": "yunet", "audit_log": "off"}
        settings = Settings(**{("models_dir_override" if k == "models_dir" else k): v for k, v in common.items()})
        env = faceport_env(**common)
        workers = [start_worker("worker-1", env, logs), start_worker("worker-2", env, logs)]
        try:
            with TestClient(create_privacy_app(settings)) as client:
                yield {"client": client, "workers": workers, "env": env, "logs": logs,
                       "media": client.app.state.context.privacy.ensure_root(), "runner": client.app.state.context.jobs}
        finally:
            for worker in workers:
                worker.stop()
            clear_redis_keys(redis_url, "faceport:jobs:*", queue, f"{queue}*", "unacked*")


def submit(client: Any, name: str, output: str) -> str:
    response = client.post("/api/v1/process", json={"input_path": name, "output_path": output, "config": CONFIG})
    assert response.status_code == 200, response.text
    return str(response.json()["job_id"])


def wait(client: Any, job_id: str, until: Any, timeout: float = 240.0) -> list[dict[str, Any]]:
    """Poll the job until ``until(body)``; every body seen."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/api/v1/jobs/{job_id}").json()
        seen.append(body)
        if until(body):
            return seen
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never got there: {seen[-3:]}")


def completions(cluster: dict[str, Any], job_id: str) -> list[str]:
    return [line for worker in cluster["workers"] for line in worker.log().splitlines()
            if f"job {job_id} (privacy.process) completed on" in line]


def test_a_job_runs_on_a_celery_worker(cluster: dict[str, Any]) -> None:
    client, media = cluster["client"], cluster["media"]
    write_clip(media / "short.mp4", frames=20)
    job_id = submit(client, "short.mp4", "outputs/short_blurred.mp4")
    done = wait(client, job_id, lambda body: body["status"] in ("completed", "failed"))[-1]
    assert done["status"] == "completed", done
    assert done["result"]["frames"] == 20 and done["result"]["detections"]["faces"] >= 1
    assert frame_count(media / "outputs" / "short_blurred.mp4") == 20
    record = cluster["runner"].get(job_id)
    assert record.attempts == 1 and record.worker is not None
    assert len(completions(cluster, job_id)) == 1
    # the job ran in a worker process, not here: its log names it
    assert any(record.worker in worker.log() for worker in cluster["workers"])


def test_a_cancelled_job_stops_on_the_worker(cluster: dict[str, Any]) -> None:
    client, media = cluster["client"], cluster["media"]
    write_clip(media / "long_cancel.mp4", frames=250)
    job_id = submit(client, "long_cancel.mp4", "outputs/cancelled.mp4")
    wait(client, job_id, lambda body: body["status"] == "processing" and body["progress"] > 0)
    cluster["runner"].cancel(job_id)
    holder = cluster["runner"].get(job_id).worker
    worker = next(w for w in cluster["workers"] if holder and holder in w.log())
    deadline = time.monotonic() + 60
    while f"job {job_id} (privacy.process) cancelled on" not in worker.log():
        assert time.monotonic() < deadline, worker.log()[-3000:]
        time.sleep(0.1)
    record = cluster["runner"].get(job_id)
    assert record.state.value == "cancelled" and record.progress < 100
    assert not (media / "outputs" / "cancelled.mp4").exists()
    assert not list((media / "outputs").glob(".cancelled*"))  # the partial output was removed
    assert client.get(f"/api/v1/jobs/{job_id}").json()["status"] == "cancelled"


def test_kill_9_of_the_worker_mid_job_runs_it_again_exactly_once(cluster: dict[str, Any]) -> None:
    client, media = cluster["client"], cluster["media"]
    frames = 120
    write_clip(media / "long_kill.mp4", frames=frames)
    job_id = submit(client, "long_kill.mp4", "outputs/survived.mp4")
    before = wait(client, job_id, lambda body: body["status"] == "processing" and body["progress"] >= 5)
    runner = cluster["runner"]
    first = runner.get(job_id)
    victim = next(w for w in cluster["workers"] if first.worker and first.worker in w.log())
    survivor = next(w for w in cluster["workers"] if w is not victim)
    victim.kill9()
    after = wait(client, job_id, lambda body: body["status"] in ("completed", "failed"), timeout=300)
    done = after[-1]
    assert done["status"] == "completed", done
    final = runner.get(job_id)
    assert final.attempts == 2 and final.worker != first.worker and final.worker in survivor.log()
    assert len(completions(cluster, job_id)) == 1  # exactly once
    # progress moved again on the survivor: it restarted from the beginning and climbed back to 100
    restarted = [body["progress"] for body in after if body["status"] == "processing"]
    assert before[-1]["progress"] >= 5 and any(0 < p < 100 for p in restarted) and done["progress"] == 100
    assert frame_count(media / "outputs" / "survived.mp4") == frames
    assert not list((media / "outputs").glob(".survived*"))  # no partial output left behind
    cluster["workers"].remove(victim)
