"""Mesh face swap speed: ms per 640x480 frame, and whole-process throughput on a real clip.

Usage: python bench/swap.py [--runs 30] [--clip ../shared/data/video/pf_WolfgangLanger_Pexels.mp4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine import PHOTOS, machine, median_ms, to_640x480

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--clip", type=Path, default=DATA / "video" / "pf_WolfgangLanger_Pexels.mp4")
    args = parser.parse_args()

    from faceport.engine.core import FaceEngine
    from faceport.engine.models import ModelCache, ModelStore
    from faceport.engine.pipeline import Pipeline, build_processors
    from faceport.engine.swap import build_swapper

    models = Path(os.environ.get("FACEPORT_MODELS_DIR") or Path.home() / ".cache/faceport/models")
    engine = FaceEngine(ModelCache(ModelStore(models), idle_ttl=0))
    source = cv2.imread(str(REPO / "tests/fixtures/sk_astronaut.png"))
    swapper = build_swapper(engine, [source])
    swap_ms, frame_ms = [], []
    for path in PHOTOS[2:]:
        if not path.is_file():
            continue
        frame = to_640x480(cv2.imread(str(path)))
        faces = engine.detect(frame, landmarks=True)[:1]
        if not len(faces):
            continue
        swap_ms.append(median_ms(lambda f=frame, fc=faces: swapper.process(f, fc), args.runs))
        tracker = engine.tracker()
        tracker.process(frame)
        frame_ms.append(median_ms(lambda f=frame, t=tracker: swapper.process(f, t.process(f)), args.runs))
    print(f"machine: {machine()}")
    print(f"mesh swap, 640x480 frame, one face (median over {len(swap_ms)} photos, {args.runs} runs each): "
          f"{statistics.median(swap_ms):.1f} ms swap only; {statistics.median(frame_ms):.1f} ms with landmark "
          f"tracking (= {1000 / statistics.median(frame_ms):.0f} fps)")

    if args.clip.is_file():
        from faceport.engine.video import probe_video, process_video

        info = probe_video(args.clip)
        pipeline = Pipeline(engine, build_processors(engine, ["face_swapper"], sources=[source]))
        times = []
        for _ in range(3):
            with tempfile.TemporaryDirectory() as tmp:
                started = time.perf_counter()
                result = process_video(args.clip, Path(tmp) / "out.mp4", pipeline.stream())
                times.append(time.perf_counter() - started)
        wall = statistics.median(times)
        print(f"whole process on {args.clip.name} ({info.width}x{info.height}, {info.duration_s:.1f} s, "
              f"{result.frames_in} frames, audio {result.audio}): {wall:.1f} s = {result.frames_in / wall:.1f} fps "
              "(decode + track + swap + H.264 encode, median of 3)")


if __name__ == "__main__":
    main()
