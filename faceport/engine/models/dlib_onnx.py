"""Read dlib's serialised face-recognition ResNet and rebuild it as an ONNX graph.

``dlib_face_recognition_resnet_model_v1.dat`` is what ``dlib::serialize`` writes for the
``anet_type`` of dlib's ``face_recognition.cpp`` (a ResNet-29 with 128-d ``loss_metric``).
dlib's stream does not name its own topology: ``tag1``/``skip1`` layers write only a version
number and ``add_prev_`` does not store which tag it adds, exactly as in C++ where the
template type defines the network and ``deserialize`` only checks that the stream matches
it. So this module writes the same template down (``ANET_TYPE``) and reads the stream
against it, checking every version string and hyper-parameter on the way, as dlib does.

The stream, as written by dlib (``dlib/serialize.h``, ``dlib/dnn/core.h``, ``layers.h``,
``input.h``, ``tensor.h``):

* integers: one control byte (low nibble = byte count, bit 7 = negative), then that many
  little-endian bytes; ``bool`` is the character ``'1'`` or ``'0'``; a string is its length
  (an integer) and its bytes; ``float``/``double`` are ``float_details``: an int64 mantissa
  and an int16 exponent (value = mantissa * 2**exponent);
* a tensor: version 2, four dims (n, k, nr, nc), then n*k*nr*nc little-endian float32;
  an ``alias_tensor``: version 1 and four dims, no data;
* ``add_loss_layer``: version 1, the loss details, the subnet;
* ``add_layer``: version 1 or 2, the subnet, the layer details, three bools, ``x_grad``,
  ``cached_output`` (and ``params_grad`` in version 2); the bottom ``add_layer`` (the one
  over the input layer): version 2 or 3, the input layer, the details, three bools,
  ``x_grad``, ``cached_output``, ``grad_final`` (and ``_sample_expansion_factor`` in 3);
* ``add_tag_layer`` / ``add_skip_layer``: version 1 and the subnet.

So the file holds every wrapper's version from the loss down, then the input layer, then
each layer's details from the bottom up. The ONNX graph takes the aligned 150x150 RGB chips
as uint8 NHWC (what ``dlib.get_face_chip`` returns) and does ``input_rgb_image_sized``'s
preprocessing itself: ``(pixel - avg) / 256`` per channel. Each ``con`` is followed by an
``affine`` in this net; the two are folded into one Conv. ``add_prev`` adds tensors of
different shapes the way ``tt::add`` does: the smaller one is zero-padded at the end of each
axis. The conversion is a pure function of the file's bytes: the same ``.dat`` always gives
the same ONNX bytes.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

CONVERTER_VERSION = "1"
INPUT_NAME = "chips"  # (N, 150, 150, 3) uint8, RGB, as dlib.get_face_chip returns them
OUTPUT_NAME = "descriptor"  # (N, 128) float32, dlib's raw (unnormalised) face descriptor
OPSET = 13
IR_VERSION = 7


class DlibFormatError(ValueError):
    """The stream is not the network this reader knows; the message says where and why."""


# ---- the template (dlib's anet_type, outermost layer first) ---------------------------------
@dataclass(frozen=True, slots=True)
class Layer:
    kind: str  # con, affine, relu, add_prev, avg_pool, max_pool, fc, tag, skip
    args: tuple[int, ...] = ()


def _con(n: int, size: int, stride: int) -> Layer:
    return Layer("con", (n, size, size, stride, stride))


RELU, AFFINE = Layer("relu"), Layer("affine")


def _ares(n: int) -> list[Layer]:
    # relu<add_prev1<affine<con<N,3,3,1,1,relu<affine<con<N,3,3,1,1,tag1<SUBNET>>>>>>>>
    return [RELU, Layer("add_prev", (1,)), AFFINE, _con(n, 3, 1), RELU, AFFINE, _con(n, 3, 1), Layer("tag", (1,))]


def _ares_down(n: int) -> list[Layer]:
    # relu<add_prev2<avg_pool<2,2,2,2,skip1<tag2<affine<con<N,3,3,1,1,relu<affine<con<N,3,3,2,2,tag1<SUBNET>>>>>>>>>>>
    return [RELU, Layer("add_prev", (2,)), Layer("avg_pool", (2, 2, 2, 2)), Layer("skip", (1,)), Layer("tag", (2,)),
            AFFINE, _con(n, 3, 1), RELU, AFFINE, _con(n, 3, 2), Layer("tag", (1,))]


ANET_TYPE: tuple[Layer, ...] = (
    Layer("fc", (128,)), Layer("avg_pool", (0, 0, 1, 1)),
    *_ares_down(256),  # alevel0
    *_ares(256), *_ares(256), *_ares_down(256),  # alevel1
    *_ares(128), *_ares(128), *_ares_down(128),  # alevel2
    *_ares(64), *_ares(64), *_ares(64), *_ares_down(64),  # alevel3
    *_ares(32), *_ares(32), *_ares(32),  # alevel4
    Layer("max_pool", (3, 3, 2, 2)), RELU, AFFINE, _con(32, 7, 2),
)
INPUT_SIZE = 150  # input_rgb_image_sized<150>


# ---- the byte reader ---------------------------------------------------------------------
class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.where = "start"

    def fail(self, message: str) -> DlibFormatError:
        return DlibFormatError(f"{message} (at byte {self.pos} of {len(self.data)}, reading {self.where})")

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise self.fail(f"stream ends early: {n} more byte(s) needed")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def read_int(self) -> int:
        """A signed integer (ser_helper::pack_int)."""
        control = self._take(1)[0]
        size = control & 0x0F
        if size > 8 or control & 0x70:
            raise self.fail(f"bad integer control byte 0x{control:02x}")
        value = int.from_bytes(self._take(size), "little")
        return -value if control & 0x80 else value

    def read_uint(self) -> int:
        """An unsigned integer (size_t, unsigned long)."""
        control = self._take(1)[0] & 0x8F
        if control > 8:
            raise self.fail(f"bad unsigned integer control byte 0x{control:02x}")
        return int.from_bytes(self._take(control), "little")

    def read_string(self) -> str:
        size = self.read_uint()
        if size > 4096:
            raise self.fail(f"implausible string length {size}")
        return self._take(size).decode("latin-1")

    def read_bool(self) -> bool:
        ch = self._take(1)
        if ch not in (b"0", b"1"):
            raise self.fail(f"bad bool byte {ch!r}")
        return ch == b"1"

    def read_float(self) -> float:
        """dlib's portable float: float_details (int64 mantissa, int16 exponent)."""
        if self.pos < len(self.data) and self.data[self.pos] & 0x70:
            raise self.fail("floating point number in dlib's old ASCII format (not supported)")
        mantissa, exponent = self.read_int(), self.read_int()
        if exponent == 32000:
            return math.inf
        if exponent == 32001:
            return -math.inf
        if exponent == 32002:
            return math.nan
        return math.ldexp(float(mantissa), exponent)

    def expect(self, value: object, wanted: object, what: str) -> None:
        if value != wanted:
            raise self.fail(f"{what}: expected {wanted!r}, found {value!r}")

    def read_tensor(self) -> NDArray[np.float32]:
        self.expect(self.read_int(), 2, "tensor version")
        dims = tuple(self.read_int() for _ in range(4))
        if any(d < 0 for d in dims):
            raise self.fail(f"negative tensor dims {dims}")
        count = math.prod(dims)
        raw = self._take(4 * count)
        return np.frombuffer(raw, "<f4", count).astype(np.float32).reshape(dims)

    def read_alias(self) -> tuple[int, int, int, int]:
        self.expect(self.read_int(), 1, "alias_tensor version")
        n, k, nr, nc = (self.read_int() for _ in range(4))
        return n, k, nr, nc


