"""Issue 12, points 3 and 6: every plate hidden (small ones too) without blurring plate-free
photos, and ``pii`` text mode hiding personal data while ordinary text stays readable.

Judged independently of the filter's own decisions: plate boxes drawn by the ALPR benchmark or by
eye, a plate hidden only when the pixels in its box lost their sharpness (tests/privacy_judge.py);
text judged by a second OCR run on the output (tests/privacy_truth.py).
"""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from faceport.engine.redact import ClassOptions, RedactOptions, TextFilter, build_redactor
from faceport.engine.text import TextReader, alphabet_from_session
from faceport.engine.video import process_video
from faceport.errors import InvalidInput
from tests.privacy_judge import box_hidden, read_frames
from tests.privacy_truth import PLATE_FREE_DIRS, TEXT_TRUTH, TextJudgement, plate_truth, squash

MODELS = ("centerface", "ppocr_v4_det", "ppocr_v4_rec", "ppocr_cls", "plate_cascades", "spacy_en_core_web_sm")
PLATES_ONLY = RedactOptions(faces=ClassOptions(False))
TEXT_ONLY = RedactOptions(faces=ClassOptions(False), plates=ClassOptions(False), text=ClassOptions(True, 0.35),
                          text_mode="pii")


@pytest.fixture(scope="module")
def cache(models_dir: Path):  # type: ignore[no-untyped-def]
    from faceport.engine.models import ModelCache, ModelStore

    store = ModelStore(models_dir)
    missing = [n for n in MODELS if not store.is_installed(n)]
    if missing:
        assert all(r.installed for r in store.pull(missing))
    cache = ModelCache(store, idle_ttl=0)
    yield cache
    cache.close()


@pytest.fixture(scope="module")
def judge_ocr(cache) -> TextReader:  # type: ignore[no-untyped-def]
    """A second reading (max side 1280, no orientation model), not the filter's own."""
    rec = cache.get("ppocr_v4_rec")
    return TextReader(cache.get("ppocr_v4_det"), rec, alphabet_from_session(rec), max_side=1280)


