"""Speech redaction figures: items recoverable per container, false hits, speed.

Usage: python bench/speech.py [--data ../shared/data] [--runs 3] [--json]

For the English and German recordings of shared/data/audio, in WAV and muxed into MP4 (AAC; also
with the audio track starting 3 s in) and MKV (Opus), the privacy filter redacts the file and the
independent judge (tests/speech_judge.py: Whisper base with beam search re-transcribing the output,
a Goertzel detector timing the bleep) reports per personal item whether any part of it can still
be heard and what share of its time is bleeped; words outside the items that stay audible show
over-redaction. False hits: redactions on the live rap recording (no personal data). Speed: the
whole ``redact_file`` call on the English WAV with the speech models loaded, median of ``--runs``,
as a real-time factor, with the language detected and with it given.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from engine import machine

from faceport.engine.models import ModelCache, ModelStore
from faceport.errors import FaceportError
from faceport.services.privacy import PrivacyConfig, Speech, redact_file
from tests.speech_judge import Judge, judge_speech, make_clip

REPO = Path(__file__).resolve().parents[1]
QUIET = {"video": {"face_detection": False, "plate_detection": False, "text_detection": False}}
CONTAINERS = ("wav", "mp4", "mp4_audio_at_3s", "mkv")


def source(data: Path, tmp: Path, recording: str, container: str) -> Path:
    wav = data / "audio" / f"{recording}_{'16k' if recording.endswith('en') else '22k'}.wav"
    if container == "wav":
        return wav
    if container == "mkv":
        return make_clip(wav, tmp / f"{recording}.mkv", audio_codec="libopus")
    return make_clip(wav, tmp / f"{recording}_{container}.mp4", audio_codec="aac",
                     offset_s=3.0 if container == "mp4_audio_at_3s" else 0.0)


def config(**audio: object) -> PrivacyConfig:
    return PrivacyConfig.model_validate({**QUIET, "audio": audio})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--no-write", action="store_true", help="do not write the figures /api/v1/models reports")
    args = parser.parse_args()
    root = Path.home() / ".cache" / "faceport" / "models"
    store = ModelStore(root)
    store.pull(["whisper_tiny_en", "whisper_base", "spacy_en_core_web_sm"])
    cache = ModelCache(store, idle_ttl=0)
    speech = Speech(cache)
    judge = Judge(root / "whisper_base")
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        cases = [("tts_personal_data_en", c, {}) for c in CONTAINERS]
        cases += [("tts_personal_data_de", c, {"unsupported_language": "process"}) for c in ("wav", "mkv")]
        for recording, container, audio in cases:
            src = source(args.data, tmp, recording, container)
            out = tmp / f"out_{recording}_{container}{src.suffix}"
            report = redact_file(cache, src, out, config(**audio), speech=speech)
            verdict = judge_speech(judge, src, out, recording)
            rows.append({"recording": recording, "container": container, "language": report.language,
                         "items": verdict.items, "not_found_by_judge": verdict.missing_windows,
                         "not_heard_in_input_cut": verdict.cut_unheard,
                         "recoverable": verdict.leaked, "recoverable_words": verdict.leaked_words,
                         "least_bleep_coverage": round(min(verdict.coverage, default=0.0), 3),
                         "other_words_bleeped": f"{verdict.other_bleeped}/{verdict.other_words}",
                         "other_words_heard_again": f"{verdict.other_kept}/{verdict.other_words}",
                         "warnings": len(report.warnings)})
        try:
            redact_file(cache, source(args.data, tmp, "tts_personal_data_de", "wav"), tmp / "de.wav", config(),
                        speech=speech)
            german_default = "completed (WRONG)"
        except FaceportError as exc:
            german_default = exc.code
        lyrics = redact_file(cache, args.data / "audio" / "fr_short_hamilton_clip_audio_16k.wav", tmp / "rap.wav",
                             config(), speech=speech)
        wav = args.data / "audio" / "tts_personal_data_en_16k.wav"
        speed: dict[str, float] = {}
        for label, audio in (("auto", {}), ("en_given", {"language": "en"})):
            seconds = []
            for _ in range(args.runs):
                started = time.perf_counter()
                redact_file(cache, wav, tmp / "speed.wav", config(**audio), speech=speech)
                seconds.append(time.perf_counter() - started)
            speed[label] = statistics.median(seconds)
    duration = 29.37
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    result = {"machine": machine("faster-whisper int8"), "load_average": load, "rows": rows,
              "german_default": german_default,
              "lyrics_false_hits": len(lyrics.redactions), "lyrics_redactions": lyrics.redactions,
              "seconds_en_29s": {k: round(v, 2) for k, v in speed.items()},
              "real_time_factor": {k: round(duration / v, 1) for k, v in speed.items()}}
    if not args.no_write:
        from faceport.services.privacy_figures import write_section

        items = sum(int(r["items"]) for r in rows)  # type: ignore[call-overload]
        leaked = sum(len(r["recoverable"]) for r in rows)  # type: ignore[arg-type]
        write_section("speech", {
            "bench": "python bench/speech.py", "clips": ["audio/tts_personal_data_en_16k.wav (WAV, MP4, MP4 +3 s, "
                                                         "MKV)", "audio/tts_personal_data_de (WAV, MKV, process)",
                                                         "audio/fr_short_hamilton_clip_audio_16k.wav (lyrics)"],
            "method": "the output track re-transcribed by Whisper base (beam 5), whole and item by item "
                      "(tests/speech_judge.py); recall = personal items no part of which is recoverable; "
                      "real_time_factor = processing seconds per audio second (29.4 s English WAV, language "
                      "detected, models loaded)",
            "figures": {"audio_pii": {"recall": round(100.0 * (items - leaked) / max(items, 1), 1),
                                      "items_judged": items, "false_hits_on_lyrics": len(lyrics.redactions),
                                      "german_default": german_default},
                        "audio_asr": {"real_time_factor": round(speed["auto"] / duration, 3),
                                      "real_time_factor_language_given": round(speed["en_given"] / duration, 3)}}})
    if args.json:
        print(json.dumps(result))
        return
    print(f"machine: {result['machine']}; load average {' '.join(load)}")
    print("| recording | container | items | not found by judge | recoverable | least bleep coverage | "
          "other words bleeped | other words heard again |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['recording']} | {r['container']} | {r['items']} | {len(r['not_found_by_judge'])} | "  # type: ignore[arg-type]
              f"{len(r['recoverable'])} {r['recoverable_words'] or ''} | {r['least_bleep_coverage']} | "  # type: ignore[arg-type]
              f"{r['other_words_bleeped']} | {r['other_words_heard_again']} |")
    print(f"German, default policy: {german_default}")
    print(f"false hits on the live rap (no personal data): {result['lyrics_false_hits']}")
    print(f"speed, 29.4 s English WAV, median of {args.runs}: {result['seconds_en_29s']} s, "
          f"real-time factor {result['real_time_factor']}")


if __name__ == "__main__":
    main()