# ---- parsed network ------------------------------------------------------------------------
@dataclass
class ParsedLayer:
    layer: Layer
    params: dict[str, NDArray[np.float32]] = field(default_factory=dict)
    padding: tuple[int, int] = (0, 0)


@dataclass
class DlibNet:
    """The parsed network: input means, layers outermost first (tags and skips included)."""

    avg_rgb: tuple[float, float, float]
    size: int
    layers: list[ParsedLayer]
    margin: float
    dist_thresh: float


def _default_padding(size: int, stride: int) -> int:
    # con_/max_pool_/avg_pool_ template default: _padding = _stride != 1 ? 0 : _nr / 2
    return 0 if stride != 1 else size // 2


def _read_details(r: _Reader, layer: Layer) -> ParsedLayer:
    out = ParsedLayer(layer)
    kind = layer.kind
    if kind == "con":
        r.expect(r.read_string(), "con_4", "con_ version")
        params = r.read_tensor().reshape(-1)
        num_filters, nr, nc = r.read_int(), r.read_int(), r.read_int()
        stride_y, stride_x = r.read_int(), r.read_int()
        padding = (r.read_int(), r.read_int())
        filters, biases = r.read_alias(), r.read_alias()
        for _ in range(4):  # learning-rate / weight-decay multipliers
            r.read_float()
        want_n, want_nr, want_nc, want_sy, want_sx = layer.args
        r.expect((num_filters, nr, nc, stride_y, stride_x), (want_n, want_nr, want_nc, want_sy, want_sx),
                 "con_ (num_filters, nr, nc, stride_y, stride_x)")
        r.expect(padding, (_default_padding(nr, stride_y), _default_padding(nc, stride_x)), "con_ padding")
        r.expect(filters[0], num_filters, "con_ filters alias")
        r.expect(biases, (1, num_filters, 1, 1), "con_ biases alias")
        size = math.prod(filters)
        r.expect(params.size, size + num_filters, "con_ params size")
        out.params = {"w": params[:size].reshape(filters), "b": params[size:size + num_filters]}
        out.padding = padding
    elif kind == "affine":
        version = r.read_string()
        if version == "bn_con2":
            raise r.fail("a bn_con layer (a net saved while training) is not supported; dlib's released "
                          "model stores affine_ layers")
        r.expect(version, "affine_", "affine_ version")
        params = r.read_tensor().reshape(-1)
        gamma, beta = r.read_alias(), r.read_alias()
        mode = r.read_int()
        r.expect(mode, 0, "affine_ mode (CONV_MODE)")
        r.expect(gamma, beta, "affine_ gamma/beta aliases")
        k = math.prod(gamma)
        r.expect(params.size, 2 * k, "affine_ params size")
        out.params = {"gamma": params[:k], "beta": params[k:2 * k]}
    elif kind == "relu":
        r.expect(r.read_string(), "relu_", "relu_ version")
    elif kind == "add_prev":
        r.expect(r.read_string(), "add_prev_", "add_prev_ version")
    elif kind in ("avg_pool", "max_pool"):
        r.expect(r.read_string(), f"{kind}_2", f"{kind}_ version")
        values = (r.read_int(), r.read_int(), r.read_int(), r.read_int())
        padding = (r.read_int(), r.read_int())
        r.expect(values, layer.args, f"{kind}_ (nr, nc, stride_y, stride_x)")
        nr, nc, sy, sx = layer.args
        want = (0, 0) if nr == 0 else (_default_padding(nr, sy), _default_padding(nc, sx))
        r.expect(padding, want, f"{kind}_ padding")
        out.padding = padding
    elif kind == "fc":
        r.expect(r.read_string(), "fc_2", "fc_ version")
        num_outputs, num_inputs = r.read_uint(), r.read_uint()
        params = r.read_tensor().reshape(-1)
        weights, _biases = r.read_alias(), r.read_alias()
        bias_mode = r.read_int()
        for _ in range(4):
            r.read_float()
        r.expect(num_outputs, layer.args[0], "fc_ num_outputs")
        r.expect(bias_mode, 1, "fc_ bias mode (FC_NO_BIAS)")
        r.expect(weights, (num_inputs, num_outputs, 1, 1), "fc_ weights alias")
        r.expect(params.size, num_inputs * num_outputs, "fc_ params size")
        out.params = {"w": params.reshape(num_inputs, num_outputs)}
    else:  # pragma: no cover - the template holds only the kinds above
        raise r.fail(f"no reader for layer kind {kind!r}")
    return out


