"""Seed B beyond the documented examples, through a real uvicorn server: request validation,
path confinement, bad uploads, size limit, API key, queued videos with polling and webhooks,
restart safety of the job runner, output retention."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import json
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest

from faceport.services.facefusion import FACEFUSION_DETECTORS, IMAGE_JOB_KIND, VIDEO_JOB_KIND, public_job_id
from tests.api.conftest import LiveServer, serving

OBAMA = "identity/obama/fr_obama.jpg"
BIDEN = "identity/biden/fr_biden.jpg"
BIDEN_2 = "identity/biden/fr_biden2.jpg"
NO_FACE_IMAGE = "negatives/pf_free-mountain-vector-01.jpg"
GROUP = "group/fr_obama_and_biden.jpg"
SHORT_VIDEO = "video/pf_single_face.mp4"  # 2.4 s, mp3 audio
NO_FACE_VIDEO = "video/pf_no_face.mp4"  # 3.95 s, aac audio
AUDIO_ONLY = "audio/tts_personal_data_en_16k.wav"
LONG_VIDEO = "video/pf_WolfgangLanger_Pexels.mp4"  # 19.7 s, one face


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


def _only_job_id(server: LiveServer, kind: str = VIDEO_JOB_KIND) -> str:
    from faceport.store import list_jobs

    with server.context.store.session() as session:
        (record,) = list_jobs(session=session, kind=kind)
    return public_job_id(record)


def _assert_no_server_path(server: LiveServer, text: str) -> None:
    """Error bodies never show where the server keeps its files."""
    for root in {str(server.settings.home), str(server.settings.home.resolve()), str(Path.home())}:
        assert root not in text, text
    assert not re.search(r"(^|[\s'\"(=])/(tmp|home|root|var|usr|etc)/", text), text


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
    ("detector-unknown", {"face_detector_model": "yolov99"}, "face_detector_model"),
    ("unknown-processor", {"processors": ["face_swapper", "frame_colorizer"]}, "processors"),
    ("no-processors", {"processors": []}, "processors"),
    ("unknown-provider", {"execution_providers": ["tpu"]}, "execution_providers"),
    ("selector-unknown", {"face_selector_mode": "some"}, "face_selector_mode"),
    ("order-unknown", {"face_selector_order": "north-south"}, "face_selector_order"),
    ("gender-unknown", {"face_selector_gender": "robot"}, "face_selector_gender"),
    ("age-101", {"face_selector_age_end": 101}, "face_selector_age_end"),
    ("age-range-reversed", {"face_selector_age_start": 50, "face_selector_age_end": 20}, "request"),
    ("min-size-negative", {"face_selector_min_size": -1}, "face_selector_min_size"),
    ("reference-distance-3", {"reference_face_distance": 3.0}, "reference_face_distance"),
    ("face-position-negative", {"face_position": -1}, "face_position"),
    ("blend-101", {"face_enhancer_blend": 101}, "face_enhancer_blend"),
    ("webhook-ftp", {"webhook_url": "ftp://127.0.0.1/x"}, "webhook_url"),
    ("webhook-file", {"webhook_url": "file:///etc/passwd"}, "webhook_url"),
    # webhooks may only reach public addresses (checked after DNS resolution) unless allowed
    ("webhook-loopback", {"webhook_url": "http://127.0.0.1:9/hook"}, "webhook_url"),
    ("webhook-localhost-name", {"webhook_url": "http://localhost:9/hook"}, "webhook_url"),
    ("webhook-metadata", {"webhook_url": "http://169.254.169.254/latest/meta-data/"}, "webhook_url"),
    ("webhook-private-10", {"webhook_url": "http://10.20.30.40/hook"}, "webhook_url"),
    ("webhook-private-192", {"webhook_url": "https://192.168.1.1/hook"}, "webhook_url"),
    ("webhook-ipv6-loopback", {"webhook_url": "http://[::1]:9/hook"}, "webhook_url"),
    ("webhook-ipv4-mapped", {"webhook_url": "http://[::ffff:10.0.0.1]/hook"}, "webhook_url"),
    ("webhook-unspecified", {"webhook_url": "http://0.0.0.0:9/hook"}, "webhook_url"),
    ("extra-field", {"processors": ["face_swapper"], "frame_enhancer_model": "x"}, "frame_enhancer_model"),
    ("malformed-json", '{"processors": ["face_swapper"', "request"),
    ("json-array", '["face_swapper"]', "request"),
    ("ok-defaults", None, None),
    ("ok-enhancer-centerface-half-size", {"processors": ["face_swapper", "face_enhancer"],
                                          "face_detector_model": "centerface", "face_detector_score": 0.4,
                                          "output_image_scale": 50, "face_enhancer_blend": 100}, None),
    ("ok-empty-request", "", None),
    ("ok-threads-3", {"execution_thread_count": 3}, None),
    # FaceFusion's detector names run the nearest detector here
    *[(f"ok-detector-{name}", {"face_detector_model": name}, None) for name in FACEFUSION_DETECTORS],
    ("ok-yunet-detector", {"face_detector_model": "yunet"}, None),
    ("ok-one-large-small", {"face_selector_mode": "one", "face_selector_order": "large-small"}, None),
    ("ok-many-male-adults", {"face_selector_mode": "many", "face_selector_gender": "male",
                             "face_selector_age_start": 18, "face_selector_min_size": 0}, None),
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
        asked = request_body.get("face_detector_model") if isinstance(request_body, dict) else None
        ran = httpx.get(f"{live_server.url}/jobs/{body['job_id']}", timeout=10).json()["face_detector"]
        assert ran == (FACEFUSION_DETECTORS.get(asked, asked) if asked else live_server.settings.detector)
        output = cv2.imread(str(live_server.settings.home / "outputs" / body["output_path"].split("/")[-1]))
        target = cv2.imread(str(data_dir / OBAMA))
        scale = (request_body or {}).get("output_image_scale", 100) if isinstance(request_body, dict) else 100
        assert output.shape[:2] == (round(target.shape[0] * scale / 100), round(target.shape[1] * scale / 100))
        return
    assert response.status_code == 400, body
    assert body["code"] == "INVALID_INPUT" and body["details"]["field"] == field, body
    assert field in body["detail"], body
    if field == "face_detector_model":
        assert "blazeface_short, blazeface_full, centerface, yunet, yoloface_8n, retinaface, scrfd, many" in body[
            "detail"]
    if field == "webhook_url" and "://" in request_body["webhook_url"] and "ftp" not in request_body["webhook_url"] \
            and "file" not in request_body["webhook_url"]:
        assert "FACEPORT_WEBHOOK_ALLOW_PRIVATE" in body["detail"] and body["details"]["reason"], body
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
    # the request field is a JSON string whose schema is the ProcessRequest component, not a description
    request_schema = next(s for s in props["request"].get("anyOf", [props["request"]]) if s.get("type") == "string")
    assert request_schema["contentMediaType"] == "application/json"
    assert request_schema["contentSchema"] == {"$ref": "#/components/schemas/ProcessRequest"}
    component = schema["components"]["schemas"]["ProcessRequest"]
    assert {"processors", "execution_providers", "execution_thread_count", "output_video_fps", "output_image_scale",
            "output_video_scale", "face_detector_model", "face_detector_score", "webhook_url"} <= set(component[
                "properties"])
    assert component["additionalProperties"] is False
    assert component["properties"]["execution_thread_count"]["anyOf"][0]["maximum"] == 32


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
    for position in (len(faces), 40):  # just past the last face, and far beyond
        beyond = _post(live_server.url, "image", _files(data_dir, GROUP, BIDEN_2),
                       {"face_selector_mode": mode, index_field: position})
        assert beyond.status_code == 400 and beyond.json()["code"] == "INVALID_INPUT", beyond.text
        assert beyond.json()["details"] == {"field": index_field, "faces": len(faces)}
        assert index_field in beyond.json()["detail"]


@pytest.mark.parametrize(("mode", "index_field"), [("index", "face_position"), ("reference", "reference_face_index")])
def test_video_selector_beyond_the_faces_is_a_400_not_an_unchanged_video(live_server: LiveServer, data_dir: Path,
                                                                         mode: str, index_field: str) -> None:
    response = _post(live_server.url, "video", _files(data_dir, SHORT_VIDEO, BIDEN),
                     {"face_selector_mode": mode, index_field: 3, "output_video_scale": 50})
    body = response.json()
    assert response.status_code == 400, body
    assert body["code"] == "INVALID_INPUT" and body["details"] == {"field": index_field, "faces": 1}, body
    assert not [p for p in (live_server.settings.home / "outputs").iterdir() if p.suffix == ".mp4"]
    polled = httpx.get(f"{live_server.url}/jobs/{_only_job_id(live_server)}", timeout=10).json()
    assert polled["status"] == "failed" and polled["error"]["code"] == "INVALID_INPUT"


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
    _assert_no_server_path(live_server, response.text)
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
        assert response.json()["code"] == "FILE_TOO_LARGE"  # seed B's body, not Starlette's plain text
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
@dataclass
class Receiver:
    """A real HTTP webhook receiver: records each request; answers from ``answers`` (then 204)."""

    url: str
    received: list[dict[str, Any]] = field(default_factory=list)  # {"body", "raw", "headers", "path"}
    answers: list[tuple[int, dict[str, str]]] = field(default_factory=list)

    def wait(self, count: int = 1, timeout: float = 60) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.received


@contextmanager
def receiving(host: str = "127.0.0.1") -> Iterator[Receiver]:
    receiver = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            receiver.received.append({"raw": raw, "body": json.loads(raw), "headers": dict(self.headers),
                                      "path": self.path})
            status, headers = receiver.answers.pop(0) if receiver.answers else (204, {})
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return

    server = HTTPServer((host, 0), Handler)
    receiver.url = f"http://{host}:{server.server_address[1]}/callback"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def webhook() -> Iterator[Receiver]:
    with receiving() as receiver:
        yield receiver


def _private_ok(settings: Any, **update: Any) -> Any:
    return settings.model_copy(update={"webhook_allow_private": True, **update})


def _wait_delivery(url: str, job_id: str, state: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hook = httpx.get(f"{url}/jobs/{job_id}", timeout=10).json()["webhook"]
        if hook is not None and hook["state"] == state:
            return hook
        time.sleep(0.1)
    pytest.fail(f"the webhook of {job_id} is not {state}: {hook}")


def _assert_signed(home: Path, request: dict[str, Any]) -> None:
    """What a receiver does (README): HMAC-SHA256 of "<timestamp>.<raw body>" with the secret, fresh timestamp."""
    from faceport.services.webhooks import verify_signature

    secret_file = home / "webhook_secret"
    assert secret_file.stat().st_mode & 0o777 == 0o600
    secret = secret_file.read_text().strip().encode()
    headers = {k.lower(): v for k, v in request["headers"].items()}
    timestamp, signature = headers["x-faceport-timestamp"], headers["x-faceport-signature"]
    expected = hmac.new(secret, f"{timestamp}.".encode() + request["raw"], hashlib.sha256).hexdigest()
    assert signature == f"sha256={expected}"
    assert verify_signature(secret, timestamp, request["raw"], signature)
    assert not verify_signature(b"another secret", timestamp, request["raw"], signature)
    assert not verify_signature(secret, timestamp, request["raw"] + b" ", signature)  # body tampered
    assert not verify_signature(secret, timestamp, request["raw"], signature, now=int(timestamp) + 3600)  # replay


def test_long_video_is_queued_polled_downloaded_and_webhooked(settings: Any, data_dir: Path,
                                                              webhook: Receiver) -> None:
    from faceport.engine.video import probe_video

    with serving(_private_ok(settings, sync_video_max_seconds=0.0)) as server:
        response = _post(server.url, "video", _files(data_dir, SHORT_VIDEO, BIDEN),
                         {"processors": ["face_swapper"], "execution_providers": ["cpu"], "webhook_url": webhook.url})
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
        (delivered,) = webhook.wait(1)
        assert delivered["body"] == {"job_id": body["job_id"], "status": "completed",
                                     "output_path": status["output_path"], "error": None}
        _assert_signed(server.settings.home, delivered)
        hook = _wait_delivery(server.url, body["job_id"], "delivered")
        assert hook["attempts"] == 1 and hook["last_status"] == 204 and hook["delivered_at"] and hook["error"] is None
        assert not any((server.settings.home / "uploads").iterdir())  # inputs go once the job ends
        webhook.received.clear()
        refused = _post(server.url, "image", _files(data_dir, NO_FACE_IMAGE, BIDEN), {"webhook_url": webhook.url})
        assert refused.status_code == 400 and refused.json()["code"] == "NO_FACE"
        (failed,) = webhook.wait(1)  # a failed job is reported too, with its stable code
        failed = failed["body"]
        assert failed["status"] == "failed" and failed["output_path"] is None
        assert failed["error"]["code"] == "NO_FACE" and re.fullmatch(r"api_\d{8}_\d{6}_[0-9a-f]{6}", failed["job_id"])
        polled = httpx.get(f"{server.url}/jobs/{failed['job_id']}", timeout=10).json()
        assert polled["status"] == "failed" and polled["error"]["code"] == "NO_FACE"
        missing = httpx.get(f"{server.url}/jobs/api_20200101_000000_abcdef", timeout=10)
        assert missing.status_code == 404 and missing.json()["code"] == "NOT_FOUND"


def test_webhook_retries_with_backoff_recorded_on_the_job(settings: Any, data_dir: Path, webhook: Receiver) -> None:
    webhook.answers = [(503, {}), (500, {})]  # then 204
    with serving(_private_ok(settings, webhook_backoff_seconds=0.3, webhook_secret="s3cret")) as server:
        response = _post(server.url, "image", _files(data_dir, OBAMA, BIDEN), {"webhook_url": webhook.url})
        assert response.status_code == 200, response.text
        job_id = response.json()["job_id"]
        hook = _wait_delivery(server.url, job_id, "delivered")
        assert hook["attempts"] == 3 and hook["last_status"] == 204 and hook["error"] is None
        assert [a["status"] for a in hook["history"]] == [503, 500, 204]
        assert hook["history"][0]["error"] == "answered HTTP 503"
        at = [datetime.fromisoformat(a["at"]) for a in hook["history"]]
        assert (at[1] - at[0]).total_seconds() >= 0.3 and (at[2] - at[1]).total_seconds() >= 0.6  # doubled
        assert len(webhook.received) == 3
        ids = {r["headers"]["X-Faceport-Delivery"] for r in webhook.received}
        assert len(ids) == 1  # one delivery id across retries: receivers can de-duplicate
        for request in webhook.received:  # signed with FACEPORT_WEBHOOK_SECRET when it is set
            stamp = request["headers"]["X-Faceport-Timestamp"]
            digest = hmac.new(b"s3cret", f"{stamp}.".encode() + request["raw"], hashlib.sha256).hexdigest()
            assert request["headers"]["X-Faceport-Signature"] == f"sha256={digest}"
        assert not (server.settings.home / "webhook_secret").exists()


def test_webhook_redirect_to_a_private_address_is_refused(settings: Any, data_dir: Path) -> None:
    with receiving("127.0.0.2") as inside, receiving() as outside:
        outside.answers = [(307, {"Location": inside.url})]
        allowed = {"webhook_allowed_networks": ["127.0.0.1/32"]}  # the first hop only
        with serving(settings.model_copy(update=allowed)) as server:
            direct = _post(server.url, "image", _files(data_dir, OBAMA, BIDEN), {"webhook_url": inside.url})
            assert direct.status_code == 400 and direct.json()["details"]["field"] == "webhook_url"
            response = _post(server.url, "image", _files(data_dir, OBAMA, BIDEN), {"webhook_url": outside.url})
            assert response.status_code == 200, response.text
            hook = _wait_delivery(server.url, response.json()["job_id"], "failed")
            assert hook["attempts"] == 1 and hook["last_status"] is None  # refused: not retried
            assert hook["error"].startswith("refused: webhook_url host '127.0.0.2' resolves to a loopback address")
            assert len(outside.received) == 1 and inside.received == []


def test_webhook_goes_to_the_address_that_was_checked(webhook: Receiver) -> None:
    """The host name is resolved once per hop and the request sent to that address (no DNS rebinding)."""
    from faceport.services.webhooks import AddressPolicy, WebhookRefused, check_target, send_once

    port = int(webhook.url.rsplit(":", 1)[1].split("/")[0])
    policy = AddressPolicy(allowed=(ipaddress.ip_network("127.0.0.1/32"),))
    lookups: list[str] = []

    def resolver(host: str, _port: int) -> list[str]:
        lookups.append(host)
        return {"hooks.example.test": ["127.0.0.1"], "mixed.example.test": ["127.0.0.1", "10.0.0.7"]}[host]

    attempt = send_once(f"http://hooks.example.test:{port}/cb?x=1", b'{"a":1}', secret=b"k", delivery_id="d1",
                        policy=policy, resolver=resolver)
    assert attempt.error is None and attempt.status == 204
    (request,) = webhook.received
    assert request["headers"]["Host"] == f"hooks.example.test:{port}" and request["path"] == "/cb?x=1"
    assert lookups == ["hooks.example.test"]
    with pytest.raises(WebhookRefused) as refused:  # every address of the name is checked, not just the first
        check_target("http://mixed.example.test/", policy, resolver)
    assert refused.value.details == {"field": "webhook_url", "reason": "private"}


def test_unreachable_webhook_never_fails_the_job(settings: Any, data_dir: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/hook"
    with serving(_private_ok(settings)) as server:
        response = _post(server.url, "image", _files(data_dir, OBAMA, BIDEN), {"webhook_url": dead})
        assert response.status_code == 200 and response.json()["status"] == "completed"
        job_id = response.json()["job_id"]
        status = httpx.get(f"{server.url}/jobs/{job_id}", timeout=10).json()
        assert status["status"] == "completed"
        deadline = time.monotonic() + 30
        while (hook := httpx.get(f"{server.url}/jobs/{job_id}", timeout=10).json()["webhook"])["attempts"] < 1:
            assert time.monotonic() < deadline, hook
            time.sleep(0.1)
        assert hook["state"] == "pending" and hook["next_attempt_at"] and "ConnectError" in hook["error"]


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


def test_webhook_deliveries_resume_after_a_restart(settings: Any, webhook: Receiver) -> None:
    """A delivery left pending by a dead process, and a job that ended before its delivery was recorded,
    are both sent by the next start."""
    from faceport.store import complete_job, create_job, open_store, start_job
    from faceport.store.webhooks import create_delivery, record_attempt

    store = open_store(settings.resolved_database_url)
    ids = []
    for name in ("pending-retry", "never-recorded"):
        params = {"media": "image", "request": {"processors": ["face_swapper"], "webhook_url": webhook.url},
                  "target": "target.jpg", "sources": ["source_0.jpg"], "output_name": f"{name}.jpg"}
        with store.session() as session:
            record = create_job(session=session, kind=IMAGE_JOB_KIND, params=params)
            start_job(session=session, job_id=record.id)
            record = complete_job(session=session, job_id=record.id,
                                  result={"output_name": f"{name}.jpg", "output_path": f".api_outputs/{name}.jpg"})
            if name == "pending-retry":  # one attempt failed before the process died
                delivery = create_delivery(session=session, job_id=record.id, url=webhook.url, payload={
                    "job_id": public_job_id(record), "status": "completed",
                    "output_path": f".api_outputs/{name}.jpg", "error": None})
                record_attempt(session=session, delivery_id=delivery.id, status=502, error="answered HTTP 502",
                               state="pending", retry_at=delivery.next_attempt_at)
        ids.append(public_job_id(record))
    store.dispose()

    with serving(_private_ok(settings)) as server:
        received = webhook.wait(2)
        assert sorted(r["body"]["job_id"] for r in received) == sorted(ids)
        assert {r["body"]["output_path"] for r in received} == {".api_outputs/pending-retry.jpg",
                                                                 ".api_outputs/never-recorded.jpg"}
        first = _wait_delivery(server.url, ids[0], "delivered")
        assert first["attempts"] == 2 and [a["status"] for a in first["history"]] == [502, 204]
        assert _wait_delivery(server.url, ids[1], "delivered")["attempts"] == 1
    with serving(_private_ok(settings)):  # delivered ones are not sent again
        time.sleep(0.5)
        assert len(webhook.received) == 2


# ---- execution threads, detectors, synchronous videos --------------------------------------------------------
def test_execution_thread_count_sets_the_jobs_inference_threads(live_server: LiveServer, data_dir: Path) -> None:
    cache = live_server.context.cache
    for threads in (3, None):
        request = {"face_detector_model": "retinaface", **({"execution_thread_count": threads} if threads else {})}
        response = _post(live_server.url, "image", _files(data_dir, OBAMA, BIDEN), request)
        assert response.status_code == 200, response.text
    loaded = {m.name for m in cache.info()}
    # the job with 3 threads ran its own sessions: CenterFace (onnxruntime) and FaceMesh (LiteRT) with 3 threads
    assert {"centerface@3threads", "facemesh@3threads", "centerface", "facemesh"} <= loaded, loaded
    centerface = cache.get("centerface", threads=3)
    assert centerface.native.get_session_options().intra_op_num_threads == 3
    assert cache.get("facemesh", threads=3).num_threads == 3
    # the shared sessions other jobs use keep the server's settings
    assert cache.get("centerface").native.get_session_options().intra_op_num_threads == 0
    assert cache.get("facemesh").num_threads == 2
    with live_server.context.store.session() as session:
        from faceport.store import list_jobs

        results = [job.result for job in list_jobs(session=session)]
    assert sorted(r["execution_thread_count"] or 0 for r in results) == [0, 3]
    assert {r["face_detector"] for r in results} == {"centerface"}


def test_a_20_second_video_answers_completed_by_default(live_server: LiveServer, data_dir: Path) -> None:
    from faceport.engine.video import probe_video

    assert live_server.settings.sync_video_max_seconds == 120
    assert 19 < probe_video(data_dir / LONG_VIDEO).duration_s < 20
    response = _post(live_server.url, "video", _files(data_dir, LONG_VIDEO),
                     {"processors": ["face_enhancer"], "output_video_fps": 2, "output_video_scale": 25,
                      "execution_thread_count": 2})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "completed" and body["output_path"], body
    output = probe_video(live_server.settings.home / "outputs" / body["output_path"].split("/")[-1])
    assert abs(output.duration_s - 19.7) < 1.0 and output.width == 160


# ---- storage that cannot be written --------------------------------------------------------------------------
STORAGE = [
    ("outputs-image", "output_dir", "image", "FACEPORT_OUTPUT_DIR", "outputs"),
    ("outputs-video", "output_dir", "video", "FACEPORT_OUTPUT_DIR", "outputs"),
    ("uploads-image", "upload_dir", "image", "FACEPORT_UPLOAD_DIR", "uploads"),
]


@pytest.mark.parametrize(("setting", "endpoint", "env", "folder"), [c[1:] for c in STORAGE],
                         ids=[c[0] for c in STORAGE])
def test_unwritable_storage_is_503_storage_unavailable(settings: Any, data_dir: Path, tmp_path: Path, setting: str,
                                                       endpoint: str, env: str, folder: str) -> None:
    # a regular file where a parent folder should be: writes fail even for root (chmod would not stop it)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file")
    with serving(settings.model_copy(update={setting: blocker / folder})) as server:
        target = OBAMA if endpoint == "image" else SHORT_VIDEO
        response = _post(server.url, endpoint, _files(data_dir, target, BIDEN))
        body = response.json()
        assert response.status_code == 503, body
        assert body["code"] == "STORAGE_UNAVAILABLE" and body["details"]["setting"] == env, body
        assert env in body["detail"] and "target" not in body["detail"], body
        assert str(tmp_path) not in response.text
        _assert_no_server_path(server, response.text)
        health = httpx.get(f"{server.url}/health", timeout=10)
        assert health.status_code == 503
        assert health.json()["status"] == "degraded" and health.json()["storage"] == "unwritable"
        assert health.json()["storage_unwritable"] == [f"{folder}:{env}"]
        assert health.json()["database"] == "ok"
        blocker.unlink()  # the folder can be made again: healthy, and requests work
        assert httpx.get(f"{server.url}/health", timeout=10).json()["storage"] == "ok"
        assert _post(server.url, endpoint, _files(data_dir, target, BIDEN)).json()["status"] == "completed"


def test_expired_outputs_are_purged(live_server: LiveServer, data_dir: Path) -> None:
    body = _post(live_server.url, "image", _files(data_dir, OBAMA, BIDEN)).json()
    name = body["output_path"].split("/")[-1]
    service = live_server.context.facefusion
    assert service.purge() == 0 and (live_server.settings.home / "outputs" / name).is_file()
    assert service.purge(now=time.time() + 25 * 3600) >= 1
    assert httpx.get(f"{live_server.url}/download/{name}", timeout=10).status_code == 404
