"""Server cost of one live frame by session options: CPU milliseconds (and wall) per 640x480 frame.

Usage: python bench/live_cost.py [--frames 120] [--runs 3]

Runs seed A's frame path in process — ``LiveSwapService.render``: decode the JPEG data URL, track
(FaceMesh), swap, optionally enhance, encode — over a real clip letterboxed to 640x480, for
several option sets (issue 16's live options, and main's single LAB colour transfer for
comparison). CPU time (``time.process_time``: every thread of the process) is what a frame costs
the server whatever else runs on the machine; wall time is printed beside it. Each figure is the
median over frames, then the median of ``--runs`` runs.
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import sys
import time
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine import machine, to_640x480

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clip", type=Path, default=DATA / "video" / "pf_WolfgangLanger_Pexels.mp4")
    args = parser.parse_args()

    import asyncio

    from faceport.config import Settings
    from faceport.engine.core import FaceEngine
    from faceport.engine.models import ModelCache, ModelStore
    from faceport.engine.swap import build_swapper
    from faceport.engine.swap.mesh import MeshSwapper, SwapOptions
    from faceport.errors import NoFace
    from faceport.services.live_swap import LiveOptions, LiveSwapService

    models = Path(os.environ.get("FACEPORT_MODELS_DIR") or Path.home() / ".cache/faceport/models")
    store = ModelStore(models)
    engine = FaceEngine(ModelCache(store, idle_ttl=0))
    settings = Settings(redis_url=None)

    async def run(fn, *a):  # type: ignore[no-untyped-def]
        return fn(*a)

    service = LiveSwapService(settings, engine, store, run)
    capture = cv2.VideoCapture(str(args.clip))
    frames = []
    while len(frames) < args.frames and (read := capture.read())[0]:
        _, buf = cv2.imencode(".jpg", to_640x480(read[1]), [cv2.IMWRITE_JPEG_QUALITY, 80])
        frames.append("data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii"))
    capture.release()
    source = cv2.imread(str(REPO / "tests" / "fixtures" / "mpl_grace_hopper.jpg"))
    swapper = build_swapper(engine, [source])
    assert isinstance(swapper, MeshSwapper)
    main_colour = MeshSwapper(swapper.sources, SwapOptions(colour_transfer="global"))
    cases = [
        ("defaults (regional colour)", swapper, LiveOptions()),
        ("main's global colour", main_colour, LiveOptions()),
        ("mouth_mask", swapper, LiveOptions(mouth_mask=True)),
        ("face_enhancer (blend 80)", swapper, LiveOptions(face_enhancer=True)),
        ("mouth_mask + enhancer + many_faces", swapper,
         LiveOptions(mouth_mask=True, face_enhancer=True, many_faces=True)),
    ]
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f}")
    print(f"{len(frames)} frames of {args.clip.name} letterboxed to 640x480 (JPEG q80); median per frame, "
          f"median of {args.runs} runs")
    for name, sw, options in cases:
        cpu_runs, wall_runs = [], []
        for _ in range(args.runs):
            tracker = service.new_tracker(options.many_faces)
            cpu, wall = [], []
            for frame in frames:
                c0, w0 = time.process_time(), time.perf_counter()
                try:
                    service.render(frame, tracker, sw, options)
                except NoFace:  # a frame without a face still costs its tracking
                    pass
                cpu.append((time.process_time() - c0) * 1000)
                wall.append((time.perf_counter() - w0) * 1000)
            cpu_runs.append(statistics.median(cpu))
            wall_runs.append(statistics.median(wall))
        print(f"{name:38s} CPU {statistics.median(cpu_runs):6.1f} ms   wall {statistics.median(wall_runs):6.1f} ms")
    asyncio.run(service.aclose())


if __name__ == "__main__":
    main()
