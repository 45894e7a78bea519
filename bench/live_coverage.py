"""Live swap coverage: the share of frames with a visible face that the live path swaps.

Plays each shared clip with faces through the live path in process (the service's
``decode_frame``, its ``new_tracker()`` and the source swapper, exactly what
``LiveSwapService.render`` runs), at the page's rate: every ``round(fps / 15)``-th frame, as
JPEG q80. A frame counts as *swapped* when the live path reported a swap AND the pixels inside
the judged face box changed (mean absolute difference over ``--changed`` grey levels).

"Visible face" is judged independently of the live path, on the full frame, by the judge:

- ``centerface`` (default): CenterFace at a low threshold (0.3) on the full frame at up to 1280 px
  (the live path's own CenterFace fallback runs at 640 px and 0.5, after YuNet found nothing);
- ``dlib``: dlib's HOG frontal detector, upsampled once (misses profiles, so it judges fewer frames).

Prints per clip: frames played, frames with a visible face (judge), frames swapped among those,
the share, and the misses' frame numbers; then the totals and ms per frame of the live path
(decode + track + swap, no JPEG encode) with the machine's load average.

Run it against another tree (e.g. the code before a change) with ``PYTHONPATH=<that tree>``.

Usage: python bench/live_coverage.py [--judge centerface|dlib] [--clips a.mp4 b.mp4] [--max-frames 200]
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"
# Every shared clip with a face (the no-face clips pf_no_face.mp4 and skv_bigbuckbunny.mp4 are left out;
# pf_face_noface.mov / pf_noface_face.mov are HEVC: their H.264 twin is used where there is one).
CLIPS = ("pf_WolfgangLanger_Pexels.mp4", "pf_single_face.mp4", "derived_face_noface_h264.mp4",
         "pf_noface_face.mov", "skv_carphone_pristine.mp4", "skv_carphone_distorted.mp4",
         "derived_carphone_mjpeg.avi", "synth_slideshow_obama_biden_cat_group.mp4")
JUDGE_THRESHOLD = 0.3
JUDGE_MAX_SIDE = 1280
MIN_JUDGED_SIDE = 24  # smaller boxes are not "visible faces" for this measure


def frames_of(path: Path, target_fps: float, max_frames: int) -> tuple[list[tuple[int, np.ndarray]], float]:
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    step = max(1, round(fps / target_fps))
    out: list[tuple[int, np.ndarray]] = []
    index = 0
    while len(out) < max_frames and (read := capture.read())[0]:
        if index % step == 0:
            out.append((index, read[1]))
        index += 1
    capture.release()
    return out, fps


class Judge:
    def __init__(self, kind: str, engine: Any) -> None:
        self.kind = kind
        if kind == "dlib":
            import dlib

            self._hog = dlib.get_frontal_face_detector()
        else:
            from faceport.engine.detect import CenterFace

            self._cf = CenterFace(engine.cache.get("centerface"), max_side=JUDGE_MAX_SIDE)

    def boxes(self, image: np.ndarray) -> np.ndarray:
        if self.kind == "dlib":
            rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
            rects = self._hog(rgb, 1)
            found = np.array([[r.left(), r.top(), r.right(), r.bottom()] for r in rects], np.float32).reshape(-1, 4)
        else:
            found = self._cf.detect(image, score_threshold=JUDGE_THRESHOLD).xyxy.reshape(-1, 4)
        sides = np.minimum(found[:, 2] - found[:, 0], found[:, 3] - found[:, 1])
        return found[sides >= MIN_JUDGED_SIDE]


def yaw_degrees(landmarks: np.ndarray) -> float:
    """Rough head yaw from the mesh: the angle of the cheek-to-cheek line (points 234, 454) out of the image plane."""
    a, b = landmarks[234], landmarks[454]
    return float(np.degrees(np.arctan2(float(b[2] - a[2]), float(np.hypot(b[0] - a[0], b[1] - a[1])))))


def to_face_px(frames: list[tuple[int, np.ndarray]], judge: Judge, face_px: int) -> list[tuple[int, np.ndarray]]:
    """The clip scaled so that its judged face is about ``face_px`` wide, centred on a 640x480 grey canvas."""
    sides = []
    for _index, frame in frames[:40:4]:
        boxes = judge.boxes(frame)
        if len(boxes):
            sides.append(float((boxes[:, 2] - boxes[:, 0]).max()))
    if not sides:
        return frames
    scale = min(face_px / float(np.median(sides)), 640 / frames[0][1].shape[1], 480 / frames[0][1].shape[0])
    out = []
    for index, frame in frames:
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        small = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=interpolation)
        canvas = np.full((480, 640, 3), 96, np.uint8)
        h, w = small.shape[:2]
        y, x = (480 - h) // 2, (640 - w) // 2
        canvas[y:y + h, x:x + w] = small
        out.append((index, canvas))
    return out


def changed(before: np.ndarray, after: np.ndarray, box: np.ndarray, threshold: float) -> bool:
    h, w = before.shape[:2]
    x0, y0 = max(0, int(box[0])), max(0, int(box[1]))
    x1, y1 = min(w, int(np.ceil(box[2]))), min(h, int(np.ceil(box[3])))
    if x1 <= x0 or y1 <= y0:
        return False
    diff = cv2.absdiff(before[y0:y1, x0:x1], after[y0:y1, x0:x1])
    return float(diff.mean()) > threshold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--judge", choices=("centerface", "dlib"), default="centerface")
    parser.add_argument("--clips", nargs="*", default=list(CLIPS))
    parser.add_argument("--fps", type=float, default=15.0, help="frames played per second of clip (the page: 15)")
    parser.add_argument("--max-frames", type=int, default=10_000, help="at most this many played frames per clip")
    parser.add_argument("--changed", type=float, default=2.0,
                        help="mean |diff| in the judged box that counts as swapped")
    parser.add_argument("--source", type=Path, default=REPO / "tests" / "fixtures" / "mpl_grace_hopper.jpg")
    parser.add_argument("--face-px", type=int, default=0,
                        help="scale each clip so that its face is about this wide, on a 640x480 canvas (0: as is)")
    parser.add_argument("--threads", type=int, default=None, help="ONNX threads (default: the engine's)")
    args = parser.parse_args()

    import faceport
    from faceport.config import Settings
    from faceport.engine.core import FaceEngine
    from faceport.engine.models import ModelCache, ModelStore
    from faceport.engine.swap import build_swapper
    from faceport.services.live_swap import LiveSwapService

    models = Path(os.environ.get("FACEPORT_MODELS_DIR") or Path.home() / ".cache" / "faceport" / "models")
    store = ModelStore(models)
    engine = FaceEngine(ModelCache(store, idle_ttl=0)).with_threads(args.threads)
    os.environ.setdefault("FACEPORT_MODELS_DIR", str(models))
    settings = Settings()
    service = LiveSwapService(settings, engine, store, run=None)  # type: ignore[arg-type]  # blocking parts only
    swapper = build_swapper(engine, [cv2.imread(str(args.source))])
    judge = Judge(args.judge, engine)

    print(f"code: {Path(faceport.__file__).resolve().parent.parent}; detector {service.detector_name}; "
          f"judge {args.judge}" + (f" (CenterFace >= {JUDGE_THRESHOLD}, full frame <= {JUDGE_MAX_SIDE} px)"
                                   if args.judge == "centerface" else " (dlib HOG frontal, upsampled once)")
          + f"; boxes >= {MIN_JUDGED_SIDE} px"
          + (f"; clips scaled to ~{args.face_px} px faces" if args.face_px else ""))
    print(f"{'clip':44s} {'frames':>6s} {'judged':>6s} {'swapped':>7s} {'share':>6s}  {'extra':>5s}  "
          "|yaw| max  ms/frame  misses (frame numbers)")
    totals = [0, 0, 0, 0]
    live_ms: list[float] = []
    load_before = os.getloadavg()
    for name in args.clips:
        frames, _fps = frames_of(DATA / "video" / name, args.fps, args.max_frames)
        if args.face_px:
            frames = to_face_px(frames, judge, args.face_px)
        yaws = [0.0]
        clip_ms: list[float] = []
        tracker = service.new_tracker()
        judged = swapped = extra = 0
        misses: list[int] = []
        for index, frame in frames:
            ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 80])
            assert ok
            url = "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")
            started = time.perf_counter()
            image = service.decode_frame(url)
            faces = tracker.process(image)
            out = swapper.process(image, faces) if len(faces) else image
            clip_ms.append((time.perf_counter() - started) * 1000.0)
            boxes = judge.boxes(image)
            if len(boxes) == 0:
                extra += int(len(faces) > 0)
                continue
            judged += 1
            if len(faces) and any(changed(image, out, box, args.changed) for box in boxes):
                swapped += 1
                if faces.landmarks is not None:
                    yaws.append(abs(yaw_degrees(faces.landmarks[0])))
            else:
                misses.append(index)
        totals[0] += len(frames)
        totals[1] += judged
        totals[2] += swapped
        totals[3] += extra
        share = swapped / judged if judged else float("nan")
        shown = " ".join(map(str, misses[:25])) + (f" ... (+{len(misses) - 25})" if len(misses) > 25 else "")
        print(f"{name:44s} {len(frames):6d} {judged:6d} {swapped:7d} {share:6.1%}  {extra:5d}  "
              f"{max(yaws):8.0f}°  {float(np.median(clip_ms)):8.1f}  {shown}", flush=True)
        live_ms.extend(clip_ms)
    load_after = os.getloadavg()
    print(f"{'total':44s} {totals[0]:6d} {totals[1]:6d} {totals[2]:7d} {totals[2] / max(1, totals[1]):6.1%}  "
          f"{totals[3]:5d}")
    print("extra = frames the live path swapped where the judge saw no face; |yaw| max = largest head yaw among "
          "swapped frames, estimated from the mesh (rough); ms/frame = median of the clip's live path")
    live_ms.sort()
    print(f"live path (decode + track + swap) ms/frame: median {live_ms[len(live_ms) // 2]:.1f}, "
          f"mean {sum(live_ms) / len(live_ms):.1f}, p95 {live_ms[int(0.95 * (len(live_ms) - 1))]:.1f}; "
          f"load average {load_before[0]:.1f} -> {load_after[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    sys.exit(main())
