"""The command line as a user runs it: models list/path/verify, serve with both apps on real uvicorn."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from faceport.engine.models import DEFAULT_MODELS, OPTIONAL_MODELS


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "faceport.cli", *args], capture_output=True, text=True, env=env,
                          check=False, timeout=600)


@pytest.fixture
def cli_env(tmp_path: Path, models_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(FACEPORT_HOME=str(tmp_path / "home"), FACEPORT_MODELS_DIR=str(models_dir))
    env.pop("FACEPORT_DATABASE_URL", None)
    return env


def test_models_list_names_every_model_with_licence_and_source(cli_env) -> None:
    result = _run(["models", "list", "--json"], cli_env)
    assert result.returncode == 0, result.stderr
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert set(rows) == {s.name for s in DEFAULT_MODELS + OPTIONAL_MODELS}
    assert rows["blazeface_full"]["installed"] is True
    assert rows["blazeface_full"]["source"] == "mediapipe==0.10.21"
    assert rows["inswapper_128"]["default"] is False and "--from" in rows["inswapper_128"]["source"]
    assert all(r["license"] for r in rows.values())


def test_models_path_and_verify(cli_env, models_dir: Path) -> None:
    path = _run(["models", "path", "centerface"], cli_env)
    assert path.returncode == 0 and Path(path.stdout.strip()) == models_dir / "centerface" / "centerface.onnx"
    verify = _run(["models", "verify", "blazeface_full", "facemesh"], cli_env)
    assert verify.returncode == 0 and verify.stdout.count(" ok") == 2
    unknown = _run(["models", "verify", "nosuch"], cli_env)
    assert unknown.returncode != 0 and "unknown model" in unknown.stderr


def test_missing_model_names_the_pull_command(cli_env, tmp_path: Path) -> None:
    cli_env["FACEPORT_MODELS_DIR"] = str(tmp_path / "empty-models")
    verify = _run(["models", "verify", "centerface"], cli_env)
    assert verify.returncode == 1 and "missing" in verify.stdout
    optional = _run(["models", "pull", "inswapper_128"], cli_env)
    assert optional.returncode != 0 and "--from FILE|URL --sha256" in optional.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_runs_both_apps_and_stops_cleanly(cli_env) -> None:
    port, privacy_port = _free_port(), _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "faceport.cli", "serve", "--port", str(port),
                             "--privacy-port", str(privacy_port), "--no-pull"], env=cli_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        bodies = {}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(bodies) < 2:
            for p in (port, privacy_port):
                try:
                    r = httpx.get(f"http://127.0.0.1:{p}/health", timeout=2)
                    if r.status_code == 200:
                        bodies[p] = r.json()
                except httpx.HTTPError:
                    pass
            if proc.poll() is not None:
                break
            time.sleep(0.2)
        assert len(bodies) == 2, proc.stdout.read() if proc.poll() is not None else "no health answer"
        assert bodies[port]["status"] == bodies[privacy_port]["status"] == "healthy"
        user = {"username": "cli-user", "email": "cli-user@example.com", "password": "cli-user-password"}
        registered = httpx.post(f"http://127.0.0.1:{port}/api/v1/auth/register", json=user, timeout=30)
        assert registered.status_code == 201, registered.text
        login = httpx.post(f"http://127.0.0.1:{port}/api/v1/auth/login", timeout=30,
                           json={"username": user["username"], "password": user["password"]})
        assert login.status_code == 200, login.text
        bearer = {"Authorization": f"Bearer {login.json()['data']['access_token']}"}
        detect = httpx.post(f"http://127.0.0.1:{port}/api/v1/face/detect", timeout=60, headers=bearer,
                            files={"image": ("h.jpg", (Path(__file__).parent / "fixtures" / "mpl_grace_hopper.jpg")
                                             .read_bytes(), "image/jpeg")})
        assert detect.status_code == 200 and detect.json()["data"]["count"] == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    assert (Path(cli_env["FACEPORT_HOME"]) / "faceport.db").is_file()  # migrations ran on start


def test_serve_refuses_a_public_bind_without_an_api_key(cli_env) -> None:
    result = _run(["serve", "--host", "0.0.0.0", "--no-pull"], cli_env)
    assert result.returncode == 2
    assert "API_KEY" in result.stderr and "--insecure" in result.stderr
