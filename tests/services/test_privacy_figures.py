"""The measured-figures file: each bench replaces its own section, the models answer says what is not measured."""

from __future__ import annotations

import json
from pathlib import Path

from faceport.services.privacy_figures import NOT_MEASURED, read_figures, with_figures, write_section

MODELS = {"face_detection": {"name": "CenterFace"}, "plate_detection": {"name": "cascades"},
          "audio_asr": {"name": "tiny.en"}}
EXPECTED = {"face_detection": ("accuracy", "coverage"), "plate_detection": ("map50", "recall"),
            "audio_asr": ("real_time_factor",)}


def test_sections_merge_and_each_bench_replaces_only_its_own(tmp_path: Path) -> None:
    path = tmp_path / "figures.json"
    write_section("faces", {"bench": "bench/privacy.py", "clips": ["a.mp4"], "date": "2025-01-01T00:00:00Z",
                            "figures": {"face_detection": {"coverage": 97.5}}}, path)
    write_section("plates", {"bench": "bench/plates.py", "clips": ["p.jpg"],
                             "figures": {"plate_detection": {"recall": 87.5}}}, path)
    write_section("faces", {"bench": "bench/privacy.py", "clips": ["b.mp4"], "date": "2025-02-01T00:00:00Z",
                            "figures": {"face_detection": {"coverage": 99.0}}}, path)
    data = json.loads(path.read_text())
    assert set(data["sections"]) == {"faces", "plates"}
    assert data["sections"]["faces"]["clips"] == ["b.mp4"]
    assert data["sections"]["plates"]["figures"]["plate_detection"]["recall"] == 87.5
    assert data["sections"]["plates"]["date"] and data["sections"]["plates"]["machine"]
    assert not list(tmp_path.glob(".*tmp")), "no temporary file left behind"


def test_unmeasured_figures_are_null_with_a_note_never_a_number(tmp_path: Path) -> None:
    path = tmp_path / "figures.json"
    write_section("faces", {"bench": "bench/privacy.py", "clips": ["a.mp4"], "method": "judge",
                            "figures": {"face_detection": {"coverage": 97.5, "faces_judged": 120}}}, path)
    out = with_figures(MODELS, EXPECTED, read_figures(path))
    face = out["face_detection"]
    assert face["coverage"] == 97.5 and face["faces_judged"] == 120 and "coverage_note" not in face
    assert face["accuracy"] is None and face["accuracy_note"] == NOT_MEASURED
    assert face["measured"]["faces"]["clips"] == ["a.mp4"] and face["measured"]["faces"]["method"] == "judge"
    plate = out["plate_detection"]
    assert plate["recall"] is None and plate["recall_note"] == NOT_MEASURED
    assert plate["measured"] is None and plate["measured_note"] == NOT_MEASURED


def test_a_newer_section_wins_for_the_same_figure(tmp_path: Path) -> None:
    path = tmp_path / "figures.json"
    write_section("speech", {"date": "2025-03-01T00:00:00Z", "figures": {"audio_asr": {"real_time_factor": 0.2}}},
                  path)
    write_section("pipeline", {"date": "2025-01-01T00:00:00Z", "figures": {"audio_asr": {"real_time_factor": 0.5}}},
                  path)
    asr = with_figures(MODELS, EXPECTED, read_figures(path))["audio_asr"]
    assert asr["real_time_factor"] == 0.2 and set(asr["measured"]) == {"speech", "pipeline"}


def test_a_missing_or_corrupt_file_reads_as_nothing_measured(tmp_path: Path) -> None:
    assert read_figures(tmp_path / "absent.json")["sections"] == {}
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    out = with_figures(MODELS, EXPECTED, read_figures(broken))
    assert all(m["measured"] is None for m in out.values())
    assert out["face_detection"]["coverage"] is None
