"""Seed A across two ``faceport serve`` processes sharing a real Redis (``FACEPORT_REDIS_URL``).

Single-user mode, the source face and the 15 fps limit hold across processes: a client connected to
process 1 is told and disconnected when another connects to process 2, which then swaps with the
source uploaded through process 1. And a Redis outage, for real (a private ``redis-server`` killed and
restarted empty on the same port): clear 503s and messages meanwhile, the lock back with its holder after.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from faceport.realtime.live_swap import NO_SOURCE, REPLACED, STATE_UNAVAILABLE
from tests.conftest import FIXTURES
from tests.realtime.conftest import REDIS_URL, LiveClient, redis_available, to_data_url


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


class PrivateRedis:
    """A ``redis-server`` of this test's own, without persistence: killed, it restarts empty on the same port."""

    def __init__(self, workdir: Path) -> None:
        self.binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        import redis

        self.proc = subprocess.Popen([self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.workdir)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        try:
            for _ in range(200):
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if self.proc.poll() is not None:
                        pytest.fail(f"redis-server exited with {self.proc.returncode}")
                    time.sleep(0.05)
            pytest.fail("redis-server did not answer")
        finally:
            client.close()

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=30)
            self.proc = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    if not Path(server.binary).is_file():
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    server.start()
    yield server
    server.kill()


def test_redis_outage_answers_503_and_the_holder_takes_the_lock_back(private_redis, make_live_server,
                                                                    live_client, clip_frames) -> None:
    import redis

    prefix = f"faceport-test-outage-{uuid.uuid4().hex}"
    server = make_live_server(redis_url=private_redis.url, live_redis_prefix=prefix)
    server.upload_source()
    holder = live_client(server.url)
    holder.status_message("Connected")
    sid = holder.sio.get_sid()
    frame = to_data_url(clip_frames[0])
    holder.send(frame)
    assert holder.reply()["success"] is True

    private_redis.kill()
    unavailable = {"success": False, "message": STATE_UNAVAILABLE, "code": "STATE_UNAVAILABLE"}
    status = httpx.get(f"{server.url}/status", timeout=30)
    assert (status.status_code, status.json()) == (503, unavailable)
    upload = server.post_source(sid=sid)
    assert (upload.status_code, upload.json()) == (503, unavailable)
    holder.send(frame)
    assert holder.reply() == {"success": False, "error": STATE_UNAVAILABLE, "processed": None}
    newcomer = LiveClient(server.url)
    try:
        newcomer.connect()
        assert newcomer.status_message("shared state") == STATE_UNAVAILABLE
        assert newcomer.disconnected.wait(60), "a new client must be told why and disconnected"
    finally:
        newcomer.close()
    assert holder.connected

    private_redis.start()  # back on the same port, empty: the lock and the source are gone from Redis
    holder.send(frame)
    reply = holder.reply()
    assert reply["success"] is True, reply.get("error")  # the holder took the lock back; the source was restored
    client = redis.Redis.from_url(private_redis.url)
    try:
        assert client.get(f"{{{prefix}}}:active") == sid.encode()
    finally:
        client.close()
    assert server.status()["source_face_loaded"] is True
    assert server.upload_source(sid=sid) == {"success": True, "message": "Source face ready!"}
