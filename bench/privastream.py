"""Seed E live figures: end-to-end latency (publisher frame -> viewer frame), sustained fps, CPU per stream.

Usage: python bench/privastream.py [--data ../shared/data] [--seconds 20] [--runs 3] [--fps 30]

The privacy app runs as its own process (uvicorn, port 18650) so that its CPU time is its own. An
aiortc publisher in this process sends a real clip letterboxed to 640x480 at ``--fps`` through WHIP;
an aiortc viewer watches through WHEP. Each published frame carries its number in a 16-bit block code
in the bottom-left corner (32x32 px squares, far from the face; VP8 keeps them); the viewer reads it back,
so latency is viewer-receive time minus publisher-send time of the same frame (one clock, one process).
Configs: ``transport`` (nothing hidden: WebRTC decode + re-encode only, the peer), ``faces``, ``all``
(faces, plates, text). Median of ``--runs`` per config, alternated. CPU per stream: the server process's
CPU seconds over the window, in cores. The machine's load average is printed beside the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import os
import queue
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from engine import machine, to_640x480

CLIP = "video/pf_WolfgangLanger_Pexels.mp4"
PORT = 18650
BITS = 16
SQUARE = 32
CONFIGS = {
    "transport": {"face_blur": False, "plate_blur": False, "text_blur": False, "audio_processing": False},
    "faces": {"face_blur": True, "plate_blur": False, "text_blur": False, "audio_processing": False},
    "all": {"face_blur": True, "plate_blur": True, "text_blur": True, "audio_processing": True},
}


def stamp(frame: np.ndarray, number: int) -> np.ndarray:
    out = frame.copy()
    h = out.shape[0]
    for bit in range(BITS):
        value = 255 if (number >> bit) & 1 else 0
        out[h - SQUARE:h, bit * SQUARE:(bit + 1) * SQUARE] = value
    return out


def read_stamp(frame: np.ndarray) -> int:
    h = frame.shape[0]
    number = 0
    for bit in range(BITS):
        block = frame[h - SQUARE + 8:h - 8, bit * SQUARE + 8:(bit + 1) * SQUARE - 8]
        if float(block.mean()) > 127:
            number |= 1 << bit
    return number


def make_track(frames: list[np.ndarray], fps: float, sent: dict[int, float]):  # type: ignore[no-untyped-def]
    from aiortc import VideoStreamTrack
    from av import VideoFrame

    class ClipTrack(VideoStreamTrack):
        def __init__(self) -> None:
            super().__init__()
            self.n = 0
            self.start: float | None = None

        async def recv(self) -> VideoFrame:
            if self.start is None:
                self.start = time.monotonic()
            due = self.start + self.n / fps
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            number = self.n % (1 << BITS)
            frame = VideoFrame.from_ndarray(stamp(frames[self.n % len(frames)], number), format="bgr24")
            frame.pts = int(self.n * 90000 / fps)
            frame.time_base = fractions.Fraction(1, 90000)
            sent[number] = time.monotonic()
            self.n += 1
            return frame

    return ClipTrack()


async def post(url: str, pc) -> None:  # type: ignore[no-untyped-def]
    from aiortc import RTCSessionDescription

    await pc.setLocalDescription(await pc.createOffer())
    async with httpx.AsyncClient(timeout=120) as http:
        response = await http.post(url, content=pc.localDescription.sdp.encode(),
                                   headers={"Content-Type": "application/sdp"})
    response.raise_for_status()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=response.text, type="answer"))


async def one_run(base: str, frames: list[np.ndarray], config: dict[str, bool], seconds: float, fps: float,
                  server: psutil.Process) -> dict[str, float]:
    import socketio
    from aiortc import RTCConfiguration, RTCPeerConnection

    sio = socketio.Client(reconnection=False)  # the threaded client: the asyncio one needs aiohttp
    created: queue.Queue[dict] = queue.Queue()
    updates: list[dict] = []
    sio.on("room_created", created.put)
    sio.on("processing_update", updates.append)
    await asyncio.to_thread(sio.connect, base, transports=["websocket"])
    sio.emit("create_room")
    room = await asyncio.to_thread(created.get, timeout=30)
    sio.emit("start_processing", {"roomId": room["roomId"], "config": config})
    sent: dict[int, float] = {}
    publisher = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    publisher.addTrack(make_track(frames, fps, sent))
    await post(f"{room['mediasoupUrl']}/whip", publisher)
    viewer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    viewer.addTransceiver("video", direction="recvonly")
    tracks: asyncio.Queue = asyncio.Queue()
    viewer.on("track", tracks.put_nowait)
    await post(f"{room['mediasoupUrl']}/whep", viewer)
    track = await asyncio.wait_for(tracks.get(), 60)
    for _ in range(30):  # warm-up: model load, encoder start, first keyframe
        await asyncio.wait_for(track.recv(), 60)
    latencies: list[float] = []
    received = 0
    cpu0 = sum(server.cpu_times()[:2])
    t0 = time.monotonic()
    first_update = len(updates)
    while time.monotonic() - t0 < seconds:
        frame = await asyncio.wait_for(track.recv(), 60)
        now = time.monotonic()
        received += 1
        number = read_stamp(frame.to_ndarray(format="bgr24"))
        if number in sent:
            latencies.append((now - sent[number]) * 1000.0)
    wall = time.monotonic() - t0
    cpu = (sum(server.cpu_times()[:2]) - cpu0) / wall
    window = updates[first_update:]
    dropped = (window[-1]["dropped"] - window[0]["dropped"]) if len(window) > 1 else 0
    frames_in = (window[-1]["framesIn"] - window[0]["framesIn"]) if len(window) > 1 else 0
    for pc in (viewer, publisher):
        await pc.close()
    await asyncio.to_thread(sio.disconnect)
    await asyncio.sleep(1.0)
    latencies.sort()
    return {"fps": received / wall, "latency_ms": statistics.median(latencies) if latencies else float("nan"),
            "latency_p95_ms": latencies[int(0.95 * (len(latencies) - 1))] if latencies else float("nan"),
            "cpu_cores": cpu, "dropped_share": dropped / frames_in if frames_in else 0.0,
            "filter_ms": statistics.median([u["processingMs"] for u in window if u.get("processingMs")] or [0.0])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--configs", default=",".join(CONFIGS))
    args = parser.parse_args()

    capture = cv2.VideoCapture(str(args.data / CLIP))
    frames = []
    while len(frames) < 300 and (read := capture.read())[0]:
        frames.append(to_640x480(read[1]))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "FACEPORT_REDIS_URL": "",
           "FACEPORT_MODELS_DIR": os.environ.get("FACEPORT_MODELS_DIR",
                                                 str(Path.home() / ".cache" / "faceport" / "models"))}
    home = Path(os.environ.get("TMPDIR", "/tmp")) / "faceport-bench-privastream"
    code = ("import uvicorn, pathlib; from faceport.api.app import create_privacy_app; from faceport.config import "
            f"Settings; s = Settings(home=pathlib.Path({str(home)!r}), redis_url=None, pull_on_start=False); "
            f"uvicorn.run(create_privacy_app(s), host='127.0.0.1', port={PORT}, log_level='warning')")
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    base = f"http://127.0.0.1:{PORT}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        server = psutil.Process(proc.pid)
        names = args.configs.split(",")
        results: dict[str, list[dict[str, float]]] = {n: [] for n in names}
        for _ in range(args.runs):
            for name in names:
                r = asyncio.run(one_run(base, frames, CONFIGS[name], args.seconds, args.fps, server))
                results[name].append(r)
                print(name, {k: round(v, 2) for k, v in r.items()}, "load", os.getloadavg(), flush=True)
    finally:
        proc.terminate()
        proc.wait(30)
    print(f"\nmachine: {machine()}; load average at the end {os.getloadavg()}")
    print(f"640x480 clip ({CLIP}) published at {args.fps:g} fps, {args.seconds:g} s windows, median of {args.runs}")
    print("| config | viewer fps | latency median ms | latency p95 ms | filter ms/frame | server CPU (cores) "
          "| frames dropped |")
    print("|---|---|---|---|---|---|---|")
    base_cpu = statistics.median(r["cpu_cores"] for r in results.get("transport", [])) if "transport" in results \
        else None
    for name, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        ratio = f" ({med['cpu_cores'] / base_cpu:.1f}x transport)" if base_cpu and name != "transport" else ""
        print(f"| {name} | {med['fps']:.1f} | {med['latency_ms']:.0f} | {med['latency_p95_ms']:.0f} | "
              f"{med['filter_ms']:.0f} | {med['cpu_cores']:.2f}{ratio} | {100 * med['dropped_share']:.0f}% |")


if __name__ == "__main__":
    main()
