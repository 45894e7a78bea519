"""Request bodies that come either as multipart/form-data or as JSON, as seed D allows.

``read_fields`` returns one dict of field name → ``UploadFile`` | str | JSON value;
``validate_params`` turns it into a pydantic model, naming the bad field on failure;
``image_field`` decodes one image field (file or base64/data URL).
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from faceport.api.context import AppContext
from faceport.api.uploads import read_upload
from faceport.engine.imageio import decode_image
from faceport.engine.types import BGRImage
from faceport.errors import FileTooLarge, InvalidFormat, InvalidInput, MissingField

M = TypeVar("M", bound=BaseModel)


async def read_fields(request: Request) -> dict[str, Any]:
    """Parse a multipart/urlencoded form or a JSON object into one field dict.

    Raises:
        InvalidFormat: another content type, or JSON that is not an object.
    """
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidFormat(f"request body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise InvalidFormat("JSON body must be an object")
        return body
    if content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        form = await request.form(max_part_size=request.app.state.settings.max_image_bytes * 4 // 3 + 4096)
        fields: dict[str, Any] = {}
        for key, value in form.multi_items():
            fields.setdefault(key, value)
        return fields
    if not content_type:
        return {}
    raise InvalidFormat(f"unsupported content type {content_type!r}; send multipart/form-data or application/json",
                        details={"content_type": content_type})


def validate_params(model: type[M], fields: dict[str, Any], *, exclude: tuple[str, ...] = ()) -> M:
    """Validate the non-file fields against ``model``.

    Raises:
        MissingField / InvalidInput: naming the first bad field in ``details.field``.
    """
    data = {k: v for k, v in fields.items() if k not in exclude and not isinstance(v, UploadFile)}
    for key, value in list(data.items()):
        if value == "" and key in model.model_fields:
            data.pop(key)  # an empty form field means "not given"
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "request"
        error_cls = MissingField if first["type"] == "missing" else InvalidInput
        raise error_cls(f"{field}: {first['msg']}", details={"field": field, "errors": json.loads(exc.json())}) \
            from None


async def image_field(ctx: AppContext, fields: dict[str, Any], name: str, *, required: bool = True) -> BGRImage | None:
    """Decode the image in field ``name`` (a file, or base64/data URL in ``name`` or ``name_base64``).

    Raises:
        MissingField: required and absent. FileTooLarge, InvalidImage: as ``decode_image``.
    """
    value = fields.get(name)
    if value is None or value == "":
        value = fields.get(f"{name}_base64")
    if value is None or value == "":
        if required:
            raise MissingField(f"{name} is required (multipart file or base64 string)", details={"field": name})
        return None
    limit = ctx.settings.max_image_bytes
    if isinstance(value, UploadFile):
        data: bytes | str = await read_upload(value, max_bytes=limit)
    elif isinstance(value, str):
        if len(value) > limit * 4 // 3 + 1024:
            raise FileTooLarge(f"{name} exceeds the {limit // (1024 * 1024)} MB limit", details={"field": name})
        data = value
    else:
        raise InvalidInput(f"{name} must be a file or a base64 string", details={"field": name})
    return await ctx.run(decode_image, data, max_pixels=ctx.settings.max_image_pixels, max_bytes=limit)


def body_doc(params: type[BaseModel], images: dict[str, str]) -> dict[str, Any]:
    """OpenAPI ``requestBody`` for a route taking image fields plus ``params``, as multipart or JSON."""
    schema = params.model_json_schema()
    props = dict(schema.get("properties", {}))
    multipart = {"type": "object", "properties": {**{k: {"type": "string", "format": "binary", "description": d}
                                                     for k, d in images.items()}, **props}}
    as_json = {"type": "object", "properties": {**{k: {"type": "string", "description": d + " (base64 or data URL)"}
                                                   for k, d in images.items()}, **props}}
    return {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": multipart},
        "application/json": {"schema": as_json},
    }}}
