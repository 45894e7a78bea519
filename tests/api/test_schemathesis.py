"""Property-based fuzzing of the whole OpenAPI schema with schemathesis, every phase (examples, coverage,
fuzzing, stateful): no request may cause a 5xx."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FIXTURES


def _fuzz(url: str, tmp_path: Path, capsys, *extra: str, label: str = "schemathesis") -> None:  # type: ignore[no-untyped-def]
    cli = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")
    if not Path(cli).exists():
        pytest.fail("schemathesis is a test dependency: pip install -e '.[test]'")
    result = subprocess.run(
        [cli, "run", f"{url}/openapi.json", *extra, "--checks", "not_a_server_error",
         "--phases", "examples,coverage,fuzzing,stateful",
         "--max-examples", "15", "--seed", "1", "--generation-deterministic", "--request-timeout", "60",
         "--report-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=1200, check=False, cwd=tmp_path,  # its cache stays out of the repo
    )
    summary = re.search(r"Test cases:\s*\n\s*(.+)", result.stdout)
    phases = [line.strip() for line in result.stdout.splitlines()
              if re.match(r"^\W*(Examples|Coverage|Fuzzing|Stateful) \(in ", line.strip())]
    with capsys.disabled():
        print(f"\n[{label}] {summary.group(1).strip() if summary else result.stdout[-300:]}")
        print(f"[{label}] phases: " + " | ".join(phases))
    assert result.returncode == 0, result.stdout[-4000:]


def test_no_server_errors_anywhere_in_the_schema(live_server, tmp_path: Path, capsys) -> None:
    created = live_server.context.auth.create_api_key(name="fuzz", role="admin", user_id=None)
    _fuzz(live_server.url, tmp_path, capsys, "-H", f"X-API-Key: {created.key}")


def test_no_server_errors_anywhere_in_the_privacy_schema(settings, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """Seed E's app on port 5000, every phase; the documented example names a real image in the media root.

    The queue is made deep enough that the accepted example requests never meet QUEUE_FULL (a 503 by design).
    """
    from faceport.api.app import create_privacy_app
    from tests.api.conftest import serving

    with serving(settings.model_copy(update={"job_queue_max": 100_000}), create_privacy_app) as server:
        root = server.context.privacy.ensure_root()
        shutil.copy(FIXTURES / "mpl_grace_hopper.jpg", root / "photo.jpg")
        _fuzz(server.url, tmp_path, capsys, label="schemathesis privacy")
