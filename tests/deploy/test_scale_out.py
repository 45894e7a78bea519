"""Scale-out for real: two ``faceport serve`` nodes on one PostgreSQL schema and one Redis, a Celery worker,
and nginx in front with the repository's site file (deploy/nginx/faceport.conf).

Checks, each through the real processes: sticky routing by client address (both nodes reachable, each
address always on one node; a Socket.IO polling session, which breaks without stickiness); WebSocket
upgrades through nginx (seed C ``/ws``); seed B's body size (a 2+ MB upload, over nginx's 1 MB default)
answered by a Celery worker within the request; a gallery change on one node used by the other;
rate limits shared (the per-IP login limit counts across nodes); the proctoring per-address cap across
nodes; proctoring registry changes (a client added, then blocked, on one node) reaching a live connection
on the other; seed A's single-user mode across nodes.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import pytest

from tests.cluster import (
    Process,
    clear_redis_keys,
    faceport_env,
    nginx_binary,
    nginx_config,
    postgres_schema,
    require_redis,
    start_node,
    start_worker,
)
from tests.conftest import FIXTURES

GRACE = FIXTURES / "mpl_grace_hopper.jpg"
PASSWORD = "scale-out-password"


def free_ports(count: int, first: int = 18800, last: int = 18899) -> list[int]:
    """Ports free now, from this suite's range."""
    ports: list[int] = []
    for port in range(first, last + 1):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == count:
            return ports
    raise AssertionError(f"no {count} free ports in {first}-{last}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[dict[str, Any]]:
    nginx = nginx_binary()
    redis_url = require_redis()
    home = tmp_path_factory.mktemp("scale-home")
    logs = tmp_path_factory.mktemp("scale-logs")
    tag = uuid.uuid4().hex[:8]
    front, port_a, port_b = free_ports(3)
    processes: list[Process] = []
    nginx_proc: subprocess.Popen[bytes] | None = None
    with postgres_schema() as database_url:
        common = {"home": home, "models_dir": models_dir, "database_url": database_url, "redis_url": redis_url,
                  "jobs": "celery", "celery_queue": f"faceport-test-{tag}", "pull_on_start": False,
                  "model_idle_ttl": 0, "audit_log": "off", "rate_limit_ip": "12/minute",
                  "rate_limit_key_prefix": f"fp-test-{tag}", "live_redis_prefix": f"fp-test-{tag}:live",
                  "proctor_max_connections_per_ip": 2, "sync_video_max_seconds": 0}
        try:
            # one at a time: the first start creates the JWT keys in the shared FACEPORT_HOME
            processes.append(start_node("node-a", faceport_env(**common, node_name="node-a"), logs, port_a))
            processes.append(start_node("node-b", faceport_env(**common, node_name="node-b"), logs, port_b))
            processes.append(start_worker("worker", faceport_env(**common, node_name="worker"), logs))
            workdir = tmp_path_factory.mktemp("nginx")
            config = nginx_config(workdir, listen=front, main_nodes=[port_a, port_b])
            checked = subprocess.run([nginx, "-t", "-c", str(config)], capture_output=True, text=True)
            assert checked.returncode == 0, checked.stderr
            nginx_proc = subprocess.Popen([nginx, "-c", str(config)], stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL)
            url = f"http://127.0.0.1:{front}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, (workdir / "error.log").read_text()
                time.sleep(0.1)
            yield {"url": url, "a": f"http://127.0.0.1:{port_a}", "b": f"http://127.0.0.1:{port_b}",
                   "processes": processes, "home": home, "env": faceport_env(**common)}
        finally:
            if nginx_proc is not None:
                nginx_proc.terminate()
                nginx_proc.wait(timeout=30)
            for process in processes:  # a node may hold an aborted long poll open until its ping interval
                process.stop(timeout=10)
            clear_redis_keys(redis_url, f"fp-test-{tag}*", "faceport:jobs:*", "faceport:proctor:*")


def node_of(url: str, source: str | None = None) -> str:
    transport = httpx.HTTPTransport(local_address=source) if source else None
    with httpx.Client(transport=transport, timeout=10) as client:
        response = client.get(f"{url}/health")
    assert response.status_code == 200, response.text
    return str(response.json()["node"])


def test_nginx_routes_each_client_to_one_node_and_reaches_both(cluster: dict[str, Any]) -> None:
    seen: dict[str, set[str]] = {}
    for last in range(2, 40):
        source = f"127.0.0.{last}"
        seen[source] = {node_of(cluster["url"], source) for _ in range(3)}
        if {node for nodes in seen.values() for node in nodes} == {"node-a", "node-b"} and len(seen) >= 4:
            break
    assert all(len(nodes) == 1 for nodes in seen.values()), seen  # sticky
    assert {node for nodes in seen.values() for node in nodes} == {"node-a", "node-b"}, seen


def test_socketio_polling_and_websocket_upgrades_pass_through_nginx(cluster: dict[str, Any]) -> None:
    import socketio
    import websocket

    client = socketio.Client(reconnection=False)
    statuses: list[Any] = []
    client.on("status_update", statuses.append)
    # long polling: every request of the session must reach the node that holds it
    client.connect(cluster["url"], transports=["polling"], wait_timeout=30)
    try:
        deadline = time.monotonic() + 20
        while not statuses and time.monotonic() < deadline:
            time.sleep(0.05)
        assert statuses and "message" in statuses[0]
        client.emit("clear_source")
        time.sleep(1.0)  # several more polls, all on the same node
        assert client.connected
    finally:  # abort: a clean disconnect waits for the pending long poll (up to the 25 s ping interval)
        client.eio.disconnect(abort=True)
    ws = websocket.create_connection(cluster["url"].replace("http", "ws") + "/ws", timeout=20)
    try:
        ws.send("not json")
        answer = json.loads(ws.recv())
        assert answer["action"] == "ACTION_ERROR" and answer["reason"] == "INVALID_IMAGE_FORMAT", answer
    finally:
        ws.close()


def test_a_large_upload_through_nginx_runs_on_the_worker(cluster: dict[str, Any], tmp_path: Path) -> None:
    image = cv2.imread(str(GRACE))
    big = cv2.resize(image, (image.shape[1] * 3, image.shape[0] * 3), interpolation=cv2.INTER_CUBIC)
    big = cv2.add(big, (cv2.randu(big.copy(), 0, 24)))  # noise: the PNG stays over 2 MB
    path = tmp_path / "big.png"
    cv2.imwrite(str(path), big)
    assert path.stat().st_size > 2 * 1024 * 1024  # over nginx's default client_max_body_size (1 MB)
    request = {"processors": ["face_enhancer"]}
    with path.open("rb") as handle:
        response = httpx.post(f"{cluster['url']}/process/image", files={"target": ("big.png", handle, "image/png")},
                              data={"request": json.dumps(request)}, timeout=300)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "completed" and body["output_path"].endswith(".png"), body
    name = body["output_path"].rsplit("/", 1)[-1]
    # rendered by the Celery worker, not by the API node that took the request
    worker = next(p for p in cluster["processes"] if p.name == "worker")
    assert "(facefusion.image) completed on worker:" in worker.log()
    for node in ("a", "b"):  # the shared FACEPORT_HOME: either node serves the output
        download = httpx.get(f"{cluster[node]}/download/{name}", timeout=60)
        assert download.status_code == 200 and len(download.content) > 100_000


def _token(base: str, username: str) -> str:
    response = httpx.post(f"{base}/api/v1/auth/login", json={"username": username, "password": PASSWORD}, timeout=30)
    assert response.status_code == 200, response.text
    return str(response.json()["data"]["access_token"])


def test_a_gallery_change_on_one_node_is_used_by_the_other(cluster: dict[str, Any]) -> None:
    a, b = cluster["a"], cluster["b"]
    registered = httpx.post(f"{a}/api/v1/auth/register", timeout=30,
                            json={"username": "gallery", "email": "gallery@example.com", "password": PASSWORD})
    assert registered.status_code == 201, registered.text
    headers = {"Authorization": f"Bearer {_token(a, 'gallery')}"}
    photo = GRACE.read_bytes()

    def recognize_on_b() -> dict[str, Any]:
        response = httpx.post(f"{b}/api/v1/face/recognize", headers=headers, timeout=60,
                              files={"image": ("grace.jpg", photo, "image/jpeg")})
        assert response.status_code == 200, response.text
        return dict(response.json()["data"]["faces"][0])

    assert recognize_on_b()["subject"] is None  # node b's index holds nobody yet
    subject = httpx.post(f"{a}/api/v1/face/subjects", headers=headers, json={"name": "Grace Hopper"}, timeout=30)
    assert subject.status_code == 201, subject.text
    subject_id = subject.json()["data"]["id"]
    added = httpx.post(f"{a}/api/v1/face/subjects/{subject_id}/faces", headers=headers, timeout=60,
                       files={"image": ("grace.jpg", photo, "image/jpeg")})
    assert added.status_code == 201, added.text
    changed_at = time.monotonic()
    while (face := recognize_on_b())["subject"] is None:
        assert time.monotonic() - changed_at < 30, "node b never saw the new face"
    print(f"gallery change on node a used by node b after {time.monotonic() - changed_at:.2f} s "
          "(including the recognize requests)")
    assert face["subject"]["subject"] == "Grace Hopper" and face["subject"]["subject_id"] == subject_id
    deleted = httpx.delete(f"{a}/api/v1/face/subjects/{subject_id}", headers=headers, timeout=30)
    assert deleted.status_code in (200, 204), deleted.text
    while recognize_on_b()["subject"] is not None:
        assert time.monotonic() - changed_at < 60, "node b still matches a deleted subject"


def test_rate_limits_are_shared_between_nodes(cluster: dict[str, Any]) -> None:
    a, b = cluster["a"], cluster["b"]
    httpx.post(f"{a}/api/v1/auth/register", timeout=30,
               json={"username": "limited", "email": "limited@example.com", "password": PASSWORD})
    remaining: list[int] = []
    statuses: list[int] = []
    # from an address of its own (127.0.0.9), so the other tests' logins keep their budget
    client = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.9"), timeout=30)
    for attempt in range(14):  # 12/minute per IP, counted in Redis: alternate nodes
        base = a if attempt % 2 == 0 else b
        response = client.post(f"{base}/api/v1/auth/login", json={"username": "limited", "password": PASSWORD})
        statuses.append(response.status_code)
        if response.status_code == 200:
            remaining.append(int(response.headers["X-RateLimit-Remaining"]))
    client.close()
    assert 429 in statuses, statuses
    assert remaining == sorted(remaining, reverse=True) and len(set(remaining)) == len(remaining), remaining


def test_proctoring_cap_per_address_holds_across_nodes(cluster: dict[str, Any]) -> None:
    import websocket

    a, b = (cluster[n].replace("http", "ws") + "/ws" for n in ("a", "b"))
    held = [websocket.create_connection(a, timeout=20), websocket.create_connection(b, timeout=20)]
    try:
        for socket_ in held:  # both admitted: a bad first frame gets an answer, not a refusal
            socket_.send("not json")
            assert json.loads(socket_.recv())["action"] == "ACTION_ERROR"
        third = websocket.create_connection(a, timeout=20)
        try:
            refusal = json.loads(third.recv())
            assert refusal["error"] == "CONNECTION_REFUSED" and refusal["code"] == 4002, refusal
        finally:
            third.close()
    finally:
        for socket_ in held:
            socket_.close()
    time.sleep(0.5)  # the slots are freed: a new connection is admitted again
    again = websocket.create_connection(b, timeout=20)
    try:
        again.send("not json")
        assert json.loads(again.recv())["action"] == "ACTION_ERROR"
    finally:
        again.close()


def test_single_user_mode_holds_across_nodes(cluster: dict[str, Any]) -> None:
    from tests.realtime.conftest import LiveClient

    first = LiveClient(cluster["a"]).connect()
    second = None
    try:
        time.sleep(0.5)
        second = LiveClient(cluster["b"]).connect()
        assert first.disconnected.wait(20), "the user on node a was not disconnected"
        assert second.connected
    finally:
        for client in (first, second):
            if client is not None and client.connected:
                client.sio.disconnect()


def test_proctoring_registry_changes_on_one_node_reach_the_other(cluster: dict[str, Any]) -> None:
    import base64
    import sys

    import websocket

    a, ws_b = cluster["a"], cluster["b"].replace("http", "ws") + "/ws"
    made = subprocess.run([sys.executable, "-m", "faceport.cli", "users", "create-admin", "--username", "proctoradmin",
                           "--password", PASSWORD], env=cluster["env"], capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    headers = {"Authorization": f"Bearer {_token(a, 'proctoradmin')}"}
    created = httpx.post(f"{a}/api/v1/proctor/clients", headers=headers, json={"user_name": "examinee1"}, timeout=30)
    assert created.status_code == 201, created.text
    frame = json.dumps({"user_name": "examinee1", "image": base64.b64encode(GRACE.read_bytes()).decode()})
    deadline = time.monotonic() + 30
    while True:  # node b learns of the new client from node a's notice (before: "not registered", closed)
        live = websocket.create_connection(ws_b, timeout=20)
        live.send(frame)
        answer = json.loads(live.recv())
        if "no reference face" in str(answer.get("message")):
            break
        live.close()
        assert time.monotonic() < deadline, answer
        time.sleep(0.1)
    try:
        blocked = httpx.post(f"{a}/api/v1/proctor/clients/examinee1/block", headers=headers, timeout=30)
        assert blocked.status_code == 200, blocked.text
        pushed = json.loads(live.recv())  # pushed by node b, with no frame sent
        assert pushed["action"] == "ACTION_ERROR" and pushed["reason"] == "REASON_BLOCKED_CLIENT", pushed
    finally:
        live.close()


def test_system_status_counts_the_celery_workers(cluster: dict[str, Any]) -> None:
    headers = {"Authorization": f"Bearer {_token(cluster['b'], 'proctoradmin')}"}  # made by the test above
    status = httpx.get(f"{cluster['b']}/api/v1/system/status", headers=headers, timeout=30)
    assert status.status_code == 200, status.text
    jobs = status.json()["data"]["jobs"]
    assert jobs["workers_alive"] == 1 and jobs["queue_depth"] == 0, jobs
    health = httpx.get(f"{cluster['b']}/api/v1/system/health", headers=headers, timeout=30).json()["data"]
    assert health["components"]["job_runner"]["status"] == "ok", health["components"]["job_runner"]
