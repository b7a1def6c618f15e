"""Operator takeovers (HG-DAgger) in the sim: the resume plan, the watch, and what gets recorded."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from coirl_ros.configs import LearnerConfig
from coirl_ros.constants import ACTION, ACTION_BASE, ACTION_RESIDUAL, DEMO_SOURCES, TIMESTAMP
from coirl_ros.control.demo_base import demo_base_filler
from coirl_ros.data import EpisodeStore
from coirl_ros.data.transition_sampler import TransitionSampler
from coirl_ros.experiment import Actor, ExperimentConfig, prepare_base, prepare_demos
from coirl_ros.policies.local_bc_base import LocalBCConfig
from coirl_ros.sim.env import EnvConfig, ManipulationEnv
from coirl_ros.sim.expert import WaypointExpert
from coirl_ros.sim.task import free_pose
from coirl_ros.sim.tasks import drawer, expert_plan, make_task, resume_plan
from coirl_ros.sim.tasks.mug_cleanup import UPRIGHT_COS, mug_held
from coirl_ros.sim.tasks.threading import FLAT_COS, RING_ZONE, needle_held, needle_sites, ring_pose, to_ring
from coirl_ros.takeovers import TakeoverTrigger, TakeoverWatch, run_with_takeover

NEVER = 10**6  # saturated_steps that no episode reaches: only the deadline triggers


@pytest.fixture(scope="module")
def mug_env():
    env = ManipulationEnv(make_task("mug_cleanup"), EnvConfig(action_mode="ee_delta"))
    yield env
    env.close()


def _stage(env: ManipulationEnv) -> str:
    model, data = env.model, env.data
    if mug_held(env):
        return "held"
    if drawer.inside_xy(drawer.to_drawer(model, data, free_pose(model, data, "mug")[:3])):
        return "in drawer"
    return "on table"


def _expert_then_resume[T](
    env: ManipulationEnv, task: str, seed: int, cut: int, probe: Callable[[], T]
) -> tuple[T, bool]:
    """The task's own expert for `cut` steps, then a fresh resume-plan expert from that state;
    returns `probe()` at the cut (where the test means the cut to be) and the episode's success."""
    obs, _ = env.reset(seed=seed)
    expert = WaypointExpert(env, expert_plan(task), noise=0.002, seed=0)
    expert.reset(seed)
    at_cut = probe()
    for t in range(env.horizon):
        if t == cut:
            at_cut = probe()
            expert = WaypointExpert(env, resume_plan(task), noise=0.002, seed=1)
            expert.reset(seed)
        obs, _, terminated, truncated, info = env.step(expert.act(obs))
        if terminated or truncated:
            return at_cut, bool(info["success"])
    return at_cut, False


@pytest.mark.parametrize(
    ("cut", "stage", "drawer_open"),
    [
        (0, "on table", False),  # the reset
        (70, "on table", False),  # pulling the drawer open
        (140, "on table", True),  # coming down on the mug
        (180, "held", True),
        (220, "held", True),  # over the drawer
        (260, "in drawer", True),  # let go, the drawer still open
        (300, "in drawer", False),  # pushing it shut
    ],
)
def test_the_resume_plan_finishes_from_any_point_of_the_experts_episode(
    mug_env: ManipulationEnv, cut: int, stage: str, drawer_open: bool
) -> None:
    def probe() -> tuple[str, bool]:
        return _stage(mug_env), drawer.opening(mug_env.model, mug_env.data) > 0.2

    at_cut, success = _expert_then_resume(mug_env, "mug_cleanup", seed=3, cut=cut, probe=probe)
    assert at_cut == (stage, drawer_open), "the cut is not where this test means it"
    assert success


def test_the_resume_plan_lets_go_and_stops_at_a_mug_on_its_side(mug_env: ManipulationEnv) -> None:
    obs, _ = mug_env.reset(seed=0)
    model, data = mug_env.model, mug_env.data
    adr = model.joint("mug").qposadr[0]
    data.qpos[adr + 3 : adr + 7] = [np.cos(np.pi / 4), np.sin(np.pi / 4), 0.0, 0.0]  # on its side
    for _ in range(50):
        obs, *_ = mug_env.step(np.zeros(7, np.float32))
    assert data.xmat[model.body("mug").id][8] < UPRIGHT_COS
    expert = WaypointExpert(mug_env, resume_plan("mug_cleanup"))
    expert.reset()
    for _ in range(200):
        if expert.done:
            break
        obs, *_ = mug_env.step(expert.act(obs))
    assert expert.done, "past what the expert can fix: it lets go, rises clear and ends the plan"
    assert mug_env.finger_opening() > 0.03


@pytest.fixture(scope="module")
def threading_env():
    env = ManipulationEnv(make_task("threading"), EnvConfig(action_mode="ee_delta"))
    yield env
    env.close()


