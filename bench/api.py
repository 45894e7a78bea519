"""Face platform API over real HTTP: /face/detect latency (p50/p95) for a 640x480 JPEG, and
requests/s with 8 concurrent clients.

Usage: python bench/api.py [--requests 200] [--concurrency 8]
Starts ``faceport serve`` on a free port with a temporary home (rate limits off, models from
$FACEPORT_MODELS_DIR or ~/.cache/faceport/models), registers a user, then measures.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine import machine, to_640x480

REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--gallery-db", type=Path, default=None,
                        help="SQLite gallery from bench/gallery.py --keep-db: also time /face/recognize against it")
    args = parser.parse_args()

    frame = to_640x480(cv2.imread(str(REPO / "tests/fixtures/mpl_grace_hopper.jpg")))
    jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    port = _free_port()
    home = tempfile.mkdtemp(prefix="faceport-bench-api-")
    env = dict(os.environ, FACEPORT_HOME=home, FACEPORT_RATE_LIMITS_ENABLED="false", FACEPORT_LOG_LEVEL="WARNING",
               FACEPORT_PRELOAD_MODELS="blazeface_full,dlib_shape5,dlib_resnet_onnx")
    if args.gallery_db:
        env["FACEPORT_DATABASE_URL"] = f"sqlite:///{args.gallery_db.resolve()}"
    env.setdefault("FACEPORT_MODELS_DIR", str(Path.home() / ".cache/faceport/models"))
    server = subprocess.Popen([sys.executable, "-m", "faceport.cli", "serve", "--port", str(port),
                               "--privacy-port", "0", "--no-pull"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        with httpx.Client(base_url=base, timeout=30) as http:
            http.post("/api/v1/auth/register", json={"username": "bench", "email": "bench@example.com",
                                                     "password": "bench-password-1"})
            token = http.post("/api/v1/auth/login", json={"username": "bench", "password": "bench-password-1"}
                              ).json()["data"]["access_token"]
        headers = {"Authorization": f"Bearer {token}"}

        def one(client: httpx.Client) -> float:
            t = time.perf_counter()
            r = client.post("/api/v1/face/detect", files={"image": ("f.jpg", jpeg, "image/jpeg")}, headers=headers)
            elapsed = (time.perf_counter() - t) * 1000
            if r.status_code != 200 or r.json()["data"]["count"] != 1:
                raise RuntimeError(f"unexpected answer {r.status_code} {r.text[:200]}")
            return elapsed

        with httpx.Client(base_url=base, timeout=30) as client:
            for _ in range(10):
                one(client)
            sequential = sorted(one(client) for _ in range(args.requests))
            recognize: list[float] = []
            gallery_faces = 0
            if args.gallery_db:
                for i in range(args.requests // 4 + 5):
                    t = time.perf_counter()
                    r = client.post("/api/v1/face/recognize", files={"image": ("f.jpg", jpeg, "image/jpeg")},
                                    headers=headers)
                    if r.status_code != 200:
                        raise RuntimeError(f"recognize failed {r.status_code} {r.text[:200]}")
                    if i >= 5:
                        recognize.append((time.perf_counter() - t) * 1000)
                    gallery_faces = r.json()["data"]["gallery"]["faces"]

        clients = [httpx.Client(base_url=base, timeout=60) for _ in range(args.concurrency)]
        per_client = args.requests // args.concurrency
        started = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            latencies = [lat for chunk in pool.map(lambda c: [one(c) for _ in range(per_client)], clients)
                         for lat in chunk]
        wall = time.perf_counter() - started
        for c in clients:
            c.close()
    finally:
        server.terminate()
        server.wait(timeout=30)

    def pct(values: list[float], q: float) -> float:
        values = sorted(values)
        return values[min(len(values) - 1, round(q * (len(values) - 1)))]

    print(f"machine: {machine()}")
    print(f"POST /api/v1/face/detect, 640x480 JPEG ({len(jpeg) // 1024} KB), blazeface_full, JWT auth")
    print(f"sequential ({args.requests} requests): p50 {statistics.median(sequential):.1f} ms, "
          f"p95 {pct(sequential, 0.95):.1f} ms")
    if recognize:
        print(f"POST /api/v1/face/recognize against {gallery_faces} gallery faces ({len(recognize)} requests): "
              f"p50 {statistics.median(recognize):.1f} ms, p95 {pct(recognize, 0.95):.1f} ms")
    print(f"{args.concurrency} concurrent clients ({len(latencies)} requests): {len(latencies) / wall:.1f} req/s, "
          f"p50 {statistics.median(latencies):.1f} ms, p95 {pct(latencies, 0.95):.1f} ms")


if __name__ == "__main__":
    main()
