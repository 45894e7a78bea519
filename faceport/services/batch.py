"""Seed D batches: many images, one operation, run as a job; per-image results and errors.

Life of a batch::

    submit   inputs staged on disk (<batch_dir>/<job id>/items/, manifest.json) -> job "batch" queued
             -> ``batches`` row (owner, operation, total)
    job      handler(record, progress): for each staged image not yet stored: decode -> operation
             -> one ``batch_items`` row (ok + result, or error + {code, message}); one bad image
             never fails the batch
    end      staged inputs deleted, ``expires_at`` = end + ``batch_retention_hours``; purged after

The handler is a plain function of the job record and a progress callback, reading only the
job's params, the staged folder and the database, so any runner (local threads, Celery
workers sharing ``batch_dir``) can run it. Items are stored idempotently, so a job that runs
again (restart, redelivery) continues where it stopped. Cancelling stops the handler before
its next image.

Operations are a registry: ``register_operation("anti_spoof", run)`` adds one. ``run(runtime,
image, params, state)`` returns the item's JSON result (blocking); ``setup(runtime, params)``
runs once per job run (e.g. to read a subject's embeddings) and its value is ``state``;
``validate(options, runtime, params)`` checks the options at submit time and returns them
normalised.
"""

from __future__ import annotations

import json
import logging
import shutil
import stat
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from faceport.engine.imageio import decode_image
from faceport.engine.types import BGRImage
from faceport.errors import (
    FaceportError,
    FileTooLarge,
    InvalidFormat,
    InvalidInput,
    MissingField,
    NotFound,
    ProcessingFailed,
    QueueFull,
    StorageUnavailable,
)
from faceport.jobs import JobCancelled, JobInterrupted
from faceport.store import JobRecord, JobState, cancel_job
from faceport.store import batches as repo
from faceport.store.models import utcnow

log = logging.getLogger(__name__)

JOB_KIND = "batch"
FLUSH_S = 0.5  # seconds between two writes of finished images (and cancel checks)
_CHUNK = 1 << 20
_MAX_NAME = 255

