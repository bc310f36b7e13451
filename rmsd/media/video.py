"""Video files to N uniformly sampled RGB frames (and images to arrays), decoded once per process.

`load_frames(path, num_frames, max_side)` returns the frames displayed at the centres of N
equal segments of the video's duration, with their timestamps and the effective rate
`fps = N / duration` that the Qwen video processor must be given (left alone it assumes
24 fps and squeezes the temporal position encoding).

How it differs from the usual loaders (`transformers.video_utils.load_video`, decord):
- samples by *time*, not by frame index, so variable-frame-rate files are sampled evenly;
  the pick is the frame on screen at the target time (a file shorter than N frames repeats
  frames, so exactly N always come back);
- decodes with threads and converts to RGB only the frames it keeps; per target it either
  decodes forward or seeks to the keyframe before it, whichever decodes fewer frames
  according to the file's keyframe index (see `SEEK_COST_FRAMES`);
- survives missing duration metadata (reads packet timestamps), files without timestamps,
  undecodable packets, imprecise seeks (falls back to decoding) and cover-art "video" streams;
- an LRU cache keyed by (path, mtime, size, N, max_side) returns read-only arrays, so
  teachers, students and evaluation share one decode (`rmsd.media.frame_cache`);
- a file that cannot be read raises `VideoError` naming the file and the reason.

    python -c "from rmsd.media.video import load_frames; f = load_frames('clip.mp4', 8); print(f.array.shape, f.fps)"
    python benchmarks/bench_video.py      # speed against transformers' PyAV loader
"""

from __future__ import annotations

import base64
import io
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from rmsd.errors import RmsdError
from rmsd.media.frame_cache import cached

log = logging.getLogger(__name__)

# Seeking pays when the keyframe before the next target lies more than this many frames
# ahead of the decoder: decoding forward costs (target - position) frames, seeking costs
# (target - keyframe) frames plus a fixed price (demuxer seek, decoder flush, and the frames a
# threaded decoder has already started past the target). benchmarks/bench_video.py measures
# that price on 320x240 H.264 (2 shared cores): 5-17 frame decodes, median ~12, across
# N = 8-32 and keyframe intervals 15-30 (heavier machine load pushes it up). With it,
# per-target seeking made a 60 s clip with a keyframe per second 2-4x faster to sample than
# decoding it through, and left 10 s clips (or GOP 250) to decoding, where seeking lost.
# Below this spacing of targets `auto` does not even read the index.
SEEK_COST_FRAMES = 12
STRATEGIES = ("auto", "decode", "seek")


class VideoError(RmsdError):
    """A video or image file that cannot be read: missing, empty, corrupt, or without a video stream."""


@dataclass(frozen=True, eq=False)
class Frames:
    """N frames sampled uniformly in time from one video.

    array: uint8 [N, H, W, 3] RGB, read-only (it may be shared through the cache).
    fps: N / duration, the rate of *these* frames: pass it to the video processor.
    timestamps: seconds of each frame from the start of the video; non-decreasing, equal
        where a short video repeats a frame.
    duration: seconds of the video stream.
    path: the file, resolved.
    """

    array: np.ndarray
    fps: float
    timestamps: tuple[float, ...]
    duration: float
    path: str

    @property
    def num_frames(self) -> int:
        return int(self.array.shape[0])


# ----------------------------------------------------------------------------- public API
def load_frames(path: str | os.PathLike, num_frames: int = 8, max_side: int | None = None, *,
                strategy: str = "auto", cache: bool = True) -> Frames:
    """`num_frames` frames at the centres of equal segments of the video, longer side at most `max_side`.

    strategy: "auto" (decode forward or seek per target, whichever is cheaper), "decode"
    (decode from the start), "seek" (seek before every target). All give the same frames;
    the choice only changes speed, so it is not part of the cache key.
    """
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise RmsdError(f"num_frames must be a positive integer, got {num_frames!r}")
    if strategy not in STRATEGIES:
        raise RmsdError(f"unknown video decoding strategy {strategy!r}; expected one of {STRATEGIES}")
    _check_max_side(max_side)
    file, key = _file_key(path, ("video", num_frames, max_side))
    return cached(key, lambda: _decode_file(file, num_frames, max_side, strategy), cache)


