"""`coirl demo`: what exists end to end so far, on the simulated Panda.

Scripted Lift demonstrations in MuJoCo go through the episode writer (two cameras), a second
writer is killed mid-episode to show nothing committed is lost, then verify, relabel, a LeRobot
v3 round trip, and learner-style minibatch sampling. Grows as the learner and nodes land.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from coirl_ros.constants import ACTION, OBS_STATE, TIMESTAMP, image_key
from coirl_ros.data import EpisodeStore
from coirl_ros.data.transition_sampler import TransitionSampler

IMAGE_SIZE = (64, 64)


def _killed_writer_child(store_root: str) -> None:
    """Runs in a subprocess: records part of an episode, then dies as a crash would (SIGKILL)."""
    store = EpisodeStore.open(store_root)
    writer = store.writer(flush_every=10)
    rng = np.random.default_rng(123)
    writer.begin_episode("lift", "teleop")
    for t in range(25):
        frame = {OBS_STATE: np.zeros(8, np.float32), ACTION: np.zeros(8, np.float32), TIMESTAMP: t * 0.05}
        for cam in store.spec.camera_names:
            frame[image_key(cam)] = rng.integers(0, 255, (*IMAGE_SIZE, 3), dtype=np.uint8)
        writer.add_frame(frame)
        if t == 19:
            writer.flush()  # what reached disk before the crash is kept in .staging for inspection
    os.kill(os.getpid(), signal.SIGKILL)


def run_store_demo(out: Path, episodes: int = 6) -> None:
    """Run the demo into `out` (replaced if it exists) and print what happens at each stage."""
    from coirl_ros.sim.demos import generate_demos

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    root = out / "episodes.zarr"
    t0 = time.perf_counter()
    report = generate_demos("lift", episodes, root, image_size=IMAGE_SIZE, progress=False)
    store = EpisodeStore.open(root)
    print(f"[1/6] {report} in {time.perf_counter() - t0:.1f} s -> {root} (cameras {store.spec.camera_names})")

    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from coirl_ros.store_demo import _killed_writer_child as f; f(sys.argv[1])",
            str(root),
        ],
        check=False,
    )
    check = store.verify()
    partial = [(p.name, p.frames_flushed) for p in check.partial]
    print(
        f"[2/6] a second writer was killed mid-episode (exit {child.returncode}): {len(check.ok)} episodes"
        f" intact, corrupt {check.corrupt}, partial (invisible to readers, frames on disk) {partial}"
    )
    store.remove_abandoned()

    meta = store.relabel(report.saved[0], False)
    print(f"[3/6] relabelled episode {meta.index}: success={meta.success}")

    from coirl_ros.data.lerobot_io import export_to_lerobot, import_from_lerobot

    export = export_to_lerobot(store, out / "lerobot", progress=False)
    back = import_from_lerobot(out / "lerobot", out / "reimported.zarr", progress=False)
    print(f"[4/6] LeRobot v3 round trip:\n      {export}\n      {back}")

    sampler = TransitionSampler(store, images="preload")
    sampler.refresh()
    rng = np.random.default_rng(0)
    sampler.sample(256, rng)
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < 1.0:
        sampler.sample(256, rng)
        n += 256
    rate = n / (time.perf_counter() - t0)
    print(
        f"[5/6] sampler: {sampler.num_transitions()} transitions over {sampler.num_episodes} episodes,"
        f" {rate:,.0f} transitions/s with images"
    )
    print(f"[6/6] done: inspect with `coirl episodes list --store {root}`")
