"""Engine speed at 640x480 on real photos: median milliseconds per step.

Usage: python bench/engine.py [--runs 30] [--json]
Prints the machine, then one line per figure. Models come from $FACEPORT_MODELS_DIR or
~/.cache/faceport/models (``faceport models pull`` first).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"
PHOTOS = [REPO / "tests/fixtures/mpl_grace_hopper.jpg", REPO / "tests/fixtures/sk_astronaut.png",
          DATA / "identity/obama/fr_obama.jpg", DATA / "identity/biden/fr_biden2.jpg",
          DATA / "faces_misc/pf_single_face.jpg", DATA / "identity/rose_leslie/fr_img1.jpg"]


def machine(extra: str = "") -> str:
    """CPU model, core count, Python and OS (plus ``extra``, e.g. a library version)."""
    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    parts = [cpu, f"{os.cpu_count()} cores", f"Python {platform.python_version()}", extra, platform.system()]
    return ", ".join(p for p in parts if p)


def to_640x480(image: np.ndarray) -> np.ndarray:
    """Letterbox into 640x480 keeping aspect (a webcam-sized frame)."""
    h, w = image.shape[:2]
    scale = min(640 / w, 480 / h)
    resized = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    canvas = np.zeros((480, 640, 3), np.uint8)
    y, x = (480 - resized.shape[0]) // 2, (640 - resized.shape[1]) // 2
    canvas[y:y + resized.shape[0], x:x + resized.shape[1]] = resized
    return canvas


def median_ms(fn: Callable[[], object], runs: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def server_start_to_health(runs: int) -> float:
    """Seconds from spawning ``faceport serve`` to the first 200 on /health (models cached)."""
    import httpx

    samples = []
    for _ in range(runs):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = dict(os.environ, FACEPORT_HOME=str(Path("/tmp") / f"faceport-bench-{os.getpid()}"))
        env.setdefault("FACEPORT_MODELS_DIR", str(Path.home() / ".cache/faceport/models"))
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "faceport.cli", "serve", "--port", str(port),
                                 "--privacy-port", "0"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.02)
                if proc.poll() is not None:
                    raise RuntimeError("server exited")
            samples.append(time.perf_counter() - started)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--server-runs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from faceport.engine.core import EngineOptions, FaceEngine
    from faceport.engine.imageio import decode_image
    from faceport.engine.models import ModelCache, ModelStore

    models = Path(os.environ.get("FACEPORT_MODELS_DIR") or Path.home() / ".cache/faceport/models")
    engine = FaceEngine(ModelCache(ModelStore(models), idle_ttl=0))
    frames = [to_640x480(cv2.imread(str(p))) for p in PHOTOS if p.is_file()]
    jpegs = [cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes() for f in frames]
    per_photo: dict[str, list[float]] = {}

    def record(name: str, value: float) -> None:
        per_photo.setdefault(name, []).append(value)

    from faceport.engine.landmarks import FaceMesh

    embedder = engine.embedder()  # the ResNet on onnxruntime (default)
    dlib_embedder = FaceEngine(engine.cache, EngineOptions(embedder="dlib")).embedder()  # the reference

    mesh_only = FaceMesh(engine.cache.get("facemesh"))
    mesh_iris = FaceMesh(engine.cache.get("facemesh"), engine.cache.get("iris"))
    for frame, jpeg in zip(frames, jpegs, strict=True):
        record("decode 640x480 JPEG", median_ms(lambda j=jpeg: decode_image(j), args.runs))
        for name in ("blazeface_short", "blazeface_full", "centerface"):
            det = engine.detector(name)
            record(f"detect {name}", median_ms(lambda d=det, f=frame: d.detect(f), args.runs))
        faces = engine.detector("blazeface_full").detect(frame)[:1]
        if not len(faces):
            continue
        record("facemesh 468 per face", median_ms(lambda f=frame, fc=faces: mesh_only.landmarks(f, fc), args.runs))
        record("facemesh+iris 478 per face", median_ms(lambda f=frame, fc=faces: mesh_iris.landmarks(f, fc), args.runs))
        record("align+embed (onnx) per face", median_ms(lambda f=frame, fc=faces: embedder.embed(f, fc), args.runs))
        record("align+embed (dlib) per face",
               median_ms(lambda f=frame, fc=faces: dlib_embedder.embed(f, fc), max(3, args.runs // 5)))
    results = {name: round(statistics.median(values), 2) for name, values in per_photo.items()}
    if args.server_runs:
        results["server start to /health 200 (s)"] = round(server_start_to_health(args.server_runs), 2)
    if args.json:
        print(json.dumps({"machine": machine(), "photos": len(frames), "runs": args.runs, "results": results}))
        return
    print(f"machine: {machine()}")
    print(f"photos: {len(frames)} real photos letterboxed to 640x480; median of {args.runs} runs each, "
          "then median over photos")
    for name, value in results.items():
        unit = "" if name.endswith("(s)") else " ms"
        print(f"{name:34s} {value:8.2f}{unit}")


if __name__ == "__main__":
    main()
