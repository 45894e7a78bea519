"""Image decoding and encoding: bytes, base64 or data URLs in, BGR uint8 arrays out.

Every image a user sends passes through :func:`decode_image`, so it is both the
security gate (format by content, pixel limit checked from the header before any
pixel buffer exists, truncated files refused) and a hot path (every webcam frame):
plain 8-bit JPEG/PNG/BMP/WebP go to ``cv2.imdecode``; CMYK, 16-bit, palette,
alpha, animated and EXIF-in-PNG images go through Pillow, which handles their modes.

Nothing here mutates process-wide Pillow state (``Image.MAX_IMAGE_PIXELS``,
``ImageFile.LOAD_TRUNCATED_IMAGES``): limits are checked per call.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import os
import re
import struct
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, cast

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

from faceport.engine.types import BGRImage
from faceport.errors import FileTooLarge, InvalidImage

__all__ = [
    "ALLOWED_FORMATS",
    "EncodeFormat",
    "decode_image",
    "encode_image",
    "load_image_file",
    "parse_data_url",
    "sniff_format",
    "to_data_url",
]

logger = logging.getLogger(__name__)

EncodeFormat = Literal["jpeg", "png", "webp"]

ALLOWED_FORMATS: Final[tuple[str, ...]] = ("jpeg", "png", "bmp", "webp")
"""Formats :func:`decode_image` accepts, as named by :func:`sniff_format`."""

_PIL_FORMAT: Final[dict[str, str]] = {"jpeg": "JPEG", "png": "PNG", "bmp": "BMP", "webp": "WEBP"}
_ALLOWED_TEXT: Final = "JPEG, PNG, BMP, WebP"

# Orientation is applied by us (same code for both decoders), so cv2 must not apply it too.
_CV2_FLAGS: Final = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
_EXIF_ORIENTATION: Final = 0x0112

# Pillow raises these for corrupt, truncated or unsupported content (SyntaxError from
# header parsers, struct.error/IndexError from short reads in some plugins).
_PIL_ERRORS: Final = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError)

_BMP_HEADER_SIZES: Final = frozenset({12, 16, 40, 52, 56, 64, 108, 124})
_PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
_PNG_EXIF_KEYWORDS: Final = frozenset({b"Raw profile type exif", b"Raw profile type APP1"})
_PNG_XMP_KEYWORD: Final = b"XML:com.adobe.xmp"
_HEIF_BRANDS: Final = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"})
_BASE64_IMAGE_PREFIXES: Final = (b"/9j/", b"iVBORw0KGgo", b"UklGR", b"Qk", b"R0lGOD")
_URLSAFE_TO_STD: Final = str.maketrans("-_", "+/")
_BASE64_ALPHABET: Final = re.compile(r"[A-Za-z0-9+/]*")
_DATA_URL_MAX_HEADER: Final = 256
_XMP_ORIENTATION: Final = re.compile(r'tiff:Orientation(?:="|>)([1-8])')


# --------------------------------------------------------------------------- sniffing


def sniff_format(data: bytes | bytearray | memoryview) -> str | None:
    """Name an image format from its leading bytes (magic numbers), never from a name.

    Args:
        data: The file's bytes; only the first kilobyte is read.

    Returns:
        One of ``"jpeg"``, ``"png"``, ``"bmp"``, ``"webp"`` (the formats
        :func:`decode_image` accepts) or ``"gif"``, ``"tiff"``, ``"ico"``, ``"heic"``,
        ``"avif"``, ``"mp4"``, ``"jpeg2000"``, ``"jxl"``, ``"psd"``, ``"pdf"``,
        ``"svg"``; ``None`` when the bytes match none of them.

    Examples:
        >>> sniff_format(b"\\x89PNG\\r\\n\\x1a\\n" + bytes(24))
        'png'
        >>> sniff_format(b"GIF89a....")
        'gif'
        >>> sniff_format(b"hello") is None
        True
    """
    head = bytes(data[:1024])
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(_PNG_SIGNATURE):
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return "tiff"
    if head.startswith(b"BM") and len(head) >= 18 and int.from_bytes(head[14:18], "little") in _BMP_HEADER_SIZES:
        return "bmp"
    if head.startswith(b"%PDF-"):
        return "pdf"
    if head.startswith((b"\x00\x00\x01\x00", b"\x00\x00\x02\x00")) and len(head) >= 6 and head[4:6] != b"\x00\x00":
        return "ico"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return "avif"
        return "heic" if brand in _HEIF_BRANDS else "mp4"
    if head.startswith((b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"\xff\x4f\xff\x51")):
        return "jpeg2000"
    if head.startswith((b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n")):
        return "jxl"
    if head.startswith(b"8BPS"):
        return "psd"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith(b"<svg") or (text.startswith((b"<?xml", b"<!doctype svg")) and b"<svg" in text):
        return "svg"
    return None


def _describe_unknown(data: bytes) -> str:
    """Say what unrecognised bytes look like, for an error message."""
    head = data[:512]
    if head.startswith(b"data:"):
        return "a data URL passed as bytes (pass it as str)"
    sample = head.decode("utf-8", errors="replace")
    if sample.count("\ufffd") <= 1 and all(ch.isprintable() or ch in "\t\r\n\ufffd" for ch in sample):
        if head.lstrip().startswith(_BASE64_IMAGE_PREFIXES):
            return "base64 text passed as bytes (pass it as str)"
        if head.lstrip()[:1] == b"<":
            return "HTML/XML text"
        return "text"
    return "unrecognised binary data"


# --------------------------------------------------------------------------- header parsing


@dataclass(frozen=True, slots=True)
class _Header:
    """What a format's own header says, read without decoding any pixels."""

    width: int
    height: int
    # The bytes look complete and plain enough for cv2 (8-bit, no alpha key, no
    # animation, no EXIF that Pillow must read after the pixels); else Pillow decodes.
    cv2_ok: bool