OperationRun = Callable[[Any, BGRImage, dict[str, Any], Any], Any]
OperationSetup = Callable[[Any, dict[str, Any]], Any]
OperationValidate = Callable[[dict[str, Any], Any, dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Operation:
    """One batch operation.

    Attributes:
        name: what ``operation`` says at submit time.
        run: ``run(runtime, image, params, state) -> JSON`` for one decoded BGR image (blocking);
            raises FaceportError for an image it cannot handle (stored as that item's error).
        setup: ``setup(runtime, params) -> state`` once per job run; raising fails the batch.
        validate: ``validate(options, runtime, params) -> options`` at submit; raises InvalidInput.
        needs_subject: the operation compares against ``subject_id`` (one of the caller's subjects).
        description: one line for the docs.
    """

    name: str
    run: OperationRun
    setup: OperationSetup | None = None
    validate: OperationValidate | None = None
    needs_subject: bool = False
    description: str = ""


OPERATIONS: dict[str, Operation] = {}


def register_operation(name: str, run: OperationRun, *, setup: OperationSetup | None = None,
                       validate: OperationValidate | None = None, needs_subject: bool = False,
                       description: str = "", replace: bool = False) -> Operation:
    """Make ``name`` a batch operation (one line per operation; see the module docstring).

    Raises:
        InvalidInput: ``name`` is already registered and ``replace`` is false, or is not 1-32 of [a-z0-9_-].
    """
    if not (1 <= len(name) <= 32) or any(c not in "abcdefghijklmnopqrstuvwxyz0123456789_-" for c in name):
        raise InvalidInput(f"operation name must be 1-32 of a-z, 0-9, '_', '-', got {name!r}")
    if name in OPERATIONS and not replace:
        raise InvalidInput(f"batch operation {name!r} is already registered")
    operation = Operation(name, run, setup, validate, needs_subject, description)
    OPERATIONS[name] = operation
    return operation


# ---- inputs ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Source:
    """One input of a submission: an uploaded file, a base64/data-URL string, or a zip archive."""

    name: str
    kind: str  # "file" | "base64" | "zip"
    file: BinaryIO | None = None
    text: str | None = None


@dataclass(slots=True)
class _Staged:
    items: list[dict[str, Any]]
    bytes: int = 0


def safe_name(raw: str | None, fallback: str) -> str:
    """A label for an input: the file or archive member name without directories of the server,
    control characters or ``..``; never used as a path."""
    text = (raw or "").replace("\\", "/")
    parts = [p for p in PurePosixPath(text).parts if p not in ("/", "..", ".", "")]
    cleaned = "/".join(parts)
    cleaned = "".join(ch for ch in cleaned if ch.isprintable())
    return cleaned[-_MAX_NAME:] if cleaned else fallback


class _Stager:
    """Writes inputs as numbered files into a staging folder, enforcing every limit while reading."""

    def __init__(self, folder: Path, *, max_items: int, max_total: int, max_image: int) -> None:
        self.folder = folder
        self.items_dir = folder / "items"
        self.items_dir.mkdir(parents=True)
        self.max_items = max_items
        self.max_total = max_total
        self.max_image = max_image
        self.staged = _Staged([])

    def _next_index(self) -> int:
        index = len(self.staged.items)
        if index >= self.max_items:
            raise InvalidInput(f"a batch holds at most {self.max_items} images (FACEPORT_BATCH_MAX_ITEMS)",
                               details={"field": "images", "max_items": self.max_items})
        return index

    def _count(self, n: int) -> None:
        self.staged.bytes += n
        if self.staged.bytes > self.max_total:
            raise FileTooLarge(f"the batch's images exceed {self.max_total // (1024 * 1024)} MB in all "
                               "(FACEPORT_BATCH_MAX_BYTES)", details={"field": "images", "limit_bytes": self.max_total})

    def error_item(self, name: str, code: str, message: str) -> None:
        index = self._next_index()
        self.staged.items.append({"index": index, "name": name, "file": None,
                                  "error": {"code": code, "message": message}})

    def stream(self, name: str, reader: BinaryIO) -> None:
        """Copy one image from ``reader``; larger than the image limit: that item is an error."""
        index = self._next_index()
        file_name = f"{index:06d}.img"
        path = self.items_dir / file_name
        size = 0
        too_large = False
        try:
            with path.open("wb") as out:
                while chunk := reader.read(_CHUNK):
                    size += len(chunk)
                    self._count(len(chunk))
                    if size > self.max_image:
                        too_large = True
                        break
                    out.write(chunk)
        except BaseException:  # a damaged archive member, a limit: no partial file stays behind
            path.unlink(missing_ok=True)
            raise
        if too_large:
            path.unlink(missing_ok=True)
            self.staged.items.append({"index": index, "name": name, "file": None, "error": {
                "code": FileTooLarge.code,
                "message": f"image exceeds the {self.max_image // (1024 * 1024)} MB limit (FACEPORT_MAX_IMAGE_BYTES)"}})
            return
        self.staged.items.append({"index": index, "name": name, "file": file_name, "error": None})

    def text(self, name: str, text: str) -> None:
        """Store a base64 / data-URL image as given (decoded by the job, so a bad one is that item's error)."""
        if len(text) > self.max_image * 4 // 3 + 1024:
            self._count(len(text))
            self.error_item(name, FileTooLarge.code,
                            f"image exceeds the {self.max_image // (1024 * 1024)} MB limit (FACEPORT_MAX_IMAGE_BYTES)")
            return
        index = self._next_index()
        self._count(len(text))
        file_name = f"{index:06d}.b64"
        (self.items_dir / file_name).write_text(text, encoding="utf-8")
        self.staged.items.append({"index": index, "name": name, "file": file_name, "error": None})

    def archive(self, name: str, reader: BinaryIO) -> None:
        """Every regular member of a zip archive as one image.

        Guards: member names are labels only (files are written under our own numbers, so
        ``../``, absolute paths and links cannot escape); sizes are counted while decompressing,
        never taken from the archive's headers (a zip bomb stops at the limits); symbolic links,
        encrypted and damaged members are per-image errors; ``__MACOSX/`` and hidden files are skipped.

        Raises:
            InvalidFormat: not a zip archive. InvalidInput: too many members. FileTooLarge: too many bytes.
        """
        try:
            archive = zipfile.ZipFile(reader)
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise InvalidFormat(f"{name}: not a readable zip archive ({exc})", details={"field": "archive"}) from None
        with archive:
            members = archive.infolist()
            if len(members) > 2 * self.max_items + 100:
                raise InvalidInput(f"{name}: {len(members)} archive members; a batch holds at most "
                                   f"{self.max_items} images", details={"field": "archive"})
            for info in members:
                label = safe_name(info.filename, f"{name}#{len(self.staged.items)}")
                base = PurePosixPath(info.filename.replace("\\", "/")).name
                if info.is_dir() or info.filename.replace("\\", "/").startswith("__MACOSX/") or base.startswith("."):
                    continue
                mode = info.external_attr >> 16
                if info.create_system == 3 and stat.S_ISLNK(mode):
                    self.error_item(label, InvalidInput.code, "symbolic links in archives are refused")
                    continue
                if info.flag_bits & 0x1:
                    self.error_item(label, InvalidInput.code, "encrypted archive members are not supported")
                    continue
                try:
                    with archive.open(info) as member:
                        self.stream(label, member)
                except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, OSError, EOFError,
                        ValueError) as exc:  # stream() appends only once a member is read whole
                    self.error_item(label, InvalidFormat.code, f"damaged archive member: {type(exc).__name__}")


def stage_sources(sources: Iterable[Source], folder: Path, *, max_items: int, max_total: int,
                  max_image: int) -> list[dict[str, Any]]:
    """Stage every input under ``folder`` (created) and write its ``manifest.json`` (blocking).

    Returns:
        The manifest items ``{index, name, file, error}`` in input order.

    Raises:
        InvalidInput / InvalidFormat / FileTooLarge: the whole submission is refused (``folder`` removed).
        MissingField: no image at all.
    """
    try:
        stager = _Stager(folder, max_items=max_items, max_total=max_total, max_image=max_image)
        for number, source in enumerate(sources):
            fallback = f"image_{number}"
            if source.kind == "zip":
                assert source.file is not None
                stager.archive(safe_name(source.name, "archive.zip"), source.file)
            elif source.kind == "file":
                assert source.file is not None
                stager.stream(safe_name(source.name, fallback), source.file)
            else:
                stager.text(safe_name(source.name, fallback), source.text or "")
        items = stager.staged.items
        if not items:
            raise MissingField("no images: send files 'images', base64 strings 'images' (JSON) or a zip 'archive'",
                               details={"field": "images"})
        (folder / "manifest.json").write_text(json.dumps({"items": items}), encoding="utf-8")
        return items
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


# ---- the service -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class BatchStatus:
    """A batch as ``/batch/status`` and ``/batch/list`` show it."""

    record: repo.BatchRecord
    eta_seconds: float | None


class BatchService:
    """Submit, run, read, cancel and purge batches.

    Args:
        settings: batch_* settings, image limits.
        store: the database.
        jobs: the job runner (``register``, ``submit``; ``pending()``/``queue_max`` when it has them).
        notifier: :class:`~faceport.services.notify.Notifier` or ``None``.
    """

    def __init__(self, settings: Any, store: Any, jobs: Any, notifier: Any = None) -> None:
        self.settings = settings
        self.store = store
        self.jobs = jobs
        self.notifier = notifier
        self.runtime: Any = None  # what operations get (the app context: engine, gallery, settings)
        self.folder = settings.resolved_batch_dir
        self.retention = timedelta(hours=settings.batch_retention_hours)
        self._stop = threading.Event()
        self._janitor: threading.Thread | None = None
        jobs.register(JOB_KIND, self.handle, on_finish=self.on_finish)

    # ---- life cycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Create the folder, remove orphaned staging folders, purge expired batches, start the purge loop."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.remove_orphans()
            self.purge()
        except (OSError, FaceportError) as exc:
            log.warning("batch start-up cleanup failed: %s", exc)
        if self._janitor is None:
            self._stop.clear()
            self._janitor = threading.Thread(target=self._purge_loop, name="faceport-batch-purge", daemon=True)
            self._janitor.start()

    def close(self) -> None:
        self._stop.set()
        if self._janitor is not None:
            self._janitor.join(timeout=5)
            self._janitor = None

    def _purge_loop(self) -> None:
        interval = max(1.0, min(600.0, self.retention.total_seconds() / 4))
        while not self._stop.wait(interval):
            try:
                self.purge()
            except Exception as exc:  # the loop must survive a database hiccup
                log.warning("batch purge failed: %s", exc)

    def purge(self) -> int:
        """Delete batches past their retention (rows, items, job, staged files); returns how many."""
        with self.store.session() as session:
            expired = repo.expired_batches(session=session)
            count = repo.delete_batches(session=session, batch_ids=expired)
        for batch_id in expired:
            shutil.rmtree(self.folder / batch_id, ignore_errors=True)
        if count:
            log.info("purged %d batch(es) past their retention", count)
        return count

    def remove_orphans(self, incoming_age_s: float = 3600.0) -> None:
        """Staging folders of submissions that never became a job, or of jobs that ended.

        An ``.incoming-*`` folder is removed only when older than ``incoming_age_s``: with a shared
        ``FACEPORT_BATCH_DIR`` another node may be staging into it right now.
        """
        if not self.folder.is_dir():
            return
        now = time.time()
        for entry in self.folder.iterdir():
            if entry.name.startswith(".incoming-"):
                try:
                    stale = now - entry.stat().st_mtime > incoming_age_s
                except OSError:
                    continue
                if stale:
                    shutil.rmtree(entry, ignore_errors=True)
                continue
            with self.store.session() as session:
                state = repo.job_state(session=session, job_id=entry.name)
            if state not in (JobState.QUEUED.value, JobState.RUNNING.value):
                shutil.rmtree(entry, ignore_errors=True)

    # ---- submitting -----------------------------------------------------------------------
    def check_capacity(self) -> None:
        """Refuse early (before reading the upload) when the queue is full.

        Raises:
            QueueFull: the runner's queue holds ``queue_max`` jobs.
        """
        pending = getattr(self.jobs, "pending", None)
        queue_max = getattr(self.jobs, "queue_max", None)
        if callable(pending) and queue_max is not None and pending() >= queue_max:
            raise QueueFull(f"the job queue is full ({queue_max} jobs waiting); try again later",
                            details={"queue_max": queue_max})

    def validate(self, operation: str, options: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        """The operation's options, checked and normalised.

        Raises:
            InvalidInput: unknown operation or bad options. MissingField: ``subject_id`` needed.
        """
        op = OPERATIONS.get(operation)
        if op is None:
            raise InvalidInput(f"unknown operation {operation!r}; available: {', '.join(sorted(OPERATIONS))}",
                               details={"field": "operation", "available": sorted(OPERATIONS)})
        if op.needs_subject and not params.get("subject_id"):
            raise MissingField(f"operation {operation!r} needs subject_id", details={"field": "subject_id"})
        return op.validate(options, self.runtime, params) if op.validate is not None else dict(options)

    def incoming_folder(self) -> Path:
        """A fresh staging folder for one submission (moved under the job id once the job exists).

        Raises:
            StorageUnavailable: the batch folder cannot be written.
        """
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            raise StorageUnavailable("the batch folder cannot be written (FACEPORT_BATCH_DIR)",
                                     details={"setting": "FACEPORT_BATCH_DIR"}) from None
        return self.folder / f".incoming-{uuid.uuid4().hex}"

    def stage(self, sources: Iterable[Source], folder: Path) -> list[dict[str, Any]]:
        """Stage inputs (blocking); see :func:`stage_sources`."""
        try:
            return stage_sources(sources, folder, max_items=self.settings.batch_max_items,
                                 max_total=self.settings.batch_max_bytes, max_image=self.settings.max_image_bytes)
        except OSError:
            raise StorageUnavailable("the batch folder cannot be written (FACEPORT_BATCH_DIR)",
                                     details={"setting": "FACEPORT_BATCH_DIR"}) from None

    def submit(self, *, owner: str, operation: str, options: dict[str, Any], params: dict[str, Any],
               incoming: Path, items: list[dict[str, Any]]) -> repo.BatchRecord:
        """Queue the staged batch (blocking).

        Args:
            owner: who owns the batch (``Principal.owner``).
            operation: a registered operation (validated already).
            options: its normalised options.
            params: extra job params (``gallery_owner``, ``subject_id``).
            incoming: the staging folder; moved to ``<batch_dir>/<job id>``.
            items: the staged manifest items.

        Raises:
            QueueFull: the queue is full (the staged files are removed).
        """
        job_params = {**params, "operation": operation, "options": options, "owner": owner, "total": len(items)}

        def prepare(record: JobRecord) -> None:
            incoming.rename(self.folder / record.id)
            with self.store.session() as session:
                repo.create_batch(session=session, batch_id=record.id, owner=owner, operation=operation,
                                  total=len(items))

        try:
            record = self.jobs.submit(JOB_KIND, job_params, prepare=prepare)
        except BaseException:
            shutil.rmtree(incoming, ignore_errors=True)
            raise
        return self.get(record.id, owner=owner)

    # ---- reading --------------------------------------------------------------------------
    def get(self, batch_id: str, *, owner: str | None) -> repo.BatchRecord:
        """Raises: NotFound (also for another owner's batch)."""
        with self.store.session() as session:
            return repo.get_batch(session=session, batch_id=batch_id, owner=owner)

    def status(self, batch_id: str, *, owner: str | None) -> BatchStatus:
        record = self.get(batch_id, owner=owner)
        return BatchStatus(record, self.eta(record))

    @staticmethod
    def eta(record: repo.BatchRecord) -> float | None:
        """Seconds left at this job's measured speed; 0 when ended, ``None`` before a measurement."""
        job = record.job
        if job.is_terminal:
            return 0.0
        if job.state != JobState.RUNNING or job.started_at is None or record.processed == 0:
            return None
        elapsed = (utcnow() - job.started_at).total_seconds()
        return round(max(0.0, elapsed / record.processed * (record.total - record.processed)), 1)

    def list(self, *, owner: str | None, state: str | None, limit: int, offset: int
             ) -> tuple[list[BatchStatus], int]:
        with self.store.session() as session:
            records, total = repo.list_batches(session=session, owner=owner, state=state, limit=limit, offset=offset)
        return [BatchStatus(r, self.eta(r)) for r in records], total

    def results(self, batch_id: str, *, owner: str | None, status: str | None, limit: int, offset: int
                ) -> tuple[repo.BatchRecord, list[repo.BatchItemRecord], int]:
        with self.store.session() as session:
            record = repo.get_batch(session=session, batch_id=batch_id, owner=owner)
            items, total = repo.list_items(session=session, batch_id=batch_id, status=status, limit=limit,
                                           offset=offset)
        return record, items, total

    # ---- cancelling -----------------------------------------------------------------------
    def cancel(self, batch_id: str, *, owner: str | None) -> repo.BatchRecord:
        """Cancel a queued or running batch; a running one stops before its next image.

        Raises:
            NotFound: no such batch (of ``owner``). InvalidInput: it already ended.
        """
        before = self.get(batch_id, owner=owner)
        with self.store.session() as session:
            cancel_job(session=session, job_id=batch_id)
        record = self.get(batch_id, owner=owner)
        if before.job.state == JobState.QUEUED:  # no worker will see it: finish it here
            self.on_finish(record.job)
        return record

    # ---- running --------------------------------------------------------------------------
    def handle(self, record: JobRecord, progress: Callable[[float], None]) -> dict[str, Any]:
        """The job handler: every staged image not yet stored, one at a time (blocking).

        Raises:
            ProcessingFailed: the operation is not available in this process, or the inputs are gone.
            JobCancelled: the batch was cancelled (checked at every write, every ``FLUSH_S`` seconds).
        """
        params = record.params
        op = OPERATIONS.get(params.get("operation", ""))
        if op is None:
            raise ProcessingFailed(f"batch operation {params.get('operation')!r} is not available in this process")
        folder = self.folder / record.id
        try:
            items = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))["items"]
        except (OSError, ValueError, KeyError):
            raise ProcessingFailed("the batch's staged images are gone (FACEPORT_BATCH_DIR)",
                                   details={"batch_id": record.id}) from None
        with self.store.session() as session:
            done = repo.done_indexes(session=session, batch_id=record.id)
        state = op.setup(self.runtime, params) if op.setup is not None else None
        total = len(items)
        processed = len(done)
        owner = params.get("owner")
        # Results are written in small groups (one transaction per FLUSH_S): one commit per image cost
        # ~8 % of a batch's time on a loaded SQLite disk. Each write first checks the job is still running.
        pending: list[dict[str, Any]] = []
        last_flush = time.monotonic()

        def flush() -> None:
            with self.store.session() as session:
                if repo.job_state(session=session, job_id=record.id) != JobState.RUNNING.value:
                    pending.clear()
                    raise JobCancelled(f"batch {record.id} is no longer running")
                for entry in pending:
                    repo.save_item(session=session, batch_id=record.id, **entry)
            pending.clear()
            if self.notifier is not None and owner:
                self.notifier.publish("batch.progress", {"batch_id": record.id, "processed": processed,
                                                         "total": total,
                                                         "progress": round(100.0 * processed / total, 1)},
                                      owner=owner)

        try:
            for item in items:
                if item["index"] in done:
                    continue
                progress(100.0 * processed / total)
                started = time.perf_counter()
                status, result, error = self._run_item(op, folder, item, params, state)
                pending.append({"index": item["index"], "name": item["name"], "status": status, "result": result,
                                "error": error, "elapsed_ms": (time.perf_counter() - started) * 1000})
                processed += 1
                if time.monotonic() - last_flush >= FLUSH_S:
                    flush()
                    last_flush = time.monotonic()
            if pending:
                flush()
        except JobInterrupted:  # the runner is stopping: keep what is done, the next run continues after it
            if pending:
                try:
                    flush()
                except JobCancelled:
                    pass
            raise
        with self.store.session() as session:
            final = repo.get_batch(session=session, batch_id=record.id)
        return {"operation": op.name, "total": total, "succeeded": final.succeeded, "failed": final.failed}

    def _run_item(self, op: Operation, folder: Path, item: dict[str, Any], params: dict[str, Any],
                  state: Any) -> tuple[str, Any, dict[str, Any] | None]:
        if item.get("error"):
            return "error", None, item["error"]
        try:
            path = folder / "items" / item["file"]
            data: bytes | str = path.read_text(encoding="utf-8") if path.suffix == ".b64" else path.read_bytes()
            image = decode_image(data, max_pixels=self.settings.max_image_pixels,
                                 max_bytes=self.settings.max_image_bytes)
            return "ok", op.run(self.runtime, image, params, state), None
        except FaceportError as exc:
            error: dict[str, Any] = {"code": exc.code, "message": exc.message}
            if exc.details:
                error["details"] = {k: v for k, v in exc.details.items() if isinstance(v, str | int | float | bool)}
            return "error", None, error
        except (JobCancelled, KeyboardInterrupt):
            raise
        except Exception as exc:  # one bad image never fails the batch
            log.exception("batch item %s failed", item.get("index"))
            return "error", None, {"code": ProcessingFailed.code, "message": f"internal error: {type(exc).__name__}"}

    def on_finish(self, record: JobRecord) -> None:
        """After the job ended (completed, failed, cancelled): drop the staged images, set the expiry, notify."""
        shutil.rmtree(self.folder / record.id, ignore_errors=True)
        ended = record.finished_at or utcnow()
        with self.store.session() as session:
            repo.set_expiry(session=session, batch_id=record.id, expires_at=ended + self.retention)
        owner = record.params.get("owner")
        if self.notifier is not None and owner:
            result = record.result if isinstance(record.result, dict) else {}
            self.notifier.publish("job.finished", {"job_id": record.id, "kind": JOB_KIND, "batch_id": record.id,
                                                   "state": record.state.value, "error": record.error,
                                                   "total": record.params.get("total"),
                                                   "succeeded": result.get("succeeded"),
                                                   "failed": result.get("failed")}, owner=owner)


def operation_names() -> list[str]:
    return sorted(OPERATIONS)


def require_subject(runtime: Any, subject_id: str, owner: str | None) -> None:
    """Raises: NotFound when ``subject_id`` is not one of ``owner``'s subjects."""
    gallery = getattr(runtime, "gallery", None)
    if gallery is None:
        raise NotFound(f"subject {subject_id!r} not found", details={"field": "subject_id"})
    gallery.get_subject(subject_id, owner=owner)
