"""Seed E's audit report over HTTP (``GET /api/v1/jobs/{id}/report``) and the measured model figures."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from faceport.services.privacy_figures import FIGURES_FILE, NOT_MEASURED, read_figures

PRIVACY_MODELS = ("centerface", "ppocr_v4_det", "ppocr_v4_rec", "ppocr_cls", "plate_cascades")


@pytest.fixture(scope="module")
def privacy_models(models_dir: Path) -> Path:
    from faceport.engine.models import ModelStore

    store = ModelStore(models_dir)
    missing = [name for name in PRIVACY_MODELS if not store.is_installed(name)]
    if missing:
        assert all(r.installed for r in store.pull(missing))
    return models_dir


@pytest.fixture
def keyed_client(settings) -> Iterator:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from faceport.api.app import create_privacy_app

    with TestClient(create_privacy_app(settings.model_copy(update={"api_key": "seed-e-key"})),
                    headers={"X-API-Key": "seed-e-key"}) as client:
        yield client


def _wait(client, job_id: str, timeout: float = 240.0) -> dict:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/api/v1/jobs/{job_id}").json()
        if body["status"] in ("completed", "failed", "cancelled"):
            return body
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish")


def test_report_is_written_beside_the_output_and_served_to_the_key_holder(  # type: ignore[no-untyped-def]
        keyed_client, privacy_models, data_dir: Path) -> None:
    root: Path = keyed_client.app.state.context.privacy.ensure_root()
    shutil.copy(data_dir / "synthetic" / "synth_id_card_fake_pii.png", root / "card.png")
    body = {"input_path": "card.png", "output_path": "out/card.png",
            "config": {"video": {"text_detection": True, "plate_detection": False}, "report": True}}
    accepted = keyed_client.post("/api/v1/process", json=body)
    assert accepted.status_code == 200, accepted.text
    job_id = accepted.json()["job_id"]
    done = _wait(keyed_client, job_id)
    assert done["status"] == "completed", done
    assert done["result"]["report_path"] == "out/card.png.report.json"
    on_disk = json.loads((root / "out" / "card.png.report.json").read_text())
    response = keyed_client.get(f"/api/v1/jobs/{job_id}/report")
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/json")
    served = response.json()
    assert served == on_disk and served["format"] == "faceport.privacy.report/1"
    kinds = {r["kind"] for r in served["frames"][0]["regions"]}
    assert kinds == {"face", "text"}
    # the key is checked as for every seed E route
    anonymous = keyed_client.get(f"/api/v1/jobs/{job_id}/report", headers={"X-API-Key": ""})
    assert anonymous.status_code == 401 and anonymous.json()["code"] == "AUTH_REQUIRED"
    wrong = keyed_client.get(f"/api/v1/jobs/{job_id}/report", headers={"X-API-Key": "other"})
    assert wrong.status_code == 401 and wrong.json()["code"] == "AUTH_INVALID"
    # an existing report is an existing output: refused unless overwrite
    again = keyed_client.post("/api/v1/process", json={**body, "output_path": "out/card2.png"})
    assert again.status_code == 200
    _wait(keyed_client, again.json()["job_id"])
    (root / "out" / "card2.png").unlink()
    refused = keyed_client.post("/api/v1/process", json={**body, "output_path": "out/card2.png"})
    assert refused.status_code == 409 and refused.json()["code"] == "OUTPUT_EXISTS", refused.text
    assert "report" in refused.json()["message"]
    replaced = keyed_client.post("/api/v1/process", json={**body, "output_path": "out/card2.png", "overwrite": True})
    assert replaced.status_code == 200 and _wait(keyed_client, replaced.json()["job_id"])["status"] == "completed"


def test_report_of_a_job_without_one_or_unknown_is_not_found(keyed_client, privacy_models) -> None:  # type: ignore[no-untyped-def]
    import cv2
    import numpy as np

    root: Path = keyed_client.app.state.context.privacy.ensure_root()
    cv2.imwrite(str(root / "plain.png"), np.zeros((32, 32, 3), np.uint8))
    job = keyed_client.post("/api/v1/process", json={"input_path": "plain.png", "output_path": "plain_out.png"})
    job_id = job.json()["job_id"]
    assert _wait(keyed_client, job_id)["status"] == "completed"
    for path in (f"/api/v1/jobs/{job_id}/report", "/api/v1/jobs/0123456789abcdef/report"):
        response = keyed_client.get(path)
        assert response.status_code == 404 and response.json()["code"] == "NOT_FOUND", response.text
    bad = keyed_client.post("/api/v1/process", json={"input_path": "plain.png", "config": {"report": "yes"}})
    assert bad.status_code == 400 and "config.report" in bad.json()["message"]


def test_models_report_the_measured_figures_not_typed_ones(privacy_client) -> None:  # type: ignore[no-untyped-def]
    """Every figure comes from privacy_figures.json (with its date, clips, machine); the rest say not measured."""
    models = privacy_client.get("/api/v1/models").json()["models"]
    sections = read_figures(FIGURES_FILE)["sections"]
    assert "faces" in sections, "bench/privacy.py has not written its figures"
    faces = sections["faces"]
    face = models["face_detection"]
    measured = faces["figures"]["face_detection"]
    assert face["coverage"] == measured["coverage"] and face["faces_judged"] == measured["faces_judged"] > 0
    assert face["measured"]["faces"]["date"] == faces["date"] and face["measured"]["faces"]["clips"]
    assert face["measured"]["faces"]["machine"]
    given = {(key, name) for s in sections.values() for key, values in s.get("figures", {}).items() for name in values}
    for key, model in models.items():
        for name in ("accuracy", "map50", "recall", "real_time_factor", "coverage"):
            if name in model and (key, name) not in given:
                assert model[name] is None and model[f"{name}_note"] == NOT_MEASURED, (key, name)
        if model["measured"] is None:
            assert model["measured_note"] == NOT_MEASURED
