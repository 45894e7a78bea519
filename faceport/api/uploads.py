"""Reading uploaded images: size limit while reading, then content-checked decoding on the thread pool."""

from __future__ import annotations

from fastapi import UploadFile

from faceport.api.context import AppContext
from faceport.engine.imageio import decode_image
from faceport.engine.types import BGRImage
from faceport.errors import FileTooLarge, MissingField

_CHUNK = 1 << 20


async def read_upload(upload: UploadFile, *, max_bytes: int) -> bytes:
    """Read an upload, refusing it as soon as it passes ``max_bytes``."""
    parts: list[bytes] = []
    total = 0
    while chunk := await upload.read(_CHUNK):
        total += len(chunk)
        if total > max_bytes:
            raise FileTooLarge(f"file exceeds the {max_bytes // (1024 * 1024)} MB limit",
                               details={"field": upload.filename or "file", "limit_bytes": max_bytes})
        parts.append(chunk)
    return b"".join(parts)


async def image_from_request(ctx: AppContext, *, upload: UploadFile | None, base64_text: str | None,
                             field: str = "image") -> BGRImage:
    """Decode an image given as a multipart file or a base64/data-URL field.

    Raises:
        MissingField: neither was given.
        FileTooLarge: over ``max_image_bytes``.
        InvalidImage: not a decodable JPEG/PNG/BMP/WebP within the pixel limit.
    """
    limit = ctx.settings.max_image_bytes
    if upload is not None:
        data: bytes | str = await read_upload(upload, max_bytes=limit)
    elif base64_text:
        if len(base64_text) > limit * 4 // 3 + 1024:
            raise FileTooLarge(f"image exceeds the {limit // (1024 * 1024)} MB limit", details={"field": field})
        data = base64_text
    else:
        raise MissingField(f"{field} is required (multipart file '{field}' or base64 field '{field}_base64')",
                           details={"field": field})
    return await ctx.run(decode_image, data, max_pixels=ctx.settings.max_image_pixels, max_bytes=limit)
