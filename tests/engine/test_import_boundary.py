"""The engine is numpy in, numpy out: importing any of it must not pull in the web or storage layers.

Each check runs in a fresh interpreter, so modules other tests imported cannot hide or
fake a violation.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

FORBIDDEN = ("fastapi", "starlette", "socketio", "sqlalchemy", "faceport.api", "faceport.store", "faceport.realtime")

# Imports `package` and every module under it, then reports which loaded module names
# fall under a forbidden prefix, and which engine modules failed to import at all.
CHECKER = """
import importlib, json, pkgutil, sys, traceback
package, forbidden = sys.argv[1], tuple(sys.argv[2].split(","))
root = importlib.import_module(package)
imported, failed = [package], {}
def on_error(name):
    failed[name] = traceback.format_exc(limit=3)
for info in pkgutil.walk_packages(root.__path__, package + ".", onerror=on_error):
    try:
        importlib.import_module(info.name)
        imported.append(info.name)
    except Exception:
        failed[info.name] = traceback.format_exc(limit=3)
leaked = sorted(m for m in sys.modules if any(m == f or m.startswith(f + ".") for f in forbidden))
print(json.dumps({"imported": imported, "failed": failed, "leaked": leaked}))
"""


@dataclass(frozen=True)
class ImportReport:
    imported: list[str]  # modules imported, the package first
    failed: dict[str, str]  # module -> traceback
    leaked: list[str]  # loaded modules under a forbidden prefix


def import_all(package: str, forbidden: tuple[str, ...]) -> ImportReport:
    proc = subprocess.run(
        [sys.executable, "-c", CHECKER, package, ",".join(forbidden)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, f"import checker crashed:\n{proc.stderr}"
    return ImportReport(**json.loads(proc.stdout.strip().splitlines()[-1]))


@pytest.fixture(scope="module")
def engine_imports() -> ImportReport:
    return import_all("faceport.engine", FORBIDDEN)


def test_engine_imports_no_web_or_storage_modules(engine_imports: ImportReport) -> None:
    assert engine_imports.leaked == [], (
        f"importing faceport.engine loaded {engine_imports.leaked}; the engine must stay numpy in, numpy out"
    )


def test_every_engine_module_imports(engine_imports: ImportReport) -> None:
    # The walk must have reached real modules, or the boundary check above proves nothing.
    assert {"faceport.engine", "faceport.engine.types", "faceport.engine.imageio"} <= set(engine_imports.imported)
    assert engine_imports.failed == {}, "engine modules failed to import:\n" + "\n".join(
        f"{name}:\n{trace}" for name, trace in engine_imports.failed.items()
    )


def test_checker_reports_a_leak() -> None:
    # numpy is a legitimate engine dependency; naming it forbidden shows the checker sees leaks.
    assert "numpy" in import_all("faceport.engine", ("numpy",)).leaked
