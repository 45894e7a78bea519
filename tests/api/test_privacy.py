"""Seed E's REST API on the privacy app: process, job status, models, and the error cases."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

PRIVACY_MODELS = ("centerface", "ppocr_v4_det", "ppocr_v4_rec", "ppocr_cls", "plate_cascades", "whisper_tiny_en",
                  "spacy_en_core_web_sm")


@pytest.fixture(scope="module")
def privacy_models(models_dir: Path) -> Path:
    from faceport.engine.models import ModelStore

    store = ModelStore(models_dir)
    missing = [name for name in PRIVACY_MODELS if not store.is_installed(name)]
    if missing:
        results = store.pull(missing)
        assert all(r.installed for r in results), [r.problems for r in results]
    return models_dir


def _media(client) -> Path:  # type: ignore[no-untyped-def]
    root: Path = client.app.state.context.privacy.ensure_root()
    return root


def _wait(client, job_id: str, timeout: float = 240.0) -> dict:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    seen: list[float] = []
    while time.monotonic() < deadline:
        body = client.get(f"/api/v1/jobs/{job_id}").json()
        seen.append(body["progress"])
        if body["status"] in ("completed", "failed", "cancelled"):
            body["_seen"] = seen
            return body
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish: {seen[-5:]}")


def test_health(privacy_client) -> None:  # type: ignore[no-untyped-def]
    body = privacy_client.get("/health").json()
    assert body["status"] == "healthy"


def test_models_lists_real_models(privacy_client, privacy_models) -> None:  # type: ignore[no-untyped-def]
    models = privacy_client.get("/api/v1/models").json()["models"]
    assert {"face_detection", "plate_detection", "audio_pii"} <= set(models)
    assert models["face_detection"]["name"] == "CenterFace"
    assert all(m["installed"] for m in models.values())


def test_image_job_blurs_the_id_card(privacy_client, privacy_models, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    root = _media(privacy_client)
    shutil.copy(data_dir / "synthetic" / "synth_id_card_fake_pii.png", root / "card.png")
    response = privacy_client.post("/api/v1/process", json={
        "input_path": "card.png", "output_path": "out/card.png",
        "config": {"video": {"text_detection": True, "models": {"pii_text": {"enabled": True}}}}})
    assert response.status_code == 200, response.text
    accepted = response.json()
    assert accepted["status"] == "processing" and accepted["estimated_time"] >= 0
    done = _wait(privacy_client, accepted["job_id"])
    assert done["status"] == "completed", done
    assert done["progress"] == 100 and done["output_path"] == "out/card.png"
    assert done["processing_time"] > 0
    out = cv2.imread(str(root / "out" / "card.png"))
    src = cv2.imread(str(root / "card.png"))
    assert out.shape == src.shape and not np.array_equal(out, src)


def test_video_job_progress_advances(privacy_client, privacy_models, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    root = _media(privacy_client)
    shutil.copy(data_dir / "video" / "pf_single_face.mp4", root / "clip.mp4")
    response = privacy_client.post("/api/v1/process", json={"input_path": "clip.mp4", "output_path": "clip_out.mp4",
                                                            "config": {"video": {"plate_detection": False}}})
    assert response.status_code == 200, response.text
    done = _wait(privacy_client, response.json()["job_id"])
    assert done["status"] == "completed", done
    assert (root / "clip_out.mp4").stat().st_size > 0
    assert done["result"]["frames"] > 0 and done["result"]["detections"]["faces"] >= 1
    assert any(0 < p < 100 for p in done["_seen"]) or len(set(done["_seen"])) >= 2


def test_multipart_upload(privacy_client, privacy_models, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    data = (data_dir / "synthetic" / "synth_id_card_fake_pii.png").read_bytes()
    response = privacy_client.post("/api/v1/process", files={"file": ("card.png", data, "image/png")},
                                   data={"config": '{"video": {"text_detection": false}}'})
    assert response.status_code == 200, response.text
    done = _wait(privacy_client, response.json()["job_id"])
    assert done["status"] == "completed", done
    assert (_media(privacy_client) / done["output_path"]).is_file()


LONG_NAME = "n" * 250 + ".png"  # a long name that is still valid (at most 255 bytes per name)

# (request body, status, code, words the message must contain); a passing case queues a job, an error case none.
PROCESS_CASES: list[tuple[dict, int, str | None, tuple[str, ...]]] = [
    ({"input_path": "ok.png", "output_path": "x.png"}, 200, None, ()),
    ({"input_path": "../../etc/passwd", "output_path": "x.mp4"}, 400, "INVALID_INPUT", ("input_path",)),
    ({"input_path": "/etc/passwd", "output_path": "x.mp4"}, 400, "INVALID_INPUT", ("input_path",)),
    ({"input_path": "file.xyz", "output_path": "x.mp4"}, 400, "INVALID_FORMAT", ("Unsupported file type: .xyz",)),
    ({"input_path": "missing.mp4", "output_path": "x.mp4"}, 404, "NOT_FOUND", ("missing.mp4",)),
    ({"input_path": "ok.png", "output_path": "../escape.png"}, 400, "INVALID_INPUT", ("output_path",)),
    ({"input_path": "ok.png", "output_path": "/tmp/escape.png"}, 400, "INVALID_INPUT", ("output_path",)),
    ({"input_path": "link.png", "output_path": "x.png"}, 400, "INVALID_INPUT", ("input_path",)),
    ({"input_path": "corrupt.mp4", "output_path": "x.mp4"}, 400, "INVALID_FORMAT", ("corrupt.mp4",)),
    ({"input_path": "ok.png", "output_path": "x.png", "config": {"video": {"blur": {"type": "swirl"}}}}, 400,
     "INVALID_INPUT", ("config.video.blur.type",)),
    # text precision options (issue 12): names checked before queuing, Presidio's names accepted
    ({"input_path": "ok.png", "output_path": "x.png", "config": {"video": {"models": {"pii_text": {
        "entities": ["PERSON", "email"], "allow_list": ["ACME"], "deny_list": ["X-42"], "score_threshold": 0.7}}}}},
     200, None, ()),
    ({"input_path": "ok.png", "output_path": "x.png", "config": {"video": {"models": {"pii_text": {
        "entities": ["blood_type"]}}}}}, 400, "INVALID_INPUT", ("config.video.models.pii_text.entities", "blood_type")),
    ({"output_path": "x.png"}, 400, "INVALID_INPUT", ("input_path",)),
    # over-long paths: 400, never a 500 or a failed job
    ({"input_path": LONG_NAME, "output_path": "long_out.png"}, 200, None, ()),
    ({"input_path": "p" * 296 + ".png", "output_path": "x.png"}, 400, "INVALID_INPUT", ("input_path", "255")),
    ({"input_path": "p" * 99_996 + ".png", "output_path": "x.png"}, 400, "INVALID_INPUT", ("input_path", "1024")),
    ({"input_path": "ok.png", "output_path": "q" * 296 + ".png"}, 400, "INVALID_INPUT", ("output_path", "255")),
    ({"input_path": "ok.png", "output_path": "q" * 99_996 + ".png"}, 400, "INVALID_INPUT", ("output_path", "1024")),
    ({"input_path": "ok.png", "output_path": "/".join(["d" * 200] * 6) + ".png"}, 400, "INVALID_INPUT",
     ("output_path", "1024")),
    ({"input_path": "p" * 2_000_000 + ".png"}, 413, "FILE_TOO_LARGE", ("JSON body", "1 MB")),
    # an existing output is replaced only on request
    ({"input_path": "ok.png", "output_path": "exists.png"}, 409, "OUTPUT_EXISTS", ("exists.png", "overwrite")),
    ({"input_path": "ok.png", "output_path": "exists.png", "overwrite": False}, 409, "OUTPUT_EXISTS", ("overwrite",)),
    ({"input_path": "ok.png", "output_path": "exists.png", "overwrite": True}, 200, None, ()),
    ({"input_path": "ok.png", "output_path": "ok.png/x.png"}, 400, "INVALID_INPUT", ("output_path", "not a folder")),
    ({"input_path": "ok.png", "output_path": "uploads/x.png"}, 400, "INVALID_INPUT", ("output_path", "uploads/")),
    # images are decoded before a job is queued
    ({"input_path": "empty.png", "output_path": "x.png"}, 400, "INVALID_IMAGE", ()),
    ({"input_path": "junk.png", "output_path": "x.png"}, 400, "INVALID_IMAGE", ()),
    ({"input_path": "half.jpg", "output_path": "x.jpg"}, 400, "INVALID_IMAGE", ()),
    # strict types: the message names the field and the type it expects
    ({"input_path": "ok.png", "output_path": "x.png", "config": {"video": {"face_detection": True},
                                                                 "audio": {"chunk_seconds": 5}}}, 200, None, ()),
    ({"input_path": "ok.png", "config": {"video": {"face_detection": "yes"}}}, 400, "INVALID_INPUT",
     ("config.video.face_detection", "boolean")),
    ({"input_path": "ok.png", "config": {"video": {"face_detection": 1}}}, 400, "INVALID_INPUT",
     ("config.video.face_detection", "boolean")),
    ({"input_path": "ok.png", "config": {"audio": {"chunk_seconds": "5"}}}, 400, "INVALID_INPUT",
     ("config.audio.chunk_seconds", "integer")),
    ({"input_path": "ok.png", "config": {"audio": {"unsupported_language": "ignore"}}}, 400, "INVALID_INPUT",
     ("config.audio.unsupported_language", "fail")),
    ({"input_path": "ok.png", "config": {"audio": {"pad_before_ms": -1}}}, 400, "INVALID_INPUT",
     ("config.audio.pad_before_ms",)),
    ({"input_path": "ok.png", "config": {"audio": {"language": "German!"}}}, 400, "INVALID_INPUT",
     ("config.audio.language",)),
    ({"input_path": "ok.png", "config": "face"}, 400, "INVALID_INPUT", ("config", "object")),
    ({"input_path": 5}, 400, "INVALID_INPUT", ("input_path", "string")),
    ({"input_path": "ok.png", "output_path": ["x.png"]}, 400, "INVALID_INPUT", ("output_path", "string")),
    ({"input_path": "ok.png", "overwrite": "true"}, 400, "INVALID_INPUT", ("overwrite", "boolean")),
]


def _case_id(case: tuple) -> str:
    body, status, code, _ = case
    return f"{status}-{code or 'ok'}-{str(body)[:60]}"


def _privacy_jobs(client) -> int:  # type: ignore[no-untyped-def]
    from faceport.services.privacy import JOB_KIND
    from faceport.store import list_jobs

    with client.app.state.context.jobs.store.session() as session:
        return len(list_jobs(session=session, kind=JOB_KIND, limit=1000))


@pytest.mark.parametrize(("body", "status", "code", "words"), [pytest.param(*c, id=_case_id(c)) for c in PROCESS_CASES])
def test_process_requests_and_errors(privacy_client, privacy_models, tmp_path: Path, body: dict, status: int,  # type: ignore[no-untyped-def]
                                     code: str | None, words: tuple[str, ...]) -> None:
    root = _media(privacy_client)
    (root / "file.xyz").write_bytes(b"x")
    for name in ("ok.png", "exists.png", LONG_NAME):
        cv2.imwrite(str(root / name), np.zeros((8, 8, 3), np.uint8))
    (root / "empty.png").write_bytes(b"")
    (root / "junk.png").write_bytes(b"this is not an image\n" * 50)
    jpeg = cv2.imencode(".jpg", np.full((64, 64, 3), 128, np.uint8))[1].tobytes()
    (root / "half.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (root / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    outside = tmp_path / "secret.png"
    cv2.imwrite(str(outside), np.zeros((8, 8, 3), np.uint8))
    link = root / "link.png"
    if not link.exists():
        link.symlink_to(outside)
    before = _privacy_jobs(privacy_client)
    response = privacy_client.post("/api/v1/process", json=body)
    assert response.status_code == status, response.text
    payload = response.json()
    after = _privacy_jobs(privacy_client)
    if code is None:
        assert set(payload) == {"job_id", "status", "estimated_time"} and after == before + 1
        done = _wait(privacy_client, payload["job_id"])
        assert done["status"] == "completed", done
        return
    assert set(payload) == {"error", "message", "code"} and payload["code"] == code
    assert after == before, "a refused request must not create a job"
    for word in words:
        assert word in payload["message"], payload
    assert str(root.resolve()) not in response.text and "endpoint" not in payload["message"]
    assert privacy_client.get("/health").status_code == 200


def test_overwrite_checked_again_when_the_job_runs(privacy_client, privacy_models) -> None:  # type: ignore[no-untyped-def]
    """Two jobs queued for one new output: the second finds it written and fails, unless it may overwrite."""
    root = _media(privacy_client)
    cv2.imwrite(str(root / "ok.png"), np.zeros((8, 8, 3), np.uint8))
    first = privacy_client.post("/api/v1/process", json={"input_path": "ok.png", "output_path": "race.png"}).json()
    second = privacy_client.post("/api/v1/process", json={"input_path": "ok.png", "output_path": "race.png"})
    third = privacy_client.post("/api/v1/process", json={"input_path": "ok.png", "output_path": "race.png",
                                                         "overwrite": True})
    assert _wait(privacy_client, first["job_id"])["status"] == "completed"
    if second.status_code == 200:  # queued before the first job wrote its output
        done = _wait(privacy_client, second.json()["job_id"])
        assert done["status"] == "failed" and done["error"]["code"] == "OUTPUT_EXISTS", done
    else:
        assert second.status_code == 409
    assert third.status_code == 200 and _wait(privacy_client, third.json()["job_id"])["status"] == "completed"


def test_german_speech_is_never_completed_silently(privacy_client, privacy_models, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    from faceport.engine.models import ModelStore

    ModelStore(privacy_models).pull(["whisper_base"])
    root = _media(privacy_client)
    shutil.copy(data_dir / "audio" / "tts_personal_data_de_22k.wav", root / "de.wav")
    default = privacy_client.post("/api/v1/process", json={"input_path": "de.wav", "output_path": "de_out.wav"})
    assert default.status_code == 200, default.text
    done = _wait(privacy_client, default.json()["job_id"])
    assert done["status"] == "failed" and done["error"]["code"] == "UNSUPPORTED_LANGUAGE", done
    assert "'de'" in done["error"]["message"] and "unsupported_language" in done["error"]["message"]
    assert not (root / "de_out.wav").exists()
    skipped = privacy_client.post("/api/v1/process", json={
        "input_path": "de.wav", "output_path": "de_skip.wav", "config": {"audio": {"unsupported_language": "skip"}}})
    done = _wait(privacy_client, skipped.json()["job_id"])
    assert done["status"] == "completed", done
    result = done["result"]
    assert result["language"] == "de" and result["audio"] == "unredacted" and result["redactions"] == []
    assert result["warnings"] and "NOT redacted" in result["warnings"][0]


def test_unknown_job_is_404(privacy_client) -> None:  # type: ignore[no-untyped-def]
    response = privacy_client.get("/api/v1/jobs/nope")
    assert response.status_code == 404
    assert response.json()["code"] == "NOT_FOUND"


def test_audio_only_file_in_a_video_name_is_refused(privacy_client, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    root = _media(privacy_client)
    shutil.copy(data_dir / "audio" / "tts_personal_data_en_16k.wav", root / "speech.wav")
    import av

    with av.open(str(root / "speech.wav")) as inp, av.open(str(root / "speech.mkv"), "w") as out:
        stream = out.add_stream_from_template(inp.streams.audio[0])
        for packet in inp.demux(inp.streams.audio[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    response = privacy_client.post("/api/v1/process", json={"input_path": "speech.mkv", "output_path": "o.mp4"})
    assert response.status_code == 400
    message = response.json()["message"]
    assert response.json()["code"] == "INVALID_FORMAT" and "audio" in message
    assert "endpoint" not in message  # the privacy app has one endpoint for every kind of media


def _upload_files(client) -> list[str]:  # type: ignore[no-untyped-def]
    folder = _media(client) / "uploads"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def _png() -> bytes:
    return cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()


# (file name, bytes, form fields, status, code); refused uploads leave no file and no job behind
UPLOAD_CASES: list[tuple[str, bytes, dict, int, str | None]] = [
    ("card.png", _png(), {}, 200, None),
    ("card.png", _png(), {"overwrite": "false", "config": '{"video": {"face_detection": true}}'}, 200, None),
    ("empty.png", b"", {}, 400, "INVALID_IMAGE"),
    ("junk.jpg", b"not an image at all\n" * 100, {}, 400, "INVALID_IMAGE"),
    ("junk.mp4", b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100, {}, 400, "INVALID_FORMAT"),
    ("notes.txt", b"hello", {}, 400, "INVALID_FORMAT"),
    ("card.png", _png(), {"config": '{"video": {"face_detection": "yes"}}'}, 400, "INVALID_INPUT"),
    ("card.png", _png(), {"config": '"face"'}, 400, "INVALID_INPUT"),
    ("card.png", _png(), {"overwrite": "yes"}, 400, "INVALID_INPUT"),
    ("card.png", _png(), {"output_path": "exists.png"}, 409, "OUTPUT_EXISTS"),
    ("card.png", _png(), {"output_path": "exists.png", "overwrite": "true"}, 200, None),
    ("card.png", _png(), {"output_path": "o" * 300 + ".png"}, 400, "INVALID_INPUT"),
]


@pytest.mark.parametrize(("filename", "data", "form", "status", "code"),
                         [pytest.param(*c, id=f"{c[3]}-{c[4] or 'ok'}-{c[0]}-{str(c[2])[:40]}") for c in UPLOAD_CASES])
def test_multipart_uploads_are_checked_and_cleaned_up(privacy_client, privacy_models, filename: str, data: bytes,  # type: ignore[no-untyped-def]
                                                      form: dict, status: int, code: str | None) -> None:
    cv2.imwrite(str(_media(privacy_client) / "exists.png"), np.zeros((8, 8, 3), np.uint8))
    before = _privacy_jobs(privacy_client)
    response = privacy_client.post("/api/v1/process", files={"file": (filename, data, "application/octet-stream")},
                                   data=form)
    assert response.status_code == status, response.text
    if code is not None:
        assert response.json()["code"] == code
        assert ".staging-" not in response.text and str(_media(privacy_client).resolve()) not in response.text
        assert _upload_files(privacy_client) == [], "a refused upload must be deleted at once"
        assert _privacy_jobs(privacy_client) == before
        return
    assert len(_upload_files(privacy_client)) <= 1
    done = _wait(privacy_client, response.json()["job_id"])
    assert done["status"] == "completed", done
    assert (_media(privacy_client) / done["output_path"]).is_file()
    assert _upload_files(privacy_client) == [], "an upload is deleted when its job ends"


def test_upload_over_the_limit_is_refused_while_streaming(settings) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from faceport.api.app import create_privacy_app

    small = settings.model_copy(update={"max_upload_bytes": 100_000})
    with TestClient(create_privacy_app(small)) as client:
        for size in (2_000_000, 150_000):  # far over (refused from Content-Length) and just over (while copying)
            response = client.post("/api/v1/process", files={"file": ("big.mp4", b"\x00" * size, "video/mp4")})
            assert response.status_code == 413, response.text
            assert response.json()["code"] == "FILE_TOO_LARGE"
            assert _upload_files(client) == []

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
            yield b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.mp4\"\r\n\r\n"
            for _ in range(40):
                yield b"\x00" * 65536
            yield b"\r\n--b--\r\n"

        response = client.post("/api/v1/process", content=chunks(),
                               headers={"content-type": "multipart/form-data; boundary=b"})
        assert response.status_code == 413, response.text
        assert response.json()["code"] == "FILE_TOO_LARGE"
        assert _upload_files(client) == []
        ok = client.post("/api/v1/process", files={"file": ("small.png", _png(), "image/png")})
        assert ok.status_code == 200, ok.text


def test_storage_unavailable_is_503_naming_the_setting(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A media root that cannot be created (below a regular file: fails even as root) is STORAGE_UNAVAILABLE."""
    from fastapi.testclient import TestClient

    from faceport.api.app import create_privacy_app

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a regular file where the media root's parent should be")
    broken = settings.model_copy(update={"media_root": blocker / "media"})
    with TestClient(create_privacy_app(broken)) as client:
        for response in (client.post("/api/v1/process", json={"input_path": "a.png", "output_path": "b.png"}),
                         client.post("/api/v1/process", files={"file": ("a.png", _png(), "image/png")})):
            assert response.status_code == 503, response.text
            body = response.json()
            assert body["code"] == "STORAGE_UNAVAILABLE" and "FACEPORT_MEDIA_ROOT" in body["message"]
            assert str(tmp_path) not in response.text and "internal error" not in body["message"]
        health = client.get("/health")  # the server keeps answering, and says why it is degraded
        assert health.status_code == 503, health.text
        assert health.json()["status"] == "degraded"
        assert "media:FACEPORT_MEDIA_ROOT" in health.json()["storage_unwritable"]


