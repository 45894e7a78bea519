"""Helpers for tests that run faceport for real across processes: Redis, a PostgreSQL schema, Celery workers
(``faceport worker`` subprocesses), ``faceport serve`` nodes and nginx.

Redis: ``FACEPORT_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``); PostgreSQL:
``FACEPORT_TEST_POSTGRES_URL`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``). Where one
is unreachable the tests skip, except under CI (``CI`` set), where they fail.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

REPO = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("FACEPORT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get("FACEPORT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def unavailable(reason: str) -> None:
    """Skip; under CI a missing service is a failure (``.ci/run`` starts them)."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run the scale-out tests", pytrace=False)
    pytest.skip(reason)


def require_redis() -> str:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        unavailable(f"Redis at {REDIS_URL} is unreachable (start redis-server or set FACEPORT_TEST_REDIS_URL): {exc}")
    finally:
        client.close()
    return REDIS_URL


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A fresh PostgreSQL schema, as a URL whose connections use it (``options=-csearch_path=...``); dropped after."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    schema = f"fp_cluster_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    except OperationalError as exc:
        admin.dispose()
        unavailable(f"PostgreSQL at {POSTGRES_URL} is unreachable (set FACEPORT_TEST_POSTGRES_URL): {exc.orig}")
    separator = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{separator}options={quote(f'-csearch_path={schema}')}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def clear_redis_keys(url: str, *patterns: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        for pattern in patterns:
            keys = list(client.scan_iter(match=pattern, count=500))
            if keys:
                client.delete(*keys)
    finally:
        client.close()


def faceport_env(**settings: Any) -> dict[str, str]:
    """The environment of a faceport subprocess: this checkout first on the path, ``FACEPORT_<NAME>`` settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEPORT_") or k.startswith("FACEPORT_TEST")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONUNBUFFERED"] = "1"
    for name, value in settings.items():
        env[f"FACEPORT_{name.upper()}"] = str(value)
    return env


class Process:
    """A faceport subprocess (its own session, so kill -9 reaches it alone) logging to a file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "faceport.cli", *args], env=env, cwd=REPO,
                                     stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, needle: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.log():
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited ({self.proc.returncode}):\n{self.log()[-4000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} never logged {needle!r}:\n{self.log()[-4000:]}")
            time.sleep(0.1)

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


def start_worker(name: str, env: dict[str, str], log_dir: Path, *extra: str) -> Process:
    """A ``faceport worker`` subprocess, returned once Celery says it is ready to take tasks."""
    worker = Process(name, ["worker", "--no-pull", *extra], env, log_dir)
    worker.wait_for_log(" ready.")
    return worker


def start_node(name: str, env: dict[str, str], log_dir: Path, port: int) -> Process:
    """A ``faceport serve`` subprocess (main app on ``port``, no privacy app), returned once /health answers."""
    import httpx

    node = Process(name, ["serve", "--no-pull", "--port", str(port), "--privacy-port", "0"], env, log_dir)
    deadline = time.monotonic() + 120
    while True:
        if node.proc.poll() is not None:
            raise AssertionError(f"{name} exited ({node.proc.returncode}):\n{node.log()[-4000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return node
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} never answered /health:\n{node.log()[-4000:]}")
        time.sleep(0.2)


NGINX_SITE = REPO / "deploy" / "nginx" / "faceport.conf"


def nginx_binary() -> str:
    import shutil

    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").is_file() else None)
    if found is None:
        unavailable("nginx is not installed (apt-get install -y nginx; .ci/run installs it)")
    return str(found)


def nginx_config(workdir: Path, *, listen: int, main_nodes: list[int]) -> Path:
    """A complete nginx.conf around the repository's site file (deploy/nginx/faceport.conf): its upstream
    servers replaced by ``main_nodes``, its main server on ``listen``, the privacy server dropped; nginx
    runs in the foreground with every path in ``workdir``."""
    site = NGINX_SITE.read_text()
    for placeholder in ("server 127.0.0.1:8001", "server 127.0.0.1:8002", "listen 80;", "listen 5000;"):
        assert placeholder in site, f"{NGINX_SITE} changed: {placeholder!r} is gone; update tests/cluster.py"
    upstream_main = "".join(f"    server 127.0.0.1:{port} max_fails=3 fail_timeout=10s;\n" for port in main_nodes)
    site = site.replace("    server 127.0.0.1:8001 max_fails=3 fail_timeout=10s;\n"
                        "    server 127.0.0.1:8002 max_fails=3 fail_timeout=10s;\n", upstream_main)
    site = site.replace("listen 80;", f"listen 127.0.0.1:{listen};")
    privacy_server = site.index("# Privacy app")
    site = site[:privacy_server]  # the test nodes run without the privacy app
    for folder in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (workdir / folder).mkdir(parents=True, exist_ok=True)
    user = "user root;\n" if os.geteuid() == 0 else ""
    config = workdir / "nginx.conf"
    config.write_text(f"""{user}daemon off;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log {workdir}/access.log;
    client_body_temp_path {workdir}/client_body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
{site}
}}
""")
    return config
