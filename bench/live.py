"""Live swap end to end: Socket.IO round trip for 640x480 JPEG webcam frames at 15 fps.

Starts ``faceport serve`` as a subprocess, uploads a source face, then plays a real clip (letterboxed
to 640x480, JPEG data URLs as the page sends them) through a python-socketio client over websocket,
the way the page does: the next frame goes out at most 1/15 s after the previous one and only once
its answer came back (or a 1 s timeout passed). Prints round trip p50/p95, sustained processed fps,
the fraction of processed frames with a face swapped, the server's CPU use (psutil on its pid) and
the machine.

Usage: python bench/live.py [--seconds 30] [--fps 15] [--clip ../shared/data/video/pf_WolfgangLanger_Pexels.mp4]
       [--options '{"mouth_mask": true, "face_enhancer": true}'] [--port 18301]

``--options`` are sent with ``set_options`` right after connecting (per-session live options, issue 16).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import queue
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine import machine, to_640x480

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"
REPLY_TIMEOUT_S = 1.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _frames(clip: Path, quality: int) -> list[str]:
    capture = cv2.VideoCapture(str(clip))
    urls = []
    while (read := capture.read())[0]:
        ok, buf = cv2.imencode(".jpg", to_640x480(read[1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise SystemExit(f"cannot encode a frame of {clip}")
        urls.append("data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii"))
    capture.release()
    if not urls:
        raise SystemExit(f"no frames in {clip}")
    return urls


def _start_server(home: Path, port: int = 0) -> tuple[subprocess.Popen[bytes], str]:
    port = port or _free_port()
    models = os.environ.get("FACEPORT_MODELS_DIR") or str(Path.home() / ".cache" / "faceport" / "models")
    env = dict(os.environ, FACEPORT_HOME=str(home), FACEPORT_MODELS_DIR=models, FACEPORT_LOG_LEVEL="WARNING")
    env.pop("FACEPORT_REDIS_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "faceport.cli", "serve", "--port", str(port), "--privacy-port",
                             "0", "--no-pull"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("faceport serve exited; run it by hand to see why")
        try:
            if httpx.get(f"{url}/status", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("faceport serve did not start")


def run(url: str, frames: list[str], seconds: float, fps: float, warmup: int,
        options: dict[str, Any] | None = None) -> dict[str, Any]:
    import socketio

    replies: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
    client = socketio.Client(reconnection=False)
    client.on("processed_frame", lambda data: replies.put((time.perf_counter(), data)))
    client.connect(url, transports=["websocket"], wait_timeout=30)
    if options:
        ack = client.call("set_options", options, timeout=10)
        if not ack or not ack.get("success"):
            raise SystemExit(f"options refused: {ack}")
    interval = 1.0 / fps
    rtts: list[float] = []
    swapped = answered = timeouts = sent = 0
    errors: dict[str, int] = {}
    try:
        started = None
        last_send = -interval
        index = 0
        while started is None or time.perf_counter() - started < seconds:
            wait = last_send + interval - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            while not replies.empty():  # a late answer to a timed-out frame must not count for this one
                replies.get_nowait()
            sent_at = time.perf_counter()
            last_send = sent_at
            client.emit("process_frame", {"frame": frames[index % len(frames)]})
            index += 1
            try:
                received_at, data = replies.get(timeout=REPLY_TIMEOUT_S)
            except queue.Empty:
                if started is not None:
                    timeouts += 1
                    sent += 1
                continue
            if index <= warmup:  # models load and the tracker starts on the first frames
                if index == warmup:
                    started = time.perf_counter()
                continue
            sent += 1
            answered += 1
            rtts.append((received_at - sent_at) * 1000)
            if data.get("success"):
                swapped += 1
            else:
                errors[data.get("error", "?")] = errors.get(data.get("error", "?"), 0) + 1
        elapsed = time.perf_counter() - (started or time.perf_counter())
    finally:
        client.disconnect()
    rtts.sort()
    return {"sent": sent, "answered": answered, "swapped": swapped, "timeouts": timeouts, "errors": errors,
            "elapsed": elapsed, "p50": statistics.median(rtts) if rtts else float("nan"),
            "p95": rtts[min(len(rtts) - 1, int(0.95 * len(rtts)))] if rtts else float("nan"),
            "max": rtts[-1] if rtts else float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--fps", type=float, default=15.0)
    parser.add_argument("--quality", type=int, default=80, help="JPEG quality of the frames sent (the page: 80)")
    parser.add_argument("--warmup", type=int, default=15, help="frames sent before measuring")
    parser.add_argument("--clip", type=Path, default=DATA / "video" / "pf_WolfgangLanger_Pexels.mp4")
    parser.add_argument("--source", type=Path, default=REPO / "tests" / "fixtures" / "mpl_grace_hopper.jpg")
    parser.add_argument("--options", type=json.loads, default=None, help="JSON object sent with set_options")
    parser.add_argument("--port", type=int, default=0, help="server port (0: a free one)")
    args = parser.parse_args()

    frames = _frames(args.clip, args.quality)
    with tempfile.TemporaryDirectory(prefix="faceport-bench-live-") as home:
        proc, url = _start_server(Path(home), args.port)
        try:
            with args.source.open("rb") as handle:
                uploaded = httpx.post(f"{url}/upload_source", files={"image": (args.source.name, handle)},
                                      timeout=60).json()
            if not uploaded.get("success"):
                raise SystemExit(f"source refused: {uploaded}")
            server = psutil.Process(proc.pid)
            server.cpu_percent(None)
            cpu_started = time.perf_counter()
            result = run(url, frames, args.seconds, args.fps, args.warmup, args.options)
            server_cpu = server.cpu_percent(None)
            cpu_span = time.perf_counter() - cpu_started
            status = httpx.get(f"{url}/status", timeout=10).json()
        finally:
            proc.terminate()
            proc.wait(timeout=30)

    kb = statistics.median(len(f) for f in frames) * 3 / 4 / 1024
    answered = max(1, result["answered"])
    print(f"machine: {machine()}")
    print(f"session options: {args.options or 'defaults'}")
    print(f"clip: {args.clip.name}, {len(frames)} frames letterboxed to 640x480, JPEG q{args.quality} "
          f"(median {kb:.0f} KB); target {args.fps:g} fps for {args.seconds:g} s after {args.warmup} warm-up frames")
    print(f"round trip (emit -> processed_frame): p50 {result['p50']:.1f} ms, p95 {result['p95']:.1f} ms, "
          f"max {result['max']:.1f} ms")
    print(f"processed: {result['answered'] / result['elapsed']:.2f} fps sustained "
          f"({result['answered']} answers in {result['elapsed']:.1f} s, {result['timeouts']} unanswered)")
    print(f"face swapped on {result['swapped'] / answered:.1%} of processed frames; errors: {result['errors'] or 0}")
    print(f"server: {server_cpu:.0f}% CPU (of one core; {psutil.cpu_count()} cores) over {cpu_span:.1f} s; "
          f"avg_processing_time {status['avg_processing_time']} ms (decode + track + swap + encode)")


if __name__ == "__main__":
    main()
