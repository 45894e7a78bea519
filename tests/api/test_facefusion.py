"""Seed B beyond the documented examples, through a real uvicorn server: request validation,
path confinement, bad uploads, size limit, API key, queued videos with polling and webhooks,
restart safety of the job runner, output retention."""

from __future__ import annotations

import http.client
import json
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import cv2
import httpx
import numpy as np
import pytest

from faceport.services.facefusion import VIDEO_JOB_KIND, public_job_id
from tests.api.conftest import LiveServer, serving

OBAMA = "identity/obama/fr_obama.jpg"
BIDEN = "identity/biden/fr_biden.jpg"
BIDEN_2 = "identity/biden/fr_biden2.jpg"
NO_FACE_IMAGE = "negatives/pf_free-mountain-vector-01.jpg"
GROUP = "group/fr_obama_and_biden.jpg"
SHORT_VIDEO = "video/pf_single_face.mp4"  # 2.4 s, mp3 audio
NO_FACE_VIDEO = "video/pf_no_face.mp4"  # 3.95 s, aac audio
AUDIO_ONLY = "audio/tts_personal_data_en_16k.wav"


def _files(data_dir: Path, target: str | tuple[str, bytes], *sources: str) -> list[tuple[str, Any]]:
    files: list[tuple[str, Any]] = []
    if isinstance(target, tuple):
        files.append(("target", target))
    else:
        files.append(("target", (Path(target).name, (data_dir / target).read_bytes())))
    for source in sources:
        files.append(("source", (Path(source).name, (data_dir / source).read_bytes())))
    return files


def _post(url: str, endpoint: str, files: list[tuple[str, Any]], request: str | dict[str, Any] | None = None,
          headers: dict[str, str] | None = None) -> httpx.Response:
    data = {}
    if request is not None:
        data["request"] = request if isinstance(request, str) else json.dumps(request)
    return httpx.post(f"{url}/process/{endpoint}", files=files, data=data, headers=headers, timeout=300)


def _wait_job(url: str, job_id: str, timeout: float = 300) -> tuple[dict[str, Any], list[float]]:
    seen: list[float] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = httpx.get(f"{url}/jobs/{job_id}", timeout=10).json()
        seen.append(status["progress"])
        if status["status"] in ("completed", "failed"):
            return status, seen
        time.sleep(0.2)
    pytest.fail(f"job {job_id} did not end in {timeout} s")


def _assert_serving(url: str) -> None:
    assert httpx.get(f"{url}/health", timeout=10).json()["status"] == "healthy"


# ---- request validation: error and passing cases in one table -------------------------------------------------
VALIDATION = [
    ("threads-0", {"execution_thread_count": 0}, "execution_thread_count"),
    ("threads-33", {"execution_thread_count": 33}, "execution_thread_count"),
    ("image-scale-9", {"output_image_scale": 9}, "output_image_scale"),
    ("image-scale-401", {"output_image_scale": 401}, "output_image_scale"),
    ("video-scale-9", {"output_video_scale": 9}, "output_video_scale"),
    ("video-scale-401", {"output_video_scale": 401}, "output_video_scale"),
    ("fps-0", {"output_video_fps": 0}, "output_video_fps"),
    ("fps-121", {"output_video_fps": 121}, "output_video_fps"),
    ("score-1.5", {"face_detector_score": 1.5}, "face_detector_score"),
    ("score-negative", {"face_detector_score": -0.1}, "face_detector_score"),
    ("detector-yoloface", {"face_detector_model": "yoloface_8n"}, "face_detector_model"),
    ("unknown-processor", {"processors": ["face_swapper", "frame_colorizer"]}, "processors"),
    ("no-processors", {"processors": []}, "processors"),
    ("unknown-provider", {"execution_providers": ["tpu"]}, "execution_providers"),
    ("selector-one", {"face_selector_mode": "one"}, "face_selector_mode"),
    ("face-position-negative", {"face_position": -1}, "face_position"),
    ("blend-101", {"face_enhancer_blend": 101}, "face_enhancer_blend"),
    ("webhook-ftp", {"webhook_url": "ftp://127.0.0.1/x"}, "webhook_url"),
    ("webhook-file", {"webhook_url": "file:///etc/passwd"}, "webhook_url"),
    ("extra-field", {"processors": ["face_swapper"], "frame_enhancer_model": "x"}, "frame_enhancer_model"),
    ("malformed-json", '{"processors": ["face_swapper"', "request"),
    ("json-array", '["face_swapper"]', "request"),
    ("ok-defaults", None, None),
    ("ok-enhancer-centerface-half-size", {"processors": ["face_swapper", "face_enhancer"],
                                          "face_detector_model": "centerface", "face_detector_score": 0.4,
                                          "output_image_scale": 50, "face_enhancer_blend": 100}, None),
    ("ok-empty-request", "", None),
    ("ok-yunet-detector", {"face_detector_model": "yunet"}, None),
]


