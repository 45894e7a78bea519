"""Live swap through head turns: a SYNTHETIC yaw sweep, because no shared clip turns past ~30°.

No clip or photo in ../shared/data shows a head turning to ±60° (the largest yaw in any shared
photo, by the mesh, is about 50°: ``faces_misc/sk_camera.png``). So this bench renders one: a real
frontal photo's FaceMesh (468 points, x/y in pixels, z on the same scale) is rotated about a vertical
axis behind the face, and each mesh triangle is warped from the photo into its rotated place (painter's
order, back faces dropped), over the photo with its own face inpainted away. The sweep goes
0 → +max → 0 → -max → 0 in ``--step`` degree steps and is played through the live path exactly as
``bench/live_coverage.py`` does (decode a JPEG data URL, the service's tracker, the source swapper).

What it shows and what it does not: it exercises the tracker, its re-detection and the swapper at the
named yaw of a face-shaped texture; a real head at 60° also shows an ear, hair and a cheek outline that a
rotated mesh lacks, so this is a proxy, not a measurement on people. Printed per yaw bin: frames, frames
the live path swapped (reported a face AND changed the pixels of the rendered face), share.

Usage: python bench/live_yaw.py [--max-yaw 60] [--step 3] [--photo faces_misc/pf_single_face.jpg]
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.yaw_render import YawRenderer, sweep  # noqa: E402

DATA = Path(os.environ.get("FACEPORT_TEST_DATA", REPO.parent / "shared" / "data"))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, float(x1 - x0)) * max(0.0, float(y1 - y0))
    union = float((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])) - inter
    return inter / union if union > 0 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photo", default="faces_misc/pf_single_face.jpg", help="a frontal photo under the data dir")
    parser.add_argument("--max-yaw", type=float, default=60.0)
    parser.add_argument("--step", type=float, default=3.0)
    parser.add_argument("--face-px", type=int, default=160, help="face width on the 640x480 canvas")
    parser.add_argument("--source", type=Path, default=REPO / "tests" / "fixtures" / "mpl_grace_hopper.jpg")
    parser.add_argument("--save", type=Path, default=None, help="write a contact sheet of rendered frames here")
    args = parser.parse_args()

    from faceport.config import Settings
    from faceport.engine.core import FaceEngine
    from faceport.engine.models import ModelCache, ModelStore
    from faceport.engine.swap import build_swapper
    from faceport.services.live_swap import LiveSwapService

    models = Path(os.environ.get("FACEPORT_MODELS_DIR") or Path.home() / ".cache" / "faceport" / "models")
    os.environ.setdefault("FACEPORT_MODELS_DIR", str(models))
    store = ModelStore(models)
    engine = FaceEngine(ModelCache(store, idle_ttl=0))
    service = LiveSwapService(Settings(), engine, store, run=None)  # type: ignore[arg-type]  # blocking parts only
    swapper = build_swapper(engine, [cv2.imread(str(args.source))])

    photo = cv2.imread(str(DATA / args.photo))
    faces = engine.detect(photo, landmarks=True)
    largest = faces.sorted_by_area()[0]
    box = largest.xyxy[0]
    scale = args.face_px / float(box[2] - box[0])
    photo = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    cx, cy = (box[0] + box[2]) / 2 * scale, (box[1] + box[3]) / 2 * scale
    shift = np.float32([[1, 0, 320 - cx], [0, 1, 240 - cy]])
    canvas = cv2.warpAffine(photo, shift, (640, 480), borderMode=cv2.BORDER_REPLICATE)
    faces = engine.detect(canvas, landmarks=True).sorted_by_area()
    renderer = YawRenderer(canvas, faces.landmarks[0])

    tracker = service.new_tracker()
    bins: dict[int, list[int]] = {}
    ms: list[float] = []
    sheet = []
    misses = []
    for yaw in sweep(args.max_yaw, args.step):
        frame, mask = renderer.render(yaw)
        _ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 80])
        url = "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")
        started = time.perf_counter()
        image = service.decode_frame(url)
        found = tracker.process(image)
        out = swapper.process(image, found) if len(found) else image
        ms.append((time.perf_counter() - started) * 1000)
        inside = mask > 0
        diff = float(cv2.absdiff(image, out).max(axis=2)[inside].mean()) if inside.any() else 0.0
        ys, xs = np.nonzero(inside)
        truth = np.array([xs.min(), ys.min(), xs.max(), ys.max()], np.float32)
        on_face = len(found) > 0 and _iou(found.xyxy[0], truth) >= 0.3
        swapped = on_face and diff > 2.0
        fresh = service.new_tracker().process(image)  # a lost track: is the face found again on this frame?
        key = int(round(abs(yaw) / 15.0) * 15)
        bins.setdefault(key, [0, 0, 0])
        bins[key][0] += 1
        bins[key][1] += int(swapped)
        bins[key][2] += int(len(fresh) > 0 and _iou(fresh.xyxy[0], truth) >= 0.3)
        if not swapped:
            misses.append(round(float(yaw)))
        if args.save is not None and abs(yaw) % 15 == 0:
            sheet.append(np.hstack([cv2.resize(frame, (320, 240)), cv2.resize(out, (320, 240))]))
    print(f"synthetic yaw sweep of {args.photo} (face {args.face_px} px on 640x480), detector {service.detector_name}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'|yaw| bin':>10s} {'frames':>6s} {'swapped':>7s} {'share':>6s} {'found from scratch':>18s}")
    total = [0, 0, 0]
    for key in sorted(bins):
        n, s, f = bins[key]
        total[0] += n
        total[1] += s
        total[2] += f
        print(f"{key:9d}° {n:6d} {s:7d} {s / n:6.0%} {f:18d}")
    print(f"{'all':>10s} {total[0]:6d} {total[1]:7d} {total[1] / total[0]:6.1%} {total[2]:18d}; "
          f"median {np.median(ms):.1f} ms/frame (tracked path); missed yaws: {misses}")
    if args.save is not None and sheet:
        cv2.imwrite(str(args.save), np.vstack(sheet[: len(sheet)]))


if __name__ == "__main__":
    main()
