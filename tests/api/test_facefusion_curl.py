"""Seed B's documentation, run as written: every curl example (and the Python client example)
against a real ``faceport serve`` process, with real photos and a real video.

Only the host/port and the output file name (``output_filename.jpg``) are substituted; the
input file names are the seed's, created in a temporary working directory from ../shared/data.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from tests.conftest import REPO

SEED = REPO.parent / "shared" / "seeds" / "B-facefusion-rest-api.md"
SEED_HOST = "http://localhost:8000"

# Every curl command of the seed, verbatim (the test below checks this list against the seed when present).
HEALTH = 'curl http://localhost:8000/health'
PROCESSORS = 'curl http://localhost:8000/processors'
PROCESS_IMAGE = '''curl -X POST "http://localhost:8000/process/image" \\
  -F "target=@target_image.jpg" \\
  -F "source=@source_face.jpg" \\
  -F 'request={"processors":["face_swapper"],"execution_providers":["cpu"]}\''''
PROCESS_VIDEO = '''curl -X POST "http://localhost:8000/process/video" \\
  -F "target=@target_video.mp4" \\
  -F "source=@source_face.jpg" \\
  -F 'request={"processors":["face_swapper"],"execution_providers":["cpu"],"execution_thread_count":4}\''''
DOWNLOAD = 'curl -O -J "http://localhost:8000/download/output_filename.jpg"'
DOWNLOAD_CLEANUP = 'curl -O -J "http://localhost:8000/download/output_filename.jpg?cleanup=true"'
DELETE = 'curl -X DELETE "http://localhost:8000/output/output_filename.jpg"'
MULTIPLE_PROCESSORS = '''curl -X POST "http://localhost:8000/process/image" \\
  -F "target=@target.jpg" \\
  -F 'request={"processors":["face_swapper","face_enhancer"],"execution_providers":["cpu"]}\''''
GPU = '''curl -X POST "http://localhost:8000/process/image" \\
  -F "target=@target.jpg" \\
  -F "source=@source.jpg" \\
  -F 'request={"processors":["face_swapper"],"execution_providers":["cuda"],"execution_thread_count":4}\''''
HIGH_QUALITY = '''curl -X POST "http://localhost:8000/process/video" \\
  -F "target=@video.mp4" \\
  -F "source=@face.jpg" \\
  -F 'request={
    "processors":["face_swapper","face_enhancer"],
    "execution_providers":["cuda"],
    "execution_thread_count":8,
    "output_video_fps":30,
    "output_video_scale":100,
    "face_detector_score":0.6
  }\''''
ALL_CURL = (HEALTH, PROCESSORS, PROCESS_IMAGE, PROCESS_VIDEO, DOWNLOAD, DOWNLOAD_CLEANUP, DELETE, MULTIPLE_PROCESSORS,
            GPU, HIGH_QUALITY)

JOB_ID = re.compile(r"api_\d{8}_\d{6}_[0-9a-f]{6}")
OUTPUT_PATH = re.compile(r"\.api_outputs/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.(jpg|mp4)")


@dataclass(frozen=True)
class Served:
    url: str
    home: Path
    work: Path  # the working directory the commands run in

    def curl(self, command: str, *, output_name: str | None = None, cwd: Path | None = None) -> str:
        """Run a seed command with bash, our host instead of localhost:8000; returns stdout."""
        command = command.replace(SEED_HOST, self.url)
        if output_name is not None:
            command = command.replace("output_filename.jpg", output_name)
        result = subprocess.run(["bash", "-c", command], cwd=cwd or self.work, capture_output=True, text=True,
                                timeout=600, check=False)
        assert result.returncode == 0, f"{command}\n{result.stderr}"
        return result.stdout

    def curl_json(self, command: str, **kwargs: object) -> object:
        out = self.curl(command, **kwargs)  # type: ignore[arg-type]
        try:
            return json.loads(out)
        except ValueError:
            pytest.fail(f"not JSON: {out[:500]!r}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, models_dir: Path, data_dir: Path) -> Iterator[Served]:
    """``faceport serve`` in a subprocess, its home in tmp; the seed's input files in a work directory."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    root = tmp_path_factory.mktemp("seed-b")
    work = root / "work"
    work.mkdir()
    obama, biden = data_dir / "identity/obama/fr_obama.jpg", data_dir / "identity/biden/fr_biden.jpg"
    video = data_dir / "video/pf_single_face.mp4"
    for name, source in {"target_image.jpg": obama, "target.jpg": obama, "source_face.jpg": biden,
                         "source.jpg": biden, "face.jpg": biden, "target_video.mp4": video,
                         "video.mp4": video}.items():
        shutil.copyfile(source, work / name)
    env = dict(os.environ)
    env.update(FACEPORT_HOME=str(root / "home"), FACEPORT_MODELS_DIR=str(models_dir))
    for key in ("FACEPORT_DATABASE_URL", "FACEPORT_API_KEY"):
        env.pop(key, None)
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "faceport.cli", "serve", "--port", str(port),
                             "--privacy-port", "0", "--no-pull"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"faceport serve did not start: {proc.stdout.read() if proc.stdout else ''}")
            time.sleep(0.2)
        yield Served(url=url, home=root / "home", work=work)
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    assert "Traceback" not in output, output


