"""Frame loading speed: `rmsd.media.video.load_frames` against transformers' PyAV loader.

Writes H.264 test clips (320x240, 30 fps, a scrolling texture and a moving square so that
inter frames carry real residuals): 10 s with a keyframe every 250 frames (libx264's
default), 10 s and 60 s with a keyframe every 30 frames, and 60 s with GOP 250. For N = 8,
16, 32 it times, in one process and interleaved (median of --repeats runs, page cache warm):
`load_frames` with its automatic strategy, forced decode-everything and forced seek-per-frame,
and `transformers.video_utils.load_video(path, num_frames=N, backend="pyav")`; then the cached
call. It also estimates the fixed price of one seek in frame-decode equivalents, the figure
behind `SEEK_COST_FRAMES`. Not a test: timings depend on the machine and its load.

    .venv/bin/python benchmarks/bench_video.py
    .venv/bin/python benchmarks/bench_video.py --repeats 3 --frames 8 32

Writes benchmarks/results/video.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from rmsd.media import frame_cache, video

CLIPS = [  # name, seconds, keyframe interval
    ("10s_gop250", 10, 250),
    ("10s_gop30", 10, 30),
    ("60s_gop30", 60, 30),
    ("60s_gop250", 60, 250),
]
FPS, WIDTH, HEIGHT = 30, 320, 240


def write_clip(path: Path, seconds: int, gop: int) -> None:
    """A scrolling smooth-noise texture with a square crossing it: realistic motion residuals."""
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (HEIGHT // 8 + 1, 2 * WIDTH // 8 + 1, 3), dtype=np.uint8)
    texture = np.kron(texture, np.ones((8, 8, 1), np.uint8))[:HEIGHT, : 2 * WIDTH]
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=FPS, options={
            "preset": "veryfast", "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"})
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for i in range(seconds * FPS):
            shift = (2 * i) % WIDTH
            picture = texture[:, shift : shift + WIDTH].copy()
            x, y = (5 * i) % (WIDTH - 40), (3 * i) % (HEIGHT - 40)
            picture[y : y + 40, x : x + 40] = (255, 40, 40)
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_clip(path: Path, n: int, repeats: int) -> dict[str, float]:
    """Median seconds per call for each loader; interleaved so that load drifts hit all alike."""
    from transformers.video_utils import load_video

    loaders = {
        "auto": lambda: video.load_frames(path, n, cache=False),
        "decode": lambda: video.load_frames(path, n, strategy="decode", cache=False),
        "seek": lambda: video.load_frames(path, n, strategy="seek", cache=False),
        "hf": lambda: load_video(str(path), num_frames=n, backend="pyav"),
    }
    for fn in loaders.values():
        fn()  # warm the page cache and the imports
    samples: dict[str, list[float]] = {k: [] for k in loaders}
    for _ in range(repeats):
        for name, fn in loaders.items():
            samples[name].append(median_seconds(fn, 1))
    out = {k: statistics.median(v) for k, v in samples.items()}
    out["seeks"] = count_seeks(lambda: video.load_frames(path, n, cache=False))
    frame_cache.clear_cache()
    video.load_frames(path, n)
    out["cached"] = median_seconds(lambda: video.load_frames(path, n), max(repeats, 20))
    return out


def count_seeks(fn) -> int:
    """How many times `fn` made `load_frames` seek (index probes included)."""
    calls = []
    real = video._seek_to
    video._seek_to = lambda *a: (calls.append(a), real(*a))
    try:
        fn()
    finally:
        video._seek_to = real
    return len(calls)


def seek_price_frames(t: dict[str, float], total: int, gop: int, n: int) -> float:
    """Fixed cost of one seek in frame-decode equivalents: seek time minus the frames it had to decode."""
    per_frame = t["decode"] / (total * (2 * n - 1) / (2 * n))  # decode-all stops after the last target
    wanted = [(2 * i + 1) * total // (2 * n) for i in range(n)]
    decoded = sum(k % gop + 1 for k in wanted)  # from the keyframe before each target
    return (t["seek"] / per_frame - decoded) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--frames", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "video.md")
    args = parser.parse_args()

    rows, prices = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name, seconds, gop in CLIPS:
            path = Path(tmp) / f"{name}.mp4"
            start = time.perf_counter()
            write_clip(path, seconds, gop)
            print(f"wrote {name} ({path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - start:.1f} s", flush=True)
            for n in args.frames:
                t = time_clip(path, n, args.repeats)
                if gop < seconds * FPS // n:  # seeking skips frames only when keyframes are closer than targets
                    prices.append(seek_price_frames(t, seconds * FPS, gop, n))
                rows.append((name, n, t))
                print(table_row(rows[-1]), flush=True)

    report = render(rows, prices, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(report)


def table_row(row) -> str:
    name, n, t = row
    ms = {k: f"{v * 1e3:.0f}" for k, v in t.items()}
    return (f"| {name} | {n} | {ms['auto']} ({t['seeks']}) | {ms['decode']} | {ms['seek']} | {ms['hf']} "
            f"| {n / t['auto']:.0f} | {n / t['hf']:.0f} | **{t['hf'] / t['auto']:.2f}x** "
            f"| {t['cached'] * 1e6:.0f} | {t['auto'] / t['cached']:.0f}x |")


def render(rows, prices, args) -> str:
    header = [
        "# Frame loading: rmsd.media.video.load_frames vs transformers load_video (PyAV)",
        "",
        f"Command: `.venv/bin/python benchmarks/bench_video.py --repeats {args.repeats} "
        f"--frames {' '.join(map(str, args.frames))}`  ",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (shared), "
        f"PyAV {av.__version__}, {time.strftime('%Y-%m-%d')}.  ",
        f"Clips: H.264 {WIDTH}x{HEIGHT} {FPS} fps, textured motion. Times are medians of {args.repeats} "
        "interleaved runs, in ms; frames/s = N / time. `auto` is what `load_frames` does by default "
        "(in brackets: how many seeks it made); speed-up = HF time / auto time; "
        "cached = a repeated call served by the frame cache.",
        "",
        "| clip | N | auto ms (seeks) | decode ms | seek ms | HF ms | auto frames/s | HF frames/s | speed-up vs HF "
        "| cached µs | cached speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines = header + [table_row(r) for r in rows]
    if prices:
        lines += ["", f"Estimated fixed price of one seek: median {statistics.median(prices):.1f} frame decodes "
                  f"(range {min(prices):.1f}-{max(prices):.1f}); `SEEK_COST_FRAMES` = {video.SEEK_COST_FRAMES}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
