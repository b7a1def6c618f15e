"""The ROS-free control core: action spaces, limits, the watchdog, holds and the tick logic."""

from __future__ import annotations

import numpy as np
import pytest

from coirl_ros.configs import RobotConfig, load_config
from coirl_ros.constants import OBS_STATE
from coirl_ros.control.action_space import EEDeltaActionSpace, JointActionSpace, make_action_space
from coirl_ros.control.diagnostics import TickStats
from coirl_ros.control.limits import CommandLimiter
from coirl_ros.control.loop import IDLE, OPERATOR_HOLD, ActorOutput, ControlLoop
from coirl_ros.control.watchdog import ObservationWatchdog
from coirl_ros.paths import config_dir
from coirl_ros.sim.env import MAX_JOINT_VELOCITY, EnvConfig, ManipulationEnv
from coirl_ros.sim.kinematics import HOME_QPOS
from coirl_ros.sim.tasks import make_task

ROBOT = load_config(config_dir() / "robot.yaml", RobotConfig)
HOME = np.append(HOME_QPOS, 0.04)  # arm at home, fingers open: the state vector


class ScriptedActions:
    """An actor playing a fixed list of actions (test input), counting resets and resumes."""

    def __init__(self, actions: list[np.ndarray | str]) -> None:
        self.actions = list(actions)
        self.resets = self.resumes = 0

    def required_inputs(self) -> tuple[str, ...]:
        return ()

    def before_tick(self) -> None:
        pass

    def reset(self) -> None:
        self.resets += 1

    def resume(self) -> None:
        self.resumes += 1

    def act(self, observation: dict[str, np.ndarray]) -> ActorOutput | str:
        a = self.actions.pop(0) if len(self.actions) > 1 else self.actions[0]
        if isinstance(a, str):
            return a
        return ActorOutput(a, np.zeros_like(a), np.zeros_like(a), 3)


def make_loop(actor, kind: str = "ee_delta", timeout: float = 0.2) -> ControlLoop:
    return ControlLoop(
        actor,
        make_action_space(kind, ROBOT),
        CommandLimiter.from_robot_config(ROBOT),
        ObservationWatchdog(timeout, ()),
        period_s=0.05,
    )


# ---- action spaces ---------------------------------------------------------------------------------
def test_ee_delta_on_the_robot_model_equals_the_sims_conversion() -> None:
    """The robot-side action space (IK on sim/panda.xml) gives the sim's own joint targets."""
    env = ManipulationEnv(make_task("lift"), EnvConfig(action_mode="ee_delta"))
    robot_side = EEDeltaActionSpace.from_robot_config(ROBOT)
    limiter = CommandLimiter.from_robot_config(ROBOT)
    env.reset(seed=0)
    robot_side.reset(tcp_pose=env.tcp_pose())
    rng = np.random.default_rng(0)
    for _ in range(30):
        action = rng.uniform(-1.2, 1.2, 7)
        q, measured = env.data.qpos[:7].copy(), env.tcp_pose()[0]
        previous = env.data.ctrl[:8].copy()
        mine = robot_side.to_joint_targets(action, q, measured)
        env.step(action)
        assert np.array_equal(robot_side.commanded_pose()[0], env.ee_target()[0])
        assert np.array_equal(robot_side.commanded_pose()[1], env.ee_target()[1])
        np.testing.assert_allclose(limiter.limit(mine, previous), env.data.ctrl[:8], rtol=0, atol=1e-12)
    # Without the sim's measured TCP, forward kinematics of the joints stands in (<1 mm apart).
    robot_side.reset(tcp_pose=env.ee_target())
    q = env.data.qpos[:7].copy()
    a = np.array([1.0, -1.0, 1.0, 0.5, 0.0, -0.5, 1.0])
    np.testing.assert_allclose(
        robot_side.to_joint_targets(a, q), env.ee_action.to_joint_targets(a, q, env.tcp_pose()[0]), atol=2e-3
    )


