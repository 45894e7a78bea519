"""Settings from the environment, and the refusals that protect a deployment."""

from __future__ import annotations

from pathlib import Path

import pytest

from faceport.config import Settings
from faceport.errors import InvalidInput


def test_lists_come_from_csv_or_json(monkeypatch) -> None:
    monkeypatch.setenv("FACEPORT_EXECUTION_PROVIDERS", "CPUExecutionProvider, AzureExecutionProvider")
    monkeypatch.setenv("FACEPORT_PRELOAD_MODELS", '["blazeface_full", "facemesh"]')
    settings = Settings()
    assert settings.execution_providers == ["CPUExecutionProvider", "AzureExecutionProvider"]
    assert settings.preload_models == ["blazeface_full", "facemesh"]


def test_paths_and_database_default_under_home(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("FACEPORT_MODELS_DIR", raising=False)
    monkeypatch.delenv("FACEPORT_DATABASE_URL", raising=False)
    settings = Settings(home=tmp_path)
    assert settings.models_dir == tmp_path / "models"
    assert settings.resolved_database_url == f"sqlite:///{tmp_path / 'faceport.db'}"
    monkeypatch.setenv("FACEPORT_MODELS_DIR", str(tmp_path / "shared-models"))
    assert Settings(home=tmp_path).models_dir == tmp_path / "shared-models"


@pytest.mark.parametrize(("host", "api_key", "insecure", "ok"), [
    ("127.0.0.1", None, False, True),
    ("localhost", None, False, True),
    ("::1", None, False, True),
    ("0.0.0.0", None, False, False),
    ("0.0.0.0", "secret", False, True),
    ("0.0.0.0", None, True, True),
])
def test_public_bind_needs_a_key_or_insecure(host: str, api_key: str | None, insecure: bool, ok: bool) -> None:
    if ok:
        assert Settings(host=host, api_key=api_key, insecure=insecure).host == host
    else:
        with pytest.raises(ValueError, match="--insecure"):
            Settings(host=host, api_key=api_key, insecure=insecure)


def test_unknown_execution_provider_stops_start_up_listing_the_available(settings) -> None:
    from faceport.api.context import AppContext

    bad = settings.model_copy(update={"execution_providers": ["TotallyMadeUpExecutionProvider"]})
    with pytest.raises(InvalidInput, match="CPUExecutionProvider"):
        AppContext.create(bad)


def test_every_engine_detector_is_a_setting_and_a_request_value(monkeypatch) -> None:
    from typing import get_args

    from faceport.api.v1.face import DetectorName as RequestDetectorName
    from faceport.config import DetectorName
    from faceport.engine.detect import DETECTORS
    from faceport.services.facefusion import DETECTOR_NAMES, FACEFUSION_DETECTORS

    assert "yunet" in DETECTORS
    assert set(get_args(DetectorName)) == set(get_args(RequestDetectorName)) == set(DETECTORS)
    assert set(DETECTOR_NAMES) == set(DETECTORS) | set(FACEFUSION_DETECTORS)  # seed B also takes FaceFusion's names
    monkeypatch.setenv("FACEPORT_DETECTOR", "yunet")
    assert Settings().detector == "yunet"
    monkeypatch.setenv("FACEPORT_DETECTOR", "yolo")
    with pytest.raises(ValueError, match="yunet"):
        Settings()


@pytest.mark.parametrize(("value", "expected"), [
    (None, "centerface"), ("centerface", "centerface"), ("blazeface_full", "blazeface_full"), ("", None),
    ("none", None), ("None", None),
])
def test_live_fallback_detector_defaults_to_centerface_and_can_be_turned_off(monkeypatch, value: str | None,
                                                                             expected: str | None) -> None:
    if value is None:
        monkeypatch.delenv("FACEPORT_LIVE_FALLBACK_DETECTOR", raising=False)
    else:
        monkeypatch.setenv("FACEPORT_LIVE_FALLBACK_DETECTOR", value)
    assert Settings().live_fallback_detector == expected


@pytest.mark.parametrize(("value", "ok"), [("onnx", True), ("dlib", True), ("torch", False), ("", False)])
def test_embedder_setting_selects_the_resnet_runtime(monkeypatch, value: str, ok: bool) -> None:
    assert Settings().embedder == "onnx"
    monkeypatch.setenv("FACEPORT_EMBEDDER", value)
    if ok:
        assert Settings().embedder == value
    else:
        with pytest.raises(ValueError, match="embedder"):
            Settings()
