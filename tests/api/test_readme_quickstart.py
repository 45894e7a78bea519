"""The README's Quickstart, run as written: register, log in, detect faces with the token, against a fresh
server (real uvicorn, empty data directory). Only the host and port are substituted."""

from __future__ import annotations

import json
import re
import subprocess

from tests.conftest import REPO

README = REPO / "README.md"
README_HOST = "http://127.0.0.1:8000"


def quickstart_block() -> str:
    """The Quickstart's shell block that calls ``/api/v1/face/detect``."""
    quickstart = README.read_text().split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", quickstart, flags=re.S)
    matching = [block for block in blocks if "/api/v1/face/detect" in block]
    assert len(matching) == 1, blocks
    return matching[0]


def test_readme_quickstart_detects_faces_on_a_fresh_server(live_server) -> None:
    block = quickstart_block()
    assert README_HOST in block and "Authorization: Bearer" in block
    result = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block.replace(README_HOST, live_server.url)],
                            cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    registered, detected = (json.loads(line) for line in result.stdout.replace("}{", "}\n{").splitlines()
                            if line.strip())
    assert registered["success"] is True and registered["data"]["username"] == "ada"
    assert detected["success"] is True, detected
    faces = detected["data"]["faces"]
    assert len(faces) == 1 and faces[0]["landmarks"], faces
