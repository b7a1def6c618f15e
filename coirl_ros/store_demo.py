"""`coirl demo` for now: the episode store end to end, on synthetic joint-space motions.

Until the simulation lands this is the end-to-end path that exists: record episodes through the
writer, survive a writer killed mid-episode, verify, relabel, export to LeRobot and import back,
and sample learner minibatches. The motions are minimum-jerk moves between random joint
configurations inside the configured limits; the camera images are drawn from the joint angles.
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

from coirl_ros.configs import RobotConfig, TaskConfig, config_hash, load_config
from coirl_ros.constants import ACTION, OBS_STATE, TIMESTAMP, image_key
from coirl_ros.data import EpisodeSpec, EpisodeStore, EpisodeWriter
from coirl_ros.data.transition_sampler import TransitionSampler
from coirl_ros.paths import config_dir

IMAGE_SIZE = (96, 128)


def min_jerk(start: np.ndarray, goal: np.ndarray, steps: int) -> np.ndarray:
    """Minimum-jerk interpolation [steps, dim] from start to goal (the profile of a smooth human reach)."""
    s = np.linspace(0.0, 1.0, steps)[:, None]
    return start + (goal - start) * (10 * s**3 - 15 * s**4 + 6 * s**5)


def draw_joint_image(q: np.ndarray, lower: np.ndarray, upper: np.ndarray, tint: int) -> np.ndarray:
    """A bar per joint, height = normalised position: enough to see the motion in a viewer."""
    h, w = IMAGE_SIZE
    img = np.full((h, w, 3), 30, np.uint8)
    img[..., tint] = 60
    bar_w = w // len(q)
    for j, frac in enumerate((q - lower) / (upper - lower)):
        top = int((1 - np.clip(frac, 0, 1)) * (h - 1))
        img[top:, j * bar_w + 2 : (j + 1) * bar_w - 2] = (220, 180, 40)
    return img


def record_episode(
    writer: EpisodeWriter, robot: RobotConfig, task: str, rng: np.random.Generator, steps: int
) -> int:
    """One scripted reach with the gripper closing half-way; returns the episode index."""
    lower = np.array([j.lower for j in robot.joints] + [min(robot.gripper.open, robot.gripper.closed)])
    upper = np.array([j.upper for j in robot.joints] + [max(robot.gripper.open, robot.gripper.closed)])
    margin = 0.2 * (upper - lower)
    start, goal = (rng.uniform(lower + margin, upper - margin) for _ in range(2))
    start[-1], goal[-1] = robot.gripper.open, robot.gripper.closed
    path = min_jerk(start, goal, steps + 1)
    index = writer.begin_episode(task, "scripted")
    for t in range(steps):
        q = path[t].astype(np.float32)
        frame = {
            OBS_STATE: q,
            ACTION: path[t + 1].astype(np.float32),  # next waypoint = position target
            TIMESTAMP: t / robot.control_rate_hz,
        }
        for k, cam in enumerate(robot.cameras):
            frame[image_key(cam.name)] = draw_joint_image(q, lower, upper, tint=k % 3)
        writer.add_frame(frame)
    return index


def _killed_writer_child(store_root: str, robot_yaml: str, task: str) -> None:
    """Runs in a subprocess: records part of an episode, then dies as a crash would (SIGKILL)."""
    robot = load_config(robot_yaml, RobotConfig)
    store = EpisodeStore.open(store_root)
    writer = store.writer(flush_every=10)
    rng = np.random.default_rng(123)
    writer.begin_episode(task, "teleop")
    lower = np.array([j.lower for j in robot.joints] + [0.0], np.float32)
    for t in range(25):
        frame = {OBS_STATE: lower + 0.01 * t, ACTION: lower, TIMESTAMP: t * 0.05}
        for cam in robot.cameras:
            frame[image_key(cam.name)] = rng.integers(0, 255, (*IMAGE_SIZE, 3), dtype=np.uint8)
        writer.add_frame(frame)
        if t == 19:
            writer.flush()  # what reached disk before the crash is kept in .staging for inspection
    os.kill(os.getpid(), signal.SIGKILL)


def run_store_demo(out: Path, episodes: int = 6, steps: int = 60) -> None:
    """Run the demo into `out` (replaced if it exists) and print what happens at each stage."""
    robot_yaml = config_dir() / "robot.yaml"
    robot = load_config(robot_yaml, RobotConfig)
    task = load_config(config_dir() / "task.yaml", TaskConfig)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    spec = EpisodeSpec.from_robot_config(robot, image_size=IMAGE_SIZE)
    store = EpisodeStore.create(out / "episodes.zarr", spec)
    print(
        f"[1/6] store {store.root}: state {spec.state_dim}, action {spec.action_dim},"
        f" cameras {spec.camera_names}"
    )

    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    with store.writer(robot_config_hash=config_hash(robot)) as writer:
        for i in range(episodes):
            index = record_episode(writer, robot, task.name, rng, steps)
            writer.save_episode(success=bool(i % 3 != 2))
            print(f"      recorded episode {index} ({steps} frames)")
    print(f"[2/6] {episodes} episodes in {time.perf_counter() - t0:.1f} s")

    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from coirl_ros.store_demo import _killed_writer_child as f; f(*sys.argv[1:])",
            str(store.root),
            str(robot_yaml),
            task.name,
        ],
        check=False,
    )
    report = store.verify()
    partial = [(p.name, p.frames_flushed) for p in report.partial]
    print(
        f"[3/6] a writer was killed mid-episode (exit {child.returncode}): {len(report.ok)} episodes intact,"
        f" corrupt {report.corrupt}, partial (invisible to readers) {partial}"
    )
    store.remove_abandoned()

    meta = store.relabel(0, False)
    print(f"[4/6] relabelled episode {meta.index}: success={meta.success}")

    from coirl_ros.data.lerobot_io import export_to_lerobot, import_from_lerobot

    export = export_to_lerobot(store, out / "lerobot", progress=False)
    back = import_from_lerobot(out / "lerobot", out / "reimported.zarr", progress=False)
    print(f"[5/6] LeRobot v3 round trip:\n      {export}\n      {back}")

    sampler = TransitionSampler(store, images="preload")
    sampler.refresh()
    batch = sampler.sample(256, rng)
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < 1.0:
        sampler.sample(256, rng)
        n += 256
    print(
        f"[6/6] sampler: {sampler.num_transitions()} transitions over {sampler.num_episodes} episodes,"
        f" batch keys {sorted(batch)[:4]}..., {n / (time.perf_counter() - t0):,.0f} transitions/s with images"
    )
    print(f"done: inspect with `coirl episodes list --store {store.root}`")
