"""Ground truth for plate recall and text precision, judged independently of the filter.

Plates: the boxes of ``../shared/data/plates/*.txt`` (the ALPR benchmark's annotations) plus
boxes drawn here by eye for the photos that have none (``EXTRA_PLATES``, x1, y1, x2, y2 in
pixels, read off 4-6x enlargements). A plate counts as hidden when the pixels inside its box
really changed (:func:`tests.privacy_judge.box_hidden`: sharpness ratio and mean change).

Text: for each photo of ``../shared/data/text`` (and the synthetic ID card, the car with a
memorial sticker), the personal items a person reads there and ordinary lines that must stay
readable, written down by looking at the photos. The judge re-runs OCR on the output: an item is
hidden when OCR no longer reads it, a line is kept when OCR still reads it. Only what OCR reads
on the input is judged (the rest cannot tell the filter apart from the OCR's own limits).

Used by tests/engine/test_redact_precision.py and bench/privacy_precision.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

# by eye: plates the manifest marks (contains_license_plate) but gives no box for
EXTRA_PLATES: dict[str, list[tuple[int, int, int, int]]] = {
    "dt_19064748793_motorcade_WD-5010.jpg": [(543, 424, 613, 442),  # WD-5010, lead car (70x18)
                                             (352, 381, 387, 389)],  # second car, 35x8, barely readable
    "in_n03770679_minivan.jpg": [(565, 311, 596, 343)],  # tilted Italian plate
    "in_n02930766_cab.jpg": [(290, 62, 325, 79)],  # NYC rear plate of the upper taxi
}


def plate_truth(data_dir: Path) -> dict[str, list[NDArray[np.float32]]]:
    """Every photo of data/plates with its ground-truth plate boxes (x1, y1, x2, y2)."""
    out: dict[str, list[NDArray[np.float32]]] = {}
    for txt in sorted((data_dir / "plates").glob("*.txt")):
        boxes = out.setdefault(txt.with_suffix(".jpg").name, [])
        for line in txt.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 5:
                x, y, w, h = map(float, parts[1:5])
                boxes.append(np.array([x, y, x + w, y + h], np.float32))
    for name, extra in EXTRA_PLATES.items():
        out.setdefault(name, []).extend(np.array(b, np.float32) for b in extra)
    return out


# images without any plate: false-positive area is measured on these
PLATE_FREE_DIRS = ("negatives", "faces_misc", "group", "text")


@dataclass(frozen=True)
class TextTruth:
    """Personal items to hide and ordinary lines to keep in one photo (as a person reads them)."""

    path: str
    personal: tuple[str, ...] = ()
    ordinary: tuple[str, ...] = ()
    note: str = ""
    faces: bool = field(default=False)


TEXT_TRUTH: tuple[TextTruth, ...] = (
    TextTruth("synthetic/synth_id_card_fake_pii.png",
              personal=("SMITH", "JOHN", "14.03.1985", "X1234567", "742 Evergreen Terrace", "+1 555-0134",
                        "john.smith@example.com", "IDUSA<<SMITH"),
              ordinary=("SPECIMEN IDENTITY CARD", "Surname", "Given names", "Date of birth", "ID number", "Address",
                        "Phone", "Email"), faces=True),
    TextTruth("text/in_n03642806_laptop.jpg", personal=("Ryan",), note="a lone name written over a face photo",
              faces=True),
    TextTruth("plates/alpr_us_car1.jpg", personal=("James L. Johnson", "1963"),
              ordinary=("WASHINGTON",), note="memorial sticker: a name and dates"),
    TextTruth("text/dt_34501842524_street_sign_stop.jpg", ordinary=("Enrichment St", "STOP")),
    TextTruth("text/in_n04149813_scoreboard.jpg", ordinary=("KENYA", "USA", "England", "Australia", "Fiji")),
    TextTruth("text/in_n06359193_web_site.jpg",
              ordinary=("RESOURCE CENTER", "CONTACT", "SERVICES", "EVENTS", "Feature Customer Story", "In the News",
                        "Real Solutions", "Real Results", "Hype Cycle", "Discover three ways", "LATEST NEWS",
                        "Operations Management"), faces=True),
    TextTruth("text/in_n06596364_comic_book.jpg", ordinary=("brasil", "MARVEL", "VAULT", "COVER GIRLS")),
    TextTruth("text/in_n06794110_street_sign.jpg",
              ordinary=("Bike Path", "Whaling", "Museum", "Polpis-Wauwinet", "Hospital-Airport", "Police Station",
                        "Rest Rooms", "Surfside")),
    TextTruth("text/in_n07248320_book_jacket.jpg", ordinary=("The Wizard", "ORIGINAL", "PICTURES")),
    TextTruth("text/sk_page.png", ordinary=("Region-based segmentation", "determine markers of the coins",
                                            "histogram")),
    TextTruth("text/dt_16004479832_service_dog_vest.jpg", ordinary=("SERVICE",)),
)


def squash(text: str) -> str:
    """Lower case, letters and digits only: OCR drops spaces and misreads punctuation."""
    return "".join(c for c in text.lower() if c.isalnum())


@dataclass
class TextJudgement:
    """Counts over photos: personal items judged / hidden, ordinary lines judged / kept, and misses."""

    personal: int = 0
    hidden: int = 0
    ordinary: int = 0
    kept: int = 0
    leaked: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)

    def add(self, truth: TextTruth, before: str, after: str) -> None:
        b, a = squash(before), squash(after)
        for item in truth.personal:
            if squash(item) in b:
                self.personal += 1
                if squash(item) in a:
                    self.leaked.append(f"{truth.path}: {item}")
                else:
                    self.hidden += 1
        for item in truth.ordinary:
            if squash(item) in b:
                self.ordinary += 1
                if squash(item) in a:
                    self.kept += 1
                else:
                    self.lost.append(f"{truth.path}: {item}")

    def line(self) -> str:
        return (f"personal items hidden {self.hidden}/{self.personal}, ordinary lines kept {self.kept}/"
                f"{self.ordinary}")
