"""Seed D system management (``/api/v1/system/*``): admin only, acting on the real model cache and jobs table."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import TEST_ADMIN, TEST_USER, bearer_headers, register_headers

BASE = "/api/v1/system"
TINY_TTL = 0.001  # seconds: every model is idle by the time the next request arrives


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[dict[str, Any]]:
    """One app for the module (tiny idle TTL, janitor stopped: only POST /system/optimize evicts) and its callers."""
    from fastapi.testclient import TestClient

    from faceport.api.app import create_app
    from faceport.config import Settings

    settings = Settings(home=tmp_path_factory.mktemp("system") / "home", models_dir_override=models_dir,
                        pull_on_start=False, model_idle_ttl=TINY_TTL)
    with TestClient(create_app(settings)) as client:
        ctx = client.app.state.context
        ctx.cache.stop_janitor()  # its 30 s timer would race the tests; sweeping is what optimize does
        ctx.auth.create_admin(TEST_ADMIN["username"], TEST_ADMIN["password"], email=TEST_ADMIN["email"])
        callers = {"admin": bearer_headers(client, TEST_ADMIN["username"], TEST_ADMIN["password"]),
                   "admin_api_key": {"X-API-Key": ctx.auth.create_api_key("ops", "admin").key},
                   "user": register_headers(client, TEST_USER), "anonymous": {}}
        yield {"client": client, "ctx": ctx, "callers": callers, "settings": settings}


def _call(system: dict[str, Any], method: str, route: str, body: Any = None, caller: str = "admin") -> Any:
    return system["client"].request(method, f"{BASE}{route}", json=body, headers=system["callers"][caller])


def _model(system: dict[str, Any], name: str) -> dict[str, Any]:
    items = _call(system, "GET", "/models").json()["data"]["items"]
    return next(item for item in items if item["name"] == name)


ROUTES = [("GET", "/health", None), ("GET", "/status", None), ("GET", "/models", None),
          ("POST", "/models/load", {"model": "yunet"}), ("POST", "/models/unload", {"model": "yunet"}),
          ("GET", "/vram", None), ("POST", "/optimize", {"idle_seconds": 3600})]
CALLERS = [("admin", 200, None), ("admin_api_key", 200, None), ("user", 403, "AUTH_FORBIDDEN"),
           ("anonymous", 401, "AUTH_REQUIRED")]


@pytest.mark.parametrize(("caller", "status", "code"), CALLERS, ids=[c[0] for c in CALLERS])
@pytest.mark.parametrize(("method", "route", "body"), ROUTES, ids=[f"{m} {r}" for m, r, _ in ROUTES])
def test_system_routes_are_admin_only(system, method: str, route: str, body: Any, caller: str, status: int,
                                      code: str | None) -> None:
    system["ctx"].cache.unload("yunet")
    response = _call(system, method, route, body, caller)
    assert response.status_code == status, response.text
    payload = response.json()
    if code is None:
        assert payload["success"] is True and payload["meta"]["request_id"]
    else:
        assert payload["success"] is False and payload["error"]["code"] == code
    # a refused caller changed nothing: only the admin's load left the model loaded
    assert system["ctx"].cache.is_loaded("yunet") is (route == "/models/load" and code is None)


def test_health_reports_each_component(system) -> None:
    data = _call(system, "GET", "/health").json()["data"]
    assert data["status"] == "healthy", data
    assert set(data["components"]) == {"database", "storage", "models", "job_runner"}  # no Redis configured
    assert all(c["status"] == "ok" and c["reason"] is None for c in data["components"].values())
    models = data["components"]["models"]["details"]
    assert models["missing"] == [] and models["installed"] == len(system["ctx"].models.defaults())
    assert data["components"]["job_runner"]["details"]["workers_alive"] == system["settings"].job_workers


REDIS_URL = os.environ.get("FACEPORT_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


# (settings overrides, job runner: "app" (started) | "stopped", component, status, text in the reason)
HEALTH_CASES: list[tuple[dict[str, Any], str, str, str, str]] = [
    ({"redis_url": REDIS_URL}, "app", "redis", "ok", ""),
    ({"redis_url": "redis://127.0.0.1:1/0"}, "app", "redis", "degraded", "FACEPORT_REDIS_URL"),  # nothing on port 1
    ({}, "stopped", "job_runner", "degraded", "not running"),
]


@pytest.mark.parametrize(("overrides", "runner", "component", "status", "text"), HEALTH_CASES,
                         ids=["redis-up", "redis-down", "job-runner-stopped"])
def test_health_components_degrade_with_a_reason(system, overrides: dict[str, Any], runner: str, component: str,
                                                 status: str, text: str) -> None:
    from faceport.jobs import LocalJobRunner
    from faceport.services.system import SystemService

    ctx = system["ctx"]
    jobs = ctx.jobs if runner == "app" else LocalJobRunner(ctx.store)  # never started
    service = SystemService(ctx.settings.model_copy(update=overrides), ctx.models, ctx.cache, ctx.store, jobs=jobs)
    health = service.health()
    part = health["components"][component]
    assert part.status == status and health["status"] == ("healthy" if status == "ok" else "degraded")
    assert text in (part.reason or ""), part
    assert ("redis" in health["components"]) is bool(overrides.get("redis_url"))


def test_load_then_unload_a_real_model_even_while_it_is_in_use(system) -> None:
    ctx = system["ctx"]
    ctx.cache.unload("gender_cydral")
    assert _model(system, "gender_cydral")["loaded"] is False

    loaded = _call(system, "POST", "/models/load", {"model": "gender_cydral"}).json()["data"]
    assert loaded["changed"] is True and loaded["model"]["loaded"] is True
    listed = _model(system, "gender_cydral")
    assert listed["loaded"] is True and listed["installed"] is True and listed["memory_bytes"] > 0
    assert listed["memory_bytes"] >= listed["size_bytes"] > 0
    assert listed["last_used_at"] and listed["idle_ttl_seconds"] == TINY_TTL
    assert listed["runtime"] == "onnxruntime" and listed["providers"] == ["CPUExecutionProvider"]
    assert _call(system, "POST", "/models/load", {"model": "gender_cydral"}).json()["data"]["changed"] is False

    held = ctx.cache.get("gender_cydral")  # a request in the middle of inference holds the session
    unloaded = _call(system, "POST", "/models/unload", {"model": "gender_cydral"}).json()["data"]
    assert unloaded["changed"] is True and unloaded["model"]["loaded"] is False
    assert _model(system, "gender_cydral")["loaded"] is False and not ctx.cache.is_loaded("gender_cydral")
    [tensor] = held.inputs[:1]
    feed = np.zeros([d if isinstance(d, int) else 1 for d in tensor.shape], np.float32)
    assert held.run({tensor.name: feed})[0].size > 0  # the holder finishes its work on the unloaded session
    assert _call(system, "POST", "/models/unload", {"model": "gender_cydral"}).json()["data"]["changed"] is False


def _not_installed(system: dict[str, Any]) -> str:
    store = system["ctx"].models
    return next(spec.name for spec in store.specs() if not store.is_installed(spec.name))


# (route, body, status, code, text in the message)
MODEL_ERRORS: list[tuple[str, Any, int, str, str]] = [
    ("/models/load", {"model": "no_such_model"}, 404, "NOT_FOUND", "unknown model 'no_such_model'"),
    ("/models/unload", {"model": "no_such_model"}, 404, "NOT_FOUND", "known models"),
    ("/models/load", {"model": "NOT_INSTALLED"}, 503, "MODEL_UNAVAILABLE", "faceport models pull NOT_INSTALLED"),
    ("/models/load", {}, 400, "MISSING_FIELD", "model"),
    ("/models/load", {"model": ""}, 400, "INVALID_INPUT", "model"),
    ("/optimize", {"idle_seconds": -1}, 400, "INVALID_INPUT", "idle_seconds"),
]


@pytest.mark.parametrize(("route", "body", "status", "code", "text"), MODEL_ERRORS,
                         ids=[f"{r} {b}" for r, b, *_ in MODEL_ERRORS])
def test_bad_model_requests_answer_a_stable_documented_code(system, route: str, body: Any, status: int, code: str,
                                                            text: str) -> None:
    missing = _not_installed(system)
    if body.get("model") == "NOT_INSTALLED":
        body, text = {"model": missing}, text.replace("NOT_INSTALLED", missing)
    response = _call(system, "POST", route, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and text in error["message"], error
    documented = system["client"].get("/openapi.json").json()["paths"][f"{BASE}{route}"]["post"]["responses"]
    assert str(status) in documented
    assert not system["ctx"].cache.is_loaded(missing)
    assert _call(system, "GET", "/status").status_code == 200  # still serving


@pytest.mark.parametrize(("body", "evicted"), [
    ({}, True),  # the idle TTL (tiny here) applies
    (None, True),  # no body at all: the same
    ({"idle_seconds": 3600}, False),  # used a moment ago: not idle for an hour
], ids=["ttl", "no-body", "idle-an-hour"])
def test_optimize_evicts_idle_models_and_reports_what_it_freed(system, body: Any, evicted: bool) -> None:
    ctx = system["ctx"]
    assert _call(system, "POST", "/models/load", {"model": "yunet"}).status_code == 200
    data = _call(system, "POST", "/optimize", body).json()["data"]
    assert ("yunet" in data["models_evicted"]) is evicted, data
    assert ctx.cache.is_loaded("yunet") is not evicted and _model(system, "yunet")["loaded"] is not evicted
    assert data["gc_objects_collected"] >= 0 and data["process_rss_bytes_before"] > 0
    if evicted:
        assert data["model_cache_bytes_freed"] > 0
        assert data["model_cache_bytes_after"] == data["model_cache_bytes_before"] - data["model_cache_bytes_freed"]
    else:
        assert data["model_cache_bytes_freed"] == 0 and data["idle_seconds"] == 3600
    ctx.cache.unload("yunet")


def test_status_shows_jobs_by_state_queue_and_thread_pool(system) -> None:
    from faceport.store import create_job, fail_job

    ctx, settings = system["ctx"], system["settings"]
    before = _call(system, "GET", "/status").json()["data"]["jobs"]["by_state"]
    with ctx.store.session() as session:  # a kind no runner handles: the jobs stay where they are put
        create_job(session=session, kind="status-test", params={})
        failed = create_job(session=session, kind="status-test", params={})
        fail_job(session=session, job_id=failed.id, code="PROCESSING_FAILED", message="for the test")
    data = _call(system, "GET", "/status").json()["data"]
    by_state = data["jobs"]["by_state"]
    assert by_state["queued"] == before["queued"] + 1 and by_state["failed"] == before["failed"] + 1
    assert set(by_state) == {"queued", "running", "completed", "failed", "cancelled"}
    assert data["jobs"]["workers"] == data["jobs"]["workers_alive"] == settings.job_workers
    assert data["jobs"]["queue_depth"] == 0 and data["jobs"]["queue_max"] == settings.job_queue_max
    assert data["thread_pool"]["size"] == settings.thread_pool_size
    assert data["thread_pool"]["busy"] >= 1  # this very request is measured running on the pool
    assert data["memory"]["process_rss_bytes"] > 0 and data["memory"]["host_total_bytes"] > 0
    assert data["cpu"]["cores"] >= 1 and data["uptime_seconds"] > 0


def test_vram_on_a_cpu_provider_is_host_memory_labelled_so(system) -> None:
    assert _call(system, "POST", "/models/load", {"model": "yunet"}).status_code == 200
    data = _call(system, "GET", "/vram").json()["data"]
    assert data["device"] == "host" and data["gpus"] == []  # never GPU numbers without NVML
    assert "FACEPORT_EXECUTION_PROVIDERS" in data["gpu_unavailable"]
    assert data["host"]["model_cache_bytes"] >= _model(system, "yunet")["memory_bytes"] > 0
    assert data["host"]["process_rss_bytes"] > 0
    system["ctx"].cache.unload("yunet")


class _FakeNvml:
    """pynvml's calls as an NVIDIA driver answers them (the GPU boundary: this machine has no GPU)."""

    def __init__(self, fail: bool) -> None:
        self.fail = fail

    def nvmlInit(self) -> None:
        if self.fail:
            raise RuntimeError("NVML Shared Library Not Found")

    def nvmlShutdown(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return 1

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetName(self, handle: int) -> bytes:
        return b"NVIDIA H200"

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
        from types import SimpleNamespace

        return SimpleNamespace(total=150 * 2**30, used=3 * 2**30, free=147 * 2**30)


# (execution providers, pynvml: None = not installed, device, text in gpu_unavailable)
VRAM_CASES: list[tuple[list[str], str | None, str, str]] = [
    (["CPUExecutionProvider"], "works", "host", "FACEPORT_EXECUTION_PROVIDERS"),  # NVML never asked on CPU
    (["CUDAExecutionProvider", "CPUExecutionProvider"], None, "host", "pynvml is not installed"),
    (["CUDAExecutionProvider", "CPUExecutionProvider"], "fails", "host", "NVML failed"),
    (["CUDAExecutionProvider", "CPUExecutionProvider"], "works", "gpu", ""),
]


@pytest.mark.parametrize(("providers", "nvml", "device", "text"), VRAM_CASES,
                         ids=["cpu", "cuda-no-pynvml", "cuda-nvml-fails", "cuda-nvml"])
def test_vram_reports_gpu_numbers_only_from_nvml(system, monkeypatch: pytest.MonkeyPatch, providers: list[str],
                                                 nvml: str | None, device: str, text: str) -> None:
    import sys

    from faceport.engine.models import ModelCache
    from faceport.services.system import SystemService

    ctx = system["ctx"]
    cache = ModelCache(ctx.models, idle_ttl=0)
    cache.providers = providers  # the provider list is the process boundary mocked here (no CUDA build installed)
    monkeypatch.setitem(sys.modules, "pynvml", _FakeNvml(nvml == "fails") if nvml else None)
    data = SystemService(ctx.settings, ctx.models, cache, ctx.store).vram()
    assert data["device"] == device and data["providers"] == providers
    assert data["host"]["process_rss_bytes"] > 0
    if device == "gpu":
        assert data["gpu_unavailable"] is None
        assert data["gpus"] == [{"index": 0, "name": "NVIDIA H200", "total_bytes": 150 * 2**30,
                                 "used_bytes": 3 * 2**30, "free_bytes": 147 * 2**30}]
    else:
        assert data["gpus"] == [] and text in data["gpu_unavailable"]


def test_optimize_with_a_zero_ttl_evicts_only_when_asked(system) -> None:
    from faceport.engine.models import ModelCache
    from faceport.services.system import SystemService

    ctx = system["ctx"]
    cache = ModelCache(ctx.models, idle_ttl=0)  # FACEPORT_MODEL_IDLE_TTL=0: never on a timer
    service = SystemService(ctx.settings, ctx.models, cache, ctx.store)
    cache.get("yunet")
    kept = service.optimize()
    assert kept["models_evicted"] == [] and kept["idle_seconds"] is None and cache.is_loaded("yunet")
    freed = service.optimize(0)
    assert freed["models_evicted"] == ["yunet"] and freed["model_cache_bytes_after"] == 0
    cache.close()