@pytest.mark.parametrize(
    ("cut", "held", "in_ring"),
    [
        (0, False, False),  # the reset
        (75, True, False),  # lifting the needle
        (100, True, False),  # above the ring, turned to it
        (145, True, True),  # the tip entering the ring: drawn back out first
    ],
)
def test_the_threading_resume_plan_finishes_from_any_point_of_the_experts_episode(
    threading_env: ManipulationEnv, cut: int, held: bool, in_ring: bool
) -> None:
    env = threading_env

    def probe() -> tuple[bool, bool]:
        centre, yaw = ring_pose(env.model, env.data)
        tip = to_ring(centre, yaw, needle_sites(env.model, env.data)[1])
        return needle_held(env), bool(tip[0] > -0.03 and np.hypot(tip[1], tip[2]) < RING_ZONE)

    at_cut, success = _expert_then_resume(env, "threading", seed=0, cut=cut, probe=probe)
    assert at_cut == (held, in_ring), "the cut is not where this test means it"
    assert success


def test_the_threading_resume_plan_lets_go_of_a_needle_it_cannot_pick_up(
    threading_env: ManipulationEnv,
) -> None:
    env = threading_env
    obs, _ = env.reset(seed=0)
    env.task.place_solved(env.model, env.data)  # through the ring, tipped over onto it: not flat
    for _ in range(50):
        obs, *_ = env.step(np.zeros(7, np.float32))
    assert env.data.xmat[env.model.body("needle").id][8] < FLAT_COS
    expert = WaypointExpert(env, resume_plan("threading"))
    expert.reset()
    steps = 0
    while not expert.done and steps < 200:
        obs, *_ = env.step(expert.act(obs))
        steps += 1
    # Starting over from the needle would take well over 100 steps.
    assert expert.done and steps < 60, "it lets go, rises clear and ends the plan"
    assert env.finger_opening() > 0.03


def test_tasks_without_a_resume_plan_say_so() -> None:
    with pytest.raises(ValueError, match="no RESUME_PLAN"):
        resume_plan("lift")


def test_the_watch_fires_on_a_run_of_saturated_steps_or_at_the_deadline() -> None:
    watch = TakeoverWatch(TakeoverTrigger(saturated_steps=3, deadline=10))
    calm, pinned = np.zeros(7), np.array([0.0, 0.0, 0.99, 0, 0, 0, 0])
    rotation_pinned = np.array([0.0, 0.0, 0.0, 1.0, 0, 0, 0])  # only translation counts
    assert [watch.update(t, a) for t, a in enumerate([pinned, pinned, calm, rotation_pinned, pinned])] == [
        None
    ] * 5
    assert watch.update(5, pinned) is None and watch.update(6, -pinned) == "saturated"
    watch.reset()
    assert watch.update(7, pinned) is None, "reset clears the run"
    assert watch.update(10, calm) == "deadline"
    for bad in ({"saturated_steps": 0}, {"saturation": 0.0}, {"deadline": -1}):
        with pytest.raises(ValueError):
            TakeoverTrigger(**bad)


def test_a_takeover_keeps_the_experts_part_as_a_demonstration_with_the_bases_proposals(
    tmp_path: Path,
) -> None:
    config = ExperimentConfig(
        task="mug_cleanup", demos=2, base=LocalBCConfig(steps=30, hidden=(32,)),
        learner=LearnerConfig(), out_dir=tmp_path,
    )  # fmt: skip
    demos = prepare_demos(config)
    base = prepare_base(config, demos)
    actor = Actor(config, base)
    store = EpisodeStore.create(tmp_path / "takeovers.zarr", demos.spec)
    try:
        outcome = run_with_takeover(actor, 1, None, TakeoverWatch(TakeoverTrigger(NEVER, deadline=40)), store)
    finally:
        actor.close()
    assert outcome.takeover_step == 40 and outcome.reason == "deadline"
    assert outcome.expert_success and not outcome.policy_success
    (meta,) = store.list_episodes()
    assert meta.source == "takeover" and meta.source in DEMO_SOURCES and meta.success is True
    assert meta.num_frames == outcome.frames > 100
    assert outcome.env_steps == 40 + outcome.frames
    episode = store.read_episode(meta.index)
    assert episode.data[TIMESTAMP][0] == pytest.approx(40 * actor.env.dt), "the policy's steps are not kept"
    base_actions = episode.data[ACTION_BASE]
    assert np.all(np.any(base_actions != 0, axis=1)), "the base ran on during the takeover"
    np.testing.assert_allclose(episode.data[ACTION] - base_actions, episode.data[ACTION_RESIDUAL], atol=1e-6)

    # The learner samples it as a demonstration, with the recorded proposals left as they are.
    sampler = TransitionSampler(store, on_load=demo_base_filler(base, config.requery_every))
    sampler.refresh()
    assert sampler.num_transitions("demo") == meta.num_frames - 1 + 1  # its last frame is terminal
    assert sampler.num_transitions("rollout") == 0
    batch = sampler.sample(16, np.random.default_rng(0))
    rows = batch["frame_index"]
    np.testing.assert_array_equal(batch[ACTION_BASE], base_actions[rows])
