"""Seed E's REST API on the privacy app: process, job status, models, and the error cases."""

from __future__ import annotations

import shutil
import time
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


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"input_path": "../../etc/passwd", "output_path": "x.mp4"}, 400, "INVALID_INPUT"),
    ({"input_path": "/etc/passwd", "output_path": "x.mp4"}, 400, "INVALID_INPUT"),
    ({"input_path": "file.xyz", "output_path": "x.mp4"}, 400, "INVALID_FORMAT"),
    ({"input_path": "missing.mp4", "output_path": "x.mp4"}, 404, "NOT_FOUND"),
    ({"input_path": "ok.png", "output_path": "../escape.png"}, 400, "INVALID_INPUT"),
    ({"input_path": "ok.png", "output_path": "/tmp/escape.png"}, 400, "INVALID_INPUT"),
    ({"input_path": "link.png", "output_path": "x.png"}, 400, "INVALID_INPUT"),
    ({"input_path": "corrupt.mp4", "output_path": "x.mp4"}, 400, "INVALID_FORMAT"),
    ({"input_path": "ok.png", "output_path": "x.png", "config": {"video": {"blur": {"type": "swirl"}}}}, 400,
     "INVALID_INPUT"),
    ({"output_path": "x.png"}, 400, "INVALID_INPUT"),
])
def test_errors_use_the_seed_body(privacy_client, tmp_path: Path, body: dict, status: int, code: str) -> None:  # type: ignore[no-untyped-def]
    root = _media(privacy_client)
    (root / "file.xyz").write_bytes(b"x")
    cv2.imwrite(str(root / "ok.png"), np.zeros((8, 8, 3), np.uint8))
    (root / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    outside = tmp_path / "secret.png"
    cv2.imwrite(str(outside), np.zeros((8, 8, 3), np.uint8))
    link = root / "link.png"
    if not link.exists():
        link.symlink_to(outside)
    response = privacy_client.post("/api/v1/process", json=body)
    assert response.status_code == status, response.text
    payload = response.json()
    assert set(payload) == {"error", "message", "code"} and payload["code"] == code
    if code == "INVALID_FORMAT" and body["input_path"].endswith(".xyz"):
        assert payload["message"] == "Unsupported file type: .xyz"


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
    assert response.json()["code"] == "INVALID_FORMAT" and "audio" in response.json()["message"]
