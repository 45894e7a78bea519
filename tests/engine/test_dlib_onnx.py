"""The dlib ResNet -> ONNX converter on the real .dat, and the pull step that installs its output."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from faceport.engine.models import ModelStore
from faceport.engine.models.dlib_onnx import (
    INPUT_NAME,
    OUTPUT_NAME,
    DlibFormatError,
    build_onnx,
    convert_file,
    read_dlib_net,
)
from faceport.engine.models.manifest import get_spec
from faceport.errors import ModelFetchFailed

face_recognition_models = pytest.importorskip("face_recognition_models")
DAT = Path(face_recognition_models.__file__).parent / "models" / "dlib_face_recognition_resnet_model_v1.dat"
SPEC = get_spec("dlib_resnet_onnx")


@pytest.fixture(scope="module")
def dat_bytes() -> bytes:
    data = DAT.read_bytes()
    assert hashlib.sha256(data).hexdigest() == get_spec("dlib_resnet").files[0].sha256
    return data


@pytest.fixture(scope="module")
def onnx_bytes() -> bytes:
    return convert_file(DAT)


def test_conversion_is_deterministic_and_matches_the_pinned_hash(onnx_bytes: bytes) -> None:
    again = convert_file(DAT)
    assert again == onnx_bytes
    assert hashlib.sha256(onnx_bytes).hexdigest() == SPEC.files[0].sha256
    assert len(onnx_bytes) == SPEC.files[0].size


def test_reader_finds_dlibs_network(dat_bytes: bytes) -> None:
    net = read_dlib_net(dat_bytes)
    assert net.size == 150
    # input_rgb_image_sized's channel means, as dlib's face_recognition training set them
    np.testing.assert_allclose(net.avg_rgb, (122.782, 117.001, 104.298), atol=1e-4)
    assert net.margin == pytest.approx(0.04) and net.dist_thresh == pytest.approx(0.6)
    kinds = Counter(layer.layer.kind for layer in net.layers)
    assert kinds == {"con": 29, "affine": 29, "relu": 29, "add_prev": 14, "tag": 18, "avg_pool": 5, "skip": 4,
                     "max_pool": 1, "fc": 1}
    first_conv = net.layers[-1]
    assert first_conv.layer.kind == "con" and first_conv.params["w"].shape == (32, 3, 7, 7)
    assert net.layers[0].params["w"].shape == (256, 128)


def test_graph_passes_the_onnx_checker_and_has_dlibs_shape(onnx_bytes: bytes) -> None:
    import onnx

    model = onnx.load_from_string(onnx_bytes)
    onnx.checker.check_model(model, full_check=True)
    [inp], [out] = model.graph.input, model.graph.output
    assert inp.name == INPUT_NAME and inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == ["batch", 150, 150, 3]
    assert out.name == OUTPUT_NAME
    assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == ["batch", 128]
    ops = Counter(n.op_type for n in model.graph.node)
    # every con folded with the affine above it; 14 residual adds, two of them over padded tensors
    assert ops["Conv"] == 29 and ops["Add"] == 14 and ops["MatMul"] == 1 and ops["Relu"] == 29
    assert ops["AveragePool"] == 4 and ops["GlobalAveragePool"] == 1 and ops["MaxPool"] == 1
    assert ops["Pad"] >= 4  # the 32->64->128->256 channel steps and the 3x3 vs 4x4 / 1x1 vs 2x2 skips
    props = {p.key: p.value for p in model.metadata_props}
    assert props["source_sha256"] == get_spec("dlib_resnet").files[0].sha256


def test_onnx_runs_like_dlib_on_random_chips(onnx_bytes: bytes) -> None:
    import dlib
    import onnxruntime as ort

    chips = np.random.default_rng(7).integers(0, 256, (3, 150, 150, 3), dtype=np.uint8)
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    ours = session.run(None, {INPUT_NAME: chips})[0]
    reference = np.asarray([np.asarray(v) for v in
                            dlib.face_recognition_model_v1(str(DAT)).compute_face_descriptor(list(chips), 0)])
    assert ours.shape == (3, 128)
    assert float(np.abs(ours - reference).max()) < 1e-4


@pytest.mark.parametrize(("cut", "message"), [
    (lambda d: d[:1000], "stream ends early"),
    (lambda d: d[:-3], "stream ends early"),
    (lambda d: d + b"\x00", "left after the network"),
    (lambda d: d.replace(b"loss_metric_2", b"loss_metric_9", 1), "loss version"),
    (lambda d: d.replace(b"con_4", b"con_5", 1), "con_ version"),
    (lambda d: d.replace(b"input_rgb_image_sized", b"input_rgb_image_sizex", 1), "input layer version"),
], ids=["truncated-head", "truncated-tail", "trailing-byte", "loss", "con-version", "input-layer"])
def test_reader_refuses_a_damaged_stream_and_says_where(dat_bytes: bytes, cut, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DlibFormatError, match=message) as info:
        read_dlib_net(cut(dat_bytes))
    assert "at byte" in str(info.value)


def test_reader_refuses_another_architecture(dat_bytes: bytes) -> None:
    from faceport.engine.models.dlib_onnx import ANET_TYPE, Layer

    wider = (Layer("fc", (64,)), *ANET_TYPE[1:])
    with pytest.raises(DlibFormatError, match="fc_ num_outputs"):
        read_dlib_net(dat_bytes, wider)


def test_build_onnx_is_a_function_of_the_parsed_net(dat_bytes: bytes, onnx_bytes: bytes) -> None:
    net = read_dlib_net(dat_bytes)
    assert build_onnx(net, source_sha256=hashlib.sha256(dat_bytes).hexdigest()) == onnx_bytes


# ---- pull / verify -------------------------------------------------------------------------
def test_pull_converts_the_base_model_and_verify_accepts_it(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    [status] = store.pull(["dlib_resnet_onnx"])
    assert status.installed and status.problems == ()
    assert store.verify("dlib_resnet").installed  # the base was pulled first
    target = tmp_path / "dlib_resnet_onnx" / SPEC.files[0].name
    assert hashlib.sha256(target.read_bytes()).hexdigest() == SPEC.files[0].sha256
    record = json.loads((tmp_path / "dlib_resnet_onnx" / ".source.json").read_text())
    assert record["files"] == {SPEC.files[0].name: SPEC.files[0].sha256}
    assert record["base_sha256"] == get_spec("dlib_resnet").files[0].sha256

    env = dict(os.environ, FACEPORT_HOME=str(tmp_path / "home"), FACEPORT_MODELS_DIR=str(tmp_path))
    verify = subprocess.run([sys.executable, "-m", "faceport.cli", "models", "verify", "dlib_resnet_onnx"],
                            capture_output=True, text=True, env=env, check=False, timeout=600)
    assert verify.returncode == 0 and " ok" in verify.stdout, verify.stdout + verify.stderr

    # a damaged conversion is caught by verify and replaced by a re-pull
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    assert not store.verify("dlib_resnet_onnx").installed
    [again] = store.pull(["dlib_resnet_onnx"])
    assert again.installed and store.verify("dlib_resnet_onnx").installed


def test_a_base_file_that_is_not_dlibs_network_fails_the_pull_cleanly(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    store = ModelStore(tmp_path)
    store.pull(["dlib_resnet"])
    from faceport.engine.models import dlib_onnx

    def broken(path: Path) -> bytes:
        return dlib_onnx.build_onnx(dlib_onnx.read_dlib_net(path.read_bytes()[:-10]))

    monkeypatch.setattr(dlib_onnx, "convert_file", broken)
    with pytest.raises(ModelFetchFailed, match="cannot convert"):
        store.pull(["dlib_resnet_onnx"])
    assert not (tmp_path / "dlib_resnet_onnx").exists()
    assert not any((tmp_path / ".staging").iterdir())
