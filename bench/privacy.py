"""Privacy filter figures: face-blur fps, full-redaction fps, audio real-time factor.

Usage: python bench/privacy.py [--data ../shared/data]. Prints one line per figure. The
comparison with ``deface`` needs ``deface==1.5.0`` in a separate venv (``--deface PATH``
to its ``deface`` executable); without it that column is skipped.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path

from faceport.engine.models import ModelCache, ModelStore
from faceport.engine.redact import ClassOptions, RedactOptions, build_redactor
from faceport.engine.video import probe_video, process_video
from faceport.services.privacy import PrivacyConfig, redact_file

log = logging.getLogger(__name__)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--deface", default=None, help="Path of a deface 1.5.0 executable (separate venv).")
    args = parser.parse_args()
    cache = ModelCache(ModelStore(Path(os.environ.get("FACEPORT_MODELS_DIR",
                                                       Path.home() / ".cache" / "faceport" / "models"))))
    clips = [args.data / "video" / "pf_WolfgangLanger_Pexels.mp4", args.data / "video" / "skv_carphone_pristine.mp4"]
    with tempfile.TemporaryDirectory() as tmp:
        for clip in clips:
            frames = probe_video(clip).frame_count
            redactor = build_redactor(cache, RedactOptions(plates=ClassOptions(False)))
            started = time.perf_counter()
            result = process_video(clip, Path(tmp) / "faces.mp4", redactor.stream(fps=probe_video(clip).fps))
            ours = result.frames_out / (time.perf_counter() - started)
            line = f"face blur {clip.name}: faceport {ours:.1f} fps"
            if args.deface:
                started = time.perf_counter()
                subprocess.run([args.deface, str(clip), "-o", str(Path(tmp) / "deface.mp4")], check=True,
                               capture_output=True)
                line += f", deface {frames / (time.perf_counter() - started):.1f} fps"
            print(line)
        clip = clips[0]
        started = time.perf_counter()
        report = redact_file(cache, clip, Path(tmp) / "full.mp4", PrivacyConfig.model_validate(
            {"video": {"face_detection": True, "plate_detection": True, "text_detection": True}}))
        print(f"full redaction {clip.name}: {report.frames / (time.perf_counter() - started):.1f} fps")
        speech = args.data / "audio" / "tts_personal_data_en_16k.wav"
        started = time.perf_counter()
        redact_file(cache, speech, Path(tmp) / "speech.wav", PrivacyConfig())
        elapsed = time.perf_counter() - started
        duration = 29.366
        print(f"audio redaction {speech.name}: real-time factor {elapsed / duration:.3f} "
              f"(incl. model load)")


if __name__ == "__main__":
    main()
