"""The audit report (``"report": true``): its boxes are the pixels that changed, one entry per output frame,
and the audio spans it lists are the ones bleeped — on real files of ../shared/data."""

from __future__ import annotations

import json
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from faceport.services.privacy import parse_config, redact_file
from faceport.services.privacy_report import report_path
from tests.privacy_judge import read_frames

PRIVACY_MODELS = ("centerface", "ppocr_v4_det", "ppocr_v4_rec", "ppocr_cls", "plate_cascades", "whisper_tiny_en",
                  "spacy_en_core_web_sm")
FACE_WHYS = {"detected", "continued", "confirmed", "tracked", "held"}


@pytest.fixture(scope="module")
def cache(models_dir: Path):  # type: ignore[no-untyped-def]
    from faceport.engine.models import ModelCache, ModelStore

    store = ModelStore(models_dir)
    missing = [n for n in PRIVACY_MODELS if not store.is_installed(n)]
    if missing:
        assert all(r.installed for r in store.pull(missing))
    cache = ModelCache(store, idle_ttl=0)
    yield cache
    cache.close()


def _mask(shape: tuple[int, ...], boxes: list[list[int]], grow: int = 0) -> np.ndarray:
    mask = np.zeros(shape[:2], bool)
    for x1, y1, x2, y2 in boxes:
        mask[max(0, y1 - grow):y2 + grow, max(0, x1 - grow):x2 + grow] = True
    return mask


