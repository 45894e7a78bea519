"""Engine, sessions and migrations: :func:`open_store` returns a ready :class:`Store`.

SQLite (a file in ``$FACEPORT_HOME`` by default) and PostgreSQL through psycopg 3 are
supported. Migrations run to head on every open; they are serialised across processes
(a file lock next to a SQLite file, a transaction-scoped advisory lock on PostgreSQL),
so any number of API nodes and workers may start at once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from filelock import FileLock
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from faceport.errors import InvalidInput

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# Seconds a SQLite writer waits for another one before "database is locked".
SQLITE_BUSY_TIMEOUT_S = 30.0
# Seconds an opener waits for another process's migration to finish.
MIGRATION_LOCK_TIMEOUT_S = 300.0
# First key of PostgreSQL's two-key advisory lock; the second is the schema's hash.
_PG_MIGRATION_LOCK_KEY = 0x46500001

_SUPPORTED_BACKENDS = ("sqlite", "postgresql")


def normalize_url(url: str | URL) -> URL:
    """Parse a database URL and select the psycopg 3 driver for PostgreSQL.

    ``postgresql://`` and ``postgres://`` become ``postgresql+psycopg://``; an explicit
    driver (``postgresql+psycopg://``, ``sqlite+pysqlite://``) is kept.

    Args:
        url: SQLAlchemy URL, e.g. ``sqlite:////var/lib/faceport/faceport.db`` or
            ``postgresql://user@host:5432/faceport``.

    Returns:
        The parsed URL.

    Raises:
        InvalidInput: The URL does not parse or names a backend other than SQLite or PostgreSQL.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise InvalidInput(f"invalid database URL: {exc}") from exc
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in _SUPPORTED_BACKENDS:
        raise InvalidInput(
            f"unsupported database backend {parsed.get_backend_name()!r}; use sqlite:/// or postgresql://",
            details={"url": parsed.render_as_string(hide_password=True)},
        )
    return parsed


def head_revision() -> str:
    """Return the newest migration revision shipped with this package."""
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships migrations
        raise RuntimeError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


class Store:
    """A database engine with sessions that commit on success and roll back on error.

    Build one with :func:`open_store`, which also migrates the schema. Thread-safe:
    share one ``Store`` per process and open a short session per unit of work.
    """

    def __init__(self, engine: Engine) -> None:
        """Wrap an engine whose schema is already migrated.

        Args:
            engine: SQLAlchemy engine, usually made by :func:`open_store`.
        """
        self.engine = engine
        self._sessions = sessionmaker(bind=engine, expire_on_commit=False)

    @property
    def url(self) -> str:
        """The database URL with any password masked, safe to log."""
        return self.engine.url.render_as_string(hide_password=True)

    @property
    def dialect(self) -> str:
        """Backend name: ``"sqlite"`` or ``"postgresql"``."""
        return self.engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        """Open a session that commits when the block ends and rolls back if it raises.

        Yields:
            A SQLAlchemy 2 ``Session`` bound to this store.

        Example:
            >>> with store.session() as session:  # doctest: +SKIP
            ...     job = create_job(session=session, kind="video", params={})
        """
        session = self._sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def ping(self) -> bool:
        """Return whether the database answers a trivial query; never raises for DB errors."""
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            logger.warning("database %s unreachable: %s", self.url, exc)
            return False
        return True

    def revision(self) -> str:
        """Return the Alembic revision the database is at.

        Raises:
            RuntimeError: The database carries no revision (it was never migrated).
        """
        with self.engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
        if current is None:
            raise RuntimeError(f"database {self.url} has no alembic revision")
        return current

    def dispose(self) -> None:
        """Close every pooled connection. The store may still be used; it reconnects."""
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"Store({self.url!r})"


def open_store(url: str | URL, *, connect_args: Mapping[str, Any] | None = None) -> Store:
    """Create the engine, migrate the schema to head and return the store.

    Safe to call many times and from many processes at once on the same database.
    SQLite: the parent directory is created, WAL journal and foreign keys are on, and
    connections may cross threads. PostgreSQL: ``postgresql://`` uses psycopg 3.

    Args:
        url: SQLAlchemy URL (see :func:`normalize_url`); ``Settings.resolved_database_url``
            in the server.
        connect_args: Extra DB-API connect arguments, e.g.
            ``{"options": "-csearch_path=tenant_a"}`` to work inside one PostgreSQL schema.

    Returns:
        The migrated store.

    Raises:
        InvalidInput: The URL is malformed or names an unsupported backend.
        sqlalchemy.exc.OperationalError: The database cannot be reached.
        filelock.Timeout: Another process held the SQLite migration lock too long.
    """
    parsed = normalize_url(url)
    engine = _create_engine(parsed, dict(connect_args or {}))
    try:
        _migrate(engine)
    except BaseException:
        engine.dispose()
        raise
    store = Store(engine)
    logger.info("store %s ready at revision %s", store.url, head_revision())
    return store


def _sqlite_file(url: URL) -> Path | None:
    """Return the database file of a SQLite URL, or ``None`` for in-memory databases."""
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:") or url.query.get("mode") == "memory":
        return None
    return Path(database)


def _create_engine(url: URL, connect_args: dict[str, Any]) -> Engine:
    if url.get_backend_name() == "sqlite":
        return _create_sqlite_engine(url, connect_args)
    return create_engine(url, connect_args=connect_args, pool_pre_ping=True)


def _create_sqlite_engine(url: URL, connect_args: dict[str, Any]) -> Engine:
    path = _sqlite_file(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    args: dict[str, Any] = {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S, **connect_args}
    if path is None:
        # One shared connection, or every pooled connection would see its own empty database.
        engine = create_engine(url, connect_args=args, poolclass=StaticPool)
    else:
        engine = create_engine(url, connect_args=args)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA foreign_keys=ON")
            if path is not None:
                # WAL lets readers run while one writer commits (API nodes + job runner).
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    return engine


def _alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    # Config values go through configparser interpolation: escape '%'.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _migrate(engine: Engine) -> None:
    """Upgrade to head, holding a lock so concurrent openers migrate one at a time."""
    if engine.dialect.name == "sqlite":
        path = _sqlite_file(engine.url)
        if path is None:
            _upgrade(engine)
            return
        lock_path = path.with_name(path.name + ".migrate.lock")
        with FileLock(str(lock_path), timeout=MIGRATION_LOCK_TIMEOUT_S):
            _upgrade(engine)
        return
    _upgrade(engine)


def _upgrade(engine: Engine) -> None:
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Released at commit; PostgreSQL DDL is transactional, so a waiting opener
            # then sees the finished schema and finds nothing left to do.
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key, hashtext(coalesce(current_schema(), '')))"),
                {"key": _PG_MIGRATION_LOCK_KEY},
            )
        before = MigrationContext.configure(connection).get_current_revision()
        command.upgrade(_alembic_config(connection), "head")
        after = MigrationContext.configure(connection).get_current_revision()
    if before != after:
        logger.info("migrated %s from %s to %s", engine.url.render_as_string(hide_password=True), before, after)
