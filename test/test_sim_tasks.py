"""Every task: deterministic resets, success checks (true and false), experts, action limits, images."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from coirl_ros.sim.env import EnvConfig, ManipulationEnv
from coirl_ros.sim.expert import WaypointExpert, run_episode
from coirl_ros.sim.kinematics import HOME_QPOS
from coirl_ros.sim.tasks import available_tasks, expert_plan, make_task

TASKS = available_tasks()


def settle(env: ManipulationEnv, seconds: float = 1.0) -> None:
    for _ in range(int(seconds / env.model.opt.timestep)):
        mujoco.mj_step(env.model, env.data)


@pytest.fixture(scope="module", params=TASKS)
def env(request: pytest.FixtureRequest) -> ManipulationEnv:
    environment = ManipulationEnv(make_task(request.param))
    yield environment
    environment.close()


def test_reset_is_deterministic_per_seed(env: ManipulationEnv) -> None:
    first = env.reset(seed=7)[0]
    rng = np.random.default_rng(0)
    env.reset(seed=8)
    for _ in range(20):  # an episode in between must leave nothing behind (ctrl, fixtures, targets)
        env.step(rng.uniform(env.action_space.low, env.action_space.high))
    other = env.reset(seed=8)[0]
    again = env.reset(seed=7)[0]
    for key in first:
        np.testing.assert_array_equal(first[key], again[key], err_msg=key)
    assert not np.allclose(first["object"], other["object"]), "different seeds must randomise the objects"
    # The first step after a reset is reproducible too (ctrl and commanded targets were reset).
    action = first["state"].astype(np.float64)
    after_first = env.step(action)[0]
    env.reset(seed=7)
    after_again = env.step(action)[0]
    np.testing.assert_array_equal(after_first["object"], after_again["object"])
    np.testing.assert_array_equal(after_first["state"], after_again["state"])


def test_not_solved_at_reset(env: ManipulationEnv) -> None:
    for seed in range(5):
        _, info = env.reset(seed=seed)
        assert not info["success"], f"{env.task.name} solved at reset (seed {seed})"


def test_success_check_true_when_solved_and_false_on_near_miss(env: ManipulationEnv) -> None:
    env.reset(seed=0)
    env.task.place_solved(env.model, env.data)
    mujoco.mj_forward(env.model, env.data)
    settle(env)
    assert env.task.success(env.model, env.data), f"{env.task.name}: solved arrangement not recognised"
    env.reset(seed=0)
    env.task.place_near_miss(env.model, env.data)
    mujoco.mj_forward(env.model, env.data)
    settle(env)
    assert not env.task.success(env.model, env.data), f"{env.task.name}: near miss counted as success"


def test_expert_succeeds_on_a_few_seeds(env: ManipulationEnv) -> None:
    expert = WaypointExpert(env, expert_plan(env.task.name), noise=0.002, seed=0)
    results = [run_episode(env, expert, seed) for seed in (100, 101, 102)]
    assert all(results), f"{env.task.name} expert: {results}"


def test_joint_targets_are_clipped_and_rate_limited(env: ManipulationEnv) -> None:
    env.reset(seed=0)
    wild = np.full(8, 100.0)
    env.step(wild)
    ctrl = env.data.ctrl[:8]
    assert np.all(ctrl <= env.upper + 1e-9) and np.all(ctrl >= env.lower - 1e-9)
    # One step at 20 Hz moves a target by at most max velocity * 0.05 s.
    assert np.all(np.abs(ctrl[:7] - HOME_QPOS) <= np.array([2.175] * 4 + [2.61] * 3) * env.dt + 1e-9)


def test_bad_actions_are_refused(env: ManipulationEnv) -> None:
    env.reset(seed=0)
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.full(8, np.nan))
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(7))


def test_ee_delta_mode_moves_the_tcp_in_the_commanded_direction() -> None:
    env = ManipulationEnv(make_task("lift"), EnvConfig(action_mode="ee_delta"))
    env.reset(seed=0)
    start, _ = env.tcp_pose()
    for _ in range(10):
        env.step(np.array([1.0, 0, 0, 0, 0, 0, -1.0]))
    end, _ = env.tcp_pose()
    moved = end[0] - start[0]
    assert moved > 0.1 and abs(end[1] - start[1]) < 0.2 * moved and abs(end[2] - start[2]) < 0.25 * moved
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(8))


@pytest.mark.parametrize("size", [(84, 84), (64, 96)])
def test_images_have_the_requested_shape(size: tuple[int, int]) -> None:
    env = ManipulationEnv(make_task("lift"), EnvConfig(image_size=size))
    try:
        obs, _ = env.reset(seed=0)
        for cam in ("front", "wrist"):
            assert obs[cam].shape == (*size, 3) and obs[cam].dtype == np.uint8
            assert obs[cam].std() > 5, f"{cam} image is blank"
        assert env.observation_space.contains(obs)
    finally:
        env.close()
    state_only = ManipulationEnv(make_task("lift"))
    assert "front" not in state_only.reset(seed=0)[0]


def test_observations_stay_inside_the_observation_space(env: ManipulationEnv) -> None:
    obs, _ = env.reset(seed=3)
    expert = WaypointExpert(env, expert_plan(env.task.name), seed=0)
    expert.reset(3)
    for _ in range(60):
        obs, *_ = env.step(expert.act(obs))
        outside = [k for k, space in env.observation_space.spaces.items() if not space.contains(obs[k])]
        assert not outside, f"{env.task.name}: {outside} outside the observation space"


def test_fingers_stay_within_their_travel_under_random_actions(env: ManipulationEnv) -> None:
    """A wedged object must not pry the fingers open beyond the joint limit (soft limits did)."""
    obs, _ = env.reset(seed=0)
    expert = WaypointExpert(env, expert_plan(env.task.name), seed=0)
    expert.reset(0)
    rng = np.random.default_rng(1)
    for t in range(100):
        action = expert.act(obs) if t < 60 else rng.uniform(env.action_space.low, env.action_space.high)
        obs, *_ = env.step(action)
        assert -0.001 <= obs["gripper"][0] <= 0.041, (
            f"{env.task.name} step {t}: finger at {obs['gripper'][0]}"
        )


def test_expert_episode_reproduces_on_its_own(env: ManipulationEnv) -> None:
    def actions(warmup: bool) -> np.ndarray:
        expert = WaypointExpert(env, expert_plan(env.task.name), noise=0.002, seed=0)
        if warmup:
            run_episode(env, expert, seed=4)
        recorded: list[np.ndarray] = []
        run_episode(env, expert, seed=5, on_step=lambda o, a, r, d: recorded.append(a))
        return np.array(recorded[:30])

    np.testing.assert_array_equal(actions(False), actions(True))


def test_control_rate_must_divide_the_physics_rate_and_scales_the_horizon() -> None:
    with pytest.raises(ValueError, match="does not divide the 500 Hz physics rate"):
        ManipulationEnv(make_task("lift"), EnvConfig(control_hz=30.0))
    fast = ManipulationEnv(make_task("lift"), EnvConfig(control_hz=50.0))
    assert fast.dt == pytest.approx(0.02) and fast.horizon == round(make_task("lift").horizon * 50 / 20)
