"""Privacy filter figures: face-blur fps next to deface, full-redaction fps, audio real-time factor.

Usage: python bench/privacy.py [--data ../shared/data] [--runs 3] [--deface auto|PATH|none]
       [--clips a.mp4,b.mov] [--judge-every 1] [--skip-rest] [--no-write]

The judged face figures are written to the ``faces`` section of
faceport/services/privacy_figures.json (the figures ``GET /api/v1/models`` reports), with the
date, machine, load, clips and command; ``--no-write`` leaves the file alone.

``--deface auto`` (the default) creates a separate venv with ``deface==1.5.0``, ``onnx`` and
``onnxruntime`` under ``~/.cache/faceport/bench-venvs/deface`` (PyPI only; with ``onnx`` deface
uses its onnxruntime backend) and runs its executable on the same clips. Both are timed as whole
processes (``faceport redact --faces`` CLI vs ``deface -k`` CLI, both keeping the audio, model load
included), alternated,
median of ``--runs``. Coverage of both outputs is decided by the same independent judge
(tests/privacy_judge.py): Haar frontal/profile cascades and dlib HOG on the input frames give the
reference faces, and a face is hidden only when the pixels in its box lost their sharpness. The
flagged frames are listed so they can be looked at (the judge has false positives of its own).
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
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from engine import machine

from faceport.engine.models import ModelCache, ModelStore
from faceport.services.privacy import PrivacyConfig, redact_file
from faceport.services.privacy_figures import write_section
from tests.privacy_judge import (
    JUDGE_FALSE_POSITIVES,
    MIN_CHANGE,
    SHARPNESS_RATIO,
    JudgeReport,
    judge,
    read_frames,
    reference_boxes,
)

REPO = Path(__file__).resolve().parents[1]
# the clips of shared/data/video with real faces (pf_no_face has none, bigbuckbunny is a cartoon)
FACE_CLIPS = ("pf_WolfgangLanger_Pexels.mp4", "pf_single_face.mp4", "skv_carphone_pristine.mp4",
              "pf_face_noface.mov", "pf_noface_face.mov", "derived_face_noface_h264.mp4",
              "synth_slideshow_obama_biden_cat_group.mp4")

DEFACE_VENV = Path.home() / ".cache" / "faceport" / "bench-venvs" / "deface"


def deface_executable(choice: str) -> Path | None:
    if choice == "none":
        return None
    if choice != "auto":
        return Path(choice)
    exe = DEFACE_VENV / "bin" / "deface"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(DEFACE_VENV)], check=True)
        subprocess.run([str(DEFACE_VENV / "bin" / "pip"), "install", "-q", "deface==1.5.0", "onnx", "onnxruntime"],
                       check=True)
    return exe


def faceport_command(clip: Path, out: Path) -> list[str]:
    return [sys.executable, "-c", "from faceport.cli import main; main()", "redact", str(clip), "-o", str(out),
            "--faces"]


def timed(command: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TQDM_DISABLE": "1"}
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--deface", default="auto", help="auto (separate venv), a path, or none")
    parser.add_argument("--clips", default=",".join(FACE_CLIPS), help="comma-separated names in data/video")
    parser.add_argument("--judge-every", type=int, default=1, help="judge every N-th frame")
    parser.add_argument("--skip-rest", action="store_true", help="face blur only (no full/audio figures)")
    parser.add_argument("--no-write", action="store_true", help="do not write faceport/services/privacy_figures.json")
    args = parser.parse_args()
    cache = ModelCache(ModelStore(Path(os.environ.get("FACEPORT_MODELS_DIR",
                                                       Path.home() / ".cache" / "faceport" / "models"))))
    deface = deface_executable(args.deface)
    print(f"machine: {machine()}; median of {args.runs} whole-process run(s) per figure, alternated")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.clips.split(","):
            clip = args.data / "video" / name
            originals = read_frames(clip)
            boxes = reference_boxes(originals, every=args.judge_every)
            ours, theirs = Path(tmp) / "faceport.mp4", Path(tmp) / "deface.mp4"
            ours_s, theirs_s = [], []
            for _ in range(args.runs):
                ours_s.append(timed(faceport_command(clip, ours)))
                if deface is not None:
                    theirs_s.append(timed([str(deface), "-k", str(clip), "-o", str(theirs)]))
            n = len(originals)
            h, w = originals[0].shape[:2]
            ours_frames = read_frames(ours)
            ours_fps = len(ours_frames) / statistics.median(ours_s)  # frames each tool wrote
            report = judge(originals, iter(ours_frames), boxes)
            print(f"{name} ({w}x{h}, {n} frames): faceport {ours_fps:.1f} fps, {report.line()}; "
                  f"flagged frames {report.leak_frames}; boxes {report.leaks}", flush=True)
            row = clip_row(name, w, h, n, args.judge_every, args.runs, report, ours_fps)
            if deface is not None:
                theirs_frames = read_frames(theirs)
                theirs_fps = len(theirs_frames) / statistics.median(theirs_s)
                report_d = judge(originals, iter(theirs_frames), boxes)
                print(f"{name}: deface 1.5.0 {theirs_fps:.1f} fps ({len(theirs_frames)} frames written), "
                      f"{report_d.line()}; "
                      f"flagged frames {report_d.leak_frames}; boxes {report_d.leaks}; "
                      f"faceport/deface speed {ours_fps / theirs_fps:.2f}x", flush=True)
                row["peer"] = {"name": "deface 1.5.0 (onnxruntime, -k)", "faces_visible": report_d.visible,
                               "frames_with_leak": len(report_d.leak_frames), "fps": round(theirs_fps, 2),
                               "frames_written": len(theirs_frames)}
                row["speed_ratio"] = round(ours_fps / theirs_fps, 2)
            rows.append(row)
        if not args.no_write:
            write_section("faces", faces_section(rows, args))
            print("wrote the faces section of faceport/services/privacy_figures.json")
        if args.skip_rest:
            return
        clip = args.data / "video" / FACE_CLIPS[0]
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


def clip_row(name: str, w: int, h: int, n: int, every: int, runs: int, report: JudgeReport,
             fps: float) -> dict[str, Any]:
    """One clip's judged figures; flagged boxes not on the by-eye list of judge false positives are 'not checked'."""
    known = JUDGE_FALSE_POSITIVES.get(name)
    flagged = {(i, box) for i, box, _r, _c in report.leaks}
    unchecked = None if known is None else len(flagged - known)
    return {"clip": name, "size": f"{w}x{h}", "frames": n, "judged_every": every, "runs": runs,
            "frames_judged": report.frames, "faces_judged": report.faces, "faces_visible": report.visible,
            "frames_with_leak": len(report.leak_frames), "leak_frames": report.leak_frames,
            "flagged_not_checked_by_eye": unchecked, "fps": round(fps, 2)}


