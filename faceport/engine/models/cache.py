"""``ModelCache``: lazy, locked, idle-evicting holder of loaded models (the only one in a process)."""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from faceport.engine.models.sessions import (
    CascadeSet,
    DlibModel,
    LiteRTSession,
    OpenCVDnnSession,
    OrtSession,
    validate_providers,
)
from faceport.engine.models.store import ModelStore
from faceport.engine.types import ModelSpec
from faceport.errors import FaceportError, ModelLoadFailed

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """One entry of ``ModelCache.info()``."""

    name: str
    runtime: str
    task: str
    loaded_at: float  # time.time()
    idle_seconds: float
    uses: int
    file_bytes: int
    memory_bytes: int  # resident memory the load added (measured), at least the file size


@dataclass
class _Entry:
    model: Any
    spec: ModelSpec
    loaded_at: float
    last_used: float
    uses: int
    file_bytes: int
    memory_bytes: int


def _rss() -> int:
    try:
        import psutil

        return int(psutil.Process(os.getpid()).memory_info().rss)
    except Exception:  # psutil is optional at run time; memory is then the file size
        return 0


THREADED_RUNTIMES = ("onnxruntime", "litert")
"""Runtimes whose sessions take a thread count (``ModelCache.get(name, threads=n)`` loads a variant)."""


def load_model(spec: ModelSpec, store: ModelStore, providers: Sequence[str], threads: int,
               intra_op_threads: int = 0) -> Any:
    """Build the runtime object for a model from its installed files.

    ``threads``: LiteRT interpreter threads; ``intra_op_threads``: onnxruntime's (0: one per core).
    """
    directory = store.model_dir(spec.name)
    first = directory / spec.files[0].name
    if spec.runtime == "onnxruntime":
        return OrtSession(first, providers=providers, dynamic_shapes=spec.extra.get("dynamic_shapes") == "true",
                          intra_op_threads=intra_op_threads)
    if spec.runtime == "litert":
        return LiteRTSession(first, num_threads=threads)
    if spec.runtime == "dlib":
        return DlibModel(first, spec.task)
    if spec.runtime == "opencv_dnn":
        return OpenCVDnnSession(first, directory / spec.files[1].name)
    if spec.runtime == "opencv_cascade":
        return CascadeSet([directory / f.name for f in spec.files])
    # Tree models (CTranslate2, spaCy) are loaded by their own modules from the directory.
    return directory


def _load_threaded(spec: ModelSpec, store: ModelStore, *, providers: Sequence[str], threads: int) -> Any:
    return load_model(spec, store, providers, threads, intra_op_threads=threads)