def test_every_ground_truth_plate_hidden(cache, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """All 10 plates, the 35x8 px one on the motorcade, the tilted minivan plate and the taxi's included."""
    redactor = build_redactor(cache, PLATES_ONLY)
    truth = plate_truth(data_dir)
    assert sum(len(b) for b in truth.values()) == 10
    missed = []
    for name, boxes in truth.items():
        image = cv2.imread(str(data_dir / "plates" / name))
        out, _found = redactor.redact_image(image)
        for box in boxes:
            hidden, ratio, change = box_hidden(image, out, box)
            if not hidden:
                missed.append((name, box.astype(int).tolist(), round(ratio, 2), round(change, 1)))
    assert missed == []


def test_plates_do_not_blur_plate_free_photos(cache, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """False positives on photos without plates (negatives, faces, groups, text): few, small boxes."""
    redactor = build_redactor(cache, PLATES_ONLY)
    boxes = 0
    worst = 0.0
    photos = [p for d in PLATE_FREE_DIRS for p in sorted((data_dir / d).glob("*")) if p.suffix in (".jpg", ".png")]
    assert len(photos) >= 30
    for path in photos:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        found, _labels = redactor.find_plates(image)
        boxes += len(found)
        area = float(sum((b[2] - b[0]) * (b[3] - b[1]) for b in found)) / (image.shape[0] * image.shape[1])
        worst = max(worst, area)
    print(f"plate false positives: {boxes} boxes on {len(photos)} photos, worst {100 * worst:.2f} % of a photo")
    assert boxes <= 8
    assert worst < 0.02  # never more than 2 % of a photo blurred as a plate


def _pan_clip(image: np.ndarray, out: Path, frames: int, step: int) -> None:
    h, w = image.shape[:2]
    cw, ch = (w - frames * step) // 2 * 2, h // 2 * 2
    with av.open(str(out), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = cw, ch, "yuv420p"
        for i in range(frames):
            crop = np.ascontiguousarray(image[:ch, i * step:i * step + cw])
            container.mux(stream.encode(av.VideoFrame.from_ndarray(crop, format="bgr24")))
        container.mux(stream.encode())


def test_plate_hidden_in_every_frame_of_a_panning_clip(cache, data_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A clip panning across the motorcade photo (2 px a frame): plates are found every 10th frame
    and held between; the lead car's plate (70x18 px) must stay hidden in every frame.

    The second car's 35x8 px plate, found in the photo, is not found after H.264 (crf 23) in
    every detection frame: not asserted here (BENCHMARKS.md says so)."""
    image = cv2.imread(str(data_dir / "plates" / "dt_19064748793_motorcade_WD-5010.jpg"))
    clip, out = tmp_path / "pan.mp4", tmp_path / "out.mp4"
    frames, step = 20, 2
    _pan_clip(image, clip, frames, step)
    redactor = build_redactor(cache, PLATES_ONLY)
    process_video(clip, out, redactor.stream(fps=25.0))
    originals, redacted = read_frames(clip), read_frames(out)
    assert len(originals) == len(redacted) == frames
    plates = [b for b in plate_truth(data_dir)["dt_19064748793_motorcade_WD-5010.jpg"] if b[2] - b[0] >= 60]
    assert len(plates) == 1
    for i, (a, b) in enumerate(zip(originals, redacted, strict=True)):
        for box in plates:
            shifted = box - np.array([i * step, 0, i * step, 0], np.float32)
            hidden, ratio, change = box_hidden(a, b, shifted)
            assert hidden, (i, shifted.tolist(), ratio, change)


def _read(reader: TextReader, image: np.ndarray) -> str:
    return " ".join(line.text for line in reader.read(image))


def test_pii_text_hides_personal_data_and_keeps_ordinary_text(cache, data_dir: Path, judge_ocr) -> None:  # type: ignore[no-untyped-def]
    redactor = build_redactor(cache, TEXT_ONLY)
    judgement = TextJudgement()
    for truth in TEXT_TRUTH:
        image = cv2.imread(str(data_dir / truth.path), cv2.IMREAD_COLOR)
        out, _found = redactor.redact_image(image)
        judgement.add(truth, _read(judge_ocr, image), _read(judge_ocr, out))
    print(judgement.line(), "leaked:", judgement.leaked, "lost:", judgement.lost)
    assert judgement.personal >= 10 and judgement.ordinary >= 30  # the judge reads enough of the photos
    assert judgement.leaked == []  # the lone "Ryan" over a face photo included
    assert judgement.kept >= 0.95 * judgement.ordinary


CARD = "synthetic/synth_id_card_fake_pii.png"
CAR = "plates/alpr_us_car1.jpg"  # memorial sticker: "James L. Johnson", "1.12.1963 - 3.23.2011"


@pytest.mark.parametrize(("photo", "rules", "gone", "kept"), [
    # per-entity choice (Presidio's names accepted): only the e-mail address goes
    (CARD, TextFilter(entities=("EMAIL_ADDRESS",)), ("john.smith@example.com",),
     ("SMITH", "+1 555-0134", "14.03.1985")),
    # allow list: the surname stays, the rest goes
    (CARD, TextFilter(allow_list=("smith",)), ("john.smith@example.com", "+1 555-0134"), ("SMITH",)),
    # deny list: an ordinary heading goes as well
    (CARD, TextFilter(deny_list=("SPECIMEN",)), ("SPECIMEN", "john.smith@example.com"), ("IDENTITY CARD",)),
    # threshold: the full name (0.85) goes, the dates (0.6) stay at 0.7 and go at the default 0.5
    (CAR, TextFilter(score_threshold=0.7), ("James L. Johnson",), ("1963",)),
    (CAR, TextFilter(), ("James L. Johnson", "1963"), ("WASHINGTON",)),
])
def test_text_filter_options(cache, data_dir: Path, judge_ocr, photo: str, rules: TextFilter,  # type: ignore[no-untyped-def]
                             gone: tuple[str, ...], kept: tuple[str, ...]) -> None:
    image = cv2.imread(str(data_dir / photo))
    options = RedactOptions(faces=ClassOptions(False), plates=ClassOptions(False), text=ClassOptions(True, 0.35),
                            text_mode="pii", text_filter=rules)
    out, _found = build_redactor(cache, options).redact_image(image)
    before, after = squash(_read(judge_ocr, image)), squash(_read(judge_ocr, out))
    for item in gone:
        assert squash(item) in before and squash(item) not in after, item
    for item in kept:
        assert squash(item) in after, item


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"entities": ("blood_type",)}, "entities"),
    ({"allow_list": ("",)}, "allow_list"),
    ({"deny_list": ("x" * 201,)}, "deny_list"),
    ({"score_threshold": 1.5}, "score_threshold"),
])
def test_text_filter_refuses_bad_values(kwargs: dict, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        TextFilter(**kwargs)
    assert caught.value.details["field"] == field


def test_text_filter_from_seed_config() -> None:
    from faceport.services.privacy import parse_config

    config = parse_config({"video": {"models": {"pii_text": {"entities": ["PERSON", "phone"],
                                                             "allow_list": ["ACME"], "score_threshold": 0.7}}}})
    rules = config.redact_options().text_filter
    assert rules.entities == ("name", "phone") and rules.allow_list == ("ACME",) and rules.score_threshold == 0.7
    assert parse_config(None).redact_options().text_filter == TextFilter()
