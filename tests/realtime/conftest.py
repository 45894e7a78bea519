"""Live swap fixtures: the main app on a real uvicorn, real clip frames, a recording Socket.IO client."""

from __future__ import annotations

import base64
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest

from tests.conftest import FIXTURES

CLIP = "video/pf_single_face.mp4"
REDIS_URL = os.environ.get("FACEPORT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@dataclass(frozen=True)
class LiveSwapServer:
    url: str
    settings: Any  # faceport.config.Settings
    app: Any  # fastapi.FastAPI

    @property
    def service(self) -> Any:
        """The app's ``LiveSwapService`` (its statistics and drop counters)."""
        return self.app.state.live_swap

    def upload_source(self, path: Path = FIXTURES / "mpl_grace_hopper.jpg", sid: str | None = None) -> dict[str, Any]:
        """Upload a source face; ``sid``: the uploading page's Socket.IO session (needed while someone streams)."""
        response = self.post_source(path, sid)
        assert response.status_code == 200, response.text
        return response.json()

    def post_source(self, path: Path = FIXTURES / "mpl_grace_hopper.jpg", sid: str | None = None) -> httpx.Response:
        headers = {"X-SocketIO-SID": sid} if sid is not None else {}
        with path.open("rb") as handle:
            return httpx.post(f"{self.url}/upload_source", files={"image": (path.name, handle, "image/jpeg")},
                              headers=headers, timeout=60)

    def status(self) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/status", timeout=10)
        assert response.status_code == 200, response.text
        return response.json()


def serve_app(app: Any, settings: Any, port: int = 0) -> Iterator[str]:
    """Serve ``app`` with uvicorn (websocket limit as ``faceport serve`` sets it) in a thread; yield its URL.

    ``port`` 0 takes a free one; a given port lets a test restart a server where clients expect it.
    """
    import uvicorn

    from faceport.api.live_swap import websocket_max_size

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False,
                                          ws_max_size=websocket_max_size(settings)))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="live-swap-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            pytest.fail("the live swap server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@pytest.fixture
def live_settings(settings):  # type: ignore[no-untyped-def]
    """Test settings in process memory (no FACEPORT_REDIS_URL leaking in)."""
    return settings.model_copy(update={"redis_url": None})


class LiveServers:
    """Starts live swap servers with some settings overridden (timeouts, limits); stops them all at the end."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self._running: dict[int, Iterator[str]] = {}

    def __call__(self, port: int = 0, **overrides: Any) -> LiveSwapServer:
        from faceport.api.app import create_app

        settings = self.settings.model_copy(update=overrides)
        app = create_app(settings)
        runner = serve_app(app, settings, port)
        url = next(runner)
        self._running[id(app)] = runner
        return LiveSwapServer(url, settings, app)

    def stop(self, server: LiveSwapServer) -> None:
        runner = self._running.pop(id(server.app), None)
        if runner is not None:
            next(runner, None)

    def stop_all(self) -> None:
        for runner in self._running.values():
            next(runner, None)
        self._running.clear()


@pytest.fixture
def make_live_server(live_settings) -> Iterator[LiveServers]:  # type: ignore[no-untyped-def]
    servers = LiveServers(live_settings)
    yield servers
    servers.stop_all()


@pytest.fixture
def live_server(make_live_server) -> LiveSwapServer:  # type: ignore[no-untyped-def]
    return make_live_server()


def to_data_url(image: np.ndarray, quality: int = 85) -> str:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def from_data_url(url: str) -> np.ndarray:
    header, _, payload = url.partition(",")
    assert header.startswith("data:image/"), header[:40]
    image = cv2.imdecode(np.frombuffer(base64.b64decode(payload), np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


@pytest.fixture(scope="session")
def clip_frames(data_dir: Path) -> list[np.ndarray]:
    """Every frame of a real single-face clip (640x360 BGR)."""
    capture = cv2.VideoCapture(str(data_dir / CLIP))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    assert len(frames) > 30, f"{CLIP}: only {len(frames)} frames"
    return frames


class LiveClient:
    """A python-socketio client (websocket transport) that records what the server sends."""

    def __init__(self, url: str) -> None:
        import socketio

        self.url = url
        self.sio = socketio.Client(reconnection=False)
        self.frames: queue.Queue[dict[str, Any]] = queue.Queue()
        self.statuses: queue.Queue[dict[str, Any]] = queue.Queue()
        self.disconnected = threading.Event()
        self.sio.on("processed_frame", self.frames.put)
        self.sio.on("status_update", self.statuses.put)
        self.sio.on("disconnect", lambda *reason: self.disconnected.set())

    def connect(self, **options: Any) -> LiveClient:
        """Connect over websocket; ``options`` go to ``socketio.Client.connect`` (``auth``, ``headers``)."""
        self.sio.connect(self.url, transports=["websocket"], wait_timeout=30, **options)
        return self

    @property
    def connected(self) -> bool:
        return bool(self.sio.connected)

    def send(self, frame: Any) -> None:
        self.sio.emit("process_frame", {"frame": frame} if not isinstance(frame, dict) else frame)

    def reply(self, timeout: float = 30.0) -> dict[str, Any]:
        return self.frames.get(timeout=timeout)

    def drain(self, settle: float = 1.0) -> list[dict[str, Any]]:
        """Every reply until none came for ``settle`` seconds."""
        replies = []
        while True:
            try:
                replies.append(self.frames.get(timeout=settle))
            except queue.Empty:
                return replies

    def status_message(self, contains: str, timeout: float = 10.0) -> str:
        """Wait for a ``status_update`` whose message contains ``contains``."""
        deadline = time.monotonic() + timeout
        seen = []
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = self.statuses.get(timeout=left)["message"]
            except queue.Empty:
                break
            seen.append(message)
            if contains in message:
                return message
        raise AssertionError(f"no status_update containing {contains!r}; got {seen}")

    def close(self) -> None:
        if self.sio.connected:
            self.sio.disconnect()


@pytest.fixture
def live_client() -> Iterator[Callable[[str], LiveClient]]:
    clients: list[LiveClient] = []

    def make(url: str) -> LiveClient:
        client = LiveClient(url).connect()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def redis_available() -> str | None:
    """None when the test Redis answers, else why not."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        return f"Redis at {REDIS_URL} is unreachable (start redis-server or set FACEPORT_TEST_REDIS_URL): {exc}"
    finally:
        client.close()
    return None
