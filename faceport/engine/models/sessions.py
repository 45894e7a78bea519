"""Runtime sessions with one small protocol, so model classes do not care which runtime runs them.

A tensor session has ``inputs``, ``outputs`` and ``run(feeds) -> list[array]`` (outputs in
``outputs`` order). dlib and OpenCV cascade models are not tensor graphs; they get thin
wrappers that hold the native object and a lock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from faceport.errors import InvalidInput

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TensorInfo:
    name: str
    shape: tuple[int | str | None, ...]
    dtype: str


class Session(Protocol):
    """What a model class needs from a runtime."""

    @property
    def inputs(self) -> list[TensorInfo]: ...

    @property
    def outputs(self) -> list[TensorInfo]: ...

    def run(self, feeds: Mapping[str, NDArray[Any]]) -> list[NDArray[Any]]: ...


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def validate_providers(requested: Sequence[str]) -> list[str]:
    """Check execution providers against what onnxruntime offers on this machine.

    Raises:
        InvalidInput: an unknown provider; the message lists the available ones.
    """
    available = available_providers()
    unknown = [p for p in requested if p not in available]
    if unknown or not requested:
        raise InvalidInput(
            f"unknown execution provider(s) {unknown or requested}; available here: {', '.join(available)}",
            details={"requested": list(requested), "available": available},
        )
    return list(requested)


def _dynamic_shapes(model_bytes: bytes) -> bytes:
    """Make every graph input/output shape symbolic except the channel axis.

    Some exported detectors (CenterFace) pin a 32x32 input; the graph itself is fully
    convolutional, so it runs at any size once the declared shapes are relaxed.
    """
    import onnx

    model = onnx.load_from_string(model_bytes)
    initializers = {init.name for init in model.graph.initializer}
    keep = [i for i in model.graph.input if i.name not in initializers]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    for index, value in enumerate([*model.graph.input, *model.graph.output]):
        dims = value.type.tensor_type.shape.dim
        for axis, dim in enumerate(dims):
            if axis != 1:
                dim.ClearField("dim_value")
                dim.dim_param = f"d{index}_{axis}"
    del model.graph.value_info[:]
    return bytes(model.SerializeToString())


class OrtSession:
    """onnxruntime session; providers are validated, logs kept quiet."""

    def __init__(self, model: Path | bytes, *, providers: Sequence[str] = ("CPUExecutionProvider",),
                 dynamic_shapes: bool = False, intra_op_threads: int = 0) -> None:
        import onnxruntime as ort

        self.providers = validate_providers(providers)
        self.intra_op_threads = intra_op_threads
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = intra_op_threads
        data: bytes | str = model if isinstance(model, bytes) else str(model)
        if dynamic_shapes:
            data = _dynamic_shapes(data if isinstance(data, bytes) else Path(data).read_bytes())
        self._session = ort.InferenceSession(data, sess_options=options, providers=self.providers)
        self._inputs = [TensorInfo(i.name, tuple(i.shape), i.type) for i in self._session.get_inputs()]
        self._outputs = [TensorInfo(o.name, tuple(o.shape), o.type) for o in self._session.get_outputs()]

    @property
    def inputs(self) -> list[TensorInfo]:
        return self._inputs

    @property
    def outputs(self) -> list[TensorInfo]:
        return self._outputs

    @property
    def native(self) -> Any:
        return self._session

    def run(self, feeds: Mapping[str, NDArray[Any]]) -> list[NDArray[Any]]:
        return list(self._session.run(None, dict(feeds)))


class LiteRTSession:
    """LiteRT (TFLite) interpreter. Interpreters are not thread-safe: calls are serialised."""

    def __init__(self, model: Path | bytes, *, num_threads: int = 2) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.num_threads = num_threads
        if isinstance(model, bytes):
            self._interp = Interpreter(model_content=model, num_threads=num_threads)
        else:
            self._interp = Interpreter(model_path=str(model), num_threads=num_threads)
        self._interp.allocate_tensors()
        self._in = self._interp.get_input_details()
        self._out = self._interp.get_output_details()
        self._lock = threading.Lock()

    @property
    def inputs(self) -> list[TensorInfo]:
        return [TensorInfo(d["name"], tuple(int(x) for x in d["shape"]), np.dtype(d["dtype"]).name) for d in self._in]

    @property
    def outputs(self) -> list[TensorInfo]:
        return [TensorInfo(d["name"], tuple(int(x) for x in d["shape"]), np.dtype(d["dtype"]).name) for d in self._out]

    def run(self, feeds: Mapping[str, NDArray[Any]]) -> list[NDArray[Any]]:
        with self._lock:
            for detail in self._in:
                try:
                    value = feeds[detail["name"]]
                except KeyError:
                    raise InvalidInput(f"missing input tensor {detail['name']!r}") from None
                self._interp.set_tensor(detail["index"], np.ascontiguousarray(value, dtype=detail["dtype"]))
            self._interp.invoke()
            return [self._interp.get_tensor(d["index"]).copy() for d in self._out]


class DlibModel:
    """A dlib shape predictor or face recognition network."""

    def __init__(self, path: Path, kind: str) -> None:
        import dlib

        self.kind = kind
        if kind == "face_embedding":
            self.native: Any = dlib.face_recognition_model_v1(str(path))
        else:
            self.native = dlib.shape_predictor(str(path))
        self.lock = threading.Lock()


class OpenCVDnnSession:
    """OpenCV DNN network (TensorFlow frozen graph + pbtxt). ``cv2.dnn.Net`` is not thread-safe."""

    def __init__(self, weights: Path, config: Path) -> None:
        import cv2

        self.native = cv2.dnn.readNetFromTensorflow(str(weights), str(config))
        self.lock = threading.Lock()

    def forward(self, blob: NDArray[Any]) -> NDArray[Any]:
        with self.lock:
            self.native.setInput(blob)
            return np.asarray(self.native.forward())


class CascadeSet:
    """OpenCV Haar cascades, one per file; ``detectMultiScale`` is serialised per cascade."""

    def __init__(self, paths: Sequence[Path]) -> None:
        import cv2

        self.cascades = []
        for path in paths:
            cascade = cv2.CascadeClassifier(str(path))
            if cascade.empty():
                raise ValueError(f"cannot load cascade {path}")
            self.cascades.append(cascade)
        self.lock = threading.Lock()