def faces_section(rows: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """The ``faces`` section of the figures file from the judged clips."""
    judged = sum(r["faces_judged"] for r in rows)
    visible = sum(r["faces_visible"] for r in rows)
    unchecked = [r["flagged_not_checked_by_eye"] for r in rows]
    ratios = [r["speed_ratio"] for r in rows if "speed_ratio" in r]
    figures: dict[str, Any] = {
        "coverage": round(100.0 * (judged - visible) / judged, 2) if judged else None,
        "coverage_note": "% of reference faces (independent judge) whose pixels lost their detail; every box the "
                         "judge flags counts as visible, its own false positives included",
        "faces_judged": judged, "faces_visible": visible,
        "frames_with_leak": sum(r["frames_with_leak"] for r in rows),
        "flagged_not_checked_by_eye": None if None in unchecked else sum(unchecked),
        "coverage_checked": None if None in unchecked or not judged else round(
            100.0 * (1 - sum(unchecked) / max(1, judged - (visible - sum(unchecked)))), 2),
        "coverage_checked_note": "the same, leaving out the flagged boxes looked at by eye and found to be no face "
                                 "(tests/privacy_judge.py JUDGE_FALSE_POSITIVES); null when a clip has no such list",
        "fps_median": round(statistics.median(r["fps"] for r in rows), 2),
        "fps_note": "whole process (faceport redact --faces), frames written / median wall time"}
    if ratios:
        figures["peer"] = rows[0]["peer"]["name"]
        figures["peer_faces_visible"] = sum(r["peer"]["faces_visible"] for r in rows if "peer" in r)
        figures["speed_ratio_median"] = round(statistics.median(ratios), 2)
        figures["speed_ratio_note"] = "faceport fps / peer fps, same clips, same run, alternated"
    command = " ".join(["bench/privacy.py", f"--runs {args.runs}", f"--judge-every {args.judge_every}",
                        f"--clips {args.clips}", *(["--skip-rest"] if args.skip_rest else [])])
    return {"bench": command, "machine": machine(), "clips": [r["clip"] for r in rows],
            "method": "independent judge (tests/privacy_judge.py): reference faces from OpenCV Haar frontal/profile "
                      "(frame and mirror) and dlib HOG; a face is hidden when the Laplacian variance inside its box "
                      f"fell to <= {SHARPNESS_RATIO} of the input's and the mean change is >= {MIN_CHANGE} grey levels",
            "figures": {"face_detection": figures}, "details": {"clips": rows}}


def probe_duration(path: Path) -> float:
    import av

    with av.open(str(path)) as container:
        return float(container.duration or 0) / 1_000_000


if __name__ == "__main__":
    main()
