"""Seed C over a real uvicorn server and real ``websockets`` clients, with real photos and clips."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest
import websockets

from faceport.api.app import create_app
from tests.conftest import FIXTURES, read_bgr
from tests.realtime.conftest import serve_app


def _proctor_server(settings: Any, **overrides: Any) -> Iterator[tuple[str, Any]]:
    """A live main app with room for 150 sockets from one address; yields its ``ws://.../ws`` URL and context."""
    settings = settings.model_copy(update={"proctor_max_connections": 150, "proctor_max_connections_per_ip": 0,
                                           **overrides})
    app = create_app(settings)
    for url in serve_app(app, settings):
        ctx = app.state.context
        ctx.cache.get("ssd_mobilenet_v3_coco")
        yield url.replace("http://", "ws://") + "/ws", ctx


@pytest.fixture
def server(settings, data_dir: Path) -> Iterator[tuple[str, Any]]:  # type: ignore[no-untyped-def]
    yield from _proctor_server(settings)


@pytest.fixture
def server_without_references(settings) -> Iterator[tuple[str, Any]]:  # type: ignore[no-untyped-def]
    """``server`` with FACEPORT_PROCTOR_REQUIRE_REFERENCE=false, for tests about other checks than identity."""
    yield from _proctor_server(settings, proctor_require_reference=False)


@pytest.fixture
def make_server(settings) -> Iterator[Callable[..., tuple[str, Any]]]:  # type: ignore[no-untyped-def]
    """Servers with some settings overridden; each returns its ``ws://.../ws`` URL and its context."""
    runners: list[Iterator[str]] = []

    def make(**overrides: Any) -> tuple[str, Any]:
        custom = settings.model_copy(update=overrides)
        app = create_app(custom)
        runner = serve_app(app, custom)
        url = next(runner)
        runners.append(runner)
        return url.replace("http://", "ws://") + "/ws", app.state.context

    yield make
    for runner in runners:
        next(runner, None)


def b64(image: np.ndarray) -> str:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return base64.b64encode(buf.tobytes()).decode()


async def exchange(ws: Any, user: str, image: str) -> dict[str, Any]:
    await ws.send(json.dumps({"user_name": user, "image": image}))
    return json.loads(await asyncio.wait_for(ws.recv(), 60))


def clip(path: Path, step: int, count: int) -> list[np.ndarray]:
    frames = []
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i % step == 0:
                frames.append(frame.to_ndarray(format="bgr24"))
            if len(frames) >= count:
                break
    return frames


def enrol(ctx: Any, user: str, image: np.ndarray | None) -> None:
    ctx.proctor.create_client(user)
    if image is not None:
        ctx.proctor.add_face(user, image)


