"""The /live page in a real browser: Debian Chromium publishes a fake camera (a real clip as y4m) and a
fake microphone (a real speech WAV with personal data) with WHIP; an aiortc viewer watches with WHEP,
audio and video in one session.

Checks what a viewer gets: faces of the clip blurred (judged with Haar + dlib HOG against the raw
frames, detectors the filter does not use) and the spoken personal items bleeped or silent while the
rest of the speech is heard (judged by Whisper base, tests/speech_judge.py); the page itself shows the
filtered stream and its statistics.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from tests.privacy_judge import ReferenceFaces, box_hidden
from tests.realtime.test_browser import write_y4m
from tests.realtime.test_privastream import _closest, _post_sdp, make_server  # noqa: F401 (fixture)
from tests.realtime.test_privastream_audio import LEAD_S, align_to, speech_with_lead

CLIP = "video/pf_WolfgangLanger_Pexels.mp4"


@pytest.fixture
def camera_frames(data_dir: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(data_dir / CLIP))
    frames = []
    while len(frames) < 240 and (read := capture.read())[0]:  # 10 s; Chromium loops the file
        frames.append(read[1])
    capture.release()
    return frames


@pytest.fixture
def microphone(data_dir: Path, tmp_path: Path) -> Path:
    return speech_with_lead(data_dir, tmp_path)


@pytest.fixture
def chromium(chromium_path: Path, camera_frames: list[np.ndarray], tmp_path: Path, microphone: Path) -> Any:
    from playwright.sync_api import sync_playwright

    camera = write_y4m(camera_frames, tmp_path / "camera.y4m", fps=24)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium_path), headless=True, args=[
            "--no-sandbox", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={camera}",
            f"--use-file-for-fake-audio-capture={microphone}",  # Chromium loops it: a mic never stops
            "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            yield browser
        finally:
            browser.close()


async def _watch(url: str, frames_wanted: int, audio_s: float, timeout: float, *,
                 kinds: tuple[str, ...] = ("video", "audio")) -> tuple[list[np.ndarray], list[np.ndarray], Any]:
    """Watch with aiortc until ``frames_wanted`` video frames and ``audio_s`` of audio came (or ``timeout``):
    (video frames, audio as 16 kHz mono chunks, peer connection). No wall-clock limit is asserted: a busy
    machine only makes it wait longer."""
    from aiortc import RTCConfiguration, RTCPeerConnection

    from faceport.engine.live_speech import to_mono_16k
    from faceport.realtime.media import audio_samples

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
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
    levels: list[np.ndarray] = []
    audio_frames = int(audio_s * 50) if "audio" in kinds else 0

    async def video() -> None:
        while True:
            frames.append((await tracks["video"].recv()).to_ndarray(format="bgr24"))

    async def audio() -> None:
        while True:
            frame = await tracks["audio"].recv()
            levels.append(to_mono_16k(audio_samples(frame), int(frame.sample_rate)))

    tasks = [asyncio.ensure_future(video() if kind == "video" else audio()) for kind in kinds]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (len(frames) < frames_wanted or len(levels) < audio_frames):
        if any(task.done() for task in tasks):
            break
        await asyncio.sleep(0.1)
    for task in tasks:
        if task.done():
            task.result()  # a track that ended early says why
        task.cancel()
    return frames, levels, pc


def test_live_page_publishes_filtered_media(make_server, chromium: Any, camera_frames: list[np.ndarray],  # type: ignore[no-untyped-def]  # noqa: F811
                                           microphone: Path, models_dir: Path, tmp_path: Path) -> None:
    from tests.engine.test_live_speech import hidden_share, write_wav
    from tests.speech_judge import Judge, judge_speech, read_track

    server = make_server()
    page = chromium.new_page()
    page.goto(f"{server.url}/live")
    page.wait_for_function("window.faceportStream && document.getElementById('connection').textContent === "
                           "'connected'", timeout=30_000)
    page.select_option("#audio_mode", "bleep")  # the owner asks for spoken personal data to be bleeped
    page.check("#audio_processing")
    page.click("#publish")
    page.wait_for_function("window.faceportStream.publishing", timeout=60_000)
    room = page.evaluate("window.faceportStream.roomId")
    assert page.evaluate("document.getElementById('share-link').textContent") == f"{server.url}/live?room={room}"

    speech_s = LEAD_S + 29.4 + 5.0 + 2.0  # one loop of the microphone file, the delay, a margin
    frames, heard, _ = _in_thread(_watch_and_close(f"{server.url}/rooms/{room}/whep", 25, speech_s,
                                                   timeout=speech_s + 90))
    assert len(frames) >= 10, f"only {len(frames)} video frames"

    # the page shows the filtered stream and live statistics, audio included
    try:
        page.wait_for_function("window.faceportStream.framesDecoded > 10 && window.faceportStream.updates > 2",
                               timeout=60_000)
    except Exception:
        shown = page.evaluate("JSON.stringify(window.faceportStream) + document.getElementById('messages').textContent")
        pytest.fail(f"the page shows no filtered stream: {shown}")
    last = page.evaluate("window.faceportStream.last")
    assert last["fps"] > 0 and last["detections"]["faces"] >= 0 and "dropped" in last
    assert last["audio"]["mode"] == "bleep" and last["audio"]["delayMs"] == 5000, last["audio"]
    assert page.evaluate("window.faceportStream.errors") == []

    # faces: blurred in what the viewer got, judged against the raw frames by other detectors
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

    # speech: the personal items are not recoverable, the rest is heard
    source, _ = read_track(microphone)
    out = write_wav(tmp_path / "viewer.wav", align_to(source, np.concatenate(heard)))
    verdict = judge_speech(Judge(models_dir / "whisper_base"), microphone, out, "tts_personal_data_en")
    print("browser -> viewer:", verdict.line(), last["audio"])
    assert verdict.missing_windows == [], verdict.heard_in
    assert verdict.leaked == [], verdict.leaked_words
    assert min(hidden_share(out, verdict)) >= 0.9, hidden_share(out, verdict)
    # ... and not all of it is bleeped or muted (over-redaction itself is measured on the simulated clock,
    # tests/engine/test_live_speech.py: 3 of 29 ordinary words kept with the live padding)
    assert verdict.other_kept >= 1, (verdict.other_kept, verdict.other_words, verdict.heard_out)

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


async def _watch_and_close(url: str, frames_wanted: int, audio_s: float, timeout: float
                           ) -> tuple[list[np.ndarray], list[np.ndarray], None]:
    frames, levels, pc = await _watch(url, frames_wanted, audio_s, timeout)
    await pc.close()
    return frames, levels, None
