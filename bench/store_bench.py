"""Throughput benchmark of the zarr episode store: recording and learner-style sampling.

What is measured
----------------
1. Sustained recording through the real `EpisodeWriter` (begin_episode / add_frame /
   save_episode): two 480x640 RGB cameras + 8-dim state + 8-dim action at a nominal 30 Hz,
   written as fast as possible, several episodes. Reported: frames/s (one frame = one time
   step with both images), raw MB/s (uncompressed bytes handed to the writer), on-disk MB/s
   (allocated size of the store, summed with os.walk), compression ratio, multiple of real
   time (frames/s / 30; target >= 3x), save_episode (commit) time p50/max, add_frame latency.
   Only the writer calls are timed; the camera-like images (smooth scene with moving shapes
   plus Gaussian sensor noise) are generated into a small pool before timing starts.
2. Learner-style minibatch sampling (`TransitionSampler.sample`, batch 256) from 100 episodes:
   a state-only store with images="none" (target >= 5,000 transitions/s), and a store with two
   84x84 cameras with images="preload" and images="lazy". The refresh (load) time of every
   mode is reported; writing these stores is untimed setup (its duration is printed).
3. A markdown table of the results plus machine info, and a CSV (default
   bench/results/store_bench.csv).

MB = 10**6 bytes. The writer never fsyncs chunk data (only the directory of the commit
rename), so recording speed is the speed into the page cache; the time `os.sync()` then takes
to push the recording to the device is reported separately as an indication of whether the
disk itself keeps up.

How to run
----------
    make bench                                   # = .venv/bin/python bench/store_bench.py
    .venv/bin/python bench/store_bench.py --quick        # smoke run, a few seconds
    .venv/bin/python bench/store_bench.py --dir /data --keep --csv out.csv
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr
from bench_common import machine_info  # bench/ is on sys.path when run as a script

from coirl_ros.constants import ACTION, DONE, OBS_STATE, TIMESTAMP, image_key
from coirl_ros.data.episode_spec import EpisodeSpec
from coirl_ros.data.episode_store import EpisodeStore
from coirl_ros.data.transition_sampler import TransitionSampler

FPS = 30.0
STATE_DIM = 8
ACTION_DIM = 8
RECORD_CAMERAS = (("front", (480, 640)), ("wrist", (480, 640)))
SAMPLE_CAMERAS = (("front", (84, 84)), ("wrist", (84, 84)))
MB = 1e6

TARGET_REALTIME_X = 3.0
TARGET_STATE_TPS = 5_000.0

DEFAULT_CSV = Path(__file__).resolve().parent / "results" / "store_bench.csv"


@dataclass
class Sizes:
    """Workload sizes; `--quick` swaps in a tiny set so a smoke run takes seconds."""

    record_episodes: int
    record_frames: int  # frames per recorded episode
    pool_frames: int  # distinct pre-generated images per camera
    sample_episodes: int
    sample_frames: int  # mean episode length of the sampling stores (+-10%)
    batch_size: int
    sample_seconds: float  # time budget per sampling mode


FULL = Sizes(
    record_episodes=4,
    record_frames=150,
    pool_frames=60,
    sample_episodes=100,
    sample_frames=200,
    batch_size=256,
    sample_seconds=3.0,
)
QUICK = Sizes(
    record_episodes=2,
    record_frames=15,
    pool_frames=8,
    sample_episodes=10,
    sample_frames=30,
    batch_size=256,
    sample_seconds=0.3,
)


@dataclass
class Result:
    """One row of the table/CSV; `higher_is_better` decides pass/fail against `target`."""

    section: str
    metric: str
    value: float | str
    unit: str = ""
    target: float | None = None
    higher_is_better: bool = True
    fmt: str = "{:,.1f}"

    @property
    def passed(self) -> bool | None:
        if self.target is None or isinstance(self.value, str):
            return None
        return self.value >= self.target if self.higher_is_better else self.value <= self.target

    def value_text(self) -> str:
        text = self.value if isinstance(self.value, str) else self.fmt.format(self.value)
        return f"{text} {self.unit}".strip()

    def target_text(self) -> str:
        if self.target is None:
            return ""
        op = ">=" if self.higher_is_better else "<="
        return f"{op} {self.fmt.format(self.target)} {self.unit}".strip()


# ---- synthetic data ------------------------------------------------------------------------------
def camera_pool(h: int, w: int, n: int, seed: int) -> list[np.ndarray]:
    """`n` camera-like uint8 RGB frames of a slowly changing scene.

    Neither constant images (lz4 would shrink them ~100x and flatter the disk numbers) nor
    uniform noise (incompressible, and unlike any camera): a smooth lit background with a
    low-frequency texture, a few coloured shapes moving between frames, and Gaussian sensor
    noise of sigma 2.5 grey levels, which is what limits compression on real cameras.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yn, xn = yy / h, xx / w
    tint = rng.uniform(0.6, 1.0, 3).astype(np.float32)
    # Vertical light falloff + horizontal gradient + a soft "floor" texture, per channel.
    base = (
        60.0
        + 110.0 * (1.0 - yn)[..., None] * tint
        + 40.0 * xn[..., None] * tint[::-1]
        + 12.0 * (np.sin(2 * np.pi * (3 * xn + 2 * yn)) * np.cos(2 * np.pi * 4 * yn))[..., None]
    ).astype(np.float32)
    shapes = []
    for _ in range(4):
        shapes.append(
            {
                "circle": bool(rng.integers(2)),
                "size": rng.uniform(0.06, 0.18) * min(h, w),
                "start": rng.uniform(0.15, 0.85, 2) * (h, w),
                "velocity": rng.uniform(-0.01, 0.01, 2) * (h, w),  # per frame
                "colour": rng.uniform(20, 235, 3).astype(np.float32),
            }
        )
    frames = []
    for i in range(n):
        img = base.copy()
        for s in shapes:
            cy, cx = s["start"] + s["velocity"] * i
            r = s["size"]
            y0, y1 = max(int(cy - r), 0), min(int(cy + r) + 1, h)
            x0, x1 = max(int(cx - r), 0), min(int(cx + r) + 1, w)
            if y0 >= y1 or x0 >= x1:
                continue  # moved out of view
            if s["circle"]:
                mask = (yy[y0:y1, x0:x1] - cy) ** 2 + (xx[y0:y1, x0:x1] - cx) ** 2 <= r * r
                img[y0:y1, x0:x1][mask] = s["colour"]
            else:
                img[y0:y1, x0:x1] = s["colour"]
        img += rng.standard_normal((h, w, 3), dtype=np.float32) * 2.5
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    return frames


