"""Face embedding speed: faceport (ResNet on onnxruntime) vs dlib in faceport vs face_recognition 1.3.0.

All three align with dlib's 5-point predictor and embed the same 150x150 chip with the same
network, so the figures compare runtimes only (and the bench checks the descriptors agree).
Each figure is milliseconds per face for the whole embed step (landmarks, chip, network), the
median of ``--runs`` passes over every shared identity photo (one face each) plus one group
photo, on boxes found once by blazeface_full.

face_recognition 1.3.0 is not a faceport dependency: when it is not importable, the bench
installs it with ``pip install --no-deps --target <temp dir>`` (its ``dlib`` requirement would
build dlib from source; the ``dlib`` module of dlib-bin serves it).

Usage: python bench/embed.py [--runs 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO / "bench"))
from engine import machine  # noqa: E402


def import_face_recognition():  # type: ignore[no-untyped-def]
    try:
        import face_recognition
    except ImportError:
        target = Path(tempfile.gettempdir()) / "faceport-bench-face_recognition-1.3.0"
        if not (target / "face_recognition").is_dir():
            subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check",
                            "--quiet", "--target", str(target), "face_recognition==1.3.0"], check=True)
        sys.path.insert(0, str(target))
        import face_recognition
    return face_recognition


BEST: dict[str, float] = {}  # fastest run of each figure: on a shared, loaded machine the closest to idle
CPU: dict[str, float] = {}  # median process CPU time per face: barely inflated by other jobs on the machine


def per_face_ms(fn: Callable[[], int], runs: int, name: str = "") -> float:
    fn()  # warm-up: loads, first-call allocations
    samples, cpu = [], []
    for _ in range(runs):
        started, cpu_started = time.perf_counter(), time.process_time()
        faces = fn()
        samples.append((time.perf_counter() - started) * 1000 / faces)
        cpu.append((time.process_time() - cpu_started) * 1000 / faces)
    if name:
        BEST[name] = min(samples)
        CPU[name] = statistics.median(cpu)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import dlib
    import onnxruntime as ort

    from faceport.engine.core import EngineOptions, FaceEngine
    from faceport.engine.models import ModelCache, ModelStore
    from faceport.engine.models.dlib_onnx import INPUT_NAME

    fr = import_face_recognition()
    models = Path(os.environ.get("FACEPORT_MODELS_DIR") or Path.home() / ".cache/faceport/models")
    store = ModelStore(models)
    store.pull(["blazeface_full", "dlib_shape5", "dlib_resnet", "dlib_resnet_onnx"])
    cache = ModelCache(store, idle_ttl=0)
    onnx_engine = FaceEngine(cache)
    dlib_engine = FaceEngine(cache, EngineOptions(embedder="dlib"))

    manifest = json.loads((DATA / "manifest.json").read_text())
    paths = [DATA / f["path"] for f in manifest["files"] if f["path"].startswith("identity/")]
    paths.append(DATA / "group" / "pf_multi_face.jpg")
    work = []
    for path in paths:
        image = np.asarray(cv2.imread(str(path), cv2.IMREAD_COLOR), np.uint8)
        faces = onnx_engine.detect(image)
        if len(faces):
            h, w = image.shape[:2]
            css = [(int(max(0, y1)), int(min(w - 1, x2)), int(min(h - 1, y2)), int(max(0, x1)))
                   for x1, y1, x2, y2 in faces.xyxy]  # face_recognition's (top, right, bottom, left)
            work.append((image, cv2.cvtColor(image, cv2.COLOR_BGR2RGB), faces, css))
    n_faces = sum(len(f) for _, _, f, _ in work)

    onnx_embedder, dlib_embedder = onnx_engine.embedder(), dlib_engine.embedder()

    # the three give the same descriptors (face_recognition returns dlib's raw descriptor)
    worst_dlib = worst_fr = 0.0
    for image, rgb, faces, css in work:
        ours = onnx_embedder.descriptors(onnx_embedder.chips(image, faces))
        theirs = np.asarray(fr.face_encodings(rgb, known_face_locations=css, num_jitters=1, model="small"))
        reference = dlib_embedder.descriptors(dlib_embedder.chips(image, faces))
        worst_fr = max(worst_fr, float(np.abs(ours - theirs).max()))
        worst_dlib = max(worst_dlib, float(np.abs(ours - reference).max()))

    def run_onnx() -> int:
        for image, _rgb, faces, _css in work:
            onnx_embedder.embed(image, faces)
        return n_faces

    def run_dlib() -> int:
        for image, _rgb, faces, _css in work:
            dlib_embedder.embed(image, faces)
        return n_faces

    def run_fr() -> int:
        for _image, rgb, _faces, css in work:
            fr.face_encodings(rgb, known_face_locations=css, num_jitters=1, model="small")
        return n_faces

    figures: dict[str, float] = {}
    for name, fn in (("faceport onnx (default), ms/face", run_onnx),
                     ("faceport dlib (FACEPORT_EMBEDDER=dlib), ms/face", run_dlib),
                     ("face_recognition 1.3.0, ms/face", run_fr)):
        figures[name] = per_face_ms(fn, args.runs, name)

    # the network alone, batch 1 and 4, with 1 and 2 intra-op threads
    chips = np.stack(onnx_embedder.chips(*work[0][:1], work[0][2][:1]) * 4)
    session_bytes = store.path("dlib_resnet_onnx").read_bytes()
    for threads in (1, 2):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(session_bytes, options, providers=["CPUExecutionProvider"])
        for batch in (1, 4):
            feed = {INPUT_NAME: np.ascontiguousarray(chips[:batch])}
            name = f"network only, ORT {threads} thread(s), batch {batch}, ms/face"

            def run_net(feed: dict[str, np.ndarray] = feed, session: ort.InferenceSession = session,
                        batch: int = batch) -> int:
                session.run(None, feed)
                return batch

            figures[name] = per_face_ms(run_net, args.runs * 4, name)

    onnx_ms = figures["faceport onnx (default), ms/face"]
    figures["speed-up vs face_recognition (x)"] = figures["face_recognition 1.3.0, ms/face"] / onnx_ms
    figures["speed-up vs dlib in faceport (x)"] = figures["faceport dlib (FACEPORT_EMBEDDER=dlib), ms/face"] / onnx_ms
    figures["max |onnx - dlib| descriptor"] = worst_dlib
    figures["max |onnx - face_recognition| descriptor"] = worst_fr
    from importlib.metadata import version

    # face_recognition 1.3.0's own __version__ still says 1.2.3; the installed metadata is right
    info = machine(f"onnxruntime {ort.__version__}, dlib {dlib.__version__}, "
                   f"face_recognition {version('face_recognition')}, load {os.getloadavg()[0]:.1f}")
    if args.json:
        print(json.dumps({"machine": info, "photos": len(work), "faces": n_faces, "runs": args.runs,
                          "figures": figures, "best": BEST, "cpu_ms": CPU}, indent=2))
        return
    print(f"machine: {info}")
    print(f"{len(work)} photos, {n_faces} faces, median of {args.runs} runs (fastest run in brackets, "
          "then the median CPU time of the process per face)")
    for name, value in figures.items():
        best = f"  [{BEST[name]:.2f}]  cpu {CPU[name]:.2f}" if name in BEST else ""
        print(f"{name:58} {value:.3g}" if "max" in name else f"{name:58} {value:.2f}{best}")
    fr_name, onnx_name = "face_recognition 1.3.0, ms/face", "faceport onnx (default), ms/face"
    print(f"{'speed-up vs face_recognition, fastest runs (x)':58} {BEST[fr_name] / BEST[onnx_name]:.2f}")


if __name__ == "__main__":
    main()
