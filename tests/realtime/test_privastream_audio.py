"""Seed E live audio over WebRTC: spoken personal data bleeped with a fixed delay, judged independently."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np

from tests.realtime.test_privastream import CLIP, Events, _post_sdp, make_server  # noqa: F401 (fixture)

# ---- live audio ----------------------------------------------------------------------------------
SPEECH = "audio/tts_personal_data_en_16k.wav"
LEAD_S = 5.0  # silence before the speech: the viewer connects while it plays


def speech_with_lead(data_dir: Path, tmp_path: Path) -> Path:
    """The speech recording with LEAD_S of silence in front (16 kHz mono WAV)."""
    import wave

    with wave.open(str(data_dir / SPEECH), "rb") as source:
        rate, width, channels = source.getframerate(), source.getsampwidth(), source.getnchannels()
        body = source.readframes(source.getnframes())
    path = tmp_path / "speech_lead.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(width)
        out.setframerate(rate)
        out.writeframes(bytes(int(LEAD_S * rate) * width * channels) + body)
    return path


def align_to(reference: np.ndarray, received: np.ndarray) -> np.ndarray:
    """``received`` (16 kHz mono) shifted onto ``reference``'s timeline by cross-correlation."""
    n = 1 << int(np.ceil(np.log2(len(reference) + len(received))))
    corr = np.fft.irfft(np.fft.rfft(received, n) * np.conj(np.fft.rfft(reference, n)), n)
    lag = int(np.argmax(corr))
    lag = lag if lag < n // 2 else lag - n  # received[i + lag] ~ reference[i]
    out = np.zeros_like(reference)
    src = received[max(0, lag):max(0, lag) + len(reference) - max(0, -lag)]
    out[max(0, -lag):max(0, -lag) + len(src)] = src
    return out


async def test_whip_whep_bleeps_spoken_personal_data(make_server, data_dir: Path, tmp_path: Path,  # type: ignore[no-untyped-def]  # noqa: F811
                                                     models_dir: Path) -> None:
    """aiortc publishes a clip's video and a speech recording; one viewer asks audio and video in one
    WHEP session. The viewer's audio, judged by Whisper base (tests/speech_judge.py, a model the
    filter does not use), carries none of the spoken personal items, and the rest of the speech."""
    import wave

    from aiortc import RTCConfiguration, RTCPeerConnection
    from aiortc.contrib.media import MediaPlayer

    from faceport.engine.live_speech import to_mono_16k
    from faceport.realtime.media import audio_samples
    from tests.engine.test_live_speech import hidden_share, write_wav
    from tests.speech_judge import Judge, judge_speech, read_track

    server = make_server()  # the default delay (5 s)
    events = Events(server.url)
    events.emit("create_room")
    created = events.wait("room_created")
    events.emit("start_processing", {"roomId": created["roomId"], "config": {"audio_processing": True,
                                                                              "audio_mode": "bleep"}})
    assert events.wait("processing_started")["config"]["audio_mode"] == "bleep"

    source = speech_with_lead(data_dir, tmp_path)
    video, voice = MediaPlayer(str(data_dir / CLIP)), MediaPlayer(str(source), loop=True)  # a live mic never stops
    publisher = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    publisher.addTrack(video.video)
    publisher.addTrack(voice.audio)
    status, _, _, _ = await _post_sdp(f"{created['mediasoupUrl']}/whip", publisher)
    assert status == 201

    viewer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    viewer.addTransceiver("video", direction="recvonly")
    viewer.addTransceiver("audio", direction="recvonly")
    tracks: dict[str, Any] = {}
    viewer.on("track", lambda track: tracks.setdefault(track.kind, track))
    status, _, _, _ = await _post_sdp(f"{created['mediasoupUrl']}/whep", viewer)
    assert status == 201
    for _ in range(300):
        if len(tracks) == 2:
            break
        await asyncio.sleep(0.1)
    assert set(tracks) == {"audio", "video"}

    heard: list[np.ndarray] = []
    frames = 0
    duration = LEAD_S + 29.4 + 5.0 + 2.0  # the recording, the delay, a margin

    async def listen() -> None:
        while sum(len(h) for h in heard) < duration * 16_000:
            frame = await tracks["audio"].recv()
            heard.append(to_mono_16k(audio_samples(frame), int(frame.sample_rate)))

    async def watch() -> None:
        nonlocal frames
        while True:
            await tracks["video"].recv()
            frames += 1

    watching = asyncio.ensure_future(watch())
    await asyncio.wait_for(listen(), duration + 60)
    watching.cancel()
    update = await asyncio.to_thread(events.wait, "processing_update", 15)
    while True:  # the newest update (earlier ones are still queued)
        try:
            update = await asyncio.to_thread(events.wait, "processing_update", 0.1)
        except AssertionError:
            break
    await publisher.close()
    await viewer.close()
    events.close()
    for player in (video, voice):
        for track in (player.audio, player.video):
            if track is not None:
                track.stop()

    # the video went on beside the audio in the same session
    assert frames >= 20, f"only {frames} video frames arrived beside the audio"
    assert update["audio"]["mode"] == "bleep" and update["audio"]["delayMs"] == 5000, update["audio"]

    reference, _ = read_track(source)
    received = align_to(reference, np.concatenate(heard))
    out = write_wav(tmp_path / "viewer.wav", received)
    verdict = judge_speech(Judge(models_dir / "whisper_base"), source, out, "tts_personal_data_en")
    print("live over WebRTC:", verdict.line(), update["audio"])
    assert verdict.missing_windows == [], verdict.heard_in
    assert verdict.leaked == [], verdict.leaked_words
    # every item is bleeped or, where the filter fell behind, silent: never heard
    assert min(hidden_share(out, verdict)) >= 0.9, hidden_share(out, verdict)
    # ... and not all of it is bleeped or muted (over-redaction itself is measured on the simulated clock,
    # tests/engine/test_live_speech.py: 3 of 29 ordinary words kept with the live padding)
    assert verdict.other_kept >= 1, (verdict.other_kept, verdict.other_words, verdict.heard_out)
    with wave.open(str(out)) as check:
        assert check.getnframes() == len(reference)