def test_image_report_boxes_are_exactly_the_pixels_replaced(cache, data_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Solid blur on the fake ID card (PNG, lossless): inside every reported box the output is black, outside
    them it is the input unchanged; the face has its detector and score, text its entity; no personal text."""
    source = data_dir / "synthetic" / "synth_id_card_fake_pii.png"
    target = tmp_path / "card.png"
    config = parse_config({"video": {"text_detection": True, "plate_detection": False, "blur": {"type": "solid"}},
                           "report": True})
    result = redact_file(cache, source, target, config)
    assert result.report == report_path(target) and result.report.is_file()
    text = result.report.read_text()
    report = json.loads(text)
    assert report["media"] == "image" and report["text_included"] is False
    assert (report["width"], report["height"]) == (800, 500)
    [frame] = report["frames"]
    regions = frame["regions"]
    before, after = cv2.imread(str(source)), cv2.imread(str(target))
    boxes = [r["box"] for r in regions]
    inside = _mask(before.shape, boxes)
    assert np.array_equal(after[~inside], before[~inside]), "a pixel outside every reported box changed"
    assert (after[inside] == 0).all(), "a reported box was not (wholly) replaced"
    faces = [r for r in regions if r["kind"] == "face"]
    assert len(faces) == 1 and faces[0]["why"] == "detected" and faces[0]["detector"] == "centerface"
    assert faces[0]["score"] >= 0.4
    whys = {r["why"] for r in regions if r["kind"] == "text"}
    assert {"name", "phone", "email"} <= whys
    assert report["summary"]["regions"] == len(regions)
    lowered = text.lower()
    for secret in ("smith", "john", "555-0134", "evergreen", "x1234567"):
        assert secret not in lowered


@pytest.mark.parametrize("with_text", [False, True])
def test_plate_in_the_report_with_its_text_only_when_asked(cache, data_dir: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                           with_text: bool) -> None:
    """A real plate photo: the plate's box is reported with its detector and score; the registration OCR read
    is in the report only with ``report_text``."""
    source = data_dir / "plates" / "alpr_br_OKL1235.jpg"
    x, y, w, h = (int(v) for v in (data_dir / "plates" / "alpr_br_OKL1235.txt").read_text().split("\t")[1:5])
    target = tmp_path / "car.png"
    config = parse_config({"video": {"face_detection": False, "blur": {"type": "solid"}}, "report": True,
                           "report_text": with_text})
    result = redact_file(cache, source, target, config)
    [frame] = json.loads(result.report.read_text())["frames"]
    plates = [r for r in frame["regions"] if r["kind"] == "plate"]
    truth = [x, y, x + w, y + h]
    assert any(_iou(r["box"], truth) > 0.6 for r in plates), (plates, truth)
    assert all(r["why"] == "plate" and r["detector"] and 0 < r["score"] <= 1 for r in plates)
    after, before = cv2.imread(str(target)), cv2.imread(str(source))
    inside = _mask(before.shape, [r["box"] for r in frame["regions"]])
    assert (after[inside] == 0).all() and np.array_equal(after[~inside], before[~inside])
    assert ("OKL" in json.dumps(frame)) == with_text  # (the file name holds it too: look at the frames)
    if with_text:  # as OCR read it ("OKL·1235")
        assert any("".join(c for c in r.get("text", "") if c.isalnum()) == "OKL1235" for r in plates)


def _iou(a: list[int], b: list[int]) -> float:
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / max(union, 1)


def _frame_fps(path: Path) -> float:
    with av.open(str(path)) as container:
        return float(container.streams.video[0].average_rate)


@pytest.mark.parametrize(("name", "fps"), [("pf_single_face.mp4", None), ("skv_carphone_pristine.mp4", 50.0)])
def test_video_report_has_one_entry_per_output_frame_matching_its_pixels(  # type: ignore[no-untyped-def]
        cache, data_dir: Path, tmp_path: Path, name: str, fps: float | None) -> None:
    """Every output frame is listed (also when the rate conversion repeats frames: 29.97 -> 50 fps); in each
    one the reported boxes are black (solid blur) and nothing outside them darkened beyond codec noise."""
    source = data_dir / "video" / name
    target = tmp_path / "out.mp4"
    config = parse_config({"video": {"plate_detection": False, "blur": {"type": "solid"},
                                     **({"fps": fps} if fps else {})}, "audio": {"enabled": False}, "report": True})
    result = redact_file(cache, source, target, config)
    report = json.loads(result.report.read_text())
    outputs = read_frames(target)
    assert len(report["frames"]) == len(outputs) == result.frames
    assert [f["frame"] for f in report["frames"]] == list(range(len(outputs)))
    assert report["fps"] == pytest.approx(_frame_fps(target), rel=1e-3)
    originals = read_frames(source)
    faces_listed = 0
    for entry in report["frames"]:
        out = outputs[entry["frame"]]
        # the input frame this output frame shows (same time)
        original = originals[min(len(originals) - 1, round(entry["time"] * _frame_fps(source)))]
        if fps is None:
            original = originals[entry["frame"]]
        boxes = [r["box"] for r in entry["regions"]]
        faces_listed += sum(r["kind"] == "face" for r in entry["regions"])
        assert all(r["kind"] == "face" and r["why"] in FACE_WHYS for r in entry["regions"])
        gray_out = cv2.cvtColor(out, cv2.COLOR_BGR2GRAY).astype(np.float32)
        gray_in = cv2.cvtColor(original, cv2.COLOR_BGR2GRAY).astype(np.float32)
        for x1, y1, x2, y2 in boxes:  # the inside of each box is black (2 px in: the codec blurs edges)
            inner = gray_out[y1 + 2:y2 - 2, x1 + 2:x2 - 2]
            assert inner.size == 0 or inner.mean() < 12, (entry["frame"], (x1, y1, x2, y2), inner.mean())
        darkened = (gray_out < 25) & (gray_in > 80)  # pixels the black fill made dark
        outside = ~_mask(out.shape, boxes, grow=4)
        assert darkened[outside].mean() < 0.002, (entry["frame"], darkened[outside].sum())
        assert np.abs(gray_out - gray_in)[outside].mean() < 8, entry["frame"]
    assert faces_listed >= 0.9 * len(outputs)


def _tone_ratio(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    freqs = np.fft.rfftfreq(len(samples), 1 / rate)
    band = (freqs > 950) & (freqs < 1050)
    return float(spectrum[band].sum() / max(spectrum.sum(), 1e-9))


def _read_audio(path: Path) -> tuple[np.ndarray, int]:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        chunks = [f.to_ndarray().reshape(-1).astype(np.float32) for f in container.decode(stream)]
        return np.concatenate(chunks) / 32768.0, stream.rate  # s16 mono


def test_speech_report_lists_the_spans_bleeped_without_the_words(cache, data_dir: Path, manifest: dict,  # type: ignore[no-untyped-def]
                                                                 tmp_path: Path) -> None:
    """The espeak recording of fictitious personal data: each listed span holds the tone in the output, covers
    the words of its entity, and the report holds none of the spoken personal details."""
    entry = next(f for f in manifest["files"] if f["path"] == "audio/tts_personal_data_en_16k.wav")
    spoken = (data_dir / entry["transcript_file"]).read_text()
    source = data_dir / entry["path"]
    target = tmp_path / "speech.wav"
    result = redact_file(cache, source, target, parse_config({"report": True}))
    text = result.report.read_text()
    report = json.loads(text)
    assert report["media"] == "audio" and report["frames"] == []
    spans = report["audio"]["spans"]
    assert report["audio"]["mode"] == "bleep" and len(spans) == len(result.redactions) >= 5
    assert [s["entity"] for s in spans] == [r["type"] for r in result.redactions]
    samples, rate = _read_audio(target)
    for span in spans:
        assert span["start"] <= span["words"][0] < span["words"][1] <= span["end"] <= entry["duration_s"] + 0.2
        middle = samples[int((span["words"][0] + 0.05) * rate):int((span["words"][1] - 0.05) * rate)]
        assert _tone_ratio(middle, rate) > 0.5, span  # the listed span really is bleeped
    lowered = text.lower()
    for secret in ("john", "smith", "evergreen", "springfield", "example", "4111", "0134"):
        assert secret in spoken.lower() and secret not in lowered, secret


def test_no_report_unless_asked_and_none_left_by_a_failed_job(cache, data_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    source = data_dir / "synthetic" / "synth_id_card_fake_pii.png"
    target = tmp_path / "card.png"
    result = redact_file(cache, source, target, parse_config({"video": {"plate_detection": False}}))
    assert result.report is None and not report_path(target).exists()
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 4096)
    with pytest.raises(Exception):  # noqa: B017 (any refusal; the point is what is left behind)
        redact_file(cache, broken, tmp_path / "out.mp4", parse_config({"report": True}))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.mp4", "card.png"]


def test_video_with_speech_reports_spans_and_the_mouths_hidden_during_them(cache, data_dir: Path,  # type: ignore[no-untyped-def]
                                                                            tmp_path: Path) -> None:
    """Carphone's picture with the first 4 s of the spoken personal data: the name is listed as an audio span,
    and the frames within the span (± mouth window) list a mouth box, with the tone in the output's audio."""
    clip = tmp_path / "talk.mkv"
    with av.open(str(data_dir / "video" / "skv_carphone_pristine.mp4")) as v, \
            av.open(str(data_dir / "audio" / "tts_personal_data_en_16k.wav")) as a, av.open(str(clip), "w") as out:
        vs = out.add_stream_from_template(v.streams.video[0])
        as_ = out.add_stream_from_template(a.streams.audio[0])
        for packet in v.demux(v.streams.video[0]):
            if packet.dts is not None:
                packet.stream = vs
                out.mux(packet)
        for packet in a.demux(a.streams.audio[0]):
            if packet.dts is not None and packet.pts * packet.time_base < 4.0:
                packet.stream = as_
                out.mux(packet)
    config = parse_config({"video": {"face_detection": False, "plate_detection": False},
                           "audio": {"mouth_blur_window_ms": 200}, "report": True})
    result = redact_file(cache, clip, tmp_path / "talk_out.mp4", config)
    report = json.loads(result.report.read_text())
    spans = report["audio"]["spans"]
    assert spans and spans[0]["entity"] == "name" and len(spans) == len(result.redactions)
    assert len(report["frames"]) == result.frames
    for entry in report["frames"]:
        speaking = any(s["words"][0] - 0.2 <= entry["time"] <= s["words"][1] + 0.2 for s in spans)
        mouths = [r for r in entry["regions"] if r["kind"] == "mouth"]
        assert all(r["why"] == "speech" for r in mouths)
        assert not mouths or speaking, entry  # no mouth hidden outside a span
    assert sum(bool(e["regions"]) for e in report["frames"]) >= 5  # the face is there: its mouth was hidden
    with av.open(str(tmp_path / "talk_out.mp4")) as container:
        stream = container.streams.audio[0]
        samples = np.concatenate([f.to_ndarray()[0] for f in container.decode(stream)])
        rate = stream.rate
    span = spans[0]
    middle = samples[int((span["words"][0] + 0.05) * rate):int((span["words"][1] - 0.05) * rate)]
    assert _tone_ratio(middle.astype(np.float32), rate) > 0.5
