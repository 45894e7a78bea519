"""``faceport process image|video`` as a user runs it, on real photos and a real clip."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "faceport.cli", "process", *args], capture_output=True, text=True,
                          env=env, check=False, timeout=600)


@pytest.fixture
def cli_env(tmp_path: Path, models_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(FACEPORT_HOME=str(tmp_path / "home"), FACEPORT_MODELS_DIR=str(models_dir))
    return env


def test_process_image_swaps_the_face(cli_env: dict[str, str], data_dir: Path, tmp_path: Path, engine) -> None:  # type: ignore[no-untyped-def]
    target = data_dir / "identity/obama/fr_obama.jpg"
    out = tmp_path / "swapped.png"
    result = _run(["image", "--source", str(data_dir / "identity/biden/fr_biden.jpg"),
                   "--source", str(data_dir / "identity/biden/fr_biden2.jpg"), "--target", str(target),
                   "-o", str(out), "--processors", "face_swapper,face_enhancer", "--detector", "blazeface_full",
                   "--score", "0.5"], cli_env)
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}" in result.stdout
    before, after = cv2.imread(str(target)), cv2.imread(str(out))
    assert after is not None and after.shape == before.shape
    x1, y1, x2, y2 = engine.detect(before).sorted_by_area().xyxy[0].astype(int)
    assert np.abs(after[y1:y2, x1:x2].astype(np.int16) - before[y1:y2, x1:x2]).mean() > 8.0


def test_process_image_scale(cli_env: dict[str, str], data_dir: Path, tmp_path: Path) -> None:
    target = data_dir / "identity/obama/fr_obama.jpg"
    out = tmp_path / "half.jpg"
    result = _run(["image", "--target", str(target), "-o", str(out), "--processors", "face_enhancer",
                   "--scale", "50"], cli_env)
    assert result.returncode == 0, result.stderr
    h, w = cv2.imread(str(target)).shape[:2]
    assert cv2.imread(str(out)).shape[:2] == (round(h / 2), round(w / 2))


@pytest.mark.parametrize(("args", "message"), [
    (["--source", "identity/biden/fr_biden.jpg", "--processors", "face_morpher"], "unknown processor 'face_morpher'"),
    (["--processors", "face_swapper"], "face_swapper needs a source image"),
    (["--source", "negatives/pf_free-mountain-vector-01.jpg"], "no face found in source image"),
    (["--source", "identity/biden/fr_biden.jpg", "--detector", "yolov99"], "unknown face detector"),
    (["--source", "identity/biden/fr_biden.jpg", "--score", "1.5"], "face_detector_score"),
    (["--source", "identity/biden/missing.jpg"], "no such file"),
], ids=["unknown-processor", "no-source", "no-face-in-source", "unknown-detector", "bad-score", "missing-file"])
def test_process_image_failures_exit_1(cli_env: dict[str, str], data_dir: Path, tmp_path: Path, args: list[str],
                                       message: str) -> None:
    args = [str(data_dir / a) if "/" in a else a for a in args]
    out = tmp_path / "out.jpg"
    result = _run(["image", "--target", str(data_dir / "identity/obama/fr_obama.jpg"), "-o", str(out), *args],
                  cli_env)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert message in result.stderr
    assert not out.exists()


def test_process_video_keeps_audio(cli_env: dict[str, str], data_dir: Path, tmp_path: Path) -> None:
    from faceport.engine.video import probe_video

    out = tmp_path / "swapped.mp4"
    result = _run(["video", "--source", str(data_dir / "identity/biden/fr_biden.jpg"), "--target",
                   str(data_dir / "video/pf_single_face.mp4"), "-o", str(out), "--fps", "15", "--scale", "50"],
                  cli_env)
    assert result.returncode == 0, result.stderr
    info = probe_video(out)
    assert info.has_audio and (info.width, info.height) == (320, 180) and abs(info.fps - 15) < 0.01
    bad = _run(["video", "--source", str(data_dir / "identity/biden/fr_biden.jpg"), "--target",
                str(data_dir / "audio/tts_personal_data_en_16k.wav"), "-o", str(tmp_path / "x.mp4")], cli_env)
    assert bad.returncode == 1 and "no video stream" in bad.stderr


def test_redact_german_speech_fails_unless_told_what_to_do(cli_env: dict[str, str], data_dir: Path,
                                                           tmp_path: Path) -> None:
    from faceport.engine.models import ModelStore

    ModelStore(Path(cli_env["FACEPORT_MODELS_DIR"])).pull(["whisper_base", "whisper_tiny_en", "spacy_en_core_web_sm"])
    speech = str(data_dir / "audio/tts_personal_data_de_22k.wav")

    def redact(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "faceport.cli", "redact", speech, "--audio", *args],
                              capture_output=True, text=True, env=cli_env, check=False, timeout=600)

    failed = redact("-o", str(tmp_path / "a.wav"))
    assert failed.returncode == 1 and "'de'" in failed.stderr and "unsupported_language" in failed.stderr
    assert not (tmp_path / "a.wav").exists()
    done = redact("-o", str(tmp_path / "b.wav"), "--unsupported-language", "process")
    assert done.returncode == 0, done.stderr
    assert "[NAME]" in done.stdout and "Mustermann" not in done.stdout and "warning:" in done.stderr
