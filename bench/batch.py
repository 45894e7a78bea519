"""Seed D batches: throughput (images/s) of one batch on the local job runner, against the same images sent
one by one to the matching /face/* route by one client, in the same run.

Usage: python bench/batch.py [--images 64] [--runs 3] [--operation detect|recognize|analyze] [--port 18701]
Starts ``faceport serve`` (temporary home, rate limits off, ``FACEPORT_JOB_WORKERS`` workers, models from
$FACEPORT_MODELS_DIR or ~/.cache/faceport/models); the images are the shared identity photos
(../shared/data/identity, or $FACEPORT_TEST_DATA/identity) repeated up to ``--images``.
Prints, per figure, the median over ``--runs``: the batch end to end (upload, staging, queue, every image,
results stored), the batch's job alone (started_at to finished_at), and the one-by-one requests.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine import machine

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("FACEPORT_TEST_DATA", REPO.parent / "shared" / "data"))


def _images(count: int) -> list[tuple[str, bytes]]:
    files = sorted(p for p in (DATA / "identity").rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        sys.exit(f"no identity photos under {DATA / 'identity'} (set FACEPORT_TEST_DATA)")
    return [(f"{i:03d}_{files[i % len(files)].name}", files[i % len(files)].read_bytes()) for i in range(count)]


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--operation", default="detect", choices=["detect", "recognize", "analyze"])
    parser.add_argument("--workers", type=int, default=1, help="FACEPORT_JOB_WORKERS (one batch uses one)")
    parser.add_argument("--port", type=int, default=18701)
    args = parser.parse_args()

    images = _images(args.images)
    megabytes = sum(len(b) for _, b in images) / 1e6
    home = tempfile.mkdtemp(prefix="faceport-bench-batch-")
    env = dict(os.environ, FACEPORT_HOME=home, FACEPORT_RATE_LIMITS_ENABLED="false", FACEPORT_LOG_LEVEL="WARNING",
               FACEPORT_JOB_WORKERS=str(args.workers), FACEPORT_AUDIT_LOG="off",
               FACEPORT_PRELOAD_MODELS="yunet,dlib_shape5,dlib_resnet_onnx,facemesh,iris")
    env.setdefault("FACEPORT_MODELS_DIR", str(Path.home() / ".cache/faceport/models"))
    server = subprocess.Popen([sys.executable, "-m", "faceport.cli", "serve", "--port", str(args.port),
                               "--privacy-port", "0", "--no-pull"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{args.port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            sys.exit("the server did not start")
        with httpx.Client(base_url=base, timeout=600) as http:
            http.post("/api/v1/auth/register", json={"username": "bench", "email": "bench@example.com",
                                                     "password": "bench-password-1"})
            token = http.post("/api/v1/auth/login", json={"username": "bench", "password": "bench-password-1"}
                              ).json()["data"]["access_token"]
            http.headers["Authorization"] = f"Bearer {token}"
            # warm-up: one small batch and one request load every model the operation needs
            warm = http.post("/api/v1/batch/submit", data={"operation": args.operation},
                             files=[("images", images[0])]).json()["data"]["batch_id"]
            while http.get(f"/api/v1/batch/status/{warm}").json()["data"]["state"] not in ("completed", "failed"):
                time.sleep(0.1)
            http.post(f"/api/v1/face/{args.operation}", files={"image": images[0]})

            end_to_end, job_only, single = [], [], []

            def run_batch() -> None:
                started = time.time()
                response = http.post("/api/v1/batch/submit", data={"operation": args.operation},
                                     files=[("images", item) for item in images])
                if response.status_code != 202:
                    sys.exit(f"submit failed: {response.status_code} {response.text[:300]}")
                batch_id = response.json()["data"]["batch_id"]
                # polled slowly (each poll is an authenticated request competing for the cores); the end is
                # the server's finished_at, on the same clock
                while (status := http.get(f"/api/v1/batch/status/{batch_id}").json()["data"])["state"] in (
                        "queued", "running"):
                    time.sleep(0.5)
                if status["state"] != "completed" or status["failed"]:
                    sys.exit(f"batch ended {status['state']} with {status['failed']} failed images")
                end_to_end.append(len(images) / (_ts(status["finished_at"]) - started))
                job_only.append(len(images) / (_ts(status["finished_at"]) - _ts(status["started_at"])))

            def run_single() -> None:
                started = time.perf_counter()
                for item in images:
                    r = http.post(f"/api/v1/face/{args.operation}", files={"image": item})
                    if r.status_code != 200:
                        sys.exit(f"/face/{args.operation} failed: {r.status_code} {r.text[:200]}")
                single.append(len(images) / (time.perf_counter() - started))

            for number in range(args.runs):  # alternate which goes first: the machine's load drifts
                for step in ((run_batch, run_single) if number % 2 == 0 else (run_single, run_batch)):
                    step()
    finally:
        server.terminate()
        server.wait(timeout=30)

    load = os.getloadavg()
    print(f"machine: {machine()}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"operation {args.operation}, {len(images)} images ({megabytes:.1f} MB, shared identity photos), "
          f"local runner with {args.workers} worker(s), median of {args.runs} runs")
    med_e2e, med_job, med_single = (statistics.median(v) for v in (end_to_end, job_only, single))
    print(f"batch end to end (submit .. completed):   {med_e2e:6.1f} images/s  (runs: "
          + ", ".join(f"{v:.1f}" for v in end_to_end) + ")")
    print(f"batch job alone (started .. finished):    {med_job:6.1f} images/s")
    print(f"one request per image (/face/{args.operation}): {med_single:6.1f} images/s")
    print(f"ratio batch end to end / one-by-one requests: {med_e2e / med_single:.2f}x")


if __name__ == "__main__":
    main()
