"""Proctoring figures: per-check cost per frame, phone hits/false alarms, and a /ws load run.

    python bench/proctor.py --clients 150 --interval 5 --duration 600

Starts the main app with uvicorn on a free loopback port (home in a temp dir) and runs the load
generator in a separate process (so its CPU is not counted as the server's). Every client is
registered with a reference face taken from the clip, so each frame runs every check (face,
identity, phone, liveness). The clip (``--clip``, default the 20 s Pexels clip, 640x360) is decoded
once and re-encoded as JPEGs; each client walks through the frames from its own starting point and
sends one every ``interval`` seconds without waiting for the reply (as seed C's Python client does).
Replies are matched to frames by the echoed ``timestamp``.

Prints frames asked / decided / skipped (answered ``superseded``) / lost, decision latency
p50/p95/max, the server's RSS over the run, its CPU, the machine and the load average (the
machine may be shared: read the figures with the load average next to them).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import os
import platform
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

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


def clip_frames(path: Path, limit: int, step: int) -> list[np.ndarray]:
    import av

    frames = []
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i % step == 0:
                frames.append(frame.to_ndarray(format="bgr24"))
            if len(frames) >= limit:
                break
    return frames


def jpeg_b64(image: np.ndarray) -> str:
    return base64.b64encode(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()).decode()


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB"


def loadavg() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


# load generator (its own process) -------------------------------------------------------------------------------
async def _client(url: str, user: str, frames: list[str], start: int, interval: float, duration: float,
                  drain: float, out: dict[str, Any]) -> None:
    import websockets

    sent: dict[int, float] = {}
    last_due = float("inf")
    try:
        async with websockets.connect(url, max_size=None, open_timeout=120, ping_interval=None) as ws:
            async def receive() -> None:
                async for message in ws:
                    reply = json.loads(message)
                    started = sent.pop(reply.get("timestamp"), None)
                    if started is None:
                        out["unmatched"] += 1
                        continue
                    took = time.monotonic() - started
                    if reply.get("superseded"):
                        out["skipped"] += 1
                        out["skip_latency"].append(took)
                    else:
                        out["decided"] += 1
                        out["latency"].append(took)
                        if started < last_due:  # sent in the steady state, not in the last interval before stopping
                            out["steady_latency"].append(took)
                        key = f"{reply.get('action')}/{reply.get('reason')}"
                        out["reasons"][key] = out["reasons"].get(key, 0) + 1

            receiver = asyncio.ensure_future(receive())
            rng = np.random.default_rng(abs(hash(user)) % 2**32)
            await asyncio.sleep(rng.uniform(0, interval))
            end = time.monotonic() + duration
            last_due = end - interval
            due = time.monotonic()
            n = 0
            while time.monotonic() < end:
                sent[n] = time.monotonic()
                await ws.send(json.dumps({"user_name": user, "image": frames[(start + n) % len(frames)],
                                          "timestamp": n}))
                out["asked"] += 1
                n += 1
                due += interval
                await asyncio.sleep(max(0.0, due - time.monotonic()))
            waited = 0.0
            while sent and waited < drain:
                await asyncio.sleep(0.1)
                waited += 0.1
            receiver.cancel()
    except Exception as exc:  # a dropped connection is a figure, not a crash
        out["disconnects"].append(repr(exc)[:200])
    out["lost"] += len(sent)


def _load(url: str, users: list[str], frames: list[str], interval: float, duration: float, drain: float,
          results: Any) -> None:
    out: dict[str, Any] = {"asked": 0, "decided": 0, "skipped": 0, "lost": 0, "unmatched": 0, "latency": [],
                           "steady_latency": [], "skip_latency": [], "reasons": {}, "disconnects": []}

    async def run() -> None:
        step = max(1, len(frames) // max(1, len(users)))
        await asyncio.gather(*(_client(url, user, frames, i * step, interval, duration, drain, out)
                               for i, user in enumerate(users)))

    started = time.monotonic()
    asyncio.run(run())
    out["elapsed"] = time.monotonic() - started
    out["load_cpu_s"] = sum(psutil.Process().cpu_times()[:2])
    results.put(out)


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=150)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--duration", type=float, default=180.0, help="seconds each client sends frames")
    parser.add_argument("--drain", type=float, default=30.0, help="seconds to wait for the last replies")
    parser.add_argument("--clip", default="video/pf_WolfgangLanger_Pexels.mp4", help="path under the data dir")
    parser.add_argument("--max-frames", type=int, default=480)
    parser.add_argument("--step", type=int, default=24,
                        help="keep every step-th clip frame (24: one a second of a 24 fps clip; consecutive frames "
                             "of a 24 fps clip move too little between two sends for the liveness check)")
    parser.add_argument("--threads", type=int, default=0, help="server thread pool size (0: the default)")
    parser.add_argument("--phone-figures", action="store_true", help="also print phone hits / false alarms")
    args = parser.parse_args()

    import uvicorn

    from faceport.api.app import create_app
    from faceport.config import Settings

    print(f"machine: {machine()}; load average {loadavg()} (1/5/15 min) at start")
    frames = clip_frames(DATA / args.clip, args.max_frames, args.step)
    payloads = [jpeg_b64(f) for f in frames]
    height, width = frames[0].shape[:2]
    print(f"clip: {args.clip}, every {args.step} frame(s): {len(frames)} frames {width}x{height}, "
          f"JPEG q85 mean {statistics.mean(len(p) for p in payloads) * 3 / 4 / 1024:.0f} KiB")

    home = Path(tempfile.mkdtemp(prefix="faceport-bench-"))
    extra: dict[str, Any] = {"thread_pool_size": args.threads} if args.threads else {}
    settings = Settings(home=home, models_dir_override=Path.home() / ".cache/faceport/models", pull_on_start=False,
                        model_idle_ttl=0, proctor_processing_timeout=120.0, proctor_max_connections_per_ip=0,
                        proctor_max_connections=max(150, args.clients), **extra)
    app = create_app(settings)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    ctx = app.state.context
    service = ctx.proctor
    if args.phone_figures:
        phone_figures(ctx.cache)

    reference = next(f for f in frames if len(ctx.engine.detect(f)))
    service.create_client("warmup")
    service.add_face("warmup", reference)
    embedding = service.client("warmup").embeddings
    for image in frames[:5]:
        service.check_frame("warmup", image)
    service.check_ms.clear()
    decode_ms = []
    for payload in (payloads * 2)[5:25]:
        t0 = time.perf_counter()
        image = service.decode(payload)
        decode_ms.append((time.perf_counter() - t0) * 1000)
        service.check_frame("warmup", image)
    per_check = {k: round(statistics.median(v), 1) for k, v in service.check_ms.items()}
    decode = statistics.median(decode_ms)
    print(f"per-check ms, one client, 20 clip frames, median (identity on): decode {decode:.1f}, "
          f"{per_check}, sum {sum(per_check.values()) + decode:.1f}")

    users = [f"user{i}" for i in range(args.clients)]
    from faceport.store import proctor as repo

    for user in users:  # same reference face for every client: identity and liveness run on every frame
        service.create_client(user)
        with service.store.session() as session:
            repo.add_face(session=session, user_name=user, embedding=embedding[0])
    service.reload()
    service.check_ms.clear()
    proc = psutil.Process()
    rss: list[float] = [proc.memory_info().rss / 2**20]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(5.0):
            rss.append(proc.memory_info().rss / 2**20)

    sampler = threading.Thread(target=sample, daemon=True)
    cpu_before = sum(proc.cpu_times()[:2])
    load_start = loadavg()
    sampler.start()
    results: Any = multiprocessing.get_context("spawn").Queue()
    generator = multiprocessing.get_context("spawn").Process(
        target=_load, args=(f"ws://127.0.0.1:{port}/ws", users, payloads, args.interval, args.duration, args.drain,
                            results))
    started = time.monotonic()
    generator.start()
    out = results.get()
    generator.join()
    elapsed = time.monotonic() - started
    stop.set()
    sampler.join()
    rss.append(proc.memory_info().rss / 2**20)
    cpu = sum(proc.cpu_times()[:2]) - cpu_before
    hub = app.state.proctor_hub
    window = args.duration
    lat, skip = out["latency"], out["skip_latency"]
    print(f"load: {args.clients} clients x 1 frame / {args.interval:g} s = {args.clients / args.interval:.1f} frames/s "
          f"asked, {args.duration:g} s sending (+ drain), threads {settings.thread_pool_size}")
    print(f"  frames asked {out['asked']} ({out['asked'] / window:.1f}/s), decided {out['decided']} "
          f"({out['decided'] / window:.1f}/s), skipped (superseded) {out['skipped']}, lost {out['lost']}, "
          f"unmatched {out['unmatched']}, disconnects {len(out['disconnects'])} {out['disconnects'][:2]}")
    print(f"  decision latency p50 {pct(lat, 0.5) * 1000:.0f} ms, p95 {pct(lat, 0.95) * 1000:.0f} ms, "
          f"max {max(lat, default=0) * 1000:.0f} ms; superseded reply p50 {pct(skip, 0.5) * 1000:.0f} ms")
    quarter = max(1, len(lat) // 4)
    steady = out["steady_latency"]
    print(f"  steady state (frames sent before the last interval): p50 {pct(steady, 0.5) * 1000:.0f} ms, "
          f"p95 {pct(steady, 0.95) * 1000:.0f} ms, max {max(steady, default=0) * 1000:.0f} ms "
          f"({len(steady)} frames); the rest is the drain, when no newer frame supersedes the last ones")
    print(f"  latency p95 by quarter of the run (in reply order): "
          f"{[round(pct(lat[i:i + quarter], 0.95) * 1000) for i in range(0, len(lat), quarter)][:4]} ms")
    print(f"  server: decided {hub.decided}, superseded {hub.superseded}, peak decisions in flight "
          f"{hub.peak_in_flight} (bound {hub.max_in_flight}); CPU {cpu:.0f} s in {elapsed:.0f} s "
          f"= {cpu / elapsed * 100:.0f} % of one core; load generator CPU {out['load_cpu_s']:.0f} s")
    print(f"  server RSS MiB, every 5 s: {[round(x) for x in rss]}")
    print(f"  load average {load_start} at start, {loadavg()} at end; reasons {out['reasons']}")
    under = {k: round(statistics.median(v), 1) for k, v in service.check_ms.items()}
    print(f"  per-check ms during the load run, median: {under}")
    server.should_exit = True


if __name__ == "__main__":
    main()
