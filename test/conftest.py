"""Shared fixtures: a small episode spec, frame factory, and isolated ROS environments."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

# Before anything imports mujoco: headless offscreen rendering (the Makefile sets it too).
os.environ.setdefault("MUJOCO_GL", "egl")

from collections.abc import Callable, Iterator

import numpy as np
import pytest

from coirl_ros.constants import ACTION, DONE, OBS_STATE, REWARD, image_key
from coirl_ros.data import EpisodeSpec, EpisodeStore
from coirl_ros.scheduling import current_scheduling, set_scheduling

SMALL_SPEC = EpisodeSpec(
    state_dim=8, action_dim=8, cameras=(("front", (12, 16)), ("wrist", (12, 16))), fps=20.0
)


def make_frame(spec: EpisodeSpec, episode: int, t: int, **extra: object) -> dict:
    """A frame whose values encode (episode, t), so a test can tell frames apart after a round trip."""
    value = np.float32(episode * 1000 + t)
    frame = {
        OBS_STATE: np.full(spec.state_dim, value, np.float32),
        ACTION: np.full(spec.action_dim, -value, np.float32),
    }
    for name in spec.camera_names:
        frame[image_key(name)] = np.full((*dict(spec.cameras)[name], 3), (episode * 7 + t) % 256, np.uint8)
    frame.update(extra)
    return frame


def record(
    store: EpisodeStore, episodes: int, frames: int, source: str = "scripted", task: str = "lift"
) -> None:
    """Record `episodes` complete episodes of `frames` frames each (values from make_frame)."""
    with store.writer(flush_every=7) as writer:
        for _ in range(episodes):
            index = writer.begin_episode(task, source)
            for t in range(frames):
                writer.add_frame(make_frame(store.spec, index, t))
            writer.save_episode(success=index % 2 == 0)


def record_reach(
    store: EpisodeStore,
    source: str,
    episodes: int,
    seed: int,
    noise: float,
    scale: float,
    steps: int = 20,
    extra: Callable[[np.ndarray], dict] | None = None,
) -> None:
    """A toy reaching task for learner tests: s' = s + 0.1·u in the plane, success near the origin.

    Demos act u = clip(-2s, ±0.9) (recorded as the residual action scale·u on a zero base),
    rollouts add `noise`; `extra(s)` adds further frame entries (e.g. camera images of s).
    """
    rng = np.random.default_rng(seed)
    with store.writer() as writer:
        for _ in range(episodes):
            writer.begin_episode("reach", source)
            s = rng.uniform(-1, 1, 2).astype(np.float32)
            for _t in range(steps):
                a = np.clip(-2 * s + noise * rng.normal(size=2), -0.9, 0.9).astype(np.float32) * scale
                done = bool(np.linalg.norm(s) < 0.05)
                frame = {OBS_STATE: s, ACTION: a, REWARD: float(done), DONE: done}
                writer.add_frame(frame | (extra(s) if extra is not None else {}))
                if done:
                    break
                s = (s + 0.1 * a / scale).astype(np.float32)
            writer.save_episode(success=done)


@pytest.fixture(autouse=True)
def _scheduling_policy_unchanged() -> Iterator[None]:
    """A test that leaves pytest at another scheduling policy errors (and the policy is put back):
    every process started later inherits it, and nodes at real-time priority 99 once froze a CI run
    (coirl_ros/scheduling.py)."""
    before = current_scheduling()
    yield
    after = current_scheduling()
    if after != before:
        set_scheduling(before)
        pytest.fail(f"the test changed this process's scheduling (policy, priority) {before} -> {after}")


@pytest.fixture
def spec() -> EpisodeSpec:
    return SMALL_SPEC


@pytest.fixture
def store(tmp_path: Path) -> EpisodeStore:
    return EpisodeStore.create(tmp_path / "episodes.zarr", SMALL_SPEC)


# 1-101 only: on Linux, ids above 101 put DDS ports into the ephemeral range (ROS docs).
_domain_ids = itertools.count(os.getpid() % 50)


def fresh_ros_env() -> dict[str, str]:
    """Environment for child processes running ROS nodes: loopback-only DDS, a domain id of their own.

    Skips ids some DDS participant on this machine already holds (a demo, another test run, a node a
    failed test left behind), so a test never discovers a stranger's graph.
    """
    from coirl_ros.launcher import domain_in_use

    domain = next(_domain_ids) % 50 + 1
    for _ in range(50):
        if not domain_in_use(domain):
            break
        domain = next(_domain_ids) % 50 + 1
    env = dict(os.environ)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["ROS_DOMAIN_ID"] = str(domain)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def ros_env() -> dict[str, str]:
    return fresh_ros_env()
