"""The live swap page in a real browser: Debian Chromium (headless) with a fake camera playing a real clip.

Driven by Playwright against ``/usr/bin/chromium`` (never a downloaded browser): open ``/``, drop a
source face, start the camera, receive swapped frames; the face region of received frames differs
from the camera's frames while the rest stays, and the stats update. Also: readable errors, the
clear-source button, takeover by another user, and automatic reconnection after a server restart.
"""

from __future__ import annotations

import base64
import re
import shutil
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from tests.conftest import FIXTURES
from tests.realtime.conftest import CLIP, LiveClient, from_data_url
from tests.realtime.test_live_swap import face_box, region_change

SCREENSHOT_COPY = Path("/tmp/faceport_live.png")



def write_y4m(frames: list[np.ndarray], path: Path, fps: int = 30) -> Path:
    """Write BGR frames as an uncompressed YUV4MPEG2 (4:2:0) file, the format Chromium's fake camera plays."""
    height, width = frames[0].shape[:2]
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg XYSCSS=420JPEG\n".encode())
        for frame in frames:
            out.write(b"FRAME\n")
            out.write(cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())
    return path


@pytest.fixture
def camera_file(tmp_path: Path, data_dir: Path) -> Path:
    capture = cv2.VideoCapture(str(data_dir / CLIP))
    frames = []
    while (read := capture.read())[0]:
        frames.append(read[1])
    capture.release()
    return write_y4m(frames, tmp_path / "camera.y4m")


@pytest.fixture
def browser(chromium_path: Path, camera_file: Path) -> Any:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium_path), headless=True, args=[
            "--no-sandbox", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={camera_file}", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            yield browser
        finally:
            browser.close()


def _wait(page: Any, expression: str, timeout: float = 30.0) -> Any:
    page.wait_for_function(expression, timeout=timeout * 1000)
    return page.evaluate(expression)


def _drop_file(page: Any, selector: str, path: Path, mime: str) -> None:
    """Drop a file on an element the way a user's drag-and-drop does (a DataTransfer with a File)."""
    payload = base64.b64encode(path.read_bytes()).decode()
    page.evaluate("""([selector, name, mime, payload]) => {
        const bytes = Uint8Array.from(atob(payload), c => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], name, { type: mime }));
        const target = document.querySelector(selector);
        for (const type of ["dragenter", "dragover", "drop"]) {
            target.dispatchEvent(new DragEvent(type, { bubbles: true, cancelable: true, dataTransfer: transfer }));
        }
    }""", [selector, path.name, mime, payload])


def _stat(page: Any, name: str) -> float:
    text = page.inner_text(f"#stat-{name}")
    return float(text) if re.fullmatch(r"[0-9.]+", text) else -1.0


def test_live_page_swaps_the_fake_camera_stream(browser, make_live_server, engine, tmp_path: Path) -> None:
    server = make_live_server()
    page = browser.new_page(viewport={"width": 1400, "height": 950})
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}") if msg.type == "error"
            else None)
    page.goto(server.url + "/")
    page.wait_for_selector("#connection[data-state=connected]", timeout=30_000)
    assert page.inner_text("#source-state") == "No source face"

    # a file that is not an image is refused with a readable message, before any upload
    bad = tmp_path / "notes.txt"
    bad.write_text("not a picture")
    page.set_input_files("#source-input", str(bad))
    page.wait_for_selector("#messages li.error", timeout=10_000)
    assert "is not a JPG, PNG, BMP or WebP image" in page.inner_text("#messages li.error")

    # the source face by drag-and-drop
    _drop_file(page, "#dropzone", FIXTURES / "mpl_grace_hopper.jpg", "image/jpeg")
    page.wait_for_function("document.querySelector('#source-state').textContent === 'Source face ready'",
                           timeout=60_000)
    assert page.is_visible("#source-preview") and page.is_enabled("#clear-source")

    # the camera: frames go out, swapped frames come back
    page.click("#start")
    _wait(page, "window.faceportLive.swapped >= 5", timeout=60)
    swaps_then = _stat(page, "swaps")
    _wait(page, "window.faceportLive.swapped >= 25", timeout=60)
    assert _stat(page, "swaps") > swaps_then > 0, "the swap count on the page does not update"
    assert _stat(page, "fps") > 3.0
    assert 0 < _stat(page, "latency") < 1000
    assert _stat(page, "errors") == 0
    live = page.evaluate("({sent: window.faceportLive.sent, pair: window.faceportLive.lastPair,"
                         " stats: window.faceportLive.serverStats})")
    assert live["stats"]["swap_count"] >= 25 and live["stats"]["fps"] > 0
    assert server.status()["swap_count"] >= 25

    # the face region of what came back differs from the camera frame that was sent; the rest does not
    sent, received = from_data_url(live["pair"]["sent"]), from_data_url(live["pair"]["received"])
    assert sent.shape == received.shape == (360, 640, 3)
    inside, outside = region_change(sent, received, face_box(engine, sent))
    assert inside > 8.0 and outside < 4.0, (inside, outside)
    assert page.evaluate("document.querySelector('#output').src") == live["pair"]["received"] or \
        page.evaluate("window.faceportLive.swapped") > 25  # the shown frame is a swapped one (or a newer one)

    shot = tmp_path / "faceport_live.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    shutil.copyfile(shot, SCREENSHOT_COPY)

    # clear source: the page says so and frames come back with the seed's error form
    page.click("#clear-source")
    page.wait_for_function("document.querySelector('#source-state').textContent === 'No source face'",
                           timeout=10_000)
    page.wait_for_function("document.querySelector('#frame-status').textContent.includes('No source face')",
                           timeout=10_000)
    assert _stat(page, "errors") > 0
    assert not problems, problems


def test_takeover_and_automatic_reconnection(browser, make_live_server, tmp_path: Path) -> None:
    server = make_live_server()
    port = int(server.url.rsplit(":", 1)[1])
    page = browser.new_page()
    page.goto(server.url + "/")
    page.wait_for_selector("#connection[data-state=connected]", timeout=30_000)

    # the server goes away and comes back on the same address: the page reconnects by itself
    make_live_server.stop(server)
    page.wait_for_selector("#connection[data-state=reconnecting]", timeout=30_000)
    make_live_server(port=port)
    page.wait_for_selector("#connection[data-state=connected]", timeout=30_000)

    # another user takes over: the page says why, does not fight back, and offers to reconnect
    other = LiveClient(server.url).connect()
    try:
        page.wait_for_selector("#connection[data-state=disconnected]", timeout=15_000)
        assert "Another user connected" in page.inner_text("#messages")
        assert page.is_visible("#reconnect")
        time.sleep(1.5)
        assert other.connected, "the page must not reconnect on its own after a takeover"
        page.click("#reconnect")
        page.wait_for_selector("#connection[data-state=connected]", timeout=15_000)
        assert other.disconnected.wait(10)
    finally:
        other.close()