def test_output_folder_lost_before_the_job_runs_fails_the_job_with_storage_unavailable(privacy_client) -> None:  # type: ignore[no-untyped-def]
    from faceport.errors import StorageUnavailable
    from faceport.services.privacy import JOB_KIND

    ctx = privacy_client.app.state.context
    root = _media(privacy_client)
    cv2.imwrite(str(root / "ok.png"), np.zeros((8, 8, 3), np.uint8))
    params = ctx.privacy.validate("ok.png", "gone/out.png", None)
    (root / "gone").rmdir()
    (root / "gone").write_bytes(b"")  # the folder is now a regular file: no write can succeed, even as root
    with pytest.raises(StorageUnavailable):
        ctx.jobs.run_inline(JOB_KIND, params)
    failed = [j for j in _jobs(privacy_client) if j.params["output_path"] == "gone/out.png"]
    assert failed and failed[0].error["code"] == "STORAGE_UNAVAILABLE", failed
    assert "FACEPORT_MEDIA_ROOT" in failed[0].error["message"] and str(root) not in failed[0].error["message"]


def _jobs(client) -> list:  # type: ignore[no-untyped-def]
    from faceport.services.privacy import JOB_KIND
    from faceport.store import list_jobs

    with client.app.state.context.jobs.store.session() as session:
        return list_jobs(session=session, kind=JOB_KIND, limit=1000)