def read_dlib_net(data: bytes, template: tuple[Layer, ...] = ANET_TYPE) -> DlibNet:
    """Parse the bytes of a serialised ``anet_type`` (loss_metric included).

    Raises:
        DlibFormatError: the stream does not match the template; the message gives the
            byte offset and the field.
    """
    r = _Reader(data)
    r.where = "loss layer"
    r.expect(r.read_int(), 1, "add_loss_layer version")
    r.expect(r.read_string(), "loss_metric_2", "loss version")
    margin, dist_thresh = r.read_float(), r.read_float()

    versions: list[int] = []
    last = len(template) - 1
    for index, layer in enumerate(template):
        r.where = f"wrapper {index} ({layer.kind})"
        version = r.read_int()
        if layer.kind in ("tag", "skip"):
            r.expect(version, 1, f"add_{layer.kind}_layer version")
        elif index == last:
            if version not in (2, 3):
                raise r.fail(f"bottom add_layer version {version} (expected 2 or 3)")
        elif version not in (1, 2):
            raise r.fail(f"add_layer version {version} (expected 1 or 2)")
        versions.append(version)

    r.where = "input layer"
    r.expect(r.read_string(), "input_rgb_image_sized", "input layer version")
    avg = (r.read_float(), r.read_float(), r.read_float())
    size = (r.read_uint(), r.read_uint())
    r.expect(size, (INPUT_SIZE, INPUT_SIZE), "input_rgb_image_sized NR, NC")

    parsed: list[ParsedLayer] = []
    for index in range(last, -1, -1):
        layer = template[index]
        if layer.kind in ("tag", "skip"):
            parsed.append(ParsedLayer(layer))
            continue
        r.where = f"layer {index} ({layer.kind})"
        parsed.append(_read_details(r, layer))
        for _ in range(3):  # this_layer_setup_called, gradient_input_is_stale, output disabled
            r.read_bool()
        r.read_tensor()  # x_grad
        r.read_tensor()  # cached_output
        if index == last:
            r.read_tensor()  # grad_final
            if versions[index] == 3:
                r.read_uint()  # _sample_expansion_factor
        elif versions[index] == 2:
            r.read_tensor()  # params_grad
    r.where = "end"
    if r.pos != len(data):
        raise r.fail(f"{len(data) - r.pos} byte(s) left after the network")
    parsed.reverse()
    return DlibNet(avg_rgb=(avg[0], avg[1], avg[2]), size=INPUT_SIZE, layers=parsed, margin=margin,
                   dist_thresh=dist_thresh)