def _corrupt(fmt: str, what: str) -> InvalidImage:
    return InvalidImage(f"corrupt {fmt.upper()} header: {what}", details={"format": fmt})


def _jpeg_header(data: bytes) -> _Header:
    n = len(data)
    pos = 2
    while pos < n:
        if data[pos] != 0xFF:
            # libjpeg skips stray bytes before a marker; do the same.
            nxt = data.find(b"\xff", pos)
            if nxt < 0:
                break
            pos = nxt
            continue
        if pos + 1 >= n:
            break
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            pos += 2
            continue
        if marker in (0xD9, 0xDA):
            raise _corrupt("jpeg", "image data starts before a frame header (SOF)")
        if pos + 4 > n:
            break
        seg_len = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if pos + 10 > n:
                break
            height = int.from_bytes(data[pos + 5 : pos + 7], "big")
            width = int.from_bytes(data[pos + 7 : pos + 9], "big")
            components = data[pos + 9]
            # cv2 decodes a JPEG cut short into a grey-filled image instead of failing;
            # Pillow raises, so anything not ending in EOI goes to Pillow.
            ends_with_eoi = data[-32:].rstrip(b"\x00\r\n ").endswith(b"\xff\xd9")
            return _Header(width, height, cv2_ok=components in (1, 3) and ends_with_eoi)
        if seg_len < 2:
            raise _corrupt("jpeg", f"segment length {seg_len} at offset {pos}")
        pos += 2 + seg_len
    raise InvalidImage("truncated JPEG: no frame header (SOF) found", details={"format": "jpeg"})


def _png_header(data: bytes) -> _Header:
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise _corrupt("png", "IHDR chunk missing")
    width, height, bit_depth, colour_type = struct.unpack(">IIBB", data[16:26])
    cv2_ok = bit_depth == 8 and colour_type in (0, 2)  # 8-bit grey or RGB, no alpha channel
    complete = False
    seen_idat = False
    pos, n = 8, len(data)
    while pos + 8 <= n:
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if kind == b"IEND":
            complete = end <= n
            break
        if kind == b"IDAT":
            seen_idat = True
        elif kind in (b"tRNS", b"acTL", b"eXIf"):
            # colour-key transparency, APNG, EXIF orientation: Pillow handles these.
            cv2_ok = False
        elif kind in (b"tEXt", b"zTXt", b"iTXt"):
            keyword = data[pos + 8 : min(pos + 8 + 80, end)].split(b"\x00", 1)[0]
            if keyword in _PNG_EXIF_KEYWORDS or (seen_idat and keyword == _PNG_XMP_KEYWORD):
                cv2_ok = False
        pos = end
    return _Header(width, height, cv2_ok=cv2_ok and complete)