def _face_box(engine, image: np.ndarray) -> tuple[int, int, int, int]:  # type: ignore[no-untyped-def]
    faces = engine.detect(image)
    assert len(faces) >= 1
    x1, y1, x2, y2 = faces.sorted_by_area().xyxy[0].astype(int)
    return max(0, x1), max(0, y1), x2, y2


def _assert_face_changed(engine, before: np.ndarray, after: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    assert after.shape == before.shape
    x1, y1, x2, y2 = _face_box(engine, before)
    inside = np.abs(after[y1:y2, x1:x2].astype(np.int16) - before[y1:y2, x1:x2]).mean()
    mask = np.ones(before.shape[:2], bool)
    mask[max(0, y1 - (y2 - y1) // 2):y2 + (y2 - y1) // 2, max(0, x1 - (x2 - x1) // 2):x2 + (x2 - x1) // 2] = False
    outside = np.abs(after.astype(np.int16) - before)[mask].mean()
    assert inside > 8.0, f"face region barely changed (mean abs diff {inside:.1f})"
    assert outside < 3.0, f"the image changed away from the face (mean abs diff {outside:.1f})"


def _output_name(body: dict) -> str:  # type: ignore[type-arg]
    match = OUTPUT_PATH.fullmatch(body["output_path"])
    assert match, body
    return body["output_path"].split("/")[-1]


def test_the_commands_here_are_the_seeds() -> None:
    if not SEED.is_file():
        pytest.skip(f"seed not found at {SEED}")
    blocks = re.findall(r"```bash\n(.*?)```", SEED.read_text(), flags=re.S)
    seed_curls: list[str] = []
    for block in blocks:
        lines = block.splitlines()
        index = 0
        while index < len(lines):
            if lines[index].startswith("curl"):
                command = [lines[index]]
                # a command goes on after a trailing backslash or inside an open single quote
                while command[-1].endswith("\\") or "\n".join(command).count("'") % 2:
                    index += 1
                    command.append(lines[index])
                seed_curls.append("\n".join(command))
            index += 1
    assert sorted(seed_curls) == sorted(ALL_CURL)


def test_health_and_processors(served: Served) -> None:
    health = served.curl_json(HEALTH)
    assert health["status"] == "healthy" and health["version"]  # type: ignore[index]
    assert {"face_swapper", "face_enhancer"} <= set(health["processors_available"])  # type: ignore[index]
    processors = served.curl_json(PROCESSORS)
    assert isinstance(processors, list)
    assert {"name": "face_swapper", "available": True} in processors
    assert {"name": "face_enhancer", "available": True} in processors
    assert all(set(p) == {"name", "available"} for p in processors)


def test_image_swap_then_download_then_cleanup_download(served: Served, engine) -> None:  # type: ignore[no-untyped-def]
    body = served.curl_json(PROCESS_IMAGE)
    assert isinstance(body, dict) and set(body) == {"job_id", "status", "output_path"}, body
    assert body["status"] == "completed" and JOB_ID.fullmatch(body["job_id"]), body
    name = _output_name(body)
    assert name.endswith(".jpg") and (served.home / "outputs" / name).is_file()

    first = served.work / "download-1"
    first.mkdir()
    served.curl(DOWNLOAD, output_name=name, cwd=first)
    assert [p.name for p in first.iterdir()] == [name]  # -J: the server's file name
    result = cv2.imread(str(first / name))
    assert result is not None, "the download does not decode"
    _assert_face_changed(engine, cv2.imread(str(served.work / "target_image.jpg")), result)

    status = httpx.get(f"{served.url}/jobs/{body['job_id']}", timeout=10).json()
    assert status["status"] == "completed" and status["progress"] == 100.0
    assert status["output_path"] == body["output_path"] and status["error"] is None

    second = served.work / "download-2"
    second.mkdir()
    served.curl(DOWNLOAD_CLEANUP, output_name=name, cwd=second)
    assert (second / name).read_bytes() == (first / name).read_bytes()
    deadline = time.monotonic() + 10
    while (served.home / "outputs" / name).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not (served.home / "outputs" / name).exists(), "cleanup=true did not delete the output"
    gone = httpx.get(f"{served.url}/download/{name}", timeout=10)
    assert gone.status_code == 404 and gone.json()["code"] == "NOT_FOUND"


def test_delete_output(served: Served) -> None:
    name = _output_name(served.curl_json(PROCESS_IMAGE))  # type: ignore[arg-type]
    assert (served.home / "outputs" / name).is_file()
    deleted = served.curl_json(DELETE, output_name=name)
    assert deleted == {"status": "deleted", "name": name}
    assert not (served.home / "outputs" / name).exists()
    again = served.curl_json(DELETE, output_name=name)
    assert again["code"] == "NOT_FOUND"  # type: ignore[index]
    assert httpx.get(f"{served.url}/download/{name}", timeout=10).status_code == 404


def test_video_swap_keeps_audio(served: Served, engine) -> None:  # type: ignore[no-untyped-def]
    from faceport.engine.video import iter_frames, probe_video

    body = served.curl_json(PROCESS_VIDEO)
    assert isinstance(body, dict) and JOB_ID.fullmatch(body["job_id"]), body
    if body["status"] == "queued":
        deadline = time.monotonic() + 300
        while (status := httpx.get(f"{served.url}/jobs/{body['job_id']}", timeout=10).json())["status"] not in (
                "completed", "failed") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert status["status"] == "completed", status
        body = status
    assert body["status"] == "completed", body
    name = _output_name(body)
    assert name.endswith(".mp4")
    folder = served.work / "download-video"
    folder.mkdir()
    served.curl(DOWNLOAD.replace("output_filename.jpg", name), cwd=folder)
    source_info, out_info = probe_video(served.work / "target_video.mp4"), probe_video(folder / name)
    assert source_info.has_audio and out_info.has_audio
    assert abs(out_info.duration_s - source_info.duration_s) < 0.3
    assert (out_info.width, out_info.height) == (source_info.width, source_info.height)
    before = next(iter_frames(served.work / "target_video.mp4"))[2]
    after = next(iter_frames(folder / name))[2]
    x1, y1, x2, y2 = _face_box(engine, before)
    assert np.abs(after[y1:y2, x1:x2].astype(np.int16) - before[y1:y2, x1:x2]).mean() > 5.0


def test_multiple_processors_example_needs_a_source(served: Served) -> None:
    body = served.curl_json(MULTIPLE_PROCESSORS)
    assert body["code"] == "MISSING_FIELD" and body["details"]["field"] == "source", body  # type: ignore[index]
    assert "face_swapper needs a source image" in body["detail"]  # type: ignore[index]


@pytest.mark.parametrize("command", [GPU, HIGH_QUALITY], ids=["gpu-acceleration", "high-quality-output"])
def test_cuda_examples_name_the_available_providers(served: Served, command: str) -> None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("CUDA is available here: the example would run")
    body = served.curl_json(command)
    assert body["code"] == "INVALID_INPUT", body  # type: ignore[index]
    assert body["detail"].startswith("execution provider 'cuda' is not available here; available: cpu")  # type: ignore[index]
    assert body["details"]["field"] == "execution_providers"  # type: ignore[index]


def test_python_client_example(served: Served) -> None:
    """The seed's Python client (requests), with its API_URL pointed at our server."""
    pytest.importorskip("requests")
    if not SEED.is_file():
        pytest.skip(f"seed not found at {SEED}")
    code = re.search(r"## Python Client Example\n\n```python\n(.*?)```", SEED.read_text(), flags=re.S)
    assert code is not None
    script = served.work / "client_example.py"
    script.write_text(code.group(1).replace(SEED_HOST, served.url))
    (served.work / "result.jpg").unlink(missing_ok=True)
    result = subprocess.run([sys.executable, str(script)], cwd=served.work, capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert "Status: completed" in result.stdout and "Result saved to result.jpg" in result.stdout
    assert cv2.imread(str(served.work / "result.jpg")) is not None


def test_javascript_client_example(served: Served) -> None:
    """The seed's Node.js client, when node and its two packages (form-data, axios) are installed."""
    if shutil.which("node") is None or not SEED.is_file():
        pytest.skip("node or the seed is not available")
    probe = subprocess.run(["node", "-e", "require('form-data'); require('axios')"], cwd=served.work,
                           capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        pytest.skip("the node packages form-data and axios are not installed")
    code = re.search(r"## JavaScript/Node.js Client Example\n\n```javascript\n(.*?)```", SEED.read_text(), flags=re.S)
    assert code is not None
    script = served.work / "client_example.js"
    script.write_text(code.group(1).replace(SEED_HOST, served.url))
    result = subprocess.run(["node", str(script)], cwd=served.work, capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0 and "Status: completed" in result.stdout, result.stderr