# ---- the ONNX graph --------------------------------------------------------------------------
def _out_size(size: int, window: int, stride: int, pad: int) -> int:
    return 1 + (size + 2 * pad - window) // stride


def build_onnx(net: DlibNet, *, source_sha256: str = "") -> bytes:
    """Serialised ONNX model equal to the dlib network (input: uint8 NHWC RGB chips)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    counter = [0]

    def name(prefix: str) -> str:
        counter[0] += 1
        return f"{prefix}_{counter[0]}"

    def const(prefix: str, value: NDArray[np.generic]) -> str:
        n = name(prefix)
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value), n))
        return n

    def node(op: str, inputs: list[str], **attrs: Any) -> str:
        out = name(op.lower())
        nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    # input_rgb_image_sized: (pixel - avg) / 256, channels R, G, B
    x = node("Cast", [INPUT_NAME], to=TensorProto.FLOAT)
    x = node("Sub", [x, const("avg_rgb", np.asarray(net.avg_rgb, np.float32))])
    x = node("Mul", [x, const("inv256", np.asarray(1.0 / 256.0, np.float32))])
    x = node("Transpose", [x], perm=[0, 3, 1, 2])
    shape = (3, net.size, net.size)  # (k, nr, nc) of the current tensor

    tags: dict[int, tuple[str, tuple[int, int, int]]] = {}
    layers = list(reversed(net.layers))  # bottom (input side) first
    i = 0
    while i < len(layers):
        pl = layers[i]
        kind = pl.layer.kind
        if kind == "con":
            w, b = pl.params["w"], pl.params["b"]
            nxt = layers[i + 1] if i + 1 < len(layers) else None
            if nxt is not None and nxt.layer.kind == "affine":  # fold affine into the convolution
                gamma, beta = nxt.params["gamma"], nxt.params["beta"]
                w = np.asarray(w * gamma[:, None, None, None], np.float32)
                b = np.asarray(b * gamma + beta, np.float32)
                i += 1
            _n, _size_y, _size_x, sy, sx = pl.layer.args
            py, px = pl.padding
            x = node("Conv", [x, const("w", w), const("b", b)], kernel_shape=[w.shape[2], w.shape[3]],
                     strides=[sy, sx], pads=[py, px, py, px])
            shape = (w.shape[0], _out_size(shape[1], w.shape[2], sy, py), _out_size(shape[2], w.shape[3], sx, px))
        elif kind == "affine":  # an affine not after a con (not in this net, kept for completeness)
            k = shape[0]
            x = node("Mul", [x, const("gamma", pl.params["gamma"].reshape(k, 1, 1))])
            x = node("Add", [x, const("beta", pl.params["beta"].reshape(k, 1, 1))])
        elif kind == "relu":
            x = node("Relu", [x])
        elif kind in ("max_pool", "avg_pool"):
            nr, nc, sy, sx = pl.layer.args
            if nr == 0 and nc == 0:
                x = node("GlobalMaxPool" if kind == "max_pool" else "GlobalAveragePool", [x])
                shape = (shape[0], 1, 1)
            else:
                py, px = pl.padding
                op = "MaxPool" if kind == "max_pool" else "AveragePool"
                x = node(op, [x], kernel_shape=[nr, nc], strides=[sy, sx], pads=[py, px, py, px])
                shape = (shape[0], _out_size(shape[1], nr, sy, py), _out_size(shape[2], nc, sx, px))
        elif kind == "tag":
            tags[pl.layer.args[0]] = (x, shape)
        elif kind == "skip":
            x, shape = tags[pl.layer.args[0]]
        elif kind == "add_prev":
            other, other_shape = tags[pl.layer.args[0]]
            target = tuple(max(a, b) for a, b in zip(shape, other_shape, strict=True))

            def pad_to(t: str, s: tuple[int, ...], target: tuple[int, ...] = target) -> str:
                if s == target:
                    return t
                pads = np.asarray([0, 0, 0, 0, 0, *(a - b for a, b in zip(target, s, strict=True))], np.int64)
                return node("Pad", [t, const("pads", pads)], mode="constant")

            x = node("Add", [pad_to(x, shape), pad_to(other, other_shape)])
            shape = (target[0], target[1], target[2])
        elif kind == "fc":
            w = pl.params["w"]
            if w.shape[0] != math.prod(shape):
                raise DlibFormatError(f"fc_ expects {w.shape[0]} inputs, the layer below gives {shape}")
            x = node("Flatten", [x], axis=1)
            x = node("MatMul", [x, const("fc_w", w)])
            shape = (w.shape[1], 1, 1)
        else:  # pragma: no cover
            raise DlibFormatError(f"no ONNX mapping for {kind!r}")
        i += 1
    nodes.append(helper.make_node("Identity", [x], [OUTPUT_NAME], name="output"))

    graph = helper.make_graph(
        nodes, "dlib_face_recognition_resnet_model_v1",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, ["batch", net.size, net.size, 3])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", shape[0]])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                              producer_name="faceport.dlib_onnx", producer_version=CONVERTER_VERSION,
                              doc_string="dlib ResNet v1 face descriptor converted from the dlib .dat")
    helper.set_model_props(model, {"source_sha256": source_sha256, "converter_version": CONVERTER_VERSION,
                                   "input": "uint8 NHWC RGB 150x150 chips from dlib.get_face_chip(size=150, "
                                            "padding=0.25)"})
    return bytes(model.SerializeToString())


def convert_file(path: Path) -> bytes:
    """The ONNX bytes for a ``dlib_face_recognition_resnet_model_v1.dat`` (deterministic)."""
    data = Path(path).read_bytes()
    return build_onnx(read_dlib_net(data), source_sha256=hashlib.sha256(data).hexdigest())
