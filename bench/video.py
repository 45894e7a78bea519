"""Video pipeline throughput: decode → identity frame function → H.264 encode, in frames per second.

Usage: python bench/video.py [--runs 3] [--clip PATH] [--json]
Prints the machine, then the median over runs of: the whole ``process_video`` call
(probe, decode, BGR conversion, encode with libx264 veryfast crf 20, audio copy, mux,
rename) and, for reference, decoding to BGR alone (``iter_frames``). Default clip:
../shared/data/video/pf_WolfgangLanger_Pexels.mp4 (H.264 640x360, 472 frames, 19.7 s, AAC).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import av

from faceport.engine.types import BGRImage
from faceport.engine.video import iter_frames, probe_video, process_video

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
from engine import machine as engine_machine  # noqa: E402

CLIP = REPO.parent / "shared" / "data" / "video" / "pf_WolfgangLanger_Pexels.mp4"


def machine() -> str:
    return engine_machine(f"PyAV {av.__version__}")


def identity(frame: BGRImage) -> BGRImage:
    return frame


def pipeline_fps(clip: Path, runs: int) -> tuple[float, float, int]:
    """Median output frames per second and seconds per run of the identity ``process_video``."""
    speeds, seconds, frames = [], [], 0
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(runs):
            result = process_video(clip, Path(tmp) / f"out{run}.mp4", identity)
            frames = result.frames_out
            speeds.append(result.frames_out / result.elapsed_s)
            seconds.append(result.elapsed_s)
    return statistics.median(speeds), statistics.median(seconds), frames


def decode_fps(clip: Path, runs: int) -> float:
    speeds = []
    for _ in range(runs):
        started = time.perf_counter()
        count = sum(1 for _ in iter_frames(clip))
        speeds.append(count / (time.perf_counter() - started))
    return statistics.median(speeds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clip", type=Path, default=CLIP)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    info = probe_video(args.clip)
    pipeline_fps(args.clip, 1)  # warm-up: libraries loaded, clip in the page cache
    fps, seconds, frames = pipeline_fps(args.clip, args.runs)
    decode = decode_fps(args.clip, args.runs)
    results = {
        "process_video identity (fps)": round(fps, 1),
        "process_video identity (s per clip)": round(seconds, 2),
        "decode to BGR only (fps)": round(decode, 1),
    }
    clip = (f"{args.clip.name}: {info.video_codec} {info.width}x{info.height} {info.fps:.3f} fps, "
            f"{frames} frames, {info.duration_s:.1f} s, audio {info.audio_codec or 'none'}")
    if args.json:
        print(json.dumps({"machine": machine(), "clip": clip, "runs": args.runs, "results": results}))
        return
    print(f"machine: {machine()}")
    print(f"clip: {clip}; median of {args.runs} runs")
    for name, value in results.items():
        print(f"{name:38s} {value:8.2f}")


if __name__ == "__main__":
    main()