def lowdim_trajectory(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Smooth state/action trajectories (sinusoids + small noise), float32 [n, 8]."""
    t = np.arange(n, dtype=np.float32)[:, None] / FPS
    freq = rng.uniform(0.1, 0.5, STATE_DIM).astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, STATE_DIM).astype(np.float32)
    noise = 0.01 * rng.standard_normal((n, STATE_DIM), dtype=np.float32)
    state = np.sin(2 * np.pi * freq * t + phase) + noise
    action = np.diff(state, axis=0, append=state[-1:])[:, :ACTION_DIM] * FPS
    return state.astype(np.float32), action.astype(np.float32)


def frames_of_episode(
    n: int, pools: dict[str, list[np.ndarray]], rng: np.random.Generator, offset: int = 0
) -> Iterator[dict[str, Any]]:
    """The frame dicts of one episode; images cycle through the pools (starting at `offset`)."""
    state, action = lowdim_trajectory(n, rng)
    for t in range(n):
        frame: dict[str, Any] = {OBS_STATE: state[t], ACTION: action[t], TIMESTAMP: t / FPS}
        for cam, pool in pools.items():
            frame[image_key(cam)] = pool[(offset + t) % len(pool)]
        if t == n - 1:
            frame[DONE] = True  # terminal, so the sampler may draw the last frame too
        yield frame


def frame_nbytes(frame: dict[str, Any]) -> int:
    """Uncompressed bytes handed to the writer for one frame (DONE is optional, left out)."""
    return sum(np.asarray(v).nbytes for k, v in frame.items() if k != DONE)


# ---- measurement helpers ----------------------------------------------------------------------
def dir_size(root: Path) -> tuple[int, int]:
    """(allocated bytes, apparent bytes) of every file under `root`."""
    allocated = apparent = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            allocated += st.st_blocks * 512  # what the filesystem really uses, incl. block rounding
            apparent += st.st_size
    return allocated, apparent


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def write_store(
    root: Path, spec: EpisodeSpec, episodes: int, mean_frames: int, pool_frames: int, seed: int
) -> tuple[int, float]:
    """Untimed setup: `episodes` episodes of ~`mean_frames` frames; returns (frames, seconds)."""
    rng = np.random.default_rng(seed)
    pools = {name: camera_pool(h, w, pool_frames, seed + i) for i, (name, (h, w)) in enumerate(spec.cameras)}
    store = EpisodeStore.create(root, spec)
    total = 0
    t0 = time.perf_counter()
    lo, hi = int(mean_frames * 0.9), int(mean_frames * 1.1) + 1
    # flush_every = a whole episode: fewer zarr appends make the setup faster; it is not timed.
    with store.writer(flush_every=hi) as w:
        for ep in range(episodes):
            n = int(rng.integers(lo, hi))
            w.begin_episode("pick_cube", "teleop" if ep % 2 == 0 else "policy")
            for frame in frames_of_episode(n, pools, rng, offset=ep * 7):
                w.add_frame(frame)
            w.save_episode(success=bool(ep % 3))
            total += n
    return total, time.perf_counter() - t0


# ---- benchmarks -------------------------------------------------------------------------------
def bench_recording(base: Path, sizes: Sizes, log: Callable[[str], None]) -> list[Result]:
    spec = EpisodeSpec(STATE_DIM, ACTION_DIM, RECORD_CAMERAS, FPS)
    t0 = time.perf_counter()
    pools = {
        name: camera_pool(h, w, sizes.pool_frames, seed=10 + i)
        for i, (name, (h, w)) in enumerate(RECORD_CAMERAS)
    }
    log(f"  generated {sizes.pool_frames} frames per camera in {time.perf_counter() - t0:.1f} s (untimed)")
    rng = np.random.default_rng(0)
    # Build every frame dict up front so nothing but writer calls sits inside the timed region.
    episodes = [
        list(frames_of_episode(sizes.record_frames, pools, rng, offset=ep * 13))
        for ep in range(sizes.record_episodes)
    ]
    raw_bytes = sum(frame_nbytes(f) for ep in episodes for f in ep)
    n_frames = sum(len(ep) for ep in episodes)

    root = base / "record.zarr"
    store = EpisodeStore.create(root, spec)
    begin_s: list[float] = []
    add_s: list[float] = []
    save_s: list[float] = []
    clock = time.perf_counter
    with store.writer(flush_every=30) as w:
        for ep_frames in episodes:
            t = clock()
            w.begin_episode("pick_cube", "teleop")
            begin_s.append(clock() - t)
            for frame in ep_frames:
                t = clock()
                w.add_frame(frame)
                add_s.append(clock() - t)
            t = clock()
            w.save_episode(success=True)
            save_s.append(clock() - t)
    writer_s = sum(begin_s) + sum(add_s) + sum(save_s)

    allocated, apparent = dir_size(root)
    # Chunk data sits in the page cache; how long the device needs to take it is a separate fact.
    t = clock()
    os.sync()
    sync_s = clock() - t

    fps = n_frames / writer_s
    log(
        f"  {sizes.record_episodes} episodes x {sizes.record_frames} frames, writer time {writer_s:.2f} s, "
        f"store {allocated / MB:,.0f} MB on disk ({apparent / MB:,.0f} MB apparent)"
    )
    sec = "record 2x480x640 @30Hz"
    return [
        Result(sec, "frames recorded", n_frames, "frames", fmt="{:,.0f}"),
        Result(sec, "writer time (begin+add+save)", writer_s, "s", fmt="{:.2f}"),
        Result(sec, "frames/s", fps, "frames/s"),
        Result(sec, "multiple of real time (frames/s / 30)", fps / FPS, "x", TARGET_REALTIME_X, fmt="{:.2f}"),
        Result(sec, "raw MB/s (handed to writer)", raw_bytes / MB / writer_s, "MB/s"),
        Result(sec, "on-disk MB/s (allocated)", allocated / MB / writer_s, "MB/s"),
        Result(sec, "compression ratio (raw / on-disk)", raw_bytes / allocated, "x", fmt="{:.2f}"),
        Result(sec, "store size on disk", allocated / MB, "MB"),
        Result(sec, "save_episode (commit) p50", 1e3 * pct(save_s, 50), "ms"),
        Result(sec, "save_episode (commit) max", 1e3 * max(save_s), "ms"),
        Result(sec, "begin_episode p50", 1e3 * pct(begin_s, 50), "ms"),
        Result(sec, "add_frame p50", 1e3 * pct(add_s, 50), "ms", fmt="{:.2f}"),
        # Every flush_every-th add_frame flushes the buffer synchronously: the recorder's stall.
        Result(sec, "add_frame p99", 1e3 * pct(add_s, 99), "ms"),
        Result(sec, "add_frame max (flush)", 1e3 * max(add_s), "ms"),
        Result(sec, "os.sync() after recording", sync_s, "s", fmt="{:.2f}"),
        Result(sec, "frames/s incl. os.sync()", n_frames / (writer_s + sync_s), "frames/s"),
    ]


def time_sampling(
    sampler: TransitionSampler, batch_size: int, budget_s: float, min_batches: int = 3
) -> tuple[float, int]:
    """Transitions/s of `sampler.sample` over at least `budget_s` seconds; returns (rate, batches)."""
    rng = np.random.default_rng(1)
    sampler.sample(batch_size, rng)  # warm-up: first-call allocations and zarr caches are not steady state
    batches = 0
    t0 = time.perf_counter()
    while True:
        sampler.sample(batch_size, rng)
        batches += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= budget_s and batches >= min_batches:
            return batches * batch_size / elapsed, batches


def bench_sampling(base: Path, sizes: Sizes, log: Callable[[str], None]) -> list[Result]:
    results: list[Result] = []
    n_ep = sizes.sample_episodes

    # (a) state-only store, images="none".
    spec = EpisodeSpec(STATE_DIM, ACTION_DIM, (), FPS)
    frames, setup_s = write_store(
        base / "state.zarr", spec, n_ep, sizes.sample_frames, sizes.pool_frames, seed=100
    )
    log(f"  setup: state-only store, {n_ep} episodes / {frames:,} frames, written in {setup_s:.1f} s")
    sec = f"sample state-only, {n_ep} eps"
    results.append(Result(sec, "setup: write store (untimed)", setup_s, "s", fmt="{:.1f}"))
    results += sample_mode(EpisodeStore.open(base / "state.zarr"), "none", sizes, sec, TARGET_STATE_TPS, log)

    # (b) two 84x84 cameras, images="preload" and "lazy".
    spec = EpisodeSpec(STATE_DIM, ACTION_DIM, SAMPLE_CAMERAS, FPS)
    frames, setup_s = write_store(
        base / "images.zarr", spec, n_ep, sizes.sample_frames, sizes.pool_frames, seed=200
    )
    log(f"  setup: 2x84x84 store, {n_ep} episodes / {frames:,} frames, written in {setup_s:.1f} s")
    sec = f"sample 2x84x84, {n_ep} eps"
    results.append(Result(sec, "setup: write store (untimed)", setup_s, "s", fmt="{:.1f}"))
    store = EpisodeStore.open(base / "images.zarr")
    for mode in ("preload", "lazy"):
        results += sample_mode(store, mode, sizes, sec, None, log)
    return results


def sample_mode(
    store: EpisodeStore,
    mode: Literal["none", "lazy", "preload"],
    sizes: Sizes,
    sec: str,
    target: float | None,
    log: Callable[[str], None],
) -> list[Result]:
    sampler = TransitionSampler(store, images=mode)
    t0 = time.perf_counter()
    loaded = sampler.refresh()
    refresh_s = time.perf_counter() - t0
    rate, batches = time_sampling(sampler, sizes.batch_size, sizes.sample_seconds)
    log(
        f"  images={mode}: refresh {refresh_s:.2f} s ({loaded} episodes, "
        f"{sampler.num_transitions():,} transitions), {rate:,.0f} transitions/s over {batches} batches"
    )
    return [
        Result(sec, f"images={mode}: refresh (load) time", refresh_s, "s", fmt="{:.2f}"),
        Result(
            sec, f"images={mode}: transitions/s (batch {sizes.batch_size})", rate, "/s", target, fmt="{:,.0f}"
        ),
    ]


# ---- reporting --------------------------------------------------------------------------------
def filesystem_of(path: Path) -> str:
    """Filesystem type holding `path` (tmpfs vs ext4 changes the recording numbers a lot)."""
    best, fstype = "", "unknown"
    try:
        with open("/proc/mounts") as fh:
            for line in fh:
                parts = line.split()
                mount = parts[1]
                inside = str(path) == mount or str(path).startswith(mount.rstrip("/") + "/")
                if inside and len(mount) > len(best):
                    best, fstype = mount, parts[2]
    except OSError:
        pass
    return fstype


def store_machine_info(base: Path) -> dict[str, str]:
    return machine_info(
        {
            "zarr": zarr.__version__,
            "platform": platform.platform(),
            "bench dir": f"{base} ({filesystem_of(base.resolve())})",
        }
    )


def markdown_table(results: list[Result]) -> str:
    lines = ["| section | metric | value | target | pass |", "|---|---|---:|---|---|"]
    for r in results:
        verdict = {True: "PASS", False: "FAIL", None: ""}[r.passed]
        lines.append(f"| {r.section} | {r.metric} | {r.value_text()} | {r.target_text()} | {verdict} |")
    return "\n".join(lines)


def write_csv(path: Path, results: list[Result], info: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["section", "metric", "value", "unit", "target", "pass"])
        for r in results:
            target = "" if r.target is None else (">=" if r.higher_is_better else "<=") + str(r.target)
            passed = "" if r.passed is None else str(r.passed).lower()
            out.writerow([r.section, r.metric, r.value, r.unit, target, passed])
        for key, value in info.items():
            out.writerow(["machine", key, value, "", "", ""])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run in a few seconds")
    p.add_argument("--csv", type=Path, default=DEFAULT_CSV, help=f"CSV output (default {DEFAULT_CSV})")
    p.add_argument("--dir", type=Path, default=None, help="parent of the scratch dir (default: /tmp)")
    p.add_argument("--keep", action="store_true", help="keep the scratch stores instead of deleting them")
    p.add_argument("--record-episodes", type=int, help="episodes recorded (default 4, quick 2)")
    p.add_argument("--record-frames", type=int, help="frames per recorded episode (default 150)")
    p.add_argument("--sample-episodes", type=int, help="episodes of the sampling stores (default 100)")
    p.add_argument("--sample-seconds", type=float, help="time budget per sampling mode (default 3 s)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    overrides = {
        "record_episodes": args.record_episodes,
        "record_frames": args.record_frames,
        "sample_episodes": args.sample_episodes,
        "sample_seconds": args.sample_seconds,
    }
    sizes = Sizes(**{**sizes.__dict__, **{k: v for k, v in overrides.items() if v is not None}})

    # Always a fresh subdirectory, so cleaning up never touches anything the user put in --dir.
    parent = args.dir if args.dir is not None else Path(tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="coirl-store-bench-", dir=parent))

    def log(msg: str) -> None:
        print(msg, flush=True)

    t_start = time.perf_counter()
    info = store_machine_info(base)
    log(f"store benchmark ({'quick' if args.quick else 'full'}), scratch dir {base}")
    results: list[Result] = []
    try:
        log("1. sustained recording")
        results += bench_recording(base, sizes, log)
        log("2. minibatch sampling")
        results += bench_sampling(base, sizes, log)
    finally:
        if args.keep:
            log(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    total_s = time.perf_counter() - t_start

    print()
    print(markdown_table(results))
    print()
    for key, value in info.items():
        print(f"- {key}: {value}")
    print(f"- scratch dir: {base} ({'kept' if args.keep else 'removed'})")
    print(f"- total benchmark time: {total_s:.1f} s")
    write_csv(args.csv, results, info)
    print(f"- csv: {args.csv}")
    failed = [r.metric for r in results if r.passed is False]
    if failed:
        print(f"\nmissed targets: {', '.join(failed)}", file=sys.stderr)


if __name__ == "__main__":
    main()