def test_ee_delta_lead_is_clamped_to_the_measured_tcp() -> None:
    space = EEDeltaActionSpace.from_robot_config(ROBOT)
    space.reset(HOME)
    start = space.commanded_pose()[0]
    for _ in range(20):  # the arm never moves (measured stays HOME): the commanded pose must not wind up
        space.to_joint_targets(np.array([1.0, 0, 0, 0, 0, 0, -1.0]), HOME)
    lead = np.linalg.norm(space.commanded_pose()[0] - start)
    assert lead == pytest.approx(ROBOT.ee_delta.max_ee_lead, abs=1e-9)


def test_gripper_is_minus_one_open_plus_one_closed_in_both_spaces() -> None:
    ee = EEDeltaActionSpace.from_robot_config(ROBOT)
    ee.reset(HOME)
    joint = JointActionSpace.from_robot_config(ROBOT)
    for space, dim in ((ee, 7), (joint, 8)):
        a = np.zeros(dim)
        a[-1] = -1.0
        assert space.to_joint_targets(a, HOME)[-1] == pytest.approx(ROBOT.gripper.open)
        a[-1] = 1.0
        assert space.to_joint_targets(a, HOME)[-1] == pytest.approx(ROBOT.gripper.closed)


def test_joint_space_spans_the_limits_and_inverts() -> None:
    space = JointActionSpace.from_robot_config(ROBOT)
    lower = np.array([j.lower for j in ROBOT.joints])
    upper = np.array([j.upper for j in ROBOT.joints])
    np.testing.assert_allclose(space.to_joint_targets(-np.ones(8))[:7], lower)
    np.testing.assert_allclose(space.to_joint_targets(np.ones(8))[:7], upper)
    a = np.random.default_rng(1).uniform(-1, 1, 8)
    np.testing.assert_allclose(space.from_joint_targets(space.to_joint_targets(a)), a, atol=1e-12)
    with pytest.raises(ValueError, match="NaN"):
        space.to_joint_targets(np.full(8, np.nan))
    with pytest.raises(ValueError, match="shape"):
        space.to_joint_targets(np.zeros(7))


def test_ik_model_must_match_the_configured_joints(tmp_path) -> None:
    renamed = ROBOT.model_copy(update={"joints": [ROBOT.joints[1], ROBOT.joints[0], *ROBOT.joints[2:]]})
    with pytest.raises(ValueError, match="not the configured arm joints"):
        EEDeltaActionSpace.from_robot_config(renamed)
    missing = ROBOT.model_copy(update={"ee_delta": ROBOT.ee_delta.model_copy(update={"model": "nope.xml"})})
    with pytest.raises(FileNotFoundError, match=r"nope\.xml"):
        EEDeltaActionSpace.from_robot_config(missing)


# ---- limits ----------------------------------------------------------------------------------------
def test_limiter_bounds_position_and_velocity_from_robot_yaml() -> None:
    limiter = CommandLimiter.from_robot_config(ROBOT)
    assert limiter.dt == pytest.approx(1 / ROBOT.control_rate_hz)
    np.testing.assert_allclose(limiter.max_velocity, MAX_JOINT_VELOCITY)  # the sim uses the same numbers
    wild = limiter.limit(np.full(8, 100.0), HOME)
    np.testing.assert_allclose(wild - HOME, np.minimum(MAX_JOINT_VELOCITY * 0.05, limiter.upper - HOME))
    far = HOME.copy()
    far[3] = 0.5  # beyond joint 4's upper limit (-0.0698)
    assert limiter.limit(far, far)[3] == pytest.approx(ROBOT.joints[3].upper)


# ---- watchdog and the tick -------------------------------------------------------------------------
def test_stale_state_holds_on_the_last_measured_joints_and_resumes_without_a_jump() -> None:
    actor = ScriptedActions([np.array([1.0, 0, 0, 0, 0, 0, -1.0])])
    loop = make_loop(actor)
    loop.observe(OBS_STATE, HOME, 0.0)
    loop.start_episode()
    moving = loop.tick(0.05)
    assert moving.hold_reason is None and moving.action is not None and moving.action.policy_version == 3
    assert not np.allclose(moving.command, HOME)
    held = loop.tick(0.5)  # no state for 0.5 s > 0.2 s
    assert held.hold_reason == f"stale:{OBS_STATE}" and held.action is None
    np.testing.assert_array_equal(held.command, HOME)  # the last *measured* joints, not the last command
    moved = HOME + np.r_[0.01, np.zeros(7)]
    loop.observe(OBS_STATE, moved, 0.55)
    resumed = loop.tick(0.6)
    assert resumed.hold_reason is None and actor.resumes == 2  # once at the start, once after the hold
    # Re-anchored: the commanded TCP restarts from the measured pose, the velocity limit from the hold.
    assert np.all(np.abs(resumed.command - moved) <= loop.pipeline.limiter.max_step + 1e-12)
    assert loop.stats.ticks == 3 and loop.holds == {"stale": 1}