def load_image(path: str | os.PathLike, max_side: int | None = None, *, cache: bool = True) -> np.ndarray:
    """An image as a read-only uint8 [H, W, 3] RGB array, longer side at most `max_side`.

    EXIF rotation is applied and transparency is composited on white (diagram PNGs with a
    transparent background would otherwise turn black and hide their black lines).
    """
    _check_max_side(max_side)
    file, key = _file_key(path, ("image", max_side))
    return cached(key, lambda: _read_image(file, max_side), cache)


def load_media(item: Any, num_frames: int, max_side: int | None) -> tuple[Frames | None, np.ndarray | None]:
    """(frames, image) of an `rmsd.items.Item`: exactly one is set for a video or image item, neither for text."""
    if item.video:
        return load_frames(item.video, num_frames=num_frames, max_side=max_side), None
    if item.image:
        return None, load_image(item.image, max_side=max_side)
    return None, None


def shuffled_frames(frames: Frames, key: str) -> tuple[Frames, list[int]]:
    """The same frames in a fixed random order (Video-R1's T-GRPO input), and that order.

    Only the pixels move: fps, timestamps and duration stay as they were, so the prompt and
    the processor's time grid (`video_metadata`) are the ordered clip's and only what is seen
    at each time changes. The order depends on `key` alone (e.g. seed and item id), is never
    the identity for two frames or more, and the array is a new read-only copy (the cached
    decode is untouched: nothing is decoded again).
    """
    import hashlib

    n = frames.num_frames
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little"))
    order = [int(i) for i in rng.permutation(n)]
    if n > 1 and order == list(range(n)):  # an unshuffled "shuffle" would make the contrast moot
        order = order[1:] + order[:1]
    array = frames.array[order]
    array.flags.writeable = False
    return Frames(array=array, fps=frames.fps, timestamps=frames.timestamps, duration=frames.duration,
                  path=frames.path), order


def encode_jpeg_b64(frames: np.ndarray, quality: int = 85) -> list[str]:
    """Base64 JPEG strings (no `data:` prefix), one per frame of uint8 [N, H, W, 3] or one image [H, W, 3]."""
    from PIL import Image

    array = np.asarray(frames)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames [N, H, W, 3] or an image [H, W, 3], got {array.dtype} {array.shape}")
    out = []
    for frame in array:
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
        out.append(base64.b64encode(buf.getvalue()).decode("ascii"))
    return out


def _file_key(path: str | os.PathLike, extra: tuple) -> tuple[Path, tuple]:
    """The resolved file and its cache key; a rewritten file (new mtime or size) gets a new key."""
    file = Path(path).expanduser().resolve()
    try:
        st = file.stat()
    except FileNotFoundError:
        raise VideoError(f"{path}: file not found") from None
    except OSError as e:
        raise VideoError(f"{path}: cannot read ({e.strerror or e})") from None
    if file.is_dir():
        raise VideoError(f"{path}: is a directory, not a media file")
    if st.st_size == 0:
        raise VideoError(f"{path}: file is empty")
    return file, (str(file), st.st_mtime_ns, st.st_size, *extra)


def _check_max_side(max_side: int | None) -> None:
    if max_side is not None and (isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 1):
        raise RmsdError(f"max_side must be a positive integer or None, got {max_side!r}")