def test_identity_phone_and_no_face(server, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    url, ctx = server
    enrol(ctx, "obama", read_bgr(data_dir / "identity/obama/fr_obama.jpg"))
    enrol(ctx, "biden", read_bgr(data_dir / "identity/biden/fr_biden.jpg"))
    phone = read_bgr(data_dir / "synthetic/synth_phone_composite_single_face.jpg")
    enrol(ctx, "phone_user", phone)  # the person in the composite is the reference
    enrol(ctx, "no_reference", None)

    async def scenario() -> None:
        async with websockets.connect(url, max_size=None) as ws:
            reply = await exchange(ws, "obama", b64(read_bgr(data_dir / "identity/obama/fr_obama2.jpg")))
            assert reply["action"] == "NO_ACTION" and reply["reason"] == "EMPTY_REASON"
            assert reply["actual_username"] == "obama" and reply["send_time"] and reply["finish_time"]
            biden = b64(read_bgr(data_dir / "identity/biden/fr_biden2.jpg"))
            first = await exchange(ws, "obama", biden)  # debounced: one bad frame does not sign out
            assert first["action"] == "NO_ACTION"
            second = await exchange(ws, "obama", biden)
            assert (second["action"], second["reason"], second["actual_username"]) == (
                "ACTION_SIGN_OUT", "REASON_WRONG_USER", "biden")
            empty = b64(read_bgr(data_dir / "negatives/sk_coffee.png"))
            await exchange(ws, "obama", empty)
            reply = await exchange(ws, "obama", empty)
            assert (reply["action"], reply["reason"]) == ("ACTION_LOCK_SCREEN", "REASON_NO_FACE")
            await exchange(ws, "phone_user", b64(phone))
            reply = await exchange(ws, "phone_user", b64(phone))
            assert (reply["action"], reply["reason"]) == ("ACTION_SIGN_OUT", "REASON_PHONE_DETECTION")
            reply = await exchange(ws, "no_reference", b64(read_bgr(data_dir / "identity/obama/fr_obama2.jpg")))
            assert (reply["action"], reply["reason"], reply["message"]) == (
                "ACTION_ERROR", "REASON_CLIENT_NOT_AVAILABLE", "no reference face")

    asyncio.run(scenario())
    from faceport.store import proctor as repo

    with ctx.store.session() as session:
        evidence, total = repo.list_evidence(session=session)
    assert total == 3  # only frames that triggered an action
    methods = {e.reason: e.details["decided_by"] for e in evidence}
    assert methods["REASON_WRONG_USER"] == "dlib_resnet_l2"
    assert methods["REASON_PHONE_DETECTION"].startswith("ssd_mobilenet")
    assert not any(p.suffix in (".jpg", ".png") for p in ctx.settings.home.rglob("*"))  # nothing on disk


def _replayed_photo(path: Path, n: int) -> list[np.ndarray]:
    img = read_bgr(path)
    h, w = img.shape[:2]
    rng = np.random.default_rng(7)
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    out = []
    for _ in range(n):
        dst = (src + rng.uniform(-0.06, 0.06, (4, 2)) * [w, h]).astype(np.float32)
        out.append(cv2.warpPerspective(img, cv2.getPerspectiveTransform(src, dst), (w, h),
                                       borderMode=cv2.BORDER_REPLICATE))
    return out


@pytest.mark.parametrize("source", ["photo_warped", "photo_resent", "clip_pf_single_face", "clip_carphone"])
def test_spoof_replayed_photo_vs_real_clip(server_without_references, data_dir: Path,  # type: ignore[no-untyped-def]
                                           source: str) -> None:
    url, ctx = server_without_references
    enrol(ctx, "candidate", None)
    if source == "photo_warped":
        frames = _replayed_photo(FIXTURES / "mpl_grace_hopper.jpg", 8)
    elif source == "photo_resent":
        frames = [read_bgr(data_dir / "faces_misc/pf_single_face.jpg")] * 8
    elif source == "clip_pf_single_face":
        frames = clip(data_dir / "video/pf_single_face.mp4", 7, 8)
    else:
        frames = clip(data_dir / "video/skv_carphone_pristine.mp4", 10, 8)

    async def scenario() -> list[dict[str, Any]]:
        async with websockets.connect(url, max_size=None) as ws:
            return [await exchange(ws, "candidate", b64(f)) for f in frames]

    replies = asyncio.run(scenario())
    reasons = [r["reason"] for r in replies]
    if source.startswith("photo"):
        assert replies[-1]["action"] == "ACTION_SIGN_OUT" and "REASON_SPOOF_IMAGE" in reasons, reasons
    else:
        assert "REASON_SPOOF_IMAGE" not in reasons, reasons


def test_pause_resume_block_mid_connection(server, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    url, ctx = server
    face = read_bgr(data_dir / "identity/obama/fr_obama.jpg")
    enrol(ctx, "obama", face)
    frame = b64(read_bgr(data_dir / "identity/obama/fr_obama2.jpg"))

    async def scenario() -> None:
        async with websockets.connect(url, max_size=None) as ws:
            assert (await exchange(ws, "obama", frame))["action"] == "NO_ACTION"
            ctx.proctor.set_state("obama", "paused")
            reply = await exchange(ws, "obama", frame)
            assert (reply["action"], reply["reason"]) == ("ACTION_WARNING", "REASON_PAUSED_CLIENT")
            ctx.proctor.set_state("obama", "active")
            assert (await exchange(ws, "obama", frame))["action"] == "NO_ACTION"
            await asyncio.get_running_loop().run_in_executor(None, ctx.proctor.set_state, "obama", "blocked")
            reply = json.loads(await asyncio.wait_for(ws.recv(), 10))  # pushed at once, without a frame
            assert (reply["action"], reply["reason"]) == ("ACTION_ERROR", "REASON_BLOCKED_CLIENT")
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == 1008
        async with websockets.connect(url, max_size=None) as ws:
            reply = await exchange(ws, "ghost", frame)
            assert (reply["action"], reply["reason"]) == ("ACTION_ERROR", "REASON_CLIENT_NOT_AVAILABLE")
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == 4001

    asyncio.run(scenario())


def test_bad_messages_keep_the_connection_usable(server, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    url, ctx = server
    enrol(ctx, "obama", read_bgr(data_dir / "identity/obama/fr_obama.jpg"))
    good = b64(read_bgr(data_dir / "identity/obama/fr_obama2.jpg"))

    async def scenario() -> None:
        async with websockets.connect(url, max_size=None, write_limit=2**26) as ws:
            for bad, words in (("%%% not base64 %%%", ""), (base64.b64encode(b"plain text, not an image").decode(), ""),
                               ("A" * 50_000_000, "limit")):
                reply = await exchange(ws, "obama", bad)
                assert (reply["action"], reply["reason"]) == ("ACTION_ERROR", "INVALID_IMAGE_FORMAT")
                assert reply["message"] and words in reply["message"]
            for raw, message in (("{not json", "not JSON"), (b"\xff\xfe binary, not UTF-8", "not JSON"),
                                 ("[1, 2]", "JSON object"), ("null", "JSON object")):
                await ws.send(raw)
                reply = json.loads(await ws.recv())
                assert reply["reason"] == "INVALID_IMAGE_FORMAT" and message in reply["message"], (raw, reply)
            await ws.send(json.dumps({"user_name": "obama", "image": good}).encode())  # UTF-8 JSON in a binary frame
            assert json.loads(await ws.recv())["action"] == "NO_ACTION"
            assert (await exchange(ws, "obama", good))["action"] == "NO_ACTION"

    asyncio.run(scenario())


def test_the_151st_connection_is_refused(server) -> None:  # type: ignore[no-untyped-def]
    url, _ = server

    async def scenario() -> None:
        sockets = [await websockets.connect(url) for _ in range(150)]
        try:
            extra = await websockets.connect(url)
            message = json.loads(await asyncio.wait_for(extra.recv(), 10))
            assert message == {"error": "CONNECTION_REFUSED", "message": "Server is at full capacity", "code": 4002}
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(extra.recv(), 10)
            assert extra.close_code == 4002
        finally:
            await asyncio.gather(*(s.close() for s in sockets))

    asyncio.run(scenario())


@pytest.mark.parametrize("token", ["none", "the client's", "a wrong one"])
def test_python_client_on_a_video(server_without_references, data_dir: Path,  # type: ignore[no-untyped-def]
                                   token: str) -> None:
    from faceport.clients.proctor import FaceRecognitionClient

    url, ctx = server_without_references
    enrol(ctx, "carphone", None)
    sent = None
    if token != "none":
        issued = ctx.proctor.set_token("carphone")[1]
        sent = issued if token == "the client's" else "not-the-token-0000"
    replies = asyncio.run(FaceRecognitionClient(url, "carphone", sent).run(
        str(data_dir / "video/skv_carphone_pristine.mp4"), interval=0.0, limit=3))
    if token == "a wrong one":
        assert replies == [{"error": "AUTHENTICATION_FAILED", "message": "Wrong or missing client token", "code": 4001}]
    else:
        assert [r["action"] for r in replies] == ["NO_ACTION"] * 3


async def _closed_with(ws: Any) -> tuple[dict[str, Any], int | None]:
    """The last message before the server closed ``ws``, and the close code."""
    message = json.loads(await asyncio.wait_for(ws.recv(), 30))
    with pytest.raises(websockets.ConnectionClosed):
        await asyncio.wait_for(ws.recv(), 30)
    return message, ws.close_code


def test_idle_socket_is_closed_after_the_handshake_timeout_while_others_are_served(make_server,
                                                                                   data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    url, ctx = make_server(proctor_handshake_timeout=3.0)
    enrol(ctx, "obama", read_bgr(data_dir / "identity/obama/fr_obama.jpg"))
    good = b64(read_bgr(data_dir / "identity/obama/fr_obama2.jpg"))

    async def scenario() -> None:
        async with websockets.connect(url, max_size=None) as served:
            # its first message goes out at once: the connection is authenticated when the server reads it
            assert (await exchange(served, "obama", good))["action"] == "NO_ACTION"
            async with websockets.connect(url) as idle, websockets.connect(url) as chatty:
                await chatty.send("{not json")  # answered, but not a valid first message
                assert json.loads(await chatty.recv())["reason"] == "INVALID_IMAGE_FORMAT"
                for ws in (idle, chatty):
                    message, code = await _closed_with(ws)
                    assert message == {"error": "AUTHENTICATION_FAILED", "code": 4001,
                                       "message": "No valid first message within 3 s"}
                    assert code == 4001
            assert (await exchange(served, "obama", good))["action"] == "NO_ACTION"  # past the timeout: still served

    asyncio.run(scenario())


def test_connections_per_address_are_capped_and_a_freed_slot_is_reused(make_server) -> None:  # type: ignore[no-untyped-def]
    url, _ = make_server(proctor_max_connections_per_ip=3)

    async def usable(ws: Any) -> bool:
        await ws.send("[]")
        return json.loads(await asyncio.wait_for(ws.recv(), 10))["reason"] == "INVALID_IMAGE_FORMAT"

    async def scenario() -> None:
        sockets = [await websockets.connect(url) for _ in range(3)]
        try:
            assert all([await usable(ws) for ws in sockets])
            extra = await websockets.connect(url)
            message, code = await _closed_with(extra)
            assert message == {"error": "CONNECTION_REFUSED", "message": "Too many connections from this address",
                               "code": 4002}
            assert code == 4002
            await sockets.pop().close()
            await asyncio.sleep(0.2)  # the server notices the close
            sockets.append(await websockets.connect(url))
            assert await usable(sockets[-1])
        finally:
            await asyncio.gather(*(s.close() for s in sockets))

    asyncio.run(scenario())


# (require_token setting, the client's token set in the admin API, where a token is sent, what is sent, served)
TOKEN_CASES = {
    "off by default, client without token": (None, False, None, None, True),
    "off, client with token, none sent": (False, True, None, None, False),
    "off, client with token, wrong one in the message": (False, True, "message", "wrong-token-000000", False),
    "off, client with token, right one in the message": (False, True, "message", "RIGHT", True),
    "off, client with token, right one in ?token=": (False, True, "query", "RIGHT", True),
    "on, client without token": (True, False, "message", "any-token-0000000", False),
    "on, client with token, none sent": (True, True, None, None, False),
    "on, client with token, wrong one in ?token=": (True, True, "query", "wrong-token-000000", False),
    "on, client with token, right one in the message": (True, True, "message", "RIGHT", True),
}


@pytest.mark.parametrize("case", list(TOKEN_CASES))
def test_client_token(make_server, case: str) -> None:  # type: ignore[no-untyped-def]
    require, has_token, where, sent, served = TOKEN_CASES[case]
    url, ctx = make_server(**({} if require is None else {"proctor_require_token": require}))
    assert ctx.settings.proctor_require_token is bool(require)
    enrol(ctx, "student", None)
    ctx.proctor.set_state("student", "paused")  # a paused client is answered without running the checks
    token = ctx.proctor.set_token("student")[1] if has_token else None
    if sent == "RIGHT":
        sent = token
    target = f"{url}?token={sent}" if where == "query" else url

    async def scenario() -> None:
        async with websockets.connect(target) as ws:
            message: dict[str, Any] = {"user_name": "student", "image": "x"}
            if where == "message":
                message["token"] = sent
            await ws.send(json.dumps(message))
            if served:
                reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
                assert (reply["action"], reply["reason"]) == ("ACTION_WARNING", "REASON_PAUSED_CLIENT")
                await ws.send(json.dumps({"user_name": "student", "image": "x"}))  # proven once per connection
                assert json.loads(await asyncio.wait_for(ws.recv(), 10))["reason"] == "REASON_PAUSED_CLIENT"
            else:
                reply, code = await _closed_with(ws)
                assert reply == {"error": "AUTHENTICATION_FAILED", "message": "Wrong or missing client token",
                                 "code": 4001}
                assert code == 4001 and (token is None or token not in json.dumps(reply))

    asyncio.run(scenario())


BAD_USER_NAMES = {
    "path": "a/b/../c",
    "one megabyte": "x" * 1_000_000,
    "markup": "<script>alert(1)</script>",
    "space": "john doe",
    "non-ASCII": "jürgen",
    "empty": "",
    "number": 42,
    "missing": None,
}


@pytest.mark.parametrize("name", [*BAD_USER_NAMES, "registered-looking but unknown"])
def test_bad_or_unknown_user_name_is_refused_and_never_echoed(make_server, name: str) -> None:  # type: ignore[no-untyped-def]
    url, _ = make_server()
    user = BAD_USER_NAMES.get(name, "ghost.user@example.org")

    async def scenario() -> None:
        async with websockets.connect(url, max_size=None, write_limit=2**22) as ws:
            message = {"image": "x"} if user is None else {"user_name": user, "image": "x"}
            await ws.send(json.dumps(message))
            raw = await asyncio.wait_for(ws.recv(), 30)
            reply = json.loads(raw)
            assert (reply["action"], reply["reason"]) == ("ACTION_ERROR", "REASON_CLIENT_NOT_AVAILABLE")
            if name in BAD_USER_NAMES:
                assert reply["actual_username"] == "" and "A-Z a-z 0-9" in reply["message"]
                assert len(raw) < 1000 and (not isinstance(user, str) or not user or user not in raw)
            else:
                assert reply["actual_username"] == user  # a well-formed name is shown as sent
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == 4001

    asyncio.run(scenario())


# Overload: one "latest frame" slot per connection and a global bound on decisions in flight ------------------------
@pytest.fixture
def slow_server(settings) -> Iterator[tuple[str, Any, Any]]:  # type: ignore[no-untyped-def]
    """A deliberately slow server: one worker thread, references not required (these tests are about scheduling);
    yields its URL, context and ``ProctorHub``."""
    custom = settings.model_copy(update={"thread_pool_size": 1, "proctor_max_connections_per_ip": 0,
                                         "proctor_require_reference": False})
    app = create_app(custom)
    for url in serve_app(app, custom):
        yield url.replace("http://", "ws://") + "/ws", app.state.context, app.state.proctor_hub


async def _reply(ws: Any) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), 60))


def _frame(user: str, image: str, timestamp: int) -> str:
    return json.dumps({"user_name": user, "image": image, "timestamp": timestamp})


def test_burst_on_one_connection_decides_the_first_and_the_newest_frame(slow_server, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """12 distinct clip frames at once while the only worker is busy: 10 superseded replies at once, 2 decisions."""
    url, ctx, hub = slow_server
    enrol(ctx, "alice", read_bgr(data_dir / "faces_misc/pf_single_face.jpg"))
    frames = [b64(f) for f in clip(data_dir / "video/pf_single_face.mp4", 3, 12)]
    gate = threading.Event()

    async def scenario() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        async with websockets.connect(url, max_size=None) as ws:
            blocker = ctx.executor.submit(gate.wait)  # the pool's only thread is busy until the gate opens
            try:
                for i, frame in enumerate(frames):
                    await ws.send(_frame("alice", frame, i))
                await ws.send(json.dumps({"user_name": "alice", "timestamp": "no image"}))  # answered, not queued
                early = [await _reply(ws) for _ in range(len(frames) - 1)]  # come while nothing can be decided
            finally:
                gate.set()
            blocker.result()
            return early, [await _reply(ws) for _ in range(2)]

    early, late = asyncio.run(scenario())
    invalid = early.pop()
    assert (invalid["reason"], invalid["timestamp"]) == ("INVALID_IMAGE_FORMAT", "no image")
    assert [r["timestamp"] for r in early] == list(range(1, len(frames) - 1))
    for reply in early:
        assert (reply["action"], reply["reason"], reply["superseded"]) == ("NO_ACTION", "EMPTY_REASON", True)
        assert reply["actual_username"] == "alice" and reply["send_time"] and reply["finish_time"]
    assert sorted(r["timestamp"] for r in late) == [0, len(frames) - 1]  # the first (in flight) and the last sent
    assert not any("superseded" in r for r in late)
    assert all(r["action"] != "ACTION_ERROR" for r in late), late
    assert hub.decided == 2 and hub.superseded == len(frames) - 2
    assert hub.peak_in_flight == 1 and hub.in_flight == 0


def test_many_connections_share_a_bounded_number_of_decisions(slow_server, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """4 connections x 4 frames with one worker: each keeps one waiting frame, one frame in flight in all."""
    url, ctx, hub = slow_server
    users = [f"student{i}" for i in range(4)]
    for user in users:
        enrol(ctx, user, None)
    frames = [b64(f) for f in clip(data_dir / "video/skv_carphone_pristine.mp4", 5, 16)]
    gate = threading.Event()
    per_connection = 4

    async def scenario() -> list[list[dict[str, Any]]]:
        sockets = [await websockets.connect(url, max_size=None) for _ in users]
        try:
            blocker = ctx.executor.submit(gate.wait)
            try:
                for n, (ws, user) in enumerate(zip(sockets, users, strict=True)):
                    for i in range(per_connection):
                        await ws.send(_frame(user, frames[n * per_connection + i], i))

                async def all_read() -> None:  # one frame in flight, one waiting per connection, the rest answered
                    while hub.superseded < len(users) * (per_connection - 1) - 1:
                        await asyncio.sleep(0.02)

                await asyncio.wait_for(all_read(), 60)
            finally:
                gate.set()
            blocker.result()
            return [[await _reply(ws) for _ in range(per_connection)] for ws in sockets]
        finally:
            for ws in sockets:
                await ws.close()

    replies = asyncio.run(scenario())
    decided = [[r["timestamp"] for r in conn if not r.get("superseded")] for conn in replies]
    assert all(per_connection - 1 in d for d in decided), decided  # every connection's newest frame is decided
    assert sorted(len(d) for d in decided) == [1, 1, 1, 2], decided  # plus the one frame that was in flight
    assert hub.decided == len(users) + 1 and hub.peak_in_flight == 1


@pytest.mark.parametrize(("decode_side", "shape"), [(640, (540, 960, 3)), (0, (1080, 1920, 3))])
def test_large_jpeg_frame_is_decoded_reduced_and_still_decided(make_server, data_dir: Path, decode_side: int,
                                                              shape: tuple[int, int, int]) -> None:  # type: ignore[no-untyped-def]
    url, ctx = make_server(proctor_decode_side=decode_side)
    enrol(ctx, "obama", read_bgr(data_dir / "identity/obama/fr_obama.jpg"))
    big = b64(cv2.resize(read_bgr(data_dir / "identity/obama/fr_obama2.jpg"), (1920, 1080)))
    assert ctx.proctor.decode(big).shape == shape

    async def scenario() -> dict[str, Any]:
        async with websockets.connect(url, max_size=None) as ws:
            return await exchange(ws, "obama", big)

    reply = asyncio.run(scenario())
    assert (reply["action"], reply["reason"], reply["actual_username"]) == ("NO_ACTION", "EMPTY_REASON", "obama")


def test_timed_out_frames_keep_their_worker_and_do_not_pile_up(settings, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """A frame past the processing timeout is answered PROCESSING_TIMEOUT but holds its permit until its thread ends,
    so frames sent meanwhile wait in the one slot (superseded) instead of queueing more work on the pool."""
    custom = settings.model_copy(update={"thread_pool_size": 1, "proctor_processing_timeout": 0.05,
                                         "proctor_require_reference": False})
    app = create_app(custom)
    runner = serve_app(app, custom)
    url = next(runner).replace("http://", "ws://") + "/ws"
    ctx, hub = app.state.context, app.state.proctor_hub
    enrol(ctx, "bob", None)
    frames = [b64(f) for f in clip(data_dir / "video/pf_single_face.mp4", 6, 5)]
    gate = threading.Event()

    async def scenario() -> list[dict[str, Any]]:
        async with websockets.connect(url, max_size=None) as ws:
            blocker = ctx.executor.submit(gate.wait)
            try:
                await ws.send(_frame("bob", frames[0], 0))
                replies = [await _reply(ws)]  # frame 0 is stuck behind the blocker: it times out
                for i in range(1, len(frames)):
                    await ws.send(_frame("bob", frames[i], i))
                replies += [await _reply(ws) for _ in range(len(frames) - 2)]  # 1..3 superseded by their successor
            finally:
                gate.set()
            blocker.result()
            replies.append(await _reply(ws))  # frame 4, run only after frame 0's thread ended
            while hub.in_flight:  # frame 4 may have timed out too: let its thread end
                await asyncio.sleep(0.02)
            return replies

    try:
        replies = asyncio.run(scenario())
    finally:
        next(runner, None)
    assert (replies[0]["timestamp"], replies[0]["reason"]) == (0, "PROCESSING_TIMEOUT")
    assert [(r["timestamp"], r.get("superseded")) for r in replies[1:-1]] == [(i, True) for i in range(1, 4)]
    assert replies[-1]["timestamp"] == 4 and not replies[-1].get("superseded")
    assert hub.decided == 2 and hub.peak_in_flight == 1  # frames 0 and 4 ran; 1-3 never reached the pool
