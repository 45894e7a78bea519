"""Classical face enhancer speed: median milliseconds per face on real photos at 640x480.

Usage: python bench/enhance.py [--runs 30] [--strength 0.6] [--json]
Prints the machine, then one figure: the median over photos of each photo's median of
``--runs`` timed calls of ``ClassicalEnhancer.process`` on its largest face (detection and
FaceMesh run once beforehand and are not timed). Models come from $FACEPORT_MODELS_DIR or
~/.cache/faceport/models (``faceport models pull`` first).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
from pathlib import Path
from types import ModuleType

import cv2


def _bench_engine() -> ModuleType:
    """bench/engine.py (photo list, 640x480 letterbox, timing, machine line), loaded by path."""
    spec = importlib.util.spec_from_file_location("bench_engine", Path(__file__).with_name("engine.py"))
    if spec is None or spec.loader is None:
        raise ImportError("bench/engine.py not found next to bench/enhance.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--strength", type=float, default=0.6)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from faceport.engine.core import FaceEngine
    from faceport.engine.enhance import ClassicalEnhancer
    from faceport.engine.models import ModelCache, ModelStore

    bench = _bench_engine()
    models = Path(os.environ.get("FACEPORT_MODELS_DIR") or Path.home() / ".cache/faceport/models")
    engine = FaceEngine(ModelCache(ModelStore(models), idle_ttl=0))
    enhancer = ClassicalEnhancer(args.strength)
    per_photo: list[float] = []
    sizes: list[float] = []
    for path in bench.PHOTOS:
        if not path.is_file():
            continue
        frame = bench.to_640x480(cv2.imread(str(path)))
        faces = engine.detect(frame, landmarks=True)
        if not len(faces):
            continue
        face = faces.sorted_by_area()[:1]
        x0, y0, x1, y1 = face.xyxy[0]
        sizes.append(float(((x1 - x0) * (y1 - y0)) ** 0.5))
        per_photo.append(bench.median_ms(lambda f=frame, fc=face: enhancer.process(f, fc), args.runs))
    if not per_photo:
        raise SystemExit("no photo with a face found (is ../shared/data or tests/fixtures present?)")
    result = round(statistics.median(per_photo), 2)
    face_px = round(statistics.median(sizes))
    if args.json:
        print(json.dumps({"machine": bench.machine(), "photos": len(per_photo), "runs": args.runs,
                          "face_px_median": face_px, "results": {"classical enhancer per face (ms)": result}}))
        return
    print(f"machine: {bench.machine()}")
    print(f"photos: {len(per_photo)} real photos letterboxed to 640x480 (median face {face_px} px); "
          f"median of {args.runs} runs each, then median over photos; strength {args.strength}")
    print(f"{'classical enhancer per face':34s} {result:8.2f} ms")


if __name__ == "__main__":
    main()
