"""The video pipeline on the real clips in ../shared/data/video: what comes out is what a viewer would expect.

Every output is checked by reading it back (``probe_video``/``iter_frames``): streams,
duration, frame count, size, channels and pixels. Damaged inputs are made here from the
real clips (truncated, overwritten, rotation flag patched, audio turned into PCM).
"""

from __future__ import annotations

import concurrent.futures
import doctest
import itertools
import os
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from faceport.engine import video
from faceport.engine.types import BGRImage
from faceport.engine.video import (
    VideoOptions,
    VideoResult,
    iter_frames,
    output_size,
    probe_video,
    process_video,
)
from faceport.errors import FaceportError, InvalidFormat, InvalidInput, ProcessingFailed

PEXELS = "pf_WolfgangLanger_Pexels.mp4"  # H.264 640x360 23.976 fps 19.7 s, AAC stereo (silent)
SINGLE = "pf_single_face.mp4"  # H.264 640x360 30 fps 2.4 s, MP3 stereo
HEVC_MOV = "pf_face_noface.mov"  # HEVC 960x540 ~26.4 fps 6.4 s, AAC stereo
MJPEG_AVI = "derived_carphone_mjpeg.avi"  # MJPEG 176x144 29.97 fps 4 s, no audio
BUNNY = "skv_bigbuckbunny.mp4"  # H.264 1280x720 25 fps 5.3 s, AAC 5.1
CARPHONE = "skv_carphone_pristine.mp4"  # H.264 176x144 29.97 fps 4 s, no audio
WAV = "audio/fr_short_hamilton_clip_audio_16k.wav"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def identity(frame: BGRImage) -> BGRImage:
    return frame


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 100.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def run_with_deadline(seconds: float, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    """Run ``fn`` in a worker thread and fail the test if it has not returned within ``seconds``."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        return pool.submit(fn, *args, **kwargs).result(timeout=seconds)
    except concurrent.futures.TimeoutError:
        pytest.fail(f"{getattr(fn, '__name__', fn)} still running after {seconds} s")
    finally:
        pool.shutdown(wait=False)


def leftovers(directory: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name not in keep)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def video_dir(data_dir: Path) -> Path:
    directory = data_dir / "video"
    if not (directory / PEXELS).is_file():
        reason = f"test clips not found under {directory}"
        if os.environ.get("CI"):  # in CI a missing data file is a failure, not a skip
            pytest.fail(reason)
        pytest.skip(reason)
    return directory


@pytest.fixture(scope="module")
def pexels_identity(video_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[VideoResult, Path]:
    """The 20 s H.264+AAC clip through the identity function, once for the module."""
    out = tmp_path_factory.mktemp("pexels") / "identity.mp4"
    return process_video(video_dir / PEXELS, out, identity), out


@pytest.fixture(scope="module")
def pcm_mov(video_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pf_single_face.mp4 with its video copied and its MP3 audio decoded to 16-bit PCM, in a .mov."""
    out = tmp_path_factory.mktemp("pcm") / "single_pcm.mov"
    with av.open(str(video_dir / SINGLE)) as inp, av.open(str(out), "w", format="mov") as dst:
        vin, ain = inp.streams.video[0], inp.streams.audio[0]
        vout = dst.add_stream_from_template(vin)
        aout = dst.add_stream("pcm_s16le", rate=ain.codec_context.sample_rate, layout="stereo")
        for packet in inp.demux(vin, ain):
            if packet.stream is vin:
                if packet.dts is not None:
                    packet.stream = vout
                    dst.mux(packet)
                continue
            for frame in ain.decode(packet):
                frame.pts = None
                dst.mux(aout.encode(frame))
        dst.mux(aout.encode(None))
    return out


def rotated_copy(source: Path, target: Path) -> Path:
    """A copy of an mp4 whose video track carries the 90° clockwise display matrix of a portrait phone clip."""
    data = bytearray(source.read_bytes())
    pos = data.find(b"tkhd")
    patched = False
    while pos >= 0:
        version = data[pos + 4]
        # tkhd: version/flags, times, track id, reserved, duration, reserved, layer, group, volume, reserved
        matrix = pos + 8 + (28 if version == 1 else 16) + 4 + 8 + 8
        width = struct.unpack(">I", data[matrix + 36: matrix + 40])[0]
        if width:  # the video track (audio tracks have no width)
            data[matrix: matrix + 36] = struct.pack(">9i", 0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)
            patched = True
        pos = data.find(b"tkhd", pos + 4)
    assert patched, f"no video tkhd in {source}"
    target.write_bytes(bytes(data))
    return target


def frames(path: Path) -> Iterator[BGRImage]:
    for _, _, image in iter_frames(path):
        yield image


# --------------------------------------------------------------------------- probing


@pytest.mark.parametrize(("name", "expected"), [
    (PEXELS, {"width": 640, "height": 360, "video_codec": "h264", "audio_codec": "aac", "audio_channels": 2,
              "container": "mp4", "fps": 23.976, "duration_s": 19.69}),
    (HEVC_MOV, {"width": 960, "height": 540, "video_codec": "hevc", "audio_codec": "aac", "container": "mov",
                "duration_s": 6.42}),
    (MJPEG_AVI, {"width": 176, "height": 144, "video_codec": "mjpeg", "has_audio": False, "container": "avi",
                 "fps": 29.97, "frame_count": 120}),
    (BUNNY, {"width": 1280, "height": 720, "audio_channels": 6, "audio_rate": 48000, "fps": 25.0}),
    (f"../{WAV}", InvalidFormat("no video stream (audio only)")),
    ("synth_slideshow_obama_biden_cat_group.json", InvalidFormat("not a readable media file")),
    ("random.mp4", InvalidFormat("not a readable media file")),
    ("truncated_header.mp4", InvalidFormat("not a readable media file")),
    ("mpl_grace_hopper.jpg", InvalidFormat("still image")),
    ("missing.mp4", InvalidInput("no such video file")),
])
def test_probe_reports_streams_or_refuses(video_dir: Path, tmp_path: Path, name: str,
                                          expected: dict[str, object] | FaceportError) -> None:
    path = video_dir / name
    if name == "random.mp4":
        path = tmp_path / name
        path.write_bytes(np.random.default_rng(7).integers(0, 256, 200_000, dtype=np.uint8).tobytes())
    elif name == "truncated_header.mp4":
        path = tmp_path / name
        path.write_bytes((video_dir / PEXELS).read_bytes()[:5000])  # cut inside the moov index
    elif name.endswith(".jpg"):
        path = FIXTURES / name
    if isinstance(expected, FaceportError):
        with pytest.raises(type(expected), match=expected.message.replace("(", r"\(").replace(")", r"\)")):
            probe_video(path)
        return
    info = probe_video(path)
    for field, value in expected.items():
        actual = getattr(info, field)
        if isinstance(value, float):
            assert actual == pytest.approx(value, abs=0.01), field
        else:
            assert actual == value, field
    assert info.has_audio == (info.audio_codec is not None)
    assert info.frame_count == pytest.approx(info.duration_s * info.fps, abs=info.fps * 0.1 + 2)


# --------------------------------------------------------------------------- the main path


def test_identity_keeps_duration_audio_and_pixels(video_dir: Path, pexels_identity: tuple[VideoResult, Path]) -> None:
    result, out = pexels_identity
    source, written = probe_video(video_dir / PEXELS), probe_video(out)

    assert result.audio == "copied"
    assert (written.video_codec, written.audio_codec, written.audio_channels) == ("h264", "aac", 2)
    assert (written.width, written.height) == (640, 360) == (result.width, result.height)
    assert written.duration_s == pytest.approx(source.duration_s, abs=0.1)
    assert written.fps == pytest.approx(source.fps, abs=0.01)
    assert written.frame_count == pytest.approx(written.duration_s * written.fps, abs=1)
    assert result.frames_in == result.frames_out == written.frame_count == source.frame_count

    checked = 0
    for index, (a, b) in enumerate(zip(frames(video_dir / PEXELS), frames(out), strict=True)):
        if index % 47 == 0:
            assert psnr(a, b) > 30, f"frame {index}"
            checked += 1
    assert checked == 11


def test_copied_audio_is_the_same_bytes(video_dir: Path, pexels_identity: tuple[VideoResult, Path]) -> None:
    def audio_payloads(path: Path) -> list[bytes]:
        with av.open(str(path)) as container:
            return [bytes(p) for p in container.demux(audio=0) if p.size]

    assert audio_payloads(pexels_identity[1]) == audio_payloads(video_dir / PEXELS)


@pytest.mark.parametrize("fps", [10.0, 15.0, 60.0])
def test_fps_resamples_by_time_and_keeps_duration(video_dir: Path, tmp_path: Path, fps: float) -> None:
    source = probe_video(video_dir / SINGLE)  # 30 fps
    result = process_video(video_dir / SINGLE, tmp_path / "out.mp4", identity, fps=fps)
    written = probe_video(tmp_path / "out.mp4")

    video_s = source.frame_count / source.fps  # 2.40 s of video; the file (with its audio) lasts 2.42 s
    assert written.fps == pytest.approx(fps)
    assert written.frame_count == pytest.approx(video_s * fps, abs=1)
    assert written.duration_s == pytest.approx(source.duration_s, abs=0.1)
    assert result.frames_in == 72 and result.frames_out == written.frame_count


def test_fps_picks_the_frame_on_screen_at_each_output_time(video_dir: Path, tmp_path: Path) -> None:
    """10 fps out of 30 fps: output frame k is input frame 3k (the ones between are dropped)."""
    process_video(video_dir / SINGLE, tmp_path / "out.mp4", identity, fps=10)
    inputs = list(frames(video_dir / SINGLE))
    outputs = list(frames(tmp_path / "out.mp4"))
    assert len(outputs) == 24
    for k in (1, 8, 16, 23):
        scores = [psnr(outputs[k], inputs[i]) for i in range(3 * k - 2, 3 * k + 3)]
        assert int(np.argmax(scores)) + 3 * k - 2 == 3 * k, (k, scores)


@pytest.mark.parametrize(("name", "scale", "size"), [
    (PEXELS, 50, (320, 180)),
    (PEXELS, 150, (960, 540)),
    (CARPHONE, 55, (96, 78)),  # 96.8 x 79.2: rounded, then even
    (CARPHONE, 10, (18, 14)),
])
def test_scale_gives_even_scaled_size(video_dir: Path, tmp_path: Path, name: str, scale: int,
                                      size: tuple[int, int]) -> None:
    result = process_video(video_dir / name, tmp_path / "out.mp4", identity, scale_percent=scale,
                           options=VideoOptions(max_frames=12))
    written = probe_video(tmp_path / "out.mp4")
    assert (written.width, written.height) == size == (result.width, result.height)
    first = next(frames(tmp_path / "out.mp4"))
    assert first.shape == (size[1], size[0], 3)
    assert output_size(probe_video(video_dir / name).width, probe_video(video_dir / name).height, scale) == size


@pytest.mark.parametrize(("name", "audio", "codec"), [
    (HEVC_MOV, "copied", "aac"),
    (MJPEG_AVI, "none", None),
    ("pcm", "reencoded", "aac"),
])
def test_other_codecs_become_playable_mp4(video_dir: Path, pcm_mov: Path, tmp_path: Path, name: str,
                                          audio: str, codec: str | None) -> None:
    source_path = pcm_mov if name == "pcm" else video_dir / name
    source = probe_video(source_path)
    result = process_video(source_path, tmp_path / "out.mp4", identity)
    written = probe_video(tmp_path / "out.mp4")

    assert result.audio == audio
    assert (written.video_codec, written.audio_codec, written.container) == ("h264", codec, "mp4")
    assert (written.width, written.height) == (source.width, source.height)
    assert written.duration_s == pytest.approx(source.duration_s, abs=0.1)
    if codec is not None:
        assert (written.audio_rate, written.audio_channels) == (source.audio_rate, source.audio_channels)
    decoded = list(iter_frames(tmp_path / "out.mp4"))
    assert len(decoded) == written.frame_count == result.frames_out
    # The HEVC clip is variable-rate (30 fps, then slower): match frames by time, not index.
    inputs = list(iter_frames(source_path))
    for _, t_out, image in decoded[:: len(decoded) // 6]:
        nearby = [psnr(image, original) for _, t_in, original in inputs if abs(t_in - t_out) < 0.05]
        assert max(nearby) > 30, t_out


@pytest.mark.parametrize("mode", ["auto", "reencode"])
def test_surround_audio_keeps_six_channels(video_dir: Path, tmp_path: Path, mode: str) -> None:
    result = process_video(video_dir / BUNNY, tmp_path / "out.mp4", identity,
                           options=VideoOptions(audio=mode, max_frames=25))  # type: ignore[arg-type]
    written = probe_video(tmp_path / "out.mp4")
    assert result.audio == ("copied" if mode == "auto" else "reencoded")
    assert (written.audio_codec, written.audio_channels, written.audio_rate) == ("aac", 6, 48000)
    assert result.frames_out == written.frame_count == 25
    assert written.duration_s == pytest.approx(1.0, abs=0.1)  # audio cut with the video


@pytest.mark.parametrize(("suffix", "mode", "expected"), [
    (".mkv", "auto", "copied"),
    (".mov", "auto", "copied"),
    (".mp4", "drop", "none"),
])
def test_container_by_suffix_and_audio_mode(video_dir: Path, tmp_path: Path, suffix: str, mode: str,
                                            expected: str) -> None:
    out = tmp_path / f"out{suffix}"
    result = process_video(video_dir / SINGLE, out, identity, options=VideoOptions(audio=mode))  # type: ignore[arg-type]
    written = probe_video(out)
    assert result.audio == expected
    assert written.has_audio == (expected != "none")
    assert written.container == {".mkv": "matroska", ".mov": "mov", ".mp4": "mp4"}[suffix]
    assert written.duration_s == pytest.approx(2.42, abs=0.1)


def test_rotated_phone_clip_comes_out_upright(video_dir: Path, tmp_path: Path) -> None:
    rotated = rotated_copy(video_dir / SINGLE, tmp_path / "portrait.mp4")
    info = probe_video(rotated)
    assert (info.width, info.height, info.rotation) == (360, 640, 270)

    shapes: list[tuple[int, ...]] = []
    result = process_video(rotated, tmp_path / "out.mp4", lambda f: shapes.append(f.shape) or f,
                           options=VideoOptions(max_frames=5))
    assert set(shapes) == {(640, 360, 3)} and (result.width, result.height) == (360, 640)
    upright = np.rot90(next(frames(video_dir / SINGLE)), -1)  # 90° clockwise, as the flag says
    assert psnr(next(frames(tmp_path / "out.mp4")), upright) > 30
    assert probe_video(tmp_path / "out.mp4").rotation == 0


# --------------------------------------------------------------------------- the frame function


def test_frames_pass_through_the_function_in_order(video_dir: Path, tmp_path: Path) -> None:
    """Frame i gets a white square in column band i % 8: the output shows each band in turn."""
    calls = 0

    def mark(frame: BGRImage) -> BGRImage:
        nonlocal calls
        out = frame.copy()
        x = 20 * (calls % 8)
        out[50:90, x: x + 20] = 255
        calls += 1
        return out

    result = process_video(video_dir / CARPHONE, tmp_path / "out.mp4", mark)
    assert calls == result.frames_out == 120
    for index, image in enumerate(frames(tmp_path / "out.mp4")):
        bands = [float(image[55:85, 20 * b + 3: 20 * b + 17].mean()) for b in range(8)]
        assert bands[index % 8] > 235, (index, bands)
        assert int(np.argmax(bands)) == index % 8, (index, bands)


def test_wrong_shape_fails_and_leaves_nothing(video_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    out.write_bytes(b"previous result")
    with pytest.raises(ProcessingFailed, match=r"expected uint8 \(360, 640, 3\)"):
        process_video(video_dir / SINGLE, out, lambda f: f[:100])
    assert out.read_bytes() == b"previous result"
    assert leftovers(tmp_path, {"out.mp4"}) == []


def test_frame_function_error_propagates_and_cleans_up(video_dir: Path, tmp_path: Path) -> None:
    calls = 0

    def fail_late(frame: BGRImage) -> BGRImage:
        nonlocal calls
        calls += 1
        if calls == 40:
            raise InvalidInput("no face in the source image")
        return frame

    with pytest.raises(InvalidInput, match="no face"):
        process_video(video_dir / SINGLE, tmp_path / "out.mp4", fail_late)
    assert leftovers(tmp_path, set()) == []


def test_progress_rises_to_100(video_dir: Path, tmp_path: Path) -> None:
    seen: list[float] = []
    process_video(video_dir / HEVC_MOV, tmp_path / "out.mp4", identity, progress=seen.append)
    assert seen[0] < 5 and seen[-1] == 100.0
    assert all(b >= a for a, b in itertools.pairwise(seen)), seen
    assert all(0.0 <= p <= 100.0 for p in seen) and len(seen) > 20
    assert max(seen[:-1]) >= 90  # driven by decoded timestamps, not only the final call


def test_cancel_from_progress(video_dir: Path, tmp_path: Path) -> None:
    class Cancelled(Exception):
        pass

    def cancel_at_half(percent: float) -> None:
        if percent >= 50:
            raise Cancelled

    with pytest.raises(Cancelled):
        process_video(video_dir / SINGLE, tmp_path / "out.mp4", identity, progress=cancel_at_half)
    assert leftovers(tmp_path, set()) == []


def test_max_frames_cuts_video_and_audio(video_dir: Path, tmp_path: Path) -> None:
    result = process_video(video_dir / PEXELS, tmp_path / "out.mp4", identity, options=VideoOptions(max_frames=48))
    written = probe_video(tmp_path / "out.mp4")
    assert result.frames_out == written.frame_count == 48
    assert written.duration_s == pytest.approx(48 / 23.976, abs=0.1)


# --------------------------------------------------------------------------- damaged and wrong inputs


@pytest.mark.parametrize("name", [PEXELS, SINGLE, MJPEG_AVI, HEVC_MOV])
def test_truncated_file_is_partly_processed_or_refused(video_dir: Path, tmp_path: Path, name: str) -> None:
    data = (video_dir / name).read_bytes()
    damaged = tmp_path / f"half{Path(name).suffix}"
    damaged.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out.mp4"
    try:
        result = run_with_deadline(120, process_video, damaged, out, identity)
    except InvalidFormat as exc:  # the index (moov) was in the lost half
        assert "not a readable media file" in str(exc)
        assert leftovers(tmp_path, {damaged.name}) == []
        return
    written = probe_video(out)
    full = probe_video(video_dir / name)
    assert 0 < result.frames_out == written.frame_count < full.frame_count
    assert 0.2 * full.duration_s < written.duration_s < 0.8 * full.duration_s
    assert len(list(frames(out))) == written.frame_count


@pytest.mark.parametrize("name", [SINGLE, HEVC_MOV])
def test_garbage_in_the_middle_is_skipped(video_dir: Path, tmp_path: Path, name: str) -> None:
    data = bytearray((video_dir / name).read_bytes())
    middle = len(data) // 2
    data[middle: middle + 20_000] = np.random.default_rng(3).integers(0, 256, 20_000, dtype=np.uint8).tobytes()
    damaged = tmp_path / f"damaged{Path(name).suffix}"
    damaged.write_bytes(bytes(data))

    result = run_with_deadline(120, process_video, damaged, tmp_path / "out.mp4", identity)
    full = probe_video(video_dir / name)
    written = probe_video(tmp_path / "out.mp4")
    assert result.skipped_packets > 0 and result.frames_in < full.frame_count
    assert written.frame_count == result.frames_out == full.frame_count  # held frames fill the gap
    assert written.duration_s == pytest.approx(full.duration_s, abs=0.1)


@pytest.mark.parametrize(("source", "kwargs", "error", "message"), [
    (f"../{WAV}", {}, InvalidFormat, "no video stream"),
    ("random.mp4", {}, InvalidFormat, "not a readable media file"),
    ("zeroed.mp4", {}, InvalidFormat, "no decodable video frame"),
    ("missing.mp4", {}, InvalidInput, "no such video file"),
    (SINGLE, {"scale_percent": 5}, InvalidInput, "scale_percent"),
    (SINGLE, {"scale_percent": 401}, InvalidInput, "scale_percent"),
    (SINGLE, {"fps": 0}, InvalidInput, "fps"),
    (SINGLE, {"fps": 1000}, InvalidInput, "fps"),
    (SINGLE, {"output": "out.avi"}, InvalidInput, "output must end in"),
    (SINGLE, {"output": "missing_dir/out.mp4"}, InvalidInput, "output directory"),
    (MJPEG_AVI, {"options": {"audio": "copy"}}, None, None),  # nothing to copy: fine
    (f"../{WAV}", {"options": {"crf": 60}}, InvalidInput, "crf"),
])
def test_bad_requests_are_refused_before_any_work(video_dir: Path, tmp_path: Path, source: str,
                                                  kwargs: dict[str, object], error: type[Exception] | None,
                                                  message: str | None) -> None:
    path = video_dir / source
    if source == "random.mp4":
        path = tmp_path / source
        path.write_bytes(np.random.default_rng(1).integers(0, 256, 100_000, dtype=np.uint8).tobytes())
    elif source == "zeroed.mp4":  # a valid index over media data that is all zeros
        data = bytearray((video_dir / CARPHONE).read_bytes())
        start, end = data.find(b"mdat") + 4, data.find(b"moov") - 4
        assert 0 < start < end
        data[start:end] = bytes(end - start)
        path = tmp_path / source
        path.write_bytes(bytes(data))
    output = tmp_path / str(kwargs.pop("output", "out.mp4"))
    options = kwargs.pop("options", None)

    def call() -> VideoResult:
        opts = VideoOptions(**options) if isinstance(options, dict) else None
        return process_video(path, output, identity, options=opts, **kwargs)  # type: ignore[arg-type]

    if error is None:
        assert call().audio == "none"
        return
    with pytest.raises(error, match=message) as raised:
        call()
    assert leftovers(tmp_path, {path.name}) == []
    for where in {str(tmp_path), str(video_dir), str(video_dir.resolve())}:  # no server path in what users see
        assert where not in str(raised.value) and where not in repr(getattr(raised.value, "details", {}))


def test_pcm_cannot_be_copied_into_mp4(pcm_mov: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="pcm_s16le audio cannot be copied into mp4"):
        process_video(pcm_mov, tmp_path / "out.mp4", identity, options=VideoOptions(audio="copy"))
    assert leftovers(tmp_path, set()) == []


def test_output_never_overwrites_input(video_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "clip.mp4"
    shutil.copy(video_dir / SINGLE, copy)
    with pytest.raises(InvalidInput, match="overwrite the input"):
        process_video(copy, copy, identity)
    assert copy.read_bytes() == (video_dir / SINGLE).read_bytes()


# --------------------------------------------------------------------------- reading frames


def test_iter_frames_gives_every_frame_with_its_time(video_dir: Path) -> None:
    seen = list(iter_frames(video_dir / SINGLE))
    assert [i for i, _, _ in seen] == list(range(72))
    times = np.array([t for _, t, _ in seen])
    np.testing.assert_allclose(np.diff(times), 1 / 30, atol=1e-3)
    assert all(f.shape == (360, 640, 3) and f.dtype == np.uint8 and f.flags.c_contiguous for _, _, f in seen)
    assert len(list(iter_frames(video_dir / MJPEG_AVI, max_frames=7))) == 7


def test_iter_frames_refuses_audio_only(data_dir: Path) -> None:
    with pytest.raises(InvalidFormat, match="no video stream"):
        iter_frames(data_dir / WAV)


def test_docstring_examples() -> None:
    assert doctest.testmod(video).failed == 0
