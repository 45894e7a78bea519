"""Decoding and encoding of uploaded images: formats by content, limits, modes, orientation.

Every fixture is built here with Pillow/numpy/zlib; the real photos under ../shared/data
are used when present.
"""

from __future__ import annotations

import base64
import io
import os
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps

from faceport.engine.imageio import (
    _pil_to_bgr,
    decode_image,
    encode_image,
    load_image_file,
    parse_data_url,
    sniff_format,
    to_data_url,
)
from faceport.errors import FaceportError

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)  # RGB, as Pillow takes them
BGR_RED, BGR_GREEN, BGR_BLUE, BGR_WHITE = (0, 0, 255), (0, 255, 0), (255, 0, 0), (255, 255, 255)


# --------------------------------------------------------------------------- fixture builders


def save(im: Image.Image, fmt: str, **params: Any) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def solid(rgb: tuple[int, int, int], size: tuple[int, int] = (16, 12)) -> Image.Image:
    return Image.new("RGB", size, rgb)


def halves(left: tuple[int, int, int], right: tuple[int, int, int], size: tuple[int, int] = (40, 20)) -> Image.Image:
    """An RGB image whose left half is ``left`` and right half ``right``."""
    im = Image.new("RGB", size, left)
    im.paste(right, (size[0] // 2, 0, size[0], size[1]))
    return im


def quadrants(size: tuple[int, int] = (64, 32)) -> Image.Image:
    """Four solid colours, so every flip and rotation gives a different picture."""
    w, h = size
    im = Image.new("RGB", size, RED)
    im.paste(GREEN, (w // 2, 0, w, h // 2))
    im.paste(BLUE, (0, h // 2, w // 2, h))
    im.paste((255, 255, 0), (w // 2, h // 2, w, h))
    return im


def with_orientation(im: Image.Image, fmt: str, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    params: dict[str, Any] = {"exif": exif}
    if fmt == "JPEG":
        params["quality"] = 95
    if fmt == "WEBP":
        params["lossless"] = True
    return save(im, fmt, **params)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_bomb(width: int = 20_000, height: int = 20_000) -> bytes:
    """A valid 1-bit PNG of ``width x height`` zeros, streamed through zlib (~50 KB, never in memory whole)."""
    row = bytes(1 + (width + 7) // 8)  # filter byte + packed bits
    block = row * 1000
    compressor = zlib.compressobj(9)
    parts = [compressor.compress(block) for _ in range(height // 1000)]
    parts += [compressor.compress(row * (height % 1000)), compressor.flush()]
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", b"".join(parts)) + png_chunk(b"IEND", b"")
    )


def jpeg_header_bomb() -> bytes:
    """A real 8x8 JPEG whose frame header claims 60000x60000."""
    data = bytearray(save(solid(RED, (8, 8)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 60_000, 60_000)
    return bytes(data)


def webp_header_bomb() -> bytes:
    """A VP8X WebP header announcing a 16384x16384 canvas (268 Mpx) and nothing else."""
    vp8x = bytes([0, 0, 0, 0]) + (16383).to_bytes(3, "little") + (16383).to_bytes(3, "little")
    body = b"WEBP" + b"VP8X" + struct.pack("<I", len(vp8x)) + vp8x
    return b"RIFF" + struct.pack("<I", len(body)) + body


def bmp_header_bomb() -> bytes:
    """A BMP header for 30000x30000 24-bit pixels, with none of the pixels."""
    dib = struct.pack("<IiiHHIIiiII", 40, 30_000, 30_000, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(dib), 0, 0, 14 + len(dib)) + dib


def animated(fmt: str) -> bytes:
    frames = [solid(c, (32, 24)) for c in (RED, GREEN, BLUE)]
    params: dict[str, Any] = {"save_all": True, "append_images": frames[1:], "duration": 100, "loop": 0}
    if fmt == "WEBP":
        params["lossless"] = True
    return save(frames[0], fmt, **params)


def rgba_png() -> bytes:
    """4x2: left column fully transparent green, then 50%-transparent black, then two opaque red."""
    arr = np.zeros((2, 4, 4), np.uint8)
    arr[:, 0] = (0, 255, 0, 0)
    arr[:, 1] = (0, 0, 0, 128)
    arr[:, 2:] = (255, 0, 0, 255)
    return save(Image.fromarray(arr, "RGBA"), "PNG")


def palette_png(transparent_index: int | None) -> bytes:
    im = Image.new("P", (4, 2), 0)
    im.putpalette([*RED, *GREEN] + [0] * (254 * 3))
    im.paste(1, (2, 0, 4, 2))  # right half: green
    params = {} if transparent_index is None else {"transparency": transparent_index}
    return save(im, "PNG", **params)


def gray16_png() -> bytes:
    return save(Image.fromarray(np.array([[65535, 32768, 0, 257]], np.uint16)), "PNG")


def rgb16_png() -> bytes:
    bgr = np.zeros((2, 2, 3), np.uint16)
    bgr[..., 0], bgr[..., 1], bgr[..., 2] = 0, 32768, 65535  # B, G, R
    return cv2.imencode(".png", bgr)[1].tobytes()


def png_of(rgb: tuple[int, int, int], size: tuple[int, int] = (16, 12)) -> bytes:
    return save(solid(rgb, size), "PNG")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --------------------------------------------------------------------------- decode table


@dataclass(frozen=True)
class Decoded:
    """Expected success: output shape and BGR colours at (y, x)."""

    shape: tuple[int, int, int]
    pixels: dict[tuple[int, int], tuple[int, int, int]] = field(default_factory=dict)
    atol: int = 0


@dataclass(frozen=True)
class Refused:
    """Expected failure: error code and words the message must contain (case-insensitive)."""

    code: str
    words: tuple[str, ...]


def case(
    make: Callable[[], bytes | str | bytearray | memoryview],
    expected: Decoded | Refused,
    *,
    id: str,
    **kwargs: Any,
) -> Any:
    return pytest.param(make, kwargs, expected, id=id)


DECODE_CASES = [
    # -- refused
    case(lambda: b"", Refused("INVALID_IMAGE", ("empty",)), id="empty-bytes"),
    case(lambda: "", Refused("INVALID_IMAGE", ("empty",)), id="empty-str"),
    case(lambda: " \n\t ", Refused("INVALID_IMAGE", ("empty",)), id="whitespace-str"),
    case(lambda: "data:image/png;base64,", Refused("INVALID_IMAGE", ("empty",)), id="data-url-empty-payload"),
    case(
        lambda: (d := save(quadrants((128, 96)), "JPEG"))[: len(d) // 2],
        Refused("INVALID_IMAGE", ("truncated", "jpeg")),
        id="truncated-jpeg",
    ),
    case(
        lambda: (d := save(Image.effect_noise((64, 64), 50).convert("RGB"), "PNG"))[: len(d) // 2],
        Refused("INVALID_IMAGE", ("truncated", "png")),
        id="truncated-png",
    ),
    case(
        lambda: b"Dear team,\nthe photo is attached. Regards\n",
        Refused("INVALID_IMAGE", ("text", "allowed: JPEG, PNG, BMP, WebP")),
        id="text-file-named-jpg",
    ),
    case(
        lambda: b64(png_of(RED)).encode(),
        Refused("INVALID_IMAGE", ("base64 text passed as bytes",)),
        id="base64-as-bytes",
    ),
    case(lambda: bytes(range(256)) * 4, Refused("INVALID_IMAGE", ("unrecognised",)), id="random-binary"),
    case(png_bomb, Refused("INVALID_IMAGE", ("20000x20000", "pixels", "limit")), id="png-bomb-20000x20000"),
    case(jpeg_header_bomb, Refused("INVALID_IMAGE", ("60000x60000", "pixels")), id="jpeg-header-bomb"),
    case(webp_header_bomb, Refused("INVALID_IMAGE", ("16384x16384", "pixels")), id="webp-canvas-bomb"),
    case(bmp_header_bomb, Refused("INVALID_IMAGE", ("30000x30000", "pixels")), id="bmp-header-bomb"),
    case(lambda: png_of(RED, (100, 100)), Refused("INVALID_IMAGE", ("pixels",)), id="over-max-pixels", max_pixels=9999),
    case(lambda: png_of(RED, (1, 1)), Refused("INVALID_IMAGE", ("min_side=2",)), id="below-min-side", min_side=2),
    case(lambda: png_of(RED), Refused("FILE_TOO_LARGE", ("bytes",)), id="over-max-bytes", max_bytes=10),
    case(
        lambda: b64(png_of(RED, (256, 256))),
        Refused("FILE_TOO_LARGE", ("limit",)),
        id="base64-over-max-bytes",
        max_bytes=100,
    ),
    case(
        lambda: "A" * 10_000,
        Refused("FILE_TOO_LARGE", ("10,000 characters",)),
        id="base64-refused-before-decoding",
        max_bytes=1000,
    ),
    case(lambda: animated("GIF"), Refused("INVALID_IMAGE", ("GIF", "allowed")), id="animated-gif"),
    case(lambda: save(solid(RED), "TIFF"), Refused("INVALID_IMAGE", ("TIFF", "allowed")), id="tiff"),
    case(lambda: save(solid(RED), "PDF"), Refused("INVALID_IMAGE", ("PDF",)), id="pdf"),
    case(
        lambda: b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
        Refused("INVALID_IMAGE", ("SVG", "allowed")),
        id="svg",
    ),
    case(
        lambda: "data:image/svg+xml;base64," + b64(b'<svg xmlns="http://www.w3.org/2000/svg"/>'),
        Refused("INVALID_IMAGE", ("SVG",)),
        id="svg-data-url-declared-image",
    ),
    case(
        lambda: "data:text/plain;base64," + b64(png_of(RED)),
        Refused("INVALID_IMAGE", ("media type", "text/plain", "not an image")),
        id="data-url-non-image-type",
    ),
    case(
        lambda: "this is *** not base64 !!!",
        Refused("INVALID_IMAGE", ("not valid base64", "data: URL")),
        id="garbage-base64",
    ),
    case(lambda: "QUJD" + "Q", Refused("INVALID_IMAGE", ("base64", "length")), id="base64-impossible-length"),
    case(lambda: b64(b"just some words, no image"), Refused("INVALID_IMAGE", ("text",)), id="base64-of-text"),
    case(lambda: "data:image/png;base64", Refused("INVALID_IMAGE", ("malformed data url",)), id="data-url-no-comma"),
    # -- decoded
    case(lambda: png_of(GREEN, (1, 1)), Decoded((1, 1, 3), {(0, 0): BGR_GREEN}), id="png-1x1"),
    case(lambda: save(solid(BLUE, (1, 1)), "JPEG"), Decoded((1, 1, 3), {(0, 0): BGR_BLUE}, atol=4), id="jpeg-1x1"),
    case(
        lambda: save(halves(RED, BLUE), "JPEG", quality=95),
        Decoded((20, 40, 3), {(10, 5): BGR_RED, (10, 35): BGR_BLUE}, atol=6),
        id="jpeg-rgb",
    ),
    case(
        lambda: save(Image.new("L", (8, 6), 77), "JPEG", quality=95),
        Decoded((6, 8, 3), {(3, 3): (77, 77, 77)}, atol=2),
        id="jpeg-grayscale",
    ),
    case(
        lambda: save(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG", quality=95),
        Decoded((8, 8, 3), {(4, 4): BGR_RED}, atol=8),
        id="jpeg-cmyk-pure-red",
    ),
    case(
        lambda: with_orientation(halves(RED, BLUE), "JPEG", 6),
        Decoded((40, 20, 3), {(5, 10): BGR_RED, (35, 10): BGR_BLUE}, atol=8),
        id="jpeg-exif-orientation-6",
    ),
    case(lambda: png_of(RED), Decoded((12, 16, 3), {(0, 0): BGR_RED, (11, 15): BGR_RED}), id="png-rgb"),
    case(lambda: save(Image.new("L", (5, 3), 77), "PNG"), Decoded((3, 5, 3), {(1, 1): (77, 77, 77)}), id="png-gray"),
    case(
        lambda: save(Image.new("1", (9, 3), 1), "PNG"),
        Decoded((3, 9, 3), {(0, 8): BGR_WHITE}),
        id="png-1bit",
    ),
    case(
        gray16_png,
        Decoded((1, 4, 3), {(0, 0): (255, 255, 255), (0, 1): (128, 128, 128), (0, 2): (0, 0, 0), (0, 3): (1, 1, 1)}),
        id="png-16bit-gray-scaled",
    ),
    case(rgb16_png, Decoded((2, 2, 3), {(0, 0): (0, 128, 255), (1, 1): (0, 128, 255)}), id="png-16bit-rgb-scaled"),
    case(
        rgba_png,
        Decoded((2, 4, 3), {(0, 0): BGR_WHITE, (0, 1): (127, 127, 127), (0, 2): BGR_RED, (1, 3): BGR_RED}, atol=1),
        id="png-rgba-over-white",
    ),
    case(
        lambda: save(Image.new("LA", (3, 2), (0, 0)), "PNG"),
        Decoded((2, 3, 3), {(0, 0): BGR_WHITE}),
        id="png-la-transparent",
    ),
    case(
        lambda: palette_png(None),
        Decoded((2, 4, 3), {(0, 0): BGR_RED, (1, 3): BGR_GREEN}),
        id="png-palette",
    ),
    case(
        lambda: palette_png(0),
        Decoded((2, 4, 3), {(0, 0): BGR_WHITE, (1, 3): BGR_GREEN}),
        id="png-palette-transparency",
    ),
    case(
        lambda: save(Image.new("RGB", (4, 4), RED), "PNG", transparency=RED),
        Decoded((4, 4, 3), {(2, 2): BGR_WHITE}),
        id="png-rgb-colour-key",
    ),
    case(
        lambda: with_orientation(halves(RED, BLUE), "PNG", 8),
        Decoded((40, 20, 3), {(5, 10): BGR_BLUE, (35, 10): BGR_RED}),
        id="png-exif-orientation-8",
    ),
    case(
        lambda: save(halves(RED, BLUE), "BMP"),
        Decoded((20, 40, 3), {(0, 0): BGR_RED, (19, 39): BGR_BLUE}),
        id="bmp-24bit",
    ),
    case(
        lambda: save(Image.new("L", (6, 4), 200), "BMP"),
        Decoded((4, 6, 3), {(3, 5): (200, 200, 200)}),
        id="bmp-8bit-palette",
    ),
    case(
        lambda: cv2.imencode(".webp", np.full((10, 12, 3), (255, 0, 0), np.uint8), [cv2.IMWRITE_WEBP_QUALITY, 95])[
            1
        ].tobytes(),
        Decoded((10, 12, 3), {(5, 5): BGR_BLUE}, atol=8),
        id="webp-lossy",
    ),
    case(
        lambda: save(Image.new("RGBA", (6, 4), (255, 0, 0, 0)), "WEBP", lossless=True),
        Decoded((4, 6, 3), {(1, 1): BGR_WHITE}),
        id="webp-lossless-transparent",
    ),
    case(
        lambda: animated("WEBP"),
        Decoded((24, 32, 3), {(0, 0): BGR_RED, (23, 31): BGR_RED}),
        id="webp-animated-first-frame",
    ),
    case(
        lambda: animated("PNG"),
        Decoded((24, 32, 3), {(0, 0): BGR_RED}),
        id="apng-first-frame",
    ),
    case(lambda: b64(png_of(BLUE)), Decoded((12, 16, 3), {(3, 3): BGR_BLUE}), id="base64"),
    case(
        lambda: base64.encodebytes(png_of(BLUE)).decode().rstrip("=\n"),
        Decoded((12, 16, 3), {(3, 3): BGR_BLUE}),
        id="base64-wrapped-unpadded",
    ),
    case(
        lambda: base64.urlsafe_b64encode(png_of(BLUE)).decode(),
        Decoded((12, 16, 3), {(3, 3): BGR_BLUE}),
        id="base64-urlsafe",
    ),
    case(
        lambda: "data:image/png;base64," + b64(png_of(GREEN)), Decoded((12, 16, 3), {(0, 0): BGR_GREEN}), id="data-url"
    ),
    case(
        lambda: "data:image/jpeg;base64," + b64(png_of(GREEN)),
        Decoded((12, 16, 3), {(0, 0): BGR_GREEN}),
        id="data-url-declared-type-ignored",
    ),
    case(
        lambda: "  DATA:IMAGE/PNG;BASE64,\n" + base64.encodebytes(png_of(GREEN)).decode(),
        Decoded((12, 16, 3), {(0, 0): BGR_GREEN}),
        id="data-url-uppercase-wrapped",
    ),
    case(lambda: bytearray(png_of(RED)), Decoded((12, 16, 3), {(0, 0): BGR_RED}), id="bytearray"),
    case(lambda: memoryview(png_of(RED)), Decoded((12, 16, 3), {(0, 0): BGR_RED}), id="memoryview"),
    case(
        lambda: png_of(RED, (100, 100)),
        Decoded((100, 100, 3), {(0, 0): BGR_RED}),
        id="at-max-pixels",
        max_pixels=10_000,
    ),
    # reduce_to: a large JPEG is decoded at 1/2, 1/4 or 1/8 (libjpeg), the longer side kept >= reduce_to
    case(
        lambda: save(halves(RED, BLUE, (1280, 720)), "JPEG", quality=95),
        Decoded((360, 640, 3), {(180, 100): BGR_RED, (180, 540): BGR_BLUE}, atol=6),
        id="jpeg-1280x720-reduced-to-640",
        reduce_to=640,
    ),
    case(
        lambda: save(halves(RED, BLUE, (1920, 1080)), "JPEG", quality=95),
        Decoded((540, 960, 3), {(270, 100): BGR_RED, (270, 900): BGR_BLUE}, atol=6),
        id="jpeg-1920x1080-reduced-to-960",
        reduce_to=640,
    ),
    case(
        lambda: save(halves(RED, BLUE, (2600, 40)), "JPEG", quality=95),
        Decoded((5, 325, 3), {(2, 20): BGR_RED, (2, 300): BGR_BLUE}, atol=8),
        id="jpeg-2600-wide-reduced-by-8-odd-height",
        reduce_to=300,
    ),
    case(
        lambda: save(halves(RED, BLUE, (1279, 720)), "JPEG", quality=95),
        Decoded((720, 1279, 3), {(360, 100): BGR_RED, (360, 1200): BGR_BLUE}, atol=6),
        id="jpeg-under-twice-reduce-to-kept",
        reduce_to=640,
    ),
    case(
        lambda: with_orientation(halves(RED, BLUE, (1280, 640)), "JPEG", 6),
        Decoded((640, 320, 3), {(100, 160): BGR_RED, (540, 160): BGR_BLUE}, atol=8),
        id="jpeg-reduced-then-exif-orientation-6",
        reduce_to=600,
    ),
    case(
        lambda: save(halves(RED, BLUE, (1280, 720)), "PNG"),
        Decoded((720, 1280, 3), {(360, 100): BGR_RED, (360, 1200): BGR_BLUE}),
        id="png-never-reduced",
        reduce_to=640,
    ),
]


@pytest.mark.parametrize(("make", "kwargs", "expected"), DECODE_CASES)
def test_decode_image(make: Callable[[], Any], kwargs: dict[str, Any], expected: Decoded | Refused) -> None:
    data = make()
    if isinstance(expected, Refused):
        with pytest.raises(FaceportError) as info:
            decode_image(data, **kwargs)
        assert info.value.code == expected.code
        for word in expected.words:
            assert word.lower() in info.value.message.lower(), info.value.message
        return
    image = decode_image(data, **kwargs)
    assert image.shape == expected.shape
    assert image.dtype == np.uint8
    assert image.flags.c_contiguous
    for (y, x), bgr in expected.pixels.items():
        np.testing.assert_allclose(image[y, x].astype(int), bgr, atol=expected.atol, err_msg=f"pixel (y={y}, x={x})")


def test_bomb_refused_fast_and_leaves_pillow_settings_alone() -> None:
    bomb = png_bomb()
    assert len(bomb) < 1_000_000  # the fixture itself must stay cheap
    max_image_pixels = Image.MAX_IMAGE_PIXELS
    start = time.perf_counter()
    with pytest.raises(FaceportError, match="pixels") as info:
        decode_image(bomb)
    # Decoding 400 Mpx takes seconds and hundreds of MB; refusing from the header takes microseconds.
    assert time.perf_counter() - start < 0.5
    assert info.value.details["pixels"] == 400_000_000
    assert Image.MAX_IMAGE_PIXELS == max_image_pixels
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(fmt: str, orientation: int) -> None:
    data = with_orientation(quadrants(), fmt, orientation)
    with Image.open(io.BytesIO(data)) as im:
        upright = ImageOps.exif_transpose(im).convert("RGB")
    expected = np.asarray(upright)[..., ::-1]
    image = decode_image(data)
    assert image.shape == expected.shape
    assert np.abs(image.astype(int) - expected).mean() < 1.5


def test_fast_and_pillow_paths_agree_on_a_photo_like_jpeg() -> None:
    rng = np.random.default_rng(0)
    bgr = cv2.GaussianBlur(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8), (9, 9), 0)
    data = encode_image(bgr, "jpeg", quality=90)
    with Image.open(io.BytesIO(data)) as im:
        reference = np.asarray(im.convert("RGB"))[..., ::-1]
    assert np.abs(decode_image(data).astype(int) - reference).mean() < 1.0


def test_decoded_image_is_owned_by_the_caller() -> None:
    data = png_of(RED)
    first = decode_image(data)
    first[:] = 0
    assert tuple(decode_image(data)[0, 0]) == BGR_RED


@pytest.mark.parametrize(
    ("image", "expected_bgr"),
    [
        pytest.param(Image.new("I", (2, 2), 65535), (255, 255, 255), id="I-max"),
        pytest.param(Image.new("I", (2, 2), 32768), (128, 128, 128), id="I-half"),
        pytest.param(Image.new("I;16", (2, 2), 257), (1, 1, 1), id="I16"),
        pytest.param(Image.new("F", (2, 2), 0.5), (128, 128, 128), id="F-unit-range"),
        pytest.param(Image.new("F", (2, 2), 200.0), (200, 200, 200), id="F-byte-range"),
        pytest.param(Image.new("1", (2, 2), 1), BGR_WHITE, id="1bit"),
        pytest.param(Image.new("CMYK", (2, 2), (0, 255, 255, 0)), BGR_RED, id="CMYK"),
        pytest.param(Image.new("LA", (2, 2), (0, 0)), BGR_WHITE, id="LA-transparent"),
        pytest.param(Image.new("RGBA", (2, 2), (0, 0, 255, 255)), BGR_BLUE, id="RGBA-opaque"),
        pytest.param(Image.new("YCbCr", (2, 2), (76, 85, 255)), BGR_RED, id="YCbCr"),
    ],
)
def test_every_pillow_mode_becomes_bgr(image: Image.Image, expected_bgr: tuple[int, int, int]) -> None:
    out = _pil_to_bgr(image)
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    np.testing.assert_allclose(out[1, 1].astype(int), expected_bgr, atol=2)


# --------------------------------------------------------------------------- sniffing


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(lambda: save(solid(RED), "JPEG"), "jpeg", id="jpeg"),
        pytest.param(lambda: png_of(RED), "png", id="png"),
        pytest.param(lambda: save(solid(RED), "BMP"), "bmp", id="bmp"),
        pytest.param(lambda: save(solid(RED), "WEBP"), "webp", id="webp"),
        pytest.param(lambda: animated("GIF"), "gif", id="gif"),
        pytest.param(lambda: save(solid(RED), "TIFF"), "tiff", id="tiff"),
        pytest.param(lambda: save(solid(RED), "PDF"), "pdf", id="pdf"),
        pytest.param(lambda: save(solid(RED), "ICO"), "ico", id="ico"),
        pytest.param(lambda: b"\x00\x00\x00\x1cftypheic" + bytes(20), "heic", id="heic"),
        pytest.param(lambda: b"\x00\x00\x00\x1cftypavif" + bytes(20), "avif", id="avif"),
        pytest.param(lambda: b"\xef\xbb\xbf  <svg width='1'/>", "svg", id="svg-bom"),
        pytest.param(lambda: b"BMW is a car maker", None, id="text-starting-BM"),
        pytest.param(lambda: b"", None, id="empty"),
    ],
)
def test_sniff_format(data: Callable[[], bytes], expected: str | None) -> None:
    assert sniff_format(data()) == expected


# --------------------------------------------------------------------------- data URLs, files, encoding


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("data:image/png;base64,aGk=", ("image/png", b"hi"), id="base64"),
        pytest.param("DATA:Image/PNG;name=x.png;BASE64,aGk", ("image/png", b"hi"), id="params-unpadded"),
        pytest.param("data:,hello%20world", (None, b"hello world"), id="percent-encoded-no-type"),
        pytest.param("data:image/png;base64", "malformed", id="no-comma"),
        pytest.param("https://example.com/a.png", "not a data url", id="not-data-url"),
        pytest.param("data:image/png;base64,@@@@", "base64", id="bad-payload"),
    ],
)
def test_parse_data_url(url: str, expected: tuple[str | None, bytes] | str) -> None:
    if isinstance(expected, str):
        with pytest.raises(FaceportError) as info:
            parse_data_url(url)
        assert info.value.code == "INVALID_IMAGE"
        assert expected in info.value.message.lower()
    else:
        assert parse_data_url(url) == expected


def smooth_image(h: int = 48, w: int = 64) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // w, y * 255 // h, (x + y) * 255 // (w + h)], axis=-1).astype(np.uint8)


@pytest.mark.parametrize(
    ("image", "fmt", "quality", "expected"),
    [
        pytest.param(smooth_image(), "png", 90, 0.0, id="png-lossless"),
        pytest.param(smooth_image(), "jpeg", 90, 3.0, id="jpeg"),
        pytest.param(smooth_image(), "jpeg", 5, 25.0, id="jpeg-low-quality"),
        pytest.param(smooth_image(), "webp", 90, 3.0, id="webp"),
        pytest.param(smooth_image()[:, :, 0], "png", 90, "shape (H, W, 3)", id="gray-2d-refused"),
        pytest.param(smooth_image().astype(np.float32), "png", 90, "uint8", id="float-refused"),
        pytest.param(smooth_image(), "gif", 90, "unknown format", id="gif-refused"),
        pytest.param(smooth_image(), "jpeg", 0, "quality", id="quality-0-refused"),
        pytest.param(smooth_image(), "jpeg", 101, "quality", id="quality-101-refused"),
    ],
)
def test_encode_image(image: np.ndarray, fmt: Any, quality: int, expected: float | str) -> None:
    before = image.copy()
    if isinstance(expected, str):
        with pytest.raises(ValueError, match=expected.replace("(", r"\(").replace(")", r"\)")):
            encode_image(image, fmt, quality=quality)
        return
    data = encode_image(image, fmt, quality=quality)
    assert sniff_format(data) == fmt
    decoded = decode_image(data)
    assert decoded.shape == image.shape
    assert np.abs(decoded.astype(int) - image).mean() <= expected
    np.testing.assert_array_equal(image, before)  # the caller's array is untouched


def test_data_url_round_trip() -> None:
    image = smooth_image()
    url = to_data_url(image, "png")
    media_type, payload = parse_data_url(url)
    assert media_type == "image/png"
    assert sniff_format(payload) == "png"
    np.testing.assert_array_equal(decode_image(url), image)
    assert to_data_url(image, "webp", quality=80).startswith("data:image/webp;base64,UklGR")


@pytest.mark.parametrize(
    ("name", "content", "kwargs", "expected"),
    [
        pytest.param(
            "photo.jpg", lambda: png_of(GREEN), {}, Decoded((12, 16, 3), {(0, 0): BGR_GREEN}), id="png-named-jpg"
        ),
        pytest.param(
            "photo.jpg", lambda: b"not a photo\n", {}, Refused("INVALID_IMAGE", ("text",)), id="text-named-jpg"
        ),
        pytest.param(
            "big.png", lambda: png_of(GREEN), {"max_bytes": 16}, Refused("FILE_TOO_LARGE", ("big.png",)), id="too-big"
        ),
    ],
)
def test_load_image_file(
    tmp_path: Path, name: str, content: Callable[[], bytes], kwargs: dict[str, Any], expected: Decoded | Refused
) -> None:
    path = tmp_path / name
    path.write_bytes(content())
    if isinstance(expected, Refused):
        with pytest.raises(FaceportError) as info:
            load_image_file(path, **kwargs)
        assert info.value.code == expected.code
        assert all(w.lower() in info.value.message.lower() for w in expected.words), info.value.message
        return
    image = load_image_file(path, **kwargs)
    assert image.shape == expected.shape
    for (y, x), bgr in expected.pixels.items():
        assert tuple(image[y, x]) == bgr


# --------------------------------------------------------------------------- real photos


def white_composited_bgr(path: Path) -> np.ndarray:
    """Independent reference: Pillow's own alpha compositing over white."""
    with Image.open(path) as im:
        rgba = ImageOps.exif_transpose(im).convert("RGBA")
    flat = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return np.asarray(flat)[..., ::-1]


@pytest.mark.skipif(not SHARED_DATA.is_dir() and not os.environ.get("CI"),  # in CI: fail, not skip
                    reason=f"shared test data not present at {SHARED_DATA}")
@pytest.mark.parametrize(
    ("relative", "shape", "grey"),
    [
        pytest.param("identity/obama/fr_obama2_32bit_rgba.png", (1200, 626, 3), False, id="obama-rgba-png"),
        pytest.param("faces_misc/pf_BWPictureHuman.jpg", (1912, 2560, 3), True, id="bw-jpeg"),
    ],
)
def test_real_photos_decode(relative: str, shape: tuple[int, int, int], grey: bool) -> None:
    path = SHARED_DATA / relative
    image = load_image_file(path)
    assert image.shape == shape
    assert image.dtype == np.uint8 and image.flags.c_contiguous
    assert image.std() > 10  # a photo, not a blank
    if grey:
        np.testing.assert_array_equal(image[..., 0], image[..., 1])
        np.testing.assert_array_equal(image[..., 1], image[..., 2])
    reference = white_composited_bgr(path)
    assert np.abs(image.astype(int) - reference).mean() < 1.0