@pytest.mark.parametrize(("request_body", "field"), [(r, f) for _, r, f in VALIDATION],
                         ids=[case for case, _, _ in VALIDATION])
def test_process_request_validation(live_server: LiveServer, data_dir: Path, request_body: Any,
                                    field: str | None) -> None:
    response = _post(live_server.url, "image", _files(data_dir, OBAMA, BIDEN), request_body)
    body = response.json()
    if field is None:
        assert response.status_code == 200, body
        assert body["status"] == "completed"
        output = cv2.imread(str(live_server.settings.home / "outputs" / body["output_path"].split("/")[-1]))
        target = cv2.imread(str(data_dir / OBAMA))
        scale = (request_body or {}).get("output_image_scale", 100) if isinstance(request_body, dict) else 100
        assert output.shape[:2] == (round(target.shape[0] * scale / 100), round(target.shape[1] * scale / 100))
        return
    assert response.status_code == 400, body
    assert body["code"] == "INVALID_INPUT" and body["details"]["field"] == field, body
    assert field in body["detail"], body
    if field == "face_detector_model":
        assert "blazeface_short, blazeface_full, centerface" in body["detail"]
    if field == "processors" and request_body["processors"]:
        assert "'frame_colorizer'" in body["detail"] and "face_swapper, face_enhancer" in body["detail"]
    if field == "frame_enhancer_model":
        assert body["details"]["unknown"] == ["frame_enhancer_model"]
    # nothing was accepted: no job upload left behind
    assert not any((live_server.settings.home / "uploads").iterdir())


def test_unavailable_provider_lists_the_available_ones(live_server: LiveServer, data_dir: Path) -> None:
    import onnxruntime

    if "ROCMExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("ROCm is available here")
    response = _post(live_server.url, "image", _files(data_dir, OBAMA, BIDEN),
                     {"execution_providers": ["cpu", "rocm"]})
    assert response.status_code == 400
    body = response.json()
    assert body["detail"].startswith("execution provider 'rocm' is not available here; available: cpu")
    assert "cpu" in body["details"]["available"]


def test_openapi_documents_the_seed_routes(live_server: LiveServer) -> None:
    schema = httpx.get(f"{live_server.url}/openapi.json", timeout=10).json()
    for path in ("/processors", "/process/image", "/process/video", "/download/{name}", "/output/{name}",
                 "/jobs/{job_id}"):
        assert path in schema["paths"], path
    image = schema["paths"]["/process/image"]["post"]
    assert image["tags"] == ["facefusion"]
    form = image["requestBody"]["content"]["multipart/form-data"]["schema"]
    props = schema["components"]["schemas"][form["$ref"].split("/")[-1]]["properties"] if "$ref" in form else form[
        "properties"]
    assert {"target", "source", "request"} <= set(props)


# ---- sources, selection ------------------------------------------------------------------------------
def test_several_source_images_of_one_person(live_server: LiveServer, data_dir: Path) -> None:
    response = _post(live_server.url, "image", _files(data_dir, OBAMA, BIDEN, BIDEN_2))
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "completed"