def _fit(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """(width, height) scaled down so the longer side is at most max_side, aspect kept; never scaled up."""
    if not max_side or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


# ----------------------------------------------------------------------------- images
def _read_image(file: Path, max_side: int | None) -> np.ndarray:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(file) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
                rgba = im.convert("RGBA")
                im = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
            im = im.convert("RGB")
            size = _fit(im.width, im.height, max_side)
            if size != im.size:
                im = im.resize(size, Image.Resampling.LANCZOS)
            return _read_only(np.array(im, dtype=np.uint8))
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise VideoError(f"{file}: cannot read image ({_one_line(e)})") from None


# ----------------------------------------------------------------------------- videos
class _SeekFailed(Exception):
    """Seeking did not land at or before the target (no index, imprecise index): decode instead."""


@dataclass
class _Timeline:
    start: int  # pts of the first frame, stream time base
    length: Fraction  # duration in pts units
    step: Fraction  # pts per frame at the nominal rate
    time_base: Fraction

    def targets(self, n: int) -> list[Fraction]:
        """Centres of n equal segments, in pts.

        Each is nudged later by up to one tick so that a frame whose pts was rounded to a
        coarse time base (matroska stores milliseconds: 1/30 s becomes 33, 2/3 s becomes 667)
        still counts as on screen at a target that falls exactly on it.
        """
        slack = min(Fraction(1), self.step / 8)
        return [self.start + self.length * (2 * i + 1) / (2 * n) + slack for i in range(n)]

    def seconds(self, pts: Fraction | int) -> float:
        return float((pts - self.start) * self.time_base)


@dataclass
class _DecodeLog:
    """What one decode noticed: packets skipped as undecodable, and whether the frames ran out before a target."""

    errors: list[str] = field(default_factory=list)
    ran_out: bool = False


def _one_line(error: BaseException) -> str:
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return " ".join(str(text).split())


def _decode_file(file: Path, num_frames: int, max_side: int | None, strategy: str) -> Frames:
    import av

    run = _DecodeLog()
    try:
        with _open(file) as container:
            stream = _video_stream(container, file)
            timeline = _timeline(container, stream)
            if timeline is None:  # no declared duration: read packet timestamps, then decode afresh
                timeline, picks = _scan_timeline(container, stream, file), None
            else:
                picks = _pick(container, stream, timeline, timeline.targets(num_frames), strategy, run)
        if picks is None:  # scanned, or a seek missed: decode from the start in a fresh container
            with _open(file) as container:
                stream = _video_stream(container, file)
                picks = _pick_by_decoding(container, stream, timeline, timeline.targets(num_frames), run)
        array = _to_array([frame for _, frame in picks], max_side)
    except av.FFmpegError as e:
        raise VideoError(f"{file}: cannot decode video ({_one_line(e)})") from None
    if run.errors:
        log.warning("%s: skipped %d undecodable packet(s) (%s)", file, len(run.errors), run.errors[-1])
    _warn_if_short(file, picks, timeline, run)
    duration = float(timeline.length * timeline.time_base)
    return Frames(array=_read_only(array), fps=num_frames / duration,
                  timestamps=tuple(timeline.seconds(pts) for pts, _ in picks), duration=duration, path=str(file))


def _open(file: Path) -> Any:
    import av

    try:
        return av.open(str(file), mode="r")
    except av.FFmpegError as e:
        raise VideoError(f"{file}: cannot open as a video ({_one_line(e)}): truncated, or not a format FFmpeg reads") \
            from None


def _video_stream(container: Any, file: Path) -> Any:
    """The first real video stream (cover art in audio files is a one-picture 'video' stream: skipped)."""
    import av

    streams = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
    if not streams:
        raise VideoError(f"{file}: no video stream (audio-only or not a video file)")
    stream = streams[0]
    stream.thread_type = "AUTO"  # frame + slice threads: 10-15% on 2 cores, more on bigger machines
    return stream


def _timeline(container: Any, stream: Any) -> _Timeline | None:
    """Start, length and frame step from the metadata; None when the file declares no duration."""
    import av

    step, time_base = _step_and_base(stream)
    start = stream.start_time if stream.start_time is not None else 0
    if stream.duration and stream.duration > 0:  # mp4, avi: the video track itself
        length = Fraction(stream.duration)
    elif container.duration and container.duration > 0:  # matroska/webm declare the file's length only
        length = Fraction(container.duration, av.time_base) / time_base
    else:
        return None
    return _Timeline(start, length, step, time_base)


def _scan_timeline(container: Any, stream: Any, file: Path) -> _Timeline:
    """The timeline from packet timestamps (demuxing only, no decoding), at the nominal rate where there are none."""
    base = _Timeline(0, Fraction(0), *_step_and_base(stream))
    low = high = None
    count = 0
    for packet in container.demux(stream):
        if packet.size == 0:  # the flush packet at the end
            continue
        count += 1
        if packet.pts is not None:
            low = packet.pts if low is None else min(low, packet.pts)
            end = packet.pts + (packet.duration or base.step)
            high = end if high is None else max(high, end)
    if count == 0:
        raise VideoError(f"{file}: the video stream holds no frames")
    if low is None:
        return _Timeline(0, count * base.step, base.step, base.time_base)
    return _Timeline(low, Fraction(high - low), base.step, base.time_base)


def _step_and_base(stream: Any) -> tuple[Fraction, Fraction]:
    import av

    time_base = stream.time_base or Fraction(1, av.time_base)
    rate = stream.guessed_rate or stream.average_rate or Fraction(25)  # FFmpeg's best guess, also for raw streams
    return 1 / (Fraction(rate) * time_base), time_base


def _warn_if_short(file: Path, picks: list, timeline: _Timeline, run: _DecodeLog) -> None:
    """Frames that run out well before the declared end mean a truncated file: say so, keep going."""
    last = picks[-1][0]
    covered = (last - timeline.start + timeline.step) / timeline.length
    if run.ran_out and covered < 0.9:
        log.warning("%s: frames stop at %.2f s of the %.2f s the file declares (truncated?); the last frame repeats",
                    file, timeline.seconds(last), float(timeline.length * timeline.time_base))


# ----------------------------------------------------------------------------- picking frames
class _Cursor:
    """A decoding position: `prev`, the last frame at or before the current target, and `ahead`, the next one.

    Frames are (pts, av.VideoFrame) pairs and stay in the decoder's pixel format: only the
    picked ones are ever converted to RGB.
    """

    def __init__(self, frames: Iterator[tuple[Any, Any]]):
        self.frames = frames
        self.prev: tuple[Any, Any] | None = None
        self.ahead = next(frames, None)

    def advance_to(self, target: Fraction) -> tuple[Any, Any] | None:
        """The frame on screen at `target` (the first frame if `target` precedes it); None if there are no frames."""
        while self.ahead is not None and self.ahead[0] <= target:
            self.prev, self.ahead = self.ahead, next(self.frames, None)
        return self.prev or self.ahead

    @property
    def position(self) -> Any:
        """pts of the newest decoded frame."""
        newest = self.ahead or self.prev
        return newest[0] if newest else None


def _decoded(container: Any, stream: Any, timeline: _Timeline, run: _DecodeLog,
             after_seek: bool = False) -> Iterator[tuple[Any, Any]]:
    """(pts, frame) in presentation order; an undecodable packet is skipped (as ffmpeg does) and noted in `run`.

    Frames without a pts (raw elementary streams) are placed at the nominal rate from the
    start; after a seek that would be wrong, so it counts as a failed seek.
    """
    import av

    count = 0
    for packet in container.demux(stream):
        try:
            frames = packet.decode()
        except av.FFmpegError as e:
            run.errors.append(_one_line(e))
            continue
        for frame in frames:
            if frame.pts is None and after_seek:
                raise _SeekFailed
            pts = frame.pts if frame.pts is not None else timeline.start + count * timeline.step
            count += 1
            yield pts, frame


def _pick(container: Any, stream: Any, timeline: _Timeline, targets: list[Fraction], strategy: str,
          run: _DecodeLog) -> list | None:
    """The (pts, frame) on screen at each target; None if decoding must start over in a fresh container
    (a seek missed, or the index probe moved the container and there is no index to use)."""
    spacing = timeline.length / len(targets) / timeline.step  # frames between two targets
    if strategy == "decode" or (strategy == "auto" and spacing <= SEEK_COST_FRAMES):
        return _pick_by_decoding(container, stream, timeline, targets, run)
    entries = stream.index_entries
    moved = False
    if len(entries) < 2:  # matroska loads its cues (the keyframe index) on the first seek
        _seek_to(container, stream, int(targets[-1]))
        entries, moved = stream.index_entries, True
    last_key = entries.search_timestamp(int(targets[-1]), backward=True)
    if last_key < 0 or entries[last_key].timestamp <= timeline.start:  # one keyframe, or no index: nowhere to seek
        return None if moved else _pick_by_decoding(container, stream, timeline, targets, run)
    threshold = None if strategy == "seek" else SEEK_COST_FRAMES * timeline.step
    try:
        return _pick_by_seeking(container, stream, timeline, targets, threshold, moved, run)
    except _SeekFailed:
        log.debug("seeking in %s missed its targets; decoding from the start", container.name)
        return None


def _pick_by_decoding(container: Any, stream: Any, timeline: _Timeline, targets: list[Fraction],
                      run: _DecodeLog) -> list:
    """Decode from the current position (the start) and stop after the last target."""
    cursor = _Cursor(_decoded(container, stream, timeline, run))
    picks = [cursor.advance_to(t) for t in targets]
    run.ran_out = cursor.ahead is None
    if picks[0] is None:
        raise VideoError(f"{container.name}: no frame could be decoded"
                         + (f" ({run.errors[-1]})" if run.errors else " (empty video stream)"))
    return picks


def _pick_by_seeking(container: Any, stream: Any, timeline: _Timeline, targets: list[Fraction],
                     threshold: Fraction | None, moved: bool, run: _DecodeLog) -> list:
    """Per target, seek to the keyframe before it when that skips more than `threshold` pts of decoding
    (None: always seek), else decode forward from where the decoder is."""
    entries = stream.index_entries
    cursor: _Cursor | None = None
    picks = []
    for target in targets:
        key = entries.search_timestamp(int(target), backward=True)
        keyframe = entries[key].timestamp if key >= 0 else timeline.start
        position = cursor.position if cursor else timeline.start
        if threshold is None or (cursor is None and moved) or (position is not None and keyframe - position > threshold):
            cursor = _seek_cursor(container, stream, timeline, target, run)
        elif cursor is None:
            cursor = _Cursor(_decoded(container, stream, timeline, run))
        pick = cursor.advance_to(target)
        if pick is None:
            raise _SeekFailed
        picks.append(pick)
    run.ran_out = cursor.ahead is None
    return picks


def _seek_cursor(container: Any, stream: Any, timeline: _Timeline, target: Fraction, run: _DecodeLog) -> _Cursor:
    """A cursor whose first frame is at or before `target`; one retry a keyframe earlier (open GOPs, B-frames)."""
    offset = int(target)
    for _ in range(2):
        _seek_to(container, stream, offset)
        cursor = _Cursor(_decoded(container, stream, timeline, run, after_seek=True))
        if cursor.ahead is not None and cursor.ahead[0] <= target:
            return cursor
        entries = stream.index_entries  # retry from the keyframe before the one just tried
        key = entries.search_timestamp(offset, backward=True)
        key = entries.search_timestamp(entries[key].timestamp - 1, backward=True) if key >= 0 else -1
        if key < 0:
            break
        offset = entries[key].timestamp
    raise _SeekFailed


def _seek_to(container: Any, stream: Any, pts: int) -> None:
    """Seek to the keyframe at or before `pts` (one place, so tests can count seeks)."""
    container.seek(pts, stream=stream, backward=True, any_frame=False)


def _to_array(frames: list[Any], max_side: int | None) -> np.ndarray:
    """RGB uint8 [N, H, W, 3] at the first frame's size fitted to max_side (a repeated frame is converted once)."""
    width, height = _fit(frames[0].width, frames[0].height, max_side)
    out = np.empty((len(frames), height, width, 3), np.uint8)
    done: dict[int, int] = {}
    for i, frame in enumerate(frames):
        if id(frame) in done:
            out[i] = out[done[id(frame)]]
            continue
        scaled = (width, height) != (frame.width, frame.height)
        rgb = frame.reformat(width=width, height=height, format="rgb24", interpolation="AREA" if scaled else None)
        out[i] = rgb.to_ndarray()
        done[id(frame)] = i
    return out
