"""rmsd.media.video: clips written with PyAV in each codec/container, frames identified by colour.

Frame i of every clip is a flat colour that encodes i (red = i % 16, green = i // 16, in
steps of 16), so a test can say which frames came back, not only how many.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import threading
from fractions import Fraction

import numpy as np
import pytest

av = pytest.importorskip("av")

from rmsd.errors import RmsdError  # noqa: E402
from rmsd.media import video  # noqa: E402
from rmsd.media.frame_cache import cache_info, clear_cache, set_cache_limit  # noqa: E402
from rmsd.media.video import VideoError, encode_jpeg_b64, load_frames, load_image  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_cache():
    set_cache_limit(None)
    clear_cache()
    yield
    set_cache_limit(None)
    clear_cache()


def colour(i: int) -> np.ndarray:
    return np.array([(i % 16) * 16 + 8, (i // 16) * 16 + 8, 128], np.uint8)


def frame_index(frame: np.ndarray) -> int:
    """The index a decoded frame encodes; fails if the colour is off by more than codec noise."""
    mean = frame.reshape(-1, 3).mean(0)
    i = int(round((mean[0] - 8) / 16)) + 16 * int(round((mean[1] - 8) / 16))
    assert np.abs(mean - colour(i)).max() < 7, f"frame colour {mean} is not a clean index colour"
    return i


def write_clip(target, codec: str, fmt: str, n: int, *, fps: int = 30, size=(64, 48), gop: int | None = 6,
               pix_fmt: str = "yuv420p", pts_ms: list[int] | None = None, options: dict | None = None,
               container_options: dict | None = None) -> None:
    """n frames, frame i coloured colour(i); `pts_ms` gives variable timestamps (milliseconds)."""
    try:
        av.codec.Codec(codec, "w")
    except Exception:
        pytest.skip(f"this PyAV build has no {codec} encoder")
    width, height = size
    with av.open(target, "w", format=fmt, options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=fps, options=options or {})
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if codec in ("mpeg4", "mjpeg"):
            stream.bit_rate = 2_000_000  # the default rate blurs the index colours
        if gop:
            stream.codec_context.gop_size = gop
        if pts_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(np.broadcast_to(colour(i), (height, width, 3)).copy(), format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
            else:
                frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def uniform_indices(num_source: int, n: int) -> list[int]:
    """Index of the frame on screen at the centre of each of n equal segments (constant frame rate)."""
    return [int((2 * i + 1) * num_source // (2 * n)) for i in range(n)]


CODECS = [
    ("libx264", "mp4", "yuv420p", None),
    ("libx264", "matroska", "yuv420p", None),
    ("libx265", "mp4", "yuv420p", {"x265-params": "log-level=error"}),
    ("libx265", "matroska", "yuv420p", {"x265-params": "log-level=error"}),
    ("libvpx-vp9", "webm", "yuv420p", None),
    ("mjpeg", "avi", "yuvj420p", None),
]
SUFFIX = {"mp4": "mp4", "matroska": "mkv", "webm": "webm", "avi": "avi"}


@pytest.mark.parametrize(("codec", "fmt", "pix_fmt", "options"), CODECS, ids=[f"{c}-{f}" for c, f, _, _ in CODECS])
def test_uniform_frames_in_each_codec_and_container(tmp_path, monkeypatch, codec, fmt, pix_fmt, options):
    path = tmp_path / f"clip.{SUFFIX[fmt]}"
    write_clip(str(path), codec, fmt, 48, pix_fmt=pix_fmt, options=options)
    seeks = []
    real_seek = video._seek_to
    monkeypatch.setattr(video, "_seek_to", lambda *a: (seeks.append(a[-1]), real_seek(*a)))

    decoded = load_frames(path, 8, strategy="decode", cache=False)
    assert not seeks
    expected = uniform_indices(48, 8)  # 3, 9, 15, ... 45
    assert [frame_index(f) for f in decoded.array] == expected
    assert decoded.array.shape == (8, 48, 64, 3) and decoded.array.dtype == np.uint8
    assert decoded.duration == pytest.approx(48 / 30, abs=1e-3)
    assert decoded.fps == pytest.approx(8 / decoded.duration)
    assert decoded.timestamps == pytest.approx([i / 30 for i in expected], abs=2e-3)
    assert decoded.path == str(path.resolve())

    sought = load_frames(path, 8, strategy="seek", cache=False)
    assert len(seeks) >= 8  # one seek per target at least
    np.testing.assert_array_equal(sought.array, decoded.array)  # decoding from a keyframe gives the same pixels
    assert sought.timestamps == decoded.timestamps


def test_auto_seeks_only_when_targets_are_far_apart(tmp_path, monkeypatch):
    path = tmp_path / "long_gop_small.mp4"
    write_clip(str(path), "libx264", "mp4", 240, gop=5)
    seeks = []
    real_seek = video._seek_to
    monkeypatch.setattr(video, "_seek_to", lambda *a: (seeks.append(a[-1]), real_seek(*a)))

    close = load_frames(path, 32, cache=False)  # 7.5 frames between targets: decoding forward is cheaper
    assert not seeks
    assert [frame_index(f) for f in close.array] == uniform_indices(240, 32)

    far = load_frames(path, 4, cache=False)  # 60 frames between targets, a keyframe every 5: seek
    assert len(seeks) == 4
    assert [frame_index(f) for f in far.array] == uniform_indices(240, 4)


def test_variable_frame_rate_is_sampled_by_time(tmp_path):
    # 20 frames 10 ms apart, then 20 frames 100 ms apart: by index, half of the samples would
    # land in the first 0.2 s; by time, nearly all land in the slow second part.
    pts = [10 * i for i in range(20)] + [200 + 100 * i for i in range(20)]
    path = tmp_path / "vfr.mp4"
    write_clip(str(path), "libx264", "mp4", 40, pts_ms=pts, options={"x264-params": "bframes=0"})
    frames = load_frames(path, 8)
    expected = []
    for i in range(8):
        target = (2 * i + 1) * frames.duration / 16
        # the frame on screen at the target; one starting within a tick (1/16000 s) after it counts as on screen
        expected.append(max(k for k, p in enumerate(pts) if p / 1000 <= target + 1e-4))
    assert [frame_index(f) for f in frames.array] == expected
    assert sum(k >= 20 for k in expected) >= 7
    assert frames.duration == pytest.approx(2.1, abs=0.101)  # last frame starts at 2.1 s, lasts ~0.1 s
    assert frames.timestamps == pytest.approx([pts[k] / 1000 for k in expected], abs=1e-3)
    assert list(frames.timestamps) == sorted(frames.timestamps)


def test_clip_shorter_than_num_frames_repeats_nearest_frames(tmp_path):
    path = tmp_path / "three.mp4"
    write_clip(str(path), "libx264", "mp4", 3, fps=10)
    frames = load_frames(path, 8)
    assert [frame_index(f) for f in frames.array] == [0, 0, 0, 1, 1, 2, 2, 2]
    assert frames.timestamps == pytest.approx([0, 0, 0, 0.1, 0.1, 0.2, 0.2, 0.2], abs=1e-3)
    assert frames.fps == pytest.approx(8 / 0.3, rel=1e-3)
    assert frames.num_frames == 8


def test_odd_size_and_max_side(tmp_path):
    path = tmp_path / "odd.webm"
    write_clip(str(path), "libvpx-vp9", "webm", 12, size=(97, 61))
    full = load_frames(path, 4)
    assert full.array.shape == (4, 61, 97, 3)
    assert [frame_index(f) for f in full.array] == uniform_indices(12, 4)
    small = load_frames(path, 4, max_side=50)
    assert small.array.shape == (4, 31, 50, 3)  # aspect kept: 61 * 50 / 97 = 31.4
    assert [frame_index(f) for f in small.array] == uniform_indices(12, 4)
    assert load_frames(path, 4, max_side=500).array.shape == (4, 61, 97, 3)  # never upscaled


def test_downscaling_keeps_the_picture(tmp_path):
    path = tmp_path / "halves.avi"
    width, height = 160, 120
    with av.open(str(path), "w", format="avi") as container:
        stream = container.add_stream("mjpeg", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuvj444p"
        picture = np.zeros((height, width, 3), np.uint8)
        picture[:, : width // 2] = (220, 30, 30)  # red left half, blue right half
        picture[:, width // 2 :] = (30, 30, 220)
        for i in range(4):
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    frames = load_frames(path, 2, max_side=40)
    assert frames.array.shape == (2, 30, 40, 3)
    left, right = frames.array[:, :, :16].reshape(-1, 3).mean(0), frames.array[:, :, 24:].reshape(-1, 3).mean(0)
    assert left[0] > 180 and left[2] < 70 and right[2] > 180 and right[0] < 70


def test_missing_duration_is_read_from_packet_timestamps(tmp_path):
    class Unseekable:  # a muxer that cannot seek back cannot write the duration
        def __init__(self):
            self.buffer = io.BytesIO()

        def write(self, data):
            return self.buffer.write(data)

    sink = Unseekable()
    write_clip(sink, "libx264", "matroska", 30)
    path = tmp_path / "streamed.mkv"
    path.write_bytes(sink.buffer.getvalue())
    with av.open(str(path)) as container:
        assert container.duration is None and container.streams.video[0].duration is None
    frames = load_frames(path, 5)
    assert frames.duration == pytest.approx(1.0, abs=0.002)
    assert [frame_index(f) for f in frames.array] == uniform_indices(30, 5)


def test_raw_stream_without_timestamps(tmp_path):
    path = tmp_path / "raw.h264"
    write_clip(str(path), "libx264", "h264", 30)
    frames = load_frames(path, 5)
    assert [frame_index(f) for f in frames.array] == uniform_indices(30, 5)
    assert frames.duration == pytest.approx(1.0, abs=0.05)  # 30 frames at the rate the stream declares
    assert frames.timestamps == pytest.approx([k / 30 for k in uniform_indices(30, 5)], abs=0.01)


def test_truncated_file_with_index_first_warns_and_repeats_the_last_frame(tmp_path, caplog):
    path = tmp_path / "cut.mp4"
    write_clip(str(path), "libx264", "mp4", 60, container_options={"movflags": "faststart"})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 3 // 4])  # the index and the first keyframe take the first ~60%
    with caplog.at_level(logging.WARNING, logger="rmsd.media.video"):
        frames = load_frames(path, 8)
    indices = [frame_index(f) for f in frames.array]
    assert indices == sorted(indices) and indices[-1] < 59 and indices[-1] == indices[-2]
    assert any("truncated" in r.getMessage() and "cut.mp4" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("case", ["missing", "empty", "directory", "garbage", "truncated_moov_at_end", "audio_only"])
def test_unreadable_files_raise_one_line_video_error(tmp_path, case):
    path = tmp_path / f"{case}.mp4"
    if case == "empty":
        path.touch()
    elif case == "directory":
        path.mkdir()
    elif case == "garbage":
        path.write_bytes(os.urandom(4096))
    elif case == "truncated_moov_at_end":
        write_clip(str(path), "libx264", "mp4", 30)
        path.write_bytes(path.read_bytes()[:-400])
    elif case == "audio_only":
        path = tmp_path / "tone.wav"
        with av.open(str(path), "w", format="wav") as container:
            stream = container.add_stream("pcm_s16le", rate=8000, layout="mono")
            samples = (np.sin(np.arange(8000) / 5) * 3000).astype(np.int16)[None]
            frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
            frame.sample_rate = 8000
            for packet in stream.encode(frame):
                container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    with pytest.raises(VideoError) as info:
        load_frames(path, 4)
    message = str(info.value)
    assert isinstance(info.value, RmsdError)
    assert path.name in message and "\n" not in message
    reason = {"missing": "not found", "empty": "empty", "directory": "directory", "audio_only": "no video stream"}
    assert reason.get(case, "") in message


def test_bad_arguments_are_user_errors(tmp_path):
    path = tmp_path / "clip.mp4"
    write_clip(str(path), "libx264", "mp4", 6)
    for kwargs in ({"num_frames": 0}, {"num_frames": 2.5}, {"max_side": 0}, {"strategy": "fastest"}):
        with pytest.raises(RmsdError):
            load_frames(path, **{"num_frames": 4, **kwargs})


def test_cache_hits_and_invalidation(tmp_path):
    path = tmp_path / "clip.mp4"
    write_clip(str(path), "libx264", "mp4", 24)
    first = load_frames(path, 4)
    assert cache_info().misses == 1 and cache_info().hits == 0 and cache_info().bytes == first.array.nbytes
    again = load_frames(str(path), 4)  # same file by another spelling of its path
    assert again is first and cache_info().hits == 1
    with pytest.raises(ValueError):
        first.array[0, 0, 0, 0] = 1  # read-only: a caller cannot corrupt the cached copy
    assert load_frames(path, 6) is not first and cache_info().entries == 2  # N is part of the key

    write_clip(str(path), "libx264", "mp4", 24, size=(32, 24))  # rewritten: new size, new mtime
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    fresh = load_frames(path, 4)
    assert fresh is not first and fresh.array.shape == (4, 24, 32, 3)
    assert cache_info().misses == 3


def test_cache_is_bounded_and_can_be_disabled(tmp_path, monkeypatch):
    paths = []
    for k in range(3):
        paths.append(tmp_path / f"clip{k}.mp4")
        write_clip(str(paths[-1]), "libx264", "mp4", 8)
    one = load_frames(paths[0], 4).array.nbytes  # 36,864 bytes
    set_cache_limit(2.5 * one / 2**20)
    for p in paths[1:]:
        load_frames(p, 4)
    info = cache_info()
    assert info.entries == 2 and info.bytes == 2 * one <= info.max_bytes  # the oldest was evicted
    load_frames(paths[0], 4)
    assert cache_info().misses == 4

    set_cache_limit(0)
    load_frames(paths[0], 4)
    assert cache_info().entries == 0

    set_cache_limit(None)
    monkeypatch.setenv("RMSD_FRAME_CACHE_MB", "lots")
    with pytest.raises(RmsdError, match="RMSD_FRAME_CACHE_MB"):
        load_frames(paths[0], 4)
    monkeypatch.setenv("RMSD_FRAME_CACHE_MB", "1")
    set_cache_limit(None)
    assert cache_info().max_bytes == 2**20


def test_concurrent_callers_share_one_decode(tmp_path):
    path = tmp_path / "clip.mp4"
    write_clip(str(path), "libx264", "mp4", 24)
    results = []
    threads = [threading.Thread(target=lambda: results.append(load_frames(path, 4))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache_info().misses == 1 and cache_info().hits == 3
    assert all(r is results[0] for r in results)


def test_load_image_composites_transparency_and_downscales(tmp_path):
    from PIL import Image

    rgba = np.zeros((40, 80, 4), np.uint8)  # fully transparent ...
    rgba[18:22, :, 3] = 255  # ... but for an opaque black line, as in diagram PNGs
    path = tmp_path / "diagram.png"
    Image.fromarray(rgba, "RGBA").save(path)
    image = load_image(path)
    assert image.shape == (40, 80, 3) and image.dtype == np.uint8 and not image.flags.writeable
    assert image[0, 0].tolist() == [255, 255, 255] and image[20, 40].tolist() == [0, 0, 0]
    small = load_image(path, max_side=20)
    assert small.shape == (10, 20, 3)
    assert load_image(path) is image  # cached

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(VideoError, match="bad.png"):
        load_image(bad)


def test_encode_jpeg_b64_round_trips(tmp_path):
    from PIL import Image

    path = tmp_path / "clip.avi"
    write_clip(str(path), "mjpeg", "avi", 16, pix_fmt="yuvj420p")
    frames = load_frames(path, 4)
    encoded = encode_jpeg_b64(frames.array, quality=90)
    assert len(encoded) == 4
    for b64, original in zip(encoded, frames.array, strict=True):
        decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))
        assert decoded.shape == original.shape
        assert np.abs(decoded.astype(int) - original.astype(int)).mean() < 3
    assert len(encode_jpeg_b64(frames.array[0])) == 1  # one image [H, W, 3]
    with pytest.raises(ValueError):
        encode_jpeg_b64(np.zeros((2, 8, 8), np.float32))