@pytest.mark.parametrize(("mode", "index_field"), [("index", "face_position"), ("reference", "reference_face_index")])
def test_selector_changes_only_the_chosen_face(live_server: LiveServer, data_dir: Path, engine, mode: str,  # type: ignore[no-untyped-def]
                                               index_field: str) -> None:
    target = cv2.imread(str(data_dir / GROUP))
    faces = engine.detect(target)
    if len(faces) < 2:
        pytest.skip("the group photo has fewer than two detected faces")
    order = np.argsort(faces.xyxy[:, 0])
    for chosen, other in ((0, 1), (1, 0)):
        response = _post(live_server.url, "image", _files(data_dir, GROUP, BIDEN_2),
                         {"face_selector_mode": mode, index_field: chosen})
        assert response.status_code == 200, response.text
        name = response.json()["output_path"].split("/")[-1]
        output = cv2.imread(str(live_server.settings.home / "outputs" / name))

        def change(index: int, output: np.ndarray = output) -> float:
            x1, y1, x2, y2 = faces.xyxy[index].astype(int)
            return float(np.abs(output[y1:y2, x1:x2].astype(np.int16) - target[y1:y2, x1:x2]).mean())

        assert change(int(order[chosen])) > 3 * max(change(int(order[other])), 1.0)
    beyond = _post(live_server.url, "image", _files(data_dir, GROUP, BIDEN_2),
                   {"face_selector_mode": mode, index_field: 40})
    assert beyond.status_code == 400 and beyond.json()["code"] == "NO_FACE"
    assert beyond.json()["details"]["field"] == "target"


# ---- path confinement ------------------------------------------------------------------------------------
TRAVERSAL = ["..%2F..%2Fetc%2Fpasswd", "....//", "%2e%2e%2fsecret.txt", "%2e%2e", "..", "..%2fsecret.txt",
             "%2Fetc%2Fpasswd", "..%5C..%5Csecret.txt", ".hidden", "secret.txt%00.jpg", "faceport.db",
             "%2e%2e%2f%2e%2e%2fsecret.txt", "x" * 300]