def _webp_header(data: bytes) -> _Header:
    if len(data) < 30:
        raise _corrupt("webp", f"only {len(data)} bytes")
    complete = len(data) >= int.from_bytes(data[4:8], "little") + 8
    chunk = data[12:16]
    if chunk == b"VP8 ":
        if data[23:26] != b"\x9d\x01\x2a":
            raise _corrupt("webp", "VP8 start code missing")
        width = int.from_bytes(data[26:28], "little") & 0x3FFF
        height = int.from_bytes(data[28:30], "little") & 0x3FFF
        return _Header(width, height, cv2_ok=complete)
    if chunk == b"VP8L":
        if data[20] != 0x2F:
            raise _corrupt("webp", "VP8L signature missing")
        bits = int.from_bytes(data[21:25], "little")
        return _Header((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, cv2_ok=complete)
    if chunk == b"VP8X":
        animated = bool(data[20] & 0x02)
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return _Header(width, height, cv2_ok=complete and not animated)
    raise _corrupt("webp", f"unknown first chunk {chunk!r}")


def _bmp_header(data: bytes) -> _Header:
    if len(data) < 26:
        raise _corrupt("bmp", f"only {len(data)} bytes")
    dib_size = int.from_bytes(data[14:18], "little")
    if dib_size == 12:  # OS/2 BITMAPCOREHEADER
        width, height = struct.unpack("<HH", data[18:22])
        bpp, compression = int.from_bytes(data[24:26], "little"), 0
    else:
        if len(data) < 34:
            raise _corrupt("bmp", f"only {len(data)} bytes")
        width, height = struct.unpack("<ii", data[18:26])
        bpp = int.from_bytes(data[28:30], "little")
        compression = int.from_bytes(data[30:34], "little")
    if width < 0:
        raise _corrupt("bmp", f"negative width {width}")
    height = abs(height)  # negative height means rows are stored top-down
    pixel_offset = int.from_bytes(data[10:14], "little")
    stride = ((width * bpp + 31) // 32) * 4
    complete = len(data) >= pixel_offset + stride * height
    return _Header(width, height, cv2_ok=compression == 0 and bpp in (24, 32) and complete)


_HEADER_READERS: Final = {"jpeg": _jpeg_header, "png": _png_header, "webp": _webp_header, "bmp": _bmp_header}


def _check_dimensions(width: int, height: int, *, max_pixels: int, min_side: int) -> None:
    pixels = width * height
    details = {"width": width, "height": height, "pixels": pixels, "max_pixels": max_pixels, "min_side": min_side}
    if pixels > max_pixels:
        raise InvalidImage(
            f"image is {width}x{height} = {pixels:,} pixels, over the limit of {max_pixels:,} pixels",
            details=details,
        )
    if min(width, height) < min_side:
        raise InvalidImage(f"image is {width}x{height}, a side is below min_side={min_side}", details=details)


# --------------------------------------------------------------------------- conversion


def _apply_orientation(image: BGRImage, orientation: int) -> BGRImage:
    """Turn an image stored with EXIF orientation 1..8 upright (same result as Pillow's exif_transpose)."""
    # cv2's stubs return a generic MatLike; flip/rotate/transpose keep the uint8 depth.
    if orientation == 2:
        return cast(BGRImage, cv2.flip(image, 1))
    if orientation == 3:
        return cast(BGRImage, cv2.rotate(image, cv2.ROTATE_180))
    if orientation == 4:
        return cast(BGRImage, cv2.flip(image, 0))
    if orientation == 5:
        return cast(BGRImage, cv2.transpose(image))
    if orientation == 6:
        return cast(BGRImage, cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE))
    if orientation == 7:
        return cast(BGRImage, cv2.flip(cv2.transpose(image), -1))
    if orientation == 8:
        return cast(BGRImage, cv2.rotate(image, cv2.ROTATE_90_COUNTERCLOCKWISE))
    return image


def _exif_orientation(im: Image.Image) -> int:
    """EXIF (or XMP) orientation, 1 when absent or unreadable: a broken tag must not lose the photo."""
    try:
        value = im.getexif().get(_EXIF_ORIENTATION, 1)
    except _PIL_ERRORS as exc:
        logger.debug("ignoring unreadable EXIF: %s", exc)
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _png_xmp_orientation(im: Image.Image) -> int:
    """Orientation from a PNG's XMP read at open; Pillow's getexif would decode all pixels to look."""
    xmp = im.info.get("XML:com.adobe.xmp")
    match = _XMP_ORIENTATION.search(xmp) if isinstance(xmp, str) else None
    return int(match[1]) if match else 1


def _scale_16bit(values: NDArray[np.generic]) -> NDArray[np.uint8]:
    """Map 0..65535 onto 0..255 with rounding (65535 -> 255, 32768 -> 128, 257 -> 1)."""
    wide: NDArray[np.uint32] = np.clip(values, 0, 65535).astype(np.uint32)
    return ((wide * 255 + 32767) // 65535).astype(np.uint8)


def _gray_to_bgr(gray: NDArray[np.uint8]) -> BGRImage:
    return cast(BGRImage, cv2.cvtColor(np.ascontiguousarray(gray), cv2.COLOR_GRAY2BGR))


def _composite_over_white(rgba: NDArray[np.uint8]) -> BGRImage:
    """Flatten straight (non-premultiplied) RGBA onto white; returns BGR."""
    rgb = rgba[..., :3].astype(np.uint16)
    alpha = rgba[..., 3:4].astype(np.uint16)
    flat = (255 - ((255 - rgb) * alpha + 127) // 255).astype(np.uint8)
    return cast(BGRImage, cv2.cvtColor(flat, cv2.COLOR_RGB2BGR))


def _pil_to_bgr(im: Image.Image) -> BGRImage:
    """Convert a loaded Pillow image of any mode to (H, W, 3) uint8 BGR.

    16-bit grey (``I;16*``, and ``I``, taken as 0..65535 as PNG produces it) is scaled,
    not clipped; ``F`` is taken as 0..1 when all values lie there, else clipped to
    0..255. Alpha and palette/colour-key transparency are composited over white.
    """
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":
        return _gray_to_bgr(_scale_16bit(np.asarray(im)))
    if mode == "F":
        values = np.nan_to_num(np.asarray(im, dtype=np.float32))
        if values.size and values.min() >= 0.0 and values.max() <= 1.0:
            values = values * 255.0
        return _gray_to_bgr(np.clip(np.rint(values), 0, 255).astype(np.uint8))
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
    if has_alpha:
        return _composite_over_white(np.asarray(im.convert("RGBA")))
    if mode in ("L", "1"):
        return _gray_to_bgr(np.asarray(im.convert("L")))
    rgb = np.asarray(im if mode == "RGB" else im.convert("RGB"))  # CMYK, YCbCr, P, LAB, HSV, RGBX
    return cast(BGRImage, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


_CV2_REDUCED: Final[dict[int, int]] = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                                       8: cv2.IMREAD_REDUCED_COLOR_8}


def _jpeg_scale(fmt: str, header: _Header, reduce_to: int | None) -> int:
    """The largest libjpeg scale-down (2, 4 or 8) that keeps the longer side at least ``reduce_to``; else 1."""
    if fmt != "jpeg" or not reduce_to:
        return 1
    side = max(header.width, header.height)
    return next((n for n in (8, 4, 2) if side // n >= reduce_to), 1)


def _decode_cv2(data: bytes, header: _Header, scale: int = 1) -> BGRImage | None:
    """Decode with OpenCV (a JPEG at 1/``scale`` size by libjpeg's DCT scaling); ``None`` when it fails or
    disagrees with the header (Pillow then decides)."""
    flags = _CV2_FLAGS if scale == 1 else _CV2_REDUCED[scale] | cv2.IMREAD_IGNORE_ORIENTATION
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error as exc:
        logger.debug("cv2.imdecode failed, falling back to Pillow: %s", exc)
        return None
    expected = (-(-header.height // scale), -(-header.width // scale), 3)
    if image is None or image.dtype != np.uint8 or image.shape != expected:
        return None
    return cast(BGRImage, image)  # dtype checked just above


# --------------------------------------------------------------------------- input handling


def _b64decode(text: str) -> bytes:
    """Decode standard or URL-safe base64, ignoring whitespace and missing padding."""
    compact = "".join(text.split()).translate(_URLSAFE_TO_STD).rstrip("=")
    if not compact:
        return b""
    if len(compact) % 4 == 1 and _BASE64_ALPHABET.fullmatch(compact):
        raise InvalidImage("not valid base64: its length is impossible (truncated?)", details={"reason": "base64"})
    try:
        return base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidImage(
            "not valid base64: a string must be base64 or a data: URL (use load_image_file for paths)",
            details={"reason": "base64"},
        ) from exc


def parse_data_url(s: str) -> tuple[str | None, bytes]:
    """Split a ``data:`` URL into its media type and payload bytes.

    Accepts ``data:[<media type>][;params][;base64],<payload>``; a base64 payload may
    be URL-safe, wrapped or unpadded, a non-base64 payload is percent-decoded.

    Args:
        s: The URL.

    Returns:
        ``(media_type, payload)``: the media type lower-cased without parameters
        (``"image/png"``), or ``None`` when the URL names none; the payload may be empty.

    Raises:
        InvalidImage: ``s`` is not a data URL, has no ``,`` after its header, or its
            base64 payload does not decode.

    Examples:
        >>> parse_data_url("data:image/png;base64,aGk=")
        ('image/png', b'hi')
    """
    text = s.strip()
    if text[:5].lower() != "data:":
        raise InvalidImage("not a data URL: it must start with 'data:'", details={"reason": "data_url"})
    header, comma, payload = text[5:].partition(",")
    if not comma or len(header) > _DATA_URL_MAX_HEADER:
        raise InvalidImage(
            "malformed data URL: expected 'data:<type>;base64,<payload>'", details={"reason": "data_url"}
        )
    params = [p.strip().lower() for p in header.split(";")]
    media_type = params[0] or None
    if "base64" in params[1:]:
        return media_type, _b64decode(payload)
    return media_type, urllib.parse.unquote_to_bytes(payload)


def _input_bytes(data: bytes | bytearray | memoryview | str, max_bytes: int | None) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    if not isinstance(data, str):
        raise TypeError(f"decode_image expects bytes, bytearray, memoryview or str, got {type(data).__name__}")
    # Refuse an oversized base64 string before spending memory on decoding it.
    if max_bytes is not None and len(data) // 4 * 3 > max_bytes * 1.1 + 1024:
        raise FileTooLarge(
            f"encoded image of {len(data):,} characters exceeds the limit of {max_bytes:,} bytes",
            details={"max_bytes": max_bytes},
        )
    if data[:64].lstrip()[:5].lower() == "data:":
        media_type, payload = parse_data_url(data)
        if media_type is not None and not media_type.startswith("image/") and media_type != "application/octet-stream":
            raise InvalidImage(
                f"data URL media type {media_type!r} is not an image; allowed: {_ALLOWED_TEXT}",
                details={"media_type": media_type, "allowed": list(ALLOWED_FORMATS)},
            )
        return payload
    return _b64decode(data)


# --------------------------------------------------------------------------- public API


def decode_image(
    data: bytes | bytearray | memoryview | str,
    *,
    max_pixels: int = 50_000_000,
    max_bytes: int | None = None,
    min_side: int = 1,
    reduce_to: int | None = None,
) -> BGRImage:
    """Decode an uploaded image into an upright BGR array.

    The format is decided by content (magic bytes), never by a file name or a declared
    media type; only JPEG, PNG, BMP and WebP are accepted. Width and height are read
    from the format's header and checked against ``max_pixels`` before any pixel
    buffer is allocated, so decompression bombs cost microseconds.

    Conversions: EXIF/XMP orientation is applied; grey and palette images become
    three equal/looked-up channels; alpha (RGBA, LA, palette or colour-key
    transparency) is composited over white; CMYK JPEG is converted by Pillow;
    16-bit samples are scaled to 8 bit (65535 -> 255), not clipped; animated WebP
    and APNG yield their first frame.

    Args:
        data: Raw file bytes; or a ``str`` holding base64 (standard or URL-safe,
            whitespace and missing padding tolerated) or a ``data:image/...`` URL.
        max_pixels: Largest ``width * height`` accepted.
        max_bytes: Largest encoded size in bytes accepted, or ``None`` for no limit.
        min_side: Smallest width and height accepted (default 1: a 1x1 image decodes;
            callers with a real minimum pass it here).
        reduce_to: When set, a JPEG whose longer side is at least twice this is decoded at
            1/2, 1/4 or 1/8 size (libjpeg's DCT scaling: much cheaper than a full decode and a
            resize), the largest step that keeps the longer side at least ``reduce_to``. Other
            formats, and JPEGs that only Pillow decodes, keep their full size.

    Returns:
        C-contiguous uint8 array of shape (H, W, 3), channels in BGR order, owned by
        the caller (never shared with another call).

    Raises:
        InvalidImage: Empty input; bad base64 or data URL; a data URL whose media type
            is not an image; a format other than JPEG/PNG/BMP/WebP (the message names
            what was detected); more than ``max_pixels`` pixels or a side below
            ``min_side``; a corrupt or truncated file.
        FileTooLarge: The encoded image is larger than ``max_bytes``.
        TypeError: ``data`` is not bytes-like or str.
    """
    raw = _input_bytes(data, max_bytes)
    if not raw:
        raise InvalidImage("empty image data", details={"reason": "empty"})
    if max_bytes is not None and len(raw) > max_bytes:
        raise FileTooLarge(
            f"image is {len(raw):,} bytes, over the limit of {max_bytes:,} bytes",
            details={"size": len(raw), "max_bytes": max_bytes},
        )

    fmt = sniff_format(raw)
    if fmt not in ALLOWED_FORMATS:
        detected = fmt.upper() if fmt is not None else _describe_unknown(raw)
        raise InvalidImage(
            f"unsupported image format: {detected}; allowed: {_ALLOWED_TEXT}",
            details={"detected": fmt, "allowed": list(ALLOWED_FORMATS)},
        )

    header = _HEADER_READERS[fmt](raw)
    _check_dimensions(header.width, header.height, max_pixels=max_pixels, min_side=min_side)

    try:
        with Image.open(io.BytesIO(raw), formats=[_PIL_FORMAT[fmt]]) as im:
            # Lazy open: only headers were read. Re-check in case Pillow reads a
            # different size than our parser (multiple frame headers, odd BMPs).
            _check_dimensions(im.width, im.height, max_pixels=max_pixels, min_side=min_side)
            plain = im.mode in ("RGB", "L") and "transparency" not in im.info and not getattr(im, "is_animated", False)
            if header.cv2_ok and plain:
                # PNG EXIF that Pillow would only find by loading pixels made cv2_ok False.
                if fmt == "png":
                    orientation = _png_xmp_orientation(im)
                else:
                    orientation = 1 if fmt == "bmp" else _exif_orientation(im)
                fast = _decode_cv2(raw, header, _jpeg_scale(fmt, header, reduce_to))
                if fast is not None:
                    return _apply_orientation(fast, orientation)
                logger.debug("cv2 could not decode a %s image; decoding with Pillow", fmt)
            im.load()
            orientation = 1 if fmt == "bmp" else _exif_orientation(im)
            image = _pil_to_bgr(im)
    except Image.DecompressionBombError as exc:
        raise InvalidImage(f"image is over Pillow's pixel limit: {exc}", details={"max_pixels": max_pixels}) from exc
    except UnidentifiedImageError as exc:  # its str() is the repr of our BytesIO: say something useful
        raise InvalidImage(
            f"corrupt {fmt.upper()} image: Pillow cannot read its header", details={"format": fmt}
        ) from exc
    except _PIL_ERRORS as exc:
        raise InvalidImage(f"corrupt or truncated {fmt.upper()} image: {exc}", details={"format": fmt}) from exc
    return np.ascontiguousarray(_apply_orientation(image, orientation))


def load_image_file(
    path: str | os.PathLike[str],
    *,
    max_pixels: int = 50_000_000,
    max_bytes: int | None = None,
    min_side: int = 1,
) -> BGRImage:
    """Read an image file and decode it with :func:`decode_image` (content decides the format).

    Args:
        path: File to read.
        max_pixels: As for :func:`decode_image`.
        max_bytes: As for :func:`decode_image`; checked from the file size before reading.
        min_side: As for :func:`decode_image`.

    Returns:
        C-contiguous uint8 array of shape (H, W, 3), BGR.

    Raises:
        InvalidImage: As for :func:`decode_image`.
        FileTooLarge: The file is larger than ``max_bytes``.
        OSError: The file cannot be read (missing, permissions).
    """
    file = Path(path)
    if max_bytes is not None and (size := file.stat().st_size) > max_bytes:
        raise FileTooLarge(
            f"{file.name} is {size:,} bytes, over the limit of {max_bytes:,} bytes",
            details={"size": size, "max_bytes": max_bytes},
        )
    return decode_image(file.read_bytes(), max_pixels=max_pixels, max_bytes=max_bytes, min_side=min_side)


_ENCODE_EXT: Final[dict[str, str]] = {"jpeg": ".jpg", "png": ".png", "webp": ".webp"}


def encode_image(image: BGRImage, fmt: EncodeFormat = "jpeg", *, quality: int = 90) -> bytes:
    """Encode a BGR image as JPEG, PNG or WebP.

    Args:
        image: uint8 array of shape (H, W, 3), BGR order; not modified.
        fmt: Output format.
        quality: 1..100 for JPEG and WebP (higher is better); PNG is lossless and
            ignores it.

    Returns:
        The encoded file's bytes.

    Raises:
        ValueError: ``image`` is not (H, W, 3) uint8, ``fmt`` is unknown or
            ``quality`` is outside 1..100.
        InvalidImage: OpenCV refused to encode the image (e.g. a side over 65500 for JPEG).

    Examples:
        >>> encode_image(np.zeros((2, 2, 3), np.uint8), "png")[:4]
        b'\\x89PNG'
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise ValueError(f"encode_image: expected uint8 array of shape (H, W, 3), got {dtype} {shape}")
    if fmt not in _ENCODE_EXT:
        raise ValueError(f"encode_image: unknown format {fmt!r}; expected one of {sorted(_ENCODE_EXT)}")
    if not 1 <= quality <= 100:
        raise ValueError(f"encode_image: quality must be in 1..100, got {quality}")
    params: list[int] = []
    if fmt == "jpeg":
        params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    elif fmt == "webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, quality]
    try:
        ok, buf = cv2.imencode(_ENCODE_EXT[fmt], image, params)
    except cv2.error as exc:
        raise InvalidImage(f"cannot encode a {image.shape[1]}x{image.shape[0]} image as {fmt}: {exc}") from exc
    if not ok:
        raise InvalidImage(f"cannot encode a {image.shape[1]}x{image.shape[0]} image as {fmt}")
    return bytes(buf.tobytes())


def to_data_url(image: BGRImage, fmt: EncodeFormat = "jpeg", *, quality: int = 90) -> str:
    """Encode a BGR image as a ``data:image/<fmt>;base64,...`` URL.

    Args:
        image: uint8 array of shape (H, W, 3), BGR order.
        fmt: Output format.
        quality: As for :func:`encode_image`.

    Returns:
        The data URL.

    Raises:
        ValueError: As for :func:`encode_image`.
        InvalidImage: As for :func:`encode_image`.

    Examples:
        >>> to_data_url(np.zeros((1, 1, 3), np.uint8), "png")[:22]
        'data:image/png;base64,'
    """
    payload = base64.b64encode(encode_image(image, fmt, quality=quality)).decode("ascii")
    return f"data:image/{fmt};base64,{payload}"