def test_non_finite_state_is_rejected_and_holds_on_the_last_finite_one() -> None:
    loop = make_loop(ScriptedActions([np.zeros(7)]))
    loop.observe(OBS_STATE, HOME, 0.0)
    loop.start_episode()
    assert loop.tick(0.01).hold_reason is None
    bad = HOME.copy()
    bad[2] = np.nan
    assert not loop.observe(OBS_STATE, bad, 0.02)
    out = loop.tick(0.03)
    assert out.hold_reason == f"non_finite:{OBS_STATE}"
    np.testing.assert_array_equal(out.command, HOME)
    assert loop.watchdog.rejected == {OBS_STATE: 1}
    loop.observe(OBS_STATE, HOME, 0.04)
    assert loop.tick(0.05).hold_reason is None


def test_nan_actions_and_actor_errors_hold_instead_of_reaching_the_robot() -> None:
    class Failing(ScriptedActions):
        def act(self, observation):
            raise RuntimeError("boom")

    loop = make_loop(ScriptedActions([np.full(7, np.nan)]))
    loop.observe(OBS_STATE, HOME, 0.0)
    loop.start_episode()
    out = loop.tick(0.01)
    assert out.hold_reason == "non_finite_action" and out.action is None
    np.testing.assert_array_equal(out.command, HOME)
    failing = make_loop(Failing([np.zeros(7)]))
    failing.observe(OBS_STATE, HOME, 0.0)
    failing.start_episode()
    out = failing.tick(0.01)
    assert out.hold_reason.startswith("actor_error:RuntimeError: boom")
    np.testing.assert_array_equal(out.command, HOME)


def test_no_episode_operator_hold_and_missing_state() -> None:
    loop = make_loop(ScriptedActions([np.zeros(7)]))
    assert loop.tick(0.0).command is None  # nothing measured yet: nothing to send
    loop.observe(OBS_STATE, HOME, 0.0)
    idle = loop.tick(0.01)
    assert idle.hold_reason == IDLE and np.array_equal(idle.command, HOME)
    loop.hold_when_idle = False
    assert loop.tick(0.02).command is None  # idle and configured to stay silent
    loop.start_episode()
    loop.set_operator_hold(True)
    held = loop.tick(0.03)
    assert held.hold_reason == OPERATOR_HOLD and np.array_equal(held.command, HOME)
    loop.set_operator_hold(False)
    assert loop.tick(0.04).hold_reason is None
    loop.end_episode()
    assert loop.tick(0.05).hold_reason == IDLE


def test_actor_hold_does_not_reset_the_actor() -> None:
    """An actor waiting for its first base chunk holds; resuming it would restart the wait forever."""
    actor = ScriptedActions(["base_pending", "base_pending", np.zeros(7)])
    loop = make_loop(actor)
    loop.observe(OBS_STATE, HOME, 0.0)
    loop.start_episode()
    reasons = [loop.tick(0.01 * k).hold_reason for k in range(1, 4)]
    assert reasons == ["base_pending", "base_pending", None] and actor.resumes == 1


def test_tick_stats_count_missed_ticks() -> None:
    stats = TickStats(0.05)
    for start in (0.0, 0.05, 0.10, 0.25, 0.30):  # 0.10 -> 0.25 skips two ticks
        stats.record(start, 0.001)
    summary = stats.summary()
    assert summary["missed_ticks"] == 2 and summary["ticks"] == 5
    assert summary["tick_latency_ms"]["p50"] == pytest.approx(1.0)
