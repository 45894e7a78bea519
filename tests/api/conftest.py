"""API fixtures: ``live_server``, the main app served by a real uvicorn on a free loopback port."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest


@dataclass(frozen=True)
class LiveServer:
    """A running server: ``url`` is its base (``http://127.0.0.1:<port>``), ``settings`` what it runs with."""

    url: str
    settings: Any  # faceport.config.Settings
    app: Any  # fastapi.FastAPI

    @property
    def context(self) -> Any:
        """The app's ``AppContext`` (store, auth service, ...), for setting up state a test needs."""
        return self.app.state.context


@contextmanager
def serving(settings: Any, factory: Any = None) -> Iterator[LiveServer]:
    """Serve ``create_app(settings)`` (or ``factory(settings)``) with uvicorn in a background thread until the
    block ends.

    The listening socket is bound before the server starts (port 0), so no other process can
    take the port in between.
    """
    import uvicorn

    from faceport.api.app import create_app

    app = (factory or create_app)(settings)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="live-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            pytest.fail("the live server did not start")
        time.sleep(0.02)
    try:
        yield LiveServer(url=f"http://127.0.0.1:{port}", settings=settings, app=app)
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        sock.close()


@pytest.fixture
def live_server(settings) -> Iterator[LiveServer]:  # type: ignore[no-untyped-def]
    """The main app on a real uvicorn for one test."""
    with serving(settings) as server:
        yield server