class ModelCache:
    """Loads models on first use under a per-model lock, evicts them after ``idle_ttl`` seconds.

    Args:
        store: where model files live.
        providers: onnxruntime execution providers, validated now (unknown → InvalidInput).
        idle_ttl: seconds a model may stay unused before ``sweep`` unloads it; 0 = never.
        threads: threads per LiteRT interpreter.
        loader: builds a model object from (spec, store); tests may pass their own.
    """

    def __init__(self, store: ModelStore, *, providers: Sequence[str] = ("CPUExecutionProvider",),
                 idle_ttl: float = 900.0, threads: int = 2,
                 loader: Callable[[ModelSpec, ModelStore], Any] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.providers = validate_providers(providers)
        self.idle_ttl = idle_ttl
        self._threads = threads
        self._custom_loader = loader
        self._loader = loader or (lambda spec, st: load_model(spec, st, self.providers, self._threads))
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._janitor: threading.Thread | None = None
        self.load_count = 0

    def _lock_for(self, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())

    def get(self, name: str, *, threads: int | None = None) -> Any:
        """Return the loaded model, loading it first if needed.

        Args:
            name: The model.
            threads: Inference threads of the session (onnxruntime intra-op, LiteRT); ``None`` shares
                the default session. Another value loads (and caches, under ``<name>@<n>threads``) a
                session of its own, so one job's thread count never changes another job's sessions.

        Raises:
            ModelUnavailable: the model is not installed (message names the pull command).
            ModelLoadFailed: the files are corrupt and a single re-fetch did not help.
        """
        key = name
        if threads is not None and self.store.spec(name).runtime in THREADED_RUNTIMES:
            key = f"{name}@{threads}threads"
        entry = self._entries.get(key)
        if entry is None:
            with self._lock_for(key):
                entry = self._entries.get(key)
                if entry is None:
                    entry = self._load(name, threads if key != name else None)
                    with self._guard:
                        self._entries[key] = entry
        with self._guard:  # several request threads share an entry; keep the use count exact
            entry.last_used = self._clock()
            entry.uses += 1
        return entry.model

    def with_threads(self, threads: int | None) -> ModelCache | CacheView:
        """This cache as seen by work that runs with ``threads`` inference threads (itself for ``None``)."""
        return self if threads is None else CacheView(self, threads)

    def _load(self, name: str, threads: int | None = None) -> _Entry:
        spec = self.store.spec(name)
        load = self._loader
        if threads is not None and self._custom_loader is None:
            load = functools.partial(_load_threaded, providers=self.providers, threads=threads)
        directory = self.store.model_dir(name)
        if not any((directory / f.name).is_file() for f in spec.files):
            # Never installed: say how to install it. A file that is present but truncated or
            # damaged is corruption instead, re-fetched once below.
            self.store.require(name)
        started = time.perf_counter()
        before = _rss()
        try:
            status = self.store.verify(name)
            if not status.installed:
                raise ValueError("; ".join(status.problems))
            model = load(spec, self.store)
        except FaceportError:
            raise
        except Exception as first_error:
            log.warning("model %s failed to load (%s); re-fetching once", name, first_error)
            try:
                self.store.repair(name)
                model = load(spec, self.store)
            except Exception as exc:
                # STYLE §4: a corrupt file is deleted; the next use then says how to install it.
                self.store.remove(name)
                raise ModelLoadFailed(f"model {name!r} cannot be loaded after a re-fetch ({exc}); "
                                      f"it was removed: run faceport models pull {name}",
                                      details={"model": name}) from exc
        file_bytes = self.store.status(name).size_bytes
        memory = max(_rss() - before, file_bytes) if before else file_bytes
        self.load_count += 1
        log.info("loaded model %s (%s) in %.0f ms", name, spec.runtime, (time.perf_counter() - started) * 1000)
        now = self._clock()
        return _Entry(model, spec, time.time(), now, 0, file_bytes, memory)

    def preload(self, names: Iterable[str]) -> None:
        for name in names:
            self.get(name)

    def is_loaded(self, name: str) -> bool:
        return name in self._entries

    def unload(self, name: str) -> bool:
        """Drop ``name`` and its thread-count variants; returns whether anything was loaded.

        Safe while the model is in use: a caller that already holds the model object keeps using
        it until it lets go (its memory is freed then); the next ``get`` loads it again.
        """
        with self._guard:
            keys = [k for k in self._entries if k == name or k.startswith(f"{name}@")]
            for key in keys:
                del self._entries[key]
        return bool(keys)

    def clear(self) -> None:
        with self._guard:
            self._entries.clear()

    def sweep(self, idle_seconds: float | None = None) -> list[str]:
        """Unload every model idle for longer than ``idle_ttl``; returns their names.

        ``idle_seconds`` replaces the TTL for this sweep (``POST /system/optimize``), also when
        ``idle_ttl`` is 0 (never evict on a timer).
        """
        limit = self.idle_ttl if idle_seconds is None else idle_seconds
        if idle_seconds is None and limit <= 0:
            return []
        now = self._clock()
        with self._guard:
            stale = [n for n, e in self._entries.items() if now - e.last_used > limit]
            for name in stale:
                del self._entries[name]
        for name in stale:
            log.info("unloaded idle model %s", name)
        return stale

    def info(self) -> list[LoadedModel]:
        now = self._clock()
        with self._guard:
            entries = list(self._entries.items())
        return [LoadedModel(n, e.spec.runtime, e.spec.task, e.loaded_at, now - e.last_used, e.uses,
                            e.file_bytes, e.memory_bytes) for n, e in sorted(entries)]

    def memory_bytes(self) -> int:
        return sum(m.memory_bytes for m in self.info())

    def start_janitor(self, interval: float = 30.0) -> None:
        if self._janitor is not None or self.idle_ttl <= 0:
            return
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(interval):
                self.sweep()

        self._janitor = threading.Thread(target=loop, name="model-cache-janitor", daemon=True)
        self._janitor.start()

    def stop_janitor(self) -> None:
        self._stop.set()
        if self._janitor is not None:
            self._janitor.join(timeout=5)
            self._janitor = None

    def close(self) -> None:
        self.stop_janitor()
        self.clear()


class CacheView:
    """A :class:`ModelCache` whose ``get`` loads sessions with ``threads`` inference threads."""

    def __init__(self, cache: ModelCache, threads: int) -> None:
        self.cache = cache
        self.threads = threads

    def get(self, name: str) -> Any:
        return self.cache.get(name, threads=self.threads)

    def __getattr__(self, attribute: str) -> Any:  # store, providers, info, ... of the shared cache
        return getattr(self.cache, attribute)
