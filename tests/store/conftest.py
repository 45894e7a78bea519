"""Store fixtures: every test runs on SQLite (a file in tmp_path) and on real PostgreSQL.

PostgreSQL: ``FACEPORT_TEST_POSTGRES_URL`` or ``postgresql+psycopg://postgres@127.0.0.1:5432/test``
(then the same as the current OS user). Each test gets a fresh schema, selected through
``search_path``, dropped afterwards. Where PostgreSQL is unreachable the PostgreSQL cases
skip, except under CI (``CI`` set), where they fail: CI must exercise PostgreSQL.
"""

from __future__ import annotations

import getpass
import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from faceport.store import Store, open_store

logger = logging.getLogger(__name__)

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
BACKENDS = ("sqlite", "postgresql")


@dataclass(frozen=True)
class StoreTarget:
    """Where a test's database lives: what :func:`open_store` needs to reach it."""

    backend: str
    url: str
    connect_args: dict[str, Any] = field(default_factory=dict)
    schema: str | None = None

    def open(self) -> Store:
        """Open (and migrate) a store on this target."""
        return open_store(self.url, connect_args=self.connect_args)


def _postgres_candidates() -> list[str]:
    configured = os.environ.get("FACEPORT_TEST_POSTGRES_URL")
    if configured:
        return [configured]
    default = make_url(DEFAULT_POSTGRES_URL)
    users = ["postgres", getpass.getuser()]
    return [default.set(username=user).render_as_string(hide_password=False) for user in dict.fromkeys(users)]


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A PostgreSQL URL that accepts connections; skip (fail under CI) when there is none."""
    errors: list[str] = []
    for candidate in _postgres_candidates():
        engine = create_engine(candidate)
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except OperationalError as exc:
            errors.append(f"{make_url(candidate).render_as_string(hide_password=True)}: {exc.orig}")
            continue
        finally:
            engine.dispose()
        return candidate
    reason = "PostgreSQL unreachable (" + "; ".join(errors) + ")"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run the PostgreSQL store tests", pytrace=False)
    pytest.skip(f"{reason}; set FACEPORT_TEST_POSTGRES_URL or start PostgreSQL to run these cases")


@pytest.fixture(params=BACKENDS)
def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreTarget]:
    """A fresh, empty database on each backend, not yet opened."""
    if request.param == "sqlite":
        yield StoreTarget(backend="sqlite", url=f"sqlite:///{tmp_path / 'data' / 'faceport.db'}")
        return
    url = request.getfixturevalue("postgres_url")
    schema = f"fp_test_{uuid.uuid4().hex}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        yield StoreTarget(
            backend="postgresql",
            url=url,
            connect_args={"options": f"-csearch_path={schema}"},
            schema=schema,
        )
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def store(store_target: StoreTarget) -> Iterator[Store]:
    """A migrated store on each backend, disposed after the test."""
    opened = store_target.open()
    try:
        yield opened
    finally:
        opened.dispose()
