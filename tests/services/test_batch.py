"""Staging batch inputs: names are labels, limits hold while reading, damaged members are item errors."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest

from faceport.errors import FileTooLarge, InvalidInput, MissingField
from faceport.services.batch import OPERATIONS, Source, register_operation, safe_name, stage_sources
from tests.conftest import FIXTURES

GRACE = (FIXTURES / "mpl_grace_hopper.jpg").read_bytes()


@pytest.mark.parametrize(("raw", "label"), [
    ("../../etc/passwd", "etc/passwd"), ("/abs/x.jpg", "abs/x.jpg"), ("C:\\\\Users\\\\a.jpg", "C:/Users/a.jpg"),
    ("a/./b/../c.jpg", "a/b/c.jpg"), ("bell\x07.jpg", "bell.jpg"), ("", "fallback"), ("..", "fallback"),
    ("x" * 300 + ".jpg", ("x" * 300 + ".jpg")[-255:]),
])
def test_names_are_labels_never_paths(raw: str, label: str) -> None:
    assert safe_name(raw, "fallback") == label


def _stage(tmp_path: Path, sources: list[Source], **limits: int) -> list[dict]:
    options = {"max_items": 10, "max_total": 10 * 1024 * 1024, "max_image": 1024 * 1024, **limits}
    return stage_sources(sources, tmp_path / "staged", **options)


def test_files_text_and_archive_members_are_numbered_in_order(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("dir/", b"")
        archive.writestr("inner/one.jpg", GRACE)
    buffer.seek(0)
    items = _stage(tmp_path, [Source("a.jpg", "file", file=io.BytesIO(GRACE)), Source("b", "base64", text="abc="),
                              Source("set.zip", "zip", file=buffer)])
    assert [(i["index"], i["name"], i["file"], i["error"]) for i in items] == [
        (0, "a.jpg", "000000.img", None), (1, "b", "000001.b64", None), (2, "inner/one.jpg", "000002.img", None)]
    staged = tmp_path / "staged"
    assert (staged / "items" / "000000.img").read_bytes() == GRACE
    assert (staged / "items" / "000002.img").read_bytes() == GRACE
    assert json.loads((staged / "manifest.json").read_text())["items"] == items
    assert sorted(p.name for p in (staged / "items").iterdir()) == ["000000.img", "000001.b64", "000002.img"]


def test_a_damaged_member_is_an_item_error(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("good.jpg", GRACE)
        archive.writestr("bad.jpg", GRACE)
    data = bytearray(buffer.getvalue())
    offset = data.rfind(GRACE[1000:1100])  # corrupt the second member's bytes: its CRC no longer matches
    data[offset:offset + 100] = b"\0" * 100
    items = _stage(tmp_path, [Source("set.zip", "zip", file=io.BytesIO(bytes(data)))])
    assert [i["name"] for i in items] == ["good.jpg", "bad.jpg"]
    assert items[0]["error"] is None
    assert items[1]["error"]["code"] == "INVALID_FORMAT" and items[1]["file"] is None
    assert not (tmp_path / "staged" / "items" / "000001.img").exists()


@pytest.mark.parametrize(("sources", "limits", "error"), [
    ([Source(f"{i}.jpg", "base64", text="abc=") for i in range(11)], {}, InvalidInput),
    ([Source(f"{i}.jpg", "file", file=io.BytesIO(GRACE)) for i in range(3)], {"max_total": 2 * len(GRACE)},
     FileTooLarge),
    ([], {}, MissingField),
])
def test_submission_limits_refuse_the_whole_batch_and_leave_nothing(tmp_path: Path, sources: list[Source],
                                                                    limits: dict, error: type) -> None:
    with pytest.raises(error):
        _stage(tmp_path, sources, **limits)
    assert not (tmp_path / "staged").exists()


def test_an_image_over_the_per_image_limit_is_an_item_error(tmp_path: Path) -> None:
    items = _stage(tmp_path, [Source("big.jpg", "file", file=io.BytesIO(GRACE)),
                              Source("big64", "base64", text="A" * 3000)], max_image=1000)
    assert [i["error"]["code"] for i in items] == ["FILE_TOO_LARGE", "FILE_TOO_LARGE"]
    assert list((tmp_path / "staged" / "items").iterdir()) == []


def test_operations_register_once_by_name() -> None:
    def run(ctx, image, params, state):  # type: ignore[no-untyped-def]
        return {}

    register_operation("test-op", run)
    try:
        with pytest.raises(InvalidInput):
            register_operation("test-op", run)
        with pytest.raises(InvalidInput):
            register_operation("Bad Name", run)
        assert register_operation("test-op", run, replace=True).run is run
    finally:
        OPERATIONS.pop("test-op", None)
