"""Proctoring figures: per-check cost per frame, phone hits/false alarms, and a /ws load run.

    python bench/proctor.py --clients 150 --interval 5 --duration 180

Starts the main app with uvicorn on a free loopback port (home in a temp dir), registers one
client per connection, and has each send a 640x480 JPEG every ``interval`` seconds.
Prints frames answered, p50/p95 decision latency, lost frames and disconnects, and the
server's RSS before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import psutil

DATA = Path(os.environ.get("FACEPORT_TEST_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def phone_figures(cache) -> None:  # type: ignore[no-untyped-def]
    from faceport.engine.objects import ObjectDetector

    detector = ObjectDetector(cache.get("ssd_mobilenet_v3_coco"))
    positives = [*sorted((DATA / "phone").glob("*.jpg")), DATA / "synthetic/synth_phone_composite_single_face.jpg"]
    negatives = [p for d in ("negatives", "faces_misc", "group", "text") for p in sorted((DATA / d).iterdir())
                 if p.suffix in (".jpg", ".png")]
    hits = [p.name for p in positives if len(detector.phones(cv2.imread(str(p))))]
    alarms = [p.name for p in negatives if cv2.imread(str(p)) is not None and len(detector.phones(cv2.imread(str(p))))]
    print(f"phone: hits {len(hits)}/{len(positives)} (missed: "
          f"{[p.name for p in positives if p.name not in hits]}), false alarms {len(alarms)}/{len(negatives)} {alarms}")


def frame_640() -> np.ndarray:
    image = cv2.imread(str(DATA / "faces_misc/pf_single_face.jpg"))
    return cv2.resize(image, (640, 480))


async def client(url: str, user: str, payload: str, interval: float, duration: float, out: dict) -> None:
    import websockets

    try:
        async with websockets.connect(url, max_size=None, open_timeout=60) as ws:
            end = time.monotonic() + duration
            await asyncio.sleep(np.random.default_rng(hash(user) % 2**32).uniform(0, interval))
            while time.monotonic() < end:
                started = time.monotonic()
                await ws.send(json.dumps({"user_name": user, "image": payload}))
                out["sent"] += 1
                reply = json.loads(await ws.recv())
                out["latency"].append(time.monotonic() - started)
                out["answered"] += 1
                out["actions"][reply.get("reason")] = out["actions"].get(reply.get("reason"), 0) + 1
                await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))
    except Exception as exc:  # a dropped connection is a figure, not a crash
        out["disconnects"].append(repr(exc))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=150)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--duration", type=float, default=180.0)
    args = parser.parse_args()

    import uvicorn

    from faceport.api.app import create_app
    from faceport.config import Settings

    home = Path(tempfile.mkdtemp(prefix="faceport-bench-"))
    settings = Settings(home=home, models_dir_override=Path.home() / ".cache/faceport/models", pull_on_start=False,
                        model_idle_ttl=0, proctor_processing_timeout=120.0)
    app = create_app(settings)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    ctx = app.state.context
    phone_figures(ctx.cache)
    frame = frame_640()
    ctx.proctor.create_client("warmup")
    for _ in range(3):
        ctx.proctor.check_frame("warmup", frame)
    ctx.proctor.check_ms.clear()
    for _ in range(10):
        ctx.proctor.check_frame("warmup", frame)
    print("per-check ms (median of 10, 640x480):",
          {k: round(statistics.median(v), 1) for k, v in ctx.proctor.check_ms.items()})
    for i in range(args.clients):
        ctx.proctor.create_client(f"user{i}")
    payload = base64.b64encode(cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()).decode()
    rss_before = psutil.Process().memory_info().rss / 1e6
    out: dict = {"sent": 0, "answered": 0, "latency": [], "disconnects": [], "actions": {}}

    async def load() -> None:
        await asyncio.gather(*(client(f"ws://127.0.0.1:{port}/ws", f"user{i}", payload, args.interval,
                                      args.duration, out) for i in range(args.clients)))

    started = time.monotonic()
    asyncio.run(load())
    elapsed = time.monotonic() - started
    rss_after = psutil.Process().memory_info().rss / 1e6
    lat = sorted(out["latency"]) or [0.0]
    print(f"load: {args.clients} clients, 1 frame / {args.interval}s each, {elapsed:.0f}s: sent {out['sent']}, "
          f"answered {out['answered']} ({out['answered'] / elapsed:.1f}/s), lost {out['sent'] - out['answered']}, "
          f"disconnects {len(out['disconnects'])}, p50 {lat[len(lat) // 2] * 1000:.0f} ms, "
          f"p95 {lat[int(len(lat) * 0.95) - 1] * 1000:.0f} ms, RSS {rss_before:.0f} -> {rss_after:.0f} MB "
          f"(server and load generator in one process), reasons {out['actions']}")
    server.should_exit = True


if __name__ == "__main__":
    main()
