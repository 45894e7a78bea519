"""Seed A across two ``faceport serve`` processes sharing a real Redis (``FACEPORT_REDIS_URL``).

Single-user mode, the source face and the 15 fps limit hold across processes: a client connected to
process 1 is told and disconnected when another connects to process 2, which then swaps with the
source uploaded through process 1.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from faceport.realtime.live_swap import NO_SOURCE, REPLACED
from tests.conftest import FIXTURES
from tests.realtime.conftest import REDIS_URL, redis_available, to_data_url


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix (and Socket.IO channel) of this test's own; its keys are deleted afterwards."""
    import redis

    problem = redis_available()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)
    prefix = f"faceport-test-live-{uuid.uuid4().hex}"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"*{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def serve(tmp_path: Path, models_dir: Path, redis_prefix: str) -> Iterator[Callable[[str], str]]:
    """Start ``faceport serve`` processes on one Redis; returns each one's URL."""
    procs: list[subprocess.Popen[str]] = []

    def start(name: str) -> str:
        port = _free_port()
        env = dict(os.environ)
        env.update(FACEPORT_HOME=str(tmp_path / name), FACEPORT_MODELS_DIR=str(models_dir),
                   FACEPORT_REDIS_URL=REDIS_URL, FACEPORT_LIVE_REDIS_PREFIX=redis_prefix,
                   FACEPORT_LOG_LEVEL="WARNING")
        env.pop("FACEPORT_DATABASE_URL", None)
        log = (tmp_path / f"{name}.log").open("w")
        proc = subprocess.Popen([sys.executable, "-m", "faceport.cli", "serve", "--port", str(port),
                                 "--privacy-port", "0", "--no-pull"], env=env, stdout=log,
                                stderr=subprocess.STDOUT, text=True)
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"{name} exited: {(tmp_path / f'{name}.log').read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/status", timeout=2).status_code == 200:
                    return url
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        pytest.fail(f"{name} did not start")

    yield start
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_single_user_source_and_rate_limit_hold_across_two_processes(serve, live_client, clip_frames) -> None:
    first_url, second_url = serve("one"), serve("two")

    with (FIXTURES / "mpl_grace_hopper.jpg").open("rb") as handle:
        uploaded = httpx.post(f"{first_url}/upload_source", files={"image": ("grace.jpg", handle)}, timeout=60)
    assert uploaded.json() == {"success": True, "message": "Source face ready!"}
    assert httpx.get(f"{second_url}/status").json()["source_face_loaded"] is True

    first = live_client(first_url)
    assert "Source face ready" in first.status_message("Connected")
    first.send(to_data_url(clip_frames[0]))
    assert first.reply()["success"] is True

    second = live_client(second_url)
    second.status_message("Connected")
    assert first.status_message("Another user", timeout=10) == REPLACED
    assert first.disconnected.wait(10), "the user on process 1 was not disconnected"
    assert second.connected

    # process 2 swaps with the source uploaded through process 1
    second.send(to_data_url(clip_frames[10]))
    reply = second.reply()
    assert reply["success"] is True and reply["stats"]["swap_count"] == 1

    # 30 frames in one second to process 2: about 15 processed, the rest silently dropped
    time.sleep(0.2)
    frames = [to_data_url(frame) for frame in clip_frames[:30]]
    started = time.monotonic()
    for i, frame in enumerate(frames):
        time.sleep(max(0.0, started + i / 30 - time.monotonic()))
        second.send(frame)
    replies = second.drain(settle=1.5)
    assert 13 <= len(replies) <= 17 and all(r["success"] for r in replies), len(replies)

    # and back: a user on process 1 takes over from process 2
    third = live_client(first_url)
    third.status_message("Connected")
    assert second.status_message("Another user", timeout=10) == REPLACED
    assert second.disconnected.wait(10)

    # clearing the source through process 1 clears it for process 2 too
    third.sio.emit("clear_source")
    third.status_message("Source cleared")
    assert httpx.get(f"{second_url}/status").json()["source_face_loaded"] is False
    frame = to_data_url(clip_frames[0])
    third.send(frame)
    assert third.reply() == {"success": False, "error": NO_SOURCE, "processed": frame}