def test_start_up_removes_staging_files_orphan_uploads_and_partial_outputs(settings, privacy_models) -> None:  # type: ignore[no-untyped-def]
    """Leftovers of a process that died: removed when the next one starts, not hours later."""
    from fastapi.testclient import TestClient

    from faceport.api.app import create_privacy_app
    from faceport.services.privacy import JOB_KIND
    from faceport.store import create_job, open_store, start_job

    media = settings.home / "media"
    uploads, outs = media / "uploads", media / "outs"
    uploads.mkdir(parents=True)
    outs.mkdir()
    (uploads / ".staging-0123abcd.mp4").write_bytes(b"half an upload")  # the request died mid-upload
    (uploads / "feedbeef.png").write_bytes(_png())  # accepted, but no job needs it any more
    cv2.imwrite(str(uploads / "cafe0001.png"), np.zeros((16, 16, 3), np.uint8))  # input of an interrupted job
    (outs / ".v.partial.png").write_bytes(b"half an image")  # partial output of the interrupted job
    (outs / ".v.1234abcd.partial.png").write_bytes(b"half an image")
    (outs / ".notes.partial.png").write_bytes(b"another output's name: kept")
    (outs / "v_old.png").write_bytes(b"a finished output: kept")
    store = open_store(settings.resolved_database_url)
    with store.session() as session:
        record = create_job(session=session, kind=JOB_KIND, params={
            "input_path": "uploads/cafe0001.png", "output_path": "outs/v.png", "config": {}, "media": "image",
            "estimated_time": 1.0, "overwrite": False, "upload": True})
        start_job(session=session, job_id=record.id)  # running when the process died
    store.dispose()

    with TestClient(create_privacy_app(settings)) as client:
        left = sorted(p.name for p in uploads.iterdir())
        assert ".staging-0123abcd.mp4" not in left and "feedbeef.png" not in left
        assert not (outs / ".v.partial.png").exists() and not (outs / ".v.1234abcd.partial.png").exists()
        assert (outs / ".notes.partial.png").exists() and (outs / "v_old.png").exists()
        done = _wait(client, record.id)
        assert done["status"] == "completed", done  # its upload was kept for it
        assert (outs / "v.png").is_file()
        assert _upload_files(client) == []


