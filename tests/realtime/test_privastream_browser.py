"""The /live page in a real browser: Debian Chromium publishes a fake camera (a real clip as y4m) and a
fake microphone (a real speech WAV) with WHIP; an aiortc viewer watches with WHEP.

Checks what a viewer gets: faces of the clip blurred (judged with Haar + dlib HOG against the raw
frames, detectors the filter does not use), speech passed through while audio processing is off and
silence once the owner turns it on from the page; the page itself shows the filtered stream and stats.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from tests.privacy_judge import ReferenceFaces, box_hidden
from tests.realtime.test_browser import write_y4m
from tests.realtime.test_privastream import _closest, _post_sdp, make_server  # noqa: F401 (fixture)

CLIP = "video/pf_WolfgangLanger_Pexels.mp4"
SPEECH = "audio/tts_personal_data_en_16k.wav"


@pytest.fixture
def camera_frames(data_dir: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(data_dir / CLIP))
    frames = []
    while len(frames) < 240 and (read := capture.read())[0]:  # 10 s; Chromium loops the file
        frames.append(read[1])
    capture.release()
    return frames


@pytest.fixture
def chromium(chromium_path: Path, camera_frames: list[np.ndarray], tmp_path: Path, data_dir: Path) -> Any:
    from playwright.sync_api import sync_playwright

    camera = write_y4m(camera_frames, tmp_path / "camera.y4m", fps=24)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium_path), headless=True, args=[
            "--no-sandbox", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={camera}",
            f"--use-file-for-fake-audio-capture={data_dir / SPEECH}",
            "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            yield browser
        finally:
            browser.close()


async def _watch(url: str, frames_wanted: int, timeout: float = 60.0, *,
                 kinds: tuple[str, ...] = ("video",)) -> tuple[list[np.ndarray], list[float], Any]:
    """Watch with aiortc until ``frames_wanted`` video frames and 3 s of audio came (or ``timeout``):
    (video frames, audio RMS per 20 ms frame, peer connection). No wall-clock limit is asserted: a busy
    machine only makes it wait longer."""
    from aiortc import RTCConfiguration, RTCPeerConnection

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    # one kind per connection: an aiortc viewer asking for both in one connection gets its video stalled
    # behind audio here (Chromium viewers do not; see README "Live privacy filter")
    for kind in kinds:
        pc.addTransceiver(kind, direction="recvonly")
    tracks: dict[str, Any] = {}
    pc.on("track", lambda track: tracks.setdefault(track.kind, track))
    status, _, _, body = await _post_sdp(url, pc)
    assert status == 201, body
    for _ in range(300):
        if len(tracks) == len(kinds):
            break
        await asyncio.sleep(0.1)
    assert set(tracks) == set(kinds), f"tracks received: {sorted(tracks)}"
    frames: list[np.ndarray] = []
    levels: list[float] = []

    async def video() -> None:
        while True:
            frames.append((await tracks["video"].recv()).to_ndarray(format="bgr24"))

    async def audio() -> None:
        while True:
            samples = (await tracks["audio"].recv()).to_ndarray().astype(np.float32)
            levels.append(float(np.sqrt((samples ** 2).mean())))

    tasks = [asyncio.ensure_future(video() if kind == "video" else audio()) for kind in kinds]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (len(frames) < frames_wanted if "video" in kinds else len(levels) < 150):
        if any(task.done() for task in tasks):
            break
        await asyncio.sleep(0.1)
    for task in tasks:
        if task.done():
            task.result()  # a track that ended early says why
        task.cancel()
    return frames, levels, pc


@pytest.mark.skipif(not os.environ.get("FACEPORT_TEST_LIVE_BROWSER"), reason=(
    "flaky on the shared 2-core machine: the aiortc viewer in the test process sometimes gets only a few "
    "video frames of a Chromium-published stream (a Chromium viewer of the same room decodes ~20 fps); "
    "set FACEPORT_TEST_LIVE_BROWSER=1 to run it"))
def test_live_page_publishes_filtered_media(make_server, chromium: Any, camera_frames: list[np.ndarray]) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    server = make_server()
    page = chromium.new_page()
    page.goto(f"{server.url}/live")
    page.wait_for_function("window.faceportStream && document.getElementById('connection').textContent === "
                           "'connected'", timeout=30_000)
    page.click("#publish")
    page.wait_for_function("window.faceportStream.publishing", timeout=60_000)
    room = page.evaluate("window.faceportStream.roomId")
    assert page.evaluate("document.getElementById('share-link').textContent") == f"{server.url}/live?room={room}"

    frames, _, _ = _in_thread(_watch_and_close(f"{server.url}/rooms/{room}/whep", 25))
    assert len(frames) >= 10, f"only {len(frames)} video frames"
    _, levels, _ = _in_thread(_watch_and_close(f"{server.url}/rooms/{room}/whep", 0, ("audio",)))
    speech = levels[len(levels) // 4:]
    assert max(speech) > 100, "audio processing off: the microphone's speech passes"

    page.check("#audio_processing")  # the owner turns audio processing on from the page: muted from now on
    page.wait_for_function("window.faceportStream.last && window.faceportStream.last.audio === 'muted'",
                           timeout=30_000)
    _, muted, _ = _in_thread(_watch_and_close(f"{server.url}/rooms/{room}/whep", 0, ("audio",)))
    assert muted and max(muted[len(muted) // 4:]) < 5.0, "audio processing on: nothing of the speech is sent"

    # the page shows the filtered stream and live statistics
    try:
        page.wait_for_function("window.faceportStream.framesDecoded > 10 && window.faceportStream.updates > 2",
                               timeout=60_000)
    except Exception:
        shown = page.evaluate("JSON.stringify(window.faceportStream) + document.getElementById('messages').textContent")
        pytest.fail(f"the page shows no filtered stream: {shown}")
    last = page.evaluate("window.faceportStream.last")
    assert last["fps"] > 0 and last["detections"]["faces"] >= 0 and "dropped" in last
    assert page.evaluate("window.faceportStream.errors") == []

    reference = ReferenceFaces()
    judged = hidden = 0
    for got in frames[5::4]:
        if got.shape[:2] != camera_frames[0].shape[:2]:
            got = cv2.resize(got, camera_frames[0].shape[1::-1])
        raw = camera_frames[_closest(camera_frames, got)]
        for box in reference(raw):
            judged += 1
            hidden += box_hidden(raw, got, box)[0]
    assert judged >= 3, f"the judge found only {judged} faces"
    assert hidden / judged >= 0.9, f"{hidden}/{judged} reference faces hidden"

    page.click("#stop")  # the publisher leaves: the room hears it
    page.wait_for_function("!window.faceportStream.publishing", timeout=30_000)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and page.evaluate("window.faceportStream.ended") is not True:
        time.sleep(0.2)
    assert page.evaluate("window.faceportStream.ended") is True


def _in_thread(coro: Any) -> Any:
    """Run a coroutine on its own loop in a thread (Playwright's sync API already runs a loop in this one)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _watch_and_close(url: str, frames_wanted: int, kinds: tuple[str, ...] = ("video",)
                           ) -> tuple[list[np.ndarray], list[float], None]:
    frames, levels, pc = await _watch(url, frames_wanted, kinds=kinds)
    await pc.close()
    return frames, levels, None
