"""Property-based fuzzing of the whole OpenAPI schema with schemathesis, every phase (examples, coverage,
fuzzing, stateful): no request may cause a 5xx."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def test_no_server_errors_anywhere_in_the_schema(live_server, tmp_path: Path, capsys) -> None:
    cli = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")
    if not Path(cli).exists():
        pytest.fail("schemathesis is a test dependency: pip install -e '.[test]'")
    created = live_server.context.auth.create_api_key(name="fuzz", role="admin", user_id=None)
    key = created.key
    result = subprocess.run(
        [cli, "run", f"{live_server.url}/openapi.json", "-H", f"X-API-Key: {key}", "--checks", "not_a_server_error",
         "--phases", "examples,coverage,fuzzing,stateful",
         "--max-examples", "15", "--seed", "1", "--generation-deterministic", "--request-timeout", "60",
         "--report-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=1200, check=False, cwd=tmp_path,  # its cache stays out of the repo
    )
    summary = re.search(r"Test cases:\s*\n\s*(.+)", result.stdout)
    phases = [line.strip() for line in result.stdout.splitlines()
              if re.match(r"^\W*(Examples|Coverage|Fuzzing|Stateful) \(in ", line.strip())]
    with capsys.disabled():
        print(f"\n[schemathesis] {summary.group(1).strip() if summary else result.stdout[-300:]}")
        print("[schemathesis] phases: " + " | ".join(phases))
    assert result.returncode == 0, result.stdout[-4000:]