def _peak_rss(pid: int) -> int:
    """Peak resident memory of a process in bytes (VmHWM: the kernel's high-water mark, not a sample)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


def test_large_upload_streams_to_disk_in_a_live_server(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A 50 MB upload to a real uvicorn process: its peak memory grows by far less than the file, nothing is kept."""
    import os
    import socket
    import subprocess
    import sys

    import httpx
    import psutil

    from tests.conftest import REPO

    if not Path("/proc/self/status").is_file():
        pytest.skip("needs Linux /proc for the peak resident memory")
    size = 50 * 1024 * 1024
    big = tmp_path / "big.mp4"
    big.write_bytes(np.random.default_rng(3).integers(0, 256, size, dtype=np.uint8).tobytes())
    small = tmp_path / "small.mp4"
    small.write_bytes(big.read_bytes()[: 1024 * 1024])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    env = {**os.environ, "PYTHONPATH": str(REPO), "FACEPORT_HOME": str(settings.home),
           "FACEPORT_MODELS_DIR": str(settings.models_dir), "FACEPORT_PULL_ON_START": "false",
           "FACEPORT_MODEL_IDLE_TTL": "0"}
    server = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "faceport.api.app:create_privacy_app",
                               "--fd", str(sock.fileno()), "--log-level", "warning"], env=env,
                              pass_fds=(sock.fileno(),))
    try:
        with httpx.Client(base_url=url, timeout=120) as client:
            for _ in range(600):
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert server.poll() is None, "the server exited"
                time.sleep(0.1)
            with small.open("rb") as fh:  # warm-up: every import and code path the big upload takes
                assert client.post("/api/v1/process", files={"file": ("small.mp4", fh, "video/mp4")}).status_code == 400
            peak_before = _peak_rss(server.pid)
            rss_before = psutil.Process(server.pid).memory_info().rss
            with big.open("rb") as fh:  # httpx streams a file object: the client does not hold it either
                response = client.post("/api/v1/process", files={"file": ("big.mp4", fh, "video/mp4")})
            assert response.status_code == 400, response.text
            assert response.json()["code"] == "INVALID_FORMAT"
            peak_after = _peak_rss(server.pid)
            rss_after = psutil.Process(server.pid).memory_info().rss
            assert client.get("/health").status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=60)
        sock.close()
    growth = peak_after - peak_before
    print(f"\n[upload memory] 50 MB upload: peak RSS +{growth / 2**20:.1f} MB, "
          f"RSS {rss_before / 2**20:.0f} -> {rss_after / 2**20:.0f} MB")
    assert growth < size // 4, f"peak memory grew by {growth / 2**20:.1f} MB for a 50 MB upload"
    uploads = settings.home / "media" / "uploads"
    assert not uploads.is_dir() or list(uploads.iterdir()) == [], "the refused upload must not be kept"