def _raw(url: str, method: str, path: str, *, redirects: int = 1) -> tuple[int, bytes]:
    """Send ``path`` byte for byte (no client-side normalisation); follow one same-server redirect."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        conn.endheaders()
        response = conn.getresponse()
        status, body, location = response.status, response.read(), response.getheader("location") or ""
    finally:
        conn.close()
    if status in (307, 308) and redirects and location.startswith(url):  # Starlette's trailing-slash redirect
        return _raw(url, method, location.removeprefix(url), redirects=redirects - 1)
    return status, body


def test_names_never_escape_the_outputs_directory(live_server: LiveServer, data_dir: Path) -> None:
    home = live_server.settings.home
    secret = home / "secret.txt"
    secret.write_text("top secret")
    (home / "outputs" / ".hidden").write_text("hidden")
    created = _post(live_server.url, "image", _files(data_dir, OBAMA, BIDEN)).json()
    real = home / "outputs" / created["output_path"].split("/")[-1]
    before = {p: p.read_bytes() for p in (secret, real, home / "outputs" / ".hidden")}
    for name in TRAVERSAL:
        for method, prefix in (("GET", "/download/"), ("DELETE", "/output/"), ("GET", "/jobs/")):
            status, body = _raw(live_server.url, method, prefix + name)
            assert status in (400, 404), (method, name, status, body[:200])
            assert json.loads(body)["code"] in ("INVALID_INPUT", "NOT_FOUND"), body
            assert b"top secret" not in body and b"hidden" != body
    assert {p: p.read_bytes() for p in before} == before
    assert (home / "faceport.db").is_file()
    _assert_serving(live_server.url)


# ---- bad uploads: seed-style errors, and the server keeps serving ---------------------------------------------
def _truncated(data_dir: Path, path: str, fraction: float) -> bytes:
    data = (data_dir / path).read_bytes()
    return data[: int(len(data) * fraction)]


BAD_UPLOADS = [
    ("corrupt-image", "image", lambda d: ("target.jpg", b"this is not an image\n" * 50), (BIDEN,),
     "INVALID_IMAGE", "target"),
    ("truncated-jpeg", "image", lambda d: ("target.jpg", _truncated(d, OBAMA, 0.3)), (BIDEN,),
     "INVALID_IMAGE", "target"),
    ("video-as-image", "image", lambda d: ("target.mp4", (d / SHORT_VIDEO).read_bytes()), (BIDEN,),
     "INVALID_IMAGE", "target"),
    ("empty-target", "image", lambda d: ("target.jpg", b""), (BIDEN,), "INVALID_IMAGE", "target"),
    ("no-face-in-target", "image", lambda d: ("mountain.jpg", (d / NO_FACE_IMAGE).read_bytes()), (BIDEN,),
     "NO_FACE", "target"),
    ("no-face-in-source", "image", lambda d: ("t.jpg", (d / OBAMA).read_bytes()), (NO_FACE_IMAGE,),
     "NO_FACE", "source"),
    ("source-not-an-image", "image", lambda d: ("t.jpg", (d / OBAMA).read_bytes()), (AUDIO_ONLY,),
     "INVALID_IMAGE", "source"),
    ("truncated-video", "video", lambda d: ("target.mp4", _truncated(d, SHORT_VIDEO, 0.5)), (BIDEN,),
     "INVALID_FORMAT", "target"),
    ("audio-only-video", "video", lambda d: ("speech.wav", (d / AUDIO_ONLY).read_bytes()), (BIDEN,),
     "INVALID_FORMAT", "target"),
    ("image-as-video", "video", lambda d: ("target.mp4", (d / OBAMA).read_bytes()), (BIDEN,),
     "INVALID_FORMAT", "target"),
    ("no-face-in-source-video", "video", lambda d: ("t.mp4", (d / SHORT_VIDEO).read_bytes()), (NO_FACE_IMAGE,),
     "NO_FACE", "source"),
]


@pytest.mark.parametrize(("endpoint", "target", "sources", "code", "field"), [c[1:] for c in BAD_UPLOADS],
                         ids=[c[0] for c in BAD_UPLOADS])
def test_bad_uploads(live_server: LiveServer, data_dir: Path, endpoint: str, target: Any, sources: tuple[str, ...],
                     code: str, field: str) -> None:
    response = _post(live_server.url, endpoint, _files(data_dir, target(data_dir), *sources))
    body = response.json()
    assert response.status_code == 400, body
    assert set(body) == {"detail", "code", "details"}
    assert body["code"] == code and body["details"]["field"] == field, body
    if endpoint == "video" and "wav" in target(data_dir)[0]:
        assert "no video stream" in body["detail"]
    _assert_serving(live_server.url)
    deadline = time.monotonic() + 5  # failed jobs' uploads are removed when the job ends
    while any((live_server.settings.home / "uploads").iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any((live_server.settings.home / "uploads").iterdir())


def test_video_without_faces_passes_through(live_server: LiveServer, data_dir: Path) -> None:
    from faceport.engine.video import iter_frames, probe_video

    response = _post(live_server.url, "video", _files(data_dir, NO_FACE_VIDEO, BIDEN))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "completed"
    output = live_server.settings.home / "outputs" / body["output_path"].split("/")[-1]
    assert probe_video(output).has_audio
    for (_, _, before), (_, _, after) in zip(iter_frames(data_dir / NO_FACE_VIDEO, max_frames=10),
                                             iter_frames(output, max_frames=10), strict=True):
        assert np.abs(before.astype(np.int16) - after).mean() < 4.0  # only the re-encoding differs


# ---- limits and auth -----------------------------------------------------------------------------------
def test_upload_over_the_limit_is_413(settings: Any, data_dir: Path) -> None:
    small = settings.model_copy(update={"max_upload_bytes": 100_000, "max_image_bytes": 300_000})
    with serving(small) as server:
        target = (data_dir / OBAMA).read_bytes()  # 280 kB: over the 100 kB upload limit
        response = _post(server.url, "image", [("target", ("t.jpg", target)), ("source", ("s.jpg", target))])
        assert response.status_code == 413, response.text
        assert response.json()["code"] == "FILE_TOO_LARGE" and response.json()["details"]["field"] == "target"
        video = (data_dir / SHORT_VIDEO).read_bytes()[:90_000]
        response = _post(server.url, "video", [("target", ("t.mp4", video)),
                                               ("source", ("s.jpg", (data_dir / BIDEN).read_bytes()))])
        assert response.status_code == 413, response.text  # the source is over the 300 kB image limit
        assert response.json()["code"] == "FILE_TOO_LARGE" and response.json()["details"]["field"] == "source"
        huge = b"\0" * (4 << 20)  # over the whole body limit: refused before it is read
        response = _post(server.url, "image", [("target", ("t.jpg", huge))])
        assert response.status_code == 413
        _assert_serving(server.url)
        assert not any((server.settings.home / "uploads").iterdir())


def test_api_key_is_required_when_configured(settings: Any, data_dir: Path) -> None:
    with serving(settings.model_copy(update={"api_key": "seed-b-test-key"})) as server:
        for method, path in (("GET", "/processors"), ("POST", "/process/image"), ("POST", "/process/video"),
                             ("GET", "/download/x.jpg"), ("DELETE", "/output/x.jpg"),
                             ("GET", "/jobs/api_20250101_120000_abc123")):
            response = httpx.request(method, server.url + path, timeout=10)
            assert response.status_code == 401 and response.json()["code"] == "AUTH_REQUIRED", (path, response.text)
        wrong = httpx.get(f"{server.url}/processors", headers={"X-API-Key": "nope"}, timeout=10)
        assert wrong.status_code == 401 and wrong.json()["code"] == "AUTH_INVALID"
        key = {"X-API-Key": "seed-b-test-key"}
        assert httpx.get(f"{server.url}/processors", headers=key, timeout=10).status_code == 200
        done = _post(server.url, "image", _files(data_dir, OBAMA, BIDEN), headers=key)
        assert done.status_code == 200 and done.json()["status"] == "completed"
        assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200  # health stays open


# ---- queued videos: polling and webhooks -----------------------------------------------------------------
class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        type(self).received.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []
    handler = type("Hook", (_Hook,), {"received": received})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/callback", received
    finally:
        server.shutdown()
        server.server_close()


def test_long_video_is_queued_polled_downloaded_and_webhooked(settings: Any, data_dir: Path, webhook: Any) -> None:
    from faceport.engine.video import probe_video

    hook_url, received = webhook
    with serving(settings.model_copy(update={"sync_video_max_seconds": 0.0})) as server:
        response = _post(server.url, "video", _files(data_dir, SHORT_VIDEO, BIDEN),
                         {"processors": ["face_swapper"], "execution_providers": ["cpu"], "webhook_url": hook_url})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "queued" and body["output_path"] is None
        assert re.fullmatch(r"api_\d{8}_\d{6}_[0-9a-f]{6}", body["job_id"])
        status, seen = _wait_job(server.url, body["job_id"])
        assert status["status"] == "completed", status
        assert status["progress"] == 100.0 and status["error"] is None and seen == sorted(seen)
        name = status["output_path"].split("/")[-1]
        download = httpx.get(f"{server.url}/download/{name}", timeout=60)
        assert download.status_code == 200
        assert download.headers["content-disposition"] == f'attachment; filename="{name}"'
        saved = server.settings.home / "check.mp4"
        saved.write_bytes(download.content)
        info = probe_video(saved)
        assert info.has_audio and abs(info.duration_s - 2.42) < 0.3
        deadline = time.monotonic() + 30
        while not received and time.monotonic() < deadline:
            time.sleep(0.1)
        assert received == [{"job_id": body["job_id"], "status": "completed", "output_path": status["output_path"],
                             "error": None}]
        assert not any((server.settings.home / "uploads").iterdir())  # inputs go once the job ends
        received.clear()
        refused = _post(server.url, "image", _files(data_dir, NO_FACE_IMAGE, BIDEN), {"webhook_url": hook_url})
        assert refused.status_code == 400 and refused.json()["code"] == "NO_FACE"
        deadline = time.monotonic() + 30
        while not received and time.monotonic() < deadline:
            time.sleep(0.1)
        (failed,) = received  # a failed job is reported too, with its stable code
        assert failed["status"] == "failed" and failed["output_path"] is None
        assert failed["error"]["code"] == "NO_FACE" and re.fullmatch(r"api_\d{8}_\d{6}_[0-9a-f]{6}", failed["job_id"])
        polled = httpx.get(f"{server.url}/jobs/{failed['job_id']}", timeout=10).json()
        assert polled["status"] == "failed" and polled["error"]["code"] == "NO_FACE"
        missing = httpx.get(f"{server.url}/jobs/api_20200101_000000_abcdef", timeout=10)
        assert missing.status_code == 404 and missing.json()["code"] == "NOT_FOUND"


def test_unreachable_webhook_never_fails_the_job(settings: Any, data_dir: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/hook"
    with serving(settings) as server:
        response = _post(server.url, "image", _files(data_dir, OBAMA, BIDEN), {"webhook_url": dead})
        assert response.status_code == 200 and response.json()["status"] == "completed"
        status = httpx.get(f"{server.url}/jobs/{response.json()['job_id']}", timeout=10).json()
        assert status["status"] == "completed"


# ---- restart safety ------------------------------------------------------------------------------------------
def test_jobs_interrupted_by_a_restart_run_again(settings: Any, data_dir: Path) -> None:
    from faceport.store import create_job, get_job, open_store, start_job

    store = open_store(settings.resolved_database_url)
    ids = []
    for state in ("running", "queued"):
        params = {"media": "video", "request": {"processors": ["face_swapper"]}, "target": "target.mp4",
                  "sources": ["source_0.jpg"], "output_name": f"restart-{state}.mp4"}
        with store.session() as session:
            record = create_job(session=session, kind=VIDEO_JOB_KIND, params=params)
        inputs = settings.home / "uploads" / record.id
        inputs.mkdir(parents=True)
        shutil.copyfile(data_dir / SHORT_VIDEO, inputs / "target.mp4")
        shutil.copyfile(data_dir / BIDEN, inputs / "source_0.jpg")
        if state == "running":
            with store.session() as session:
                record = start_job(session=session, job_id=record.id)
        ids.append(public_job_id(record))
    store.dispose()

    with serving(settings) as server:
        for job_id, state in zip(ids, ("running", "queued"), strict=True):
            status, _ = _wait_job(server.url, job_id)
            assert status["status"] == "completed", status
            assert status["output_path"] == f".api_outputs/restart-{state}.mp4"
            assert (server.settings.home / "outputs" / f"restart-{state}.mp4").stat().st_size > 10_000
        assert not any((server.settings.home / "uploads").iterdir())
        with server.context.store.session() as session:
            records = [r for i in ids for r in server.context.jobs.find_by_id_prefix(i[-6:])]
            assert all(get_job(session=session, job_id=r.id).state.value == "completed" for r in records)


def test_expired_outputs_are_purged(live_server: LiveServer, data_dir: Path) -> None:
    body = _post(live_server.url, "image", _files(data_dir, OBAMA, BIDEN)).json()
    name = body["output_path"].split("/")[-1]
    service = live_server.context.facefusion
    assert service.purge() == 0 and (live_server.settings.home / "outputs" / name).is_file()
    assert service.purge(now=time.time() + 25 * 3600) >= 1
    assert httpx.get(f"{live_server.url}/download/{name}", timeout=10).status_code == 404
