"""Privacy filter figures: face-blur fps next to deface, full-redaction fps, audio real-time factor.

Usage: python bench/privacy.py [--data ../shared/data] [--runs 3] [--deface auto|PATH|none]

``--deface auto`` (the default) creates a separate venv with ``deface==1.5.0`` under
``~/.cache/faceport/bench-venvs/deface`` (PyPI only) and runs its executable on the same
clips; coverage of both outputs is measured the same way: CenterFace on the output frames,
counting frames where the input had a face above 0.5 and the output still has one.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine import machine

from faceport.engine.detect import CenterFace
from faceport.engine.models import ModelCache, ModelStore
from faceport.engine.redact import ClassOptions, RedactOptions, build_redactor
from faceport.engine.video import iter_frames, probe_video, process_video
from faceport.services.privacy import PrivacyConfig, redact_file

DEFACE_VENV = Path.home() / ".cache" / "faceport" / "bench-venvs" / "deface"


def deface_executable(choice: str) -> Path | None:
    if choice == "none":
        return None
    if choice != "auto":
        return Path(choice)
    exe = DEFACE_VENV / "bin" / "deface"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(DEFACE_VENV)], check=True)
        subprocess.run([str(DEFACE_VENV / "bin" / "pip"), "install", "-q", "deface==1.5.0", "onnxruntime"],
                       check=True)
    return exe


def coverage(detector: CenterFace, original: Path, redacted: Path) -> tuple[int, int]:
    """(frames with a face in the input, of those the frames with no face found in the output)."""
    faces_in = [len(detector.detect(frame, score_threshold=0.5)) > 0 for _i, _t, frame in iter_frames(original)]
    faces_out = [len(detector.detect(frame, score_threshold=0.5)) > 0 for _i, _t, frame in iter_frames(redacted)]
    with_face = [i for i, has in enumerate(faces_in) if has and i < len(faces_out)]
    return len(with_face), sum(not faces_out[i] for i in with_face)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--deface", default="auto", help="auto (separate venv), a path, or none")
    args = parser.parse_args()
    cache = ModelCache(ModelStore(Path(os.environ.get("FACEPORT_MODELS_DIR",
                                                       Path.home() / ".cache" / "faceport" / "models"))))
    detector = CenterFace(cache.get("centerface"), max_side=1280)
    deface = deface_executable(args.deface)
    print(f"machine: {machine()}; median of {args.runs} run(s) per figure")
    clips = [args.data / "video" / "pf_WolfgangLanger_Pexels.mp4", args.data / "video" / "skv_carphone_pristine.mp4"]
    with tempfile.TemporaryDirectory() as tmp:
        for clip in clips:
            info = probe_video(clip)
            ours_fps, theirs_fps = [], []
            for _ in range(args.runs):
                redactor = build_redactor(cache, RedactOptions(plates=ClassOptions(False)))
                started = time.perf_counter()
                result = process_video(clip, Path(tmp) / "faces.mp4", redactor.stream(fps=info.fps))
                ours_fps.append(result.frames_out / (time.perf_counter() - started))
            total, covered = coverage(detector, clip, Path(tmp) / "faces.mp4")
            line = (f"face blur {clip.name} ({info.width}x{info.height}, {result.frames_out} frames): faceport "
                    f"{statistics.median(ours_fps):.1f} fps, coverage {covered}/{total}")
            if deface is not None:
                for _ in range(args.runs):
                    started = time.perf_counter()
                    subprocess.run([str(deface), str(clip), "-o", str(Path(tmp) / "deface.mp4")], check=True,
                                   capture_output=True)
                    theirs_fps.append(result.frames_out / (time.perf_counter() - started))
                total_d, covered_d = coverage(detector, clip, Path(tmp) / "deface.mp4")
                line += (f"; deface 1.5.0 {statistics.median(theirs_fps):.1f} fps, coverage {covered_d}/{total_d}; "
                         f"speed-up {statistics.median(ours_fps) / statistics.median(theirs_fps):.1f}x")
            print(line, flush=True)
        clip = clips[0]
        started = time.perf_counter()
        report = redact_file(cache, clip, Path(tmp) / "full.mp4", PrivacyConfig.model_validate(
            {"video": {"face_detection": True, "plate_detection": True, "text_detection": True}}))
        print(f"full redaction (faces + plates + text + audio) {clip.name}: "
              f"{report.frames / (time.perf_counter() - started):.1f} fps")
        speech = args.data / "audio" / "tts_personal_data_en_16k.wav"
        duration = probe_duration(speech)
        factors = []
        for _ in range(args.runs):
            started = time.perf_counter()
            redact_file(cache, speech, Path(tmp) / "speech.wav", PrivacyConfig())
            factors.append((time.perf_counter() - started) / duration)
        print(f"audio redaction {speech.name} ({duration:.1f} s): real-time factor {min(factors):.3f} warm, "
              f"{factors[0]:.3f} first run (model load included)")


def probe_duration(path: Path) -> float:
    import av

    with av.open(str(path)) as container:
        return float(container.duration or 0) / 1_000_000


if __name__ == "__main__":
    main()
