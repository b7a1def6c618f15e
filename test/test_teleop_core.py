"""Teleop sources on the control core: Joy and keyboard mapping, the scripted expert through a mirror."""

from __future__ import annotations

import numpy as np
import pytest

from coirl_ros.configs import RobotConfig, load_config
from coirl_ros.configs.teleop import JoyConfig, KeyboardConfig, ScriptedConfig
from coirl_ros.constants import OBS_STATE
from coirl_ros.control.limits import CommandLimiter
from coirl_ros.control.loop import ControlLoop
from coirl_ros.control.scripted_teleop import SIM_STATE_KEY, ScriptedActor
from coirl_ros.control.teleop import CLOSED, OPEN, JoyMapper, KeyboardMapper
from coirl_ros.control.watchdog import ObservationWatchdog
from coirl_ros.paths import config_dir
from coirl_ros.sim.env import EnvConfig, ManipulationEnv
from coirl_ros.sim.tasks import make_task

ROBOT = load_config(config_dir() / "robot.yaml", RobotConfig)


def test_joy_axes_map_with_deadzone_scale_and_timeout() -> None:
    joy = JoyMapper(JoyConfig(axes=[1, 0, -1, -1, -1, 2], scale=[1.0, -1.0, 1, 1, 1, 0.5], deadzone=0.1))
    joy.update([0.55, 1.0, -1.0], [0, 0], stamp=10.0)
    a = joy.action(10.1)
    np.testing.assert_allclose(a[:6], [1.0, -0.5, 0.0, 0.0, 0.0, -0.5])
    assert a[6] == OPEN
    joy.update([0.05, 0.0, 0.0], [1, 0], stamp=10.2)  # inside the deadzone; close pressed
    assert np.all(joy.action(10.2)[:6] == 0) and joy.action(10.2)[6] == CLOSED
    joy.update([0.0, 1.0, 0.0], [0, 0], stamp=10.3)  # released: the gripper stays closed (latched)
    assert joy.action(10.3)[6] == CLOSED and joy.action(10.3)[0] == 1.0
    assert np.all(joy.action(11.0)[:6] == 0)  # silent device for > timeout: no motion
    joy.update([0.0, 0.0, 0.0], [0, 1], stamp=12.0)
    assert joy.action(12.0)[6] == OPEN


def test_keyboard_keys_move_while_held_and_toggle_the_gripper() -> None:
    keys = KeyboardMapper(KeyboardConfig(speed=0.5, key_hold_s=0.15))
    assert keys.press("w", 1.0) and keys.press("e", 1.0) and not keys.press("x", 1.0)
    np.testing.assert_allclose(keys.action(1.1), [0.5, 0, 0, 0, 0, -0.5, OPEN])
    assert np.all(keys.action(1.2)[:6] == 0)  # released (no auto-repeat) after key_hold_s
    keys.press(" ", 2.0)
    assert keys.action(2.0)[6] == CLOSED
    keys.press("v", 2.1)
    assert keys.action(2.1)[6] == OPEN


@pytest.mark.parametrize("task", ["lift"])
def test_scripted_expert_through_the_control_loop_solves_the_task(task: str) -> None:
    """The sim (another process in the node graph; here in-process) executes the loop's joint commands;
    the expert plans on a mirror fed with the sim's state, as the teleop node runs it."""
    sim = ManipulationEnv(make_task(task), EnvConfig(action_mode="joint"))
    clock = [0.0]
    received = [0]  # /sim/state arrivals, as teleop_node counts them
    actor = ScriptedActor(
        task, "ee_delta", 20.0, ScriptedConfig(seed=0), sim_states_received=lambda: received[0]
    )
    loop = ControlLoop(
        actor, actor.action_space, CommandLimiter.from_robot_config(ROBOT), ObservationWatchdog(0.2, ()), 0.05
    )

    def publish() -> None:
        d = sim.data
        flat = np.concatenate([d.qpos, d.qvel, d.mocap_pos.ravel(), d.mocap_quat.ravel()])
        loop.observe(OBS_STATE, obs["state"].astype(float), clock[0])
        loop.observe(SIM_STATE_KEY, flat, clock[0])
        received[0] += 1

    # The previous scene's state, then the reset's, both before the start event and stamped alike
    # (a paused sim's clock stands still): the expert must plan from neither.
    obs, _ = sim.reset(seed=4)
    stale = obs["object"].copy()
    publish()
    obs, _ = sim.reset(seed=5)
    publish()
    loop.start_episode()
    assert loop.tick(clock[0]).hold_reason == "waiting_for_sim_state"  # nothing since the episode began
    assert loop.tick(clock[0]).hold_reason == "waiting_for_sim_state"
    assert not np.allclose(stale[:3], obs["object"][:3], atol=0.01), "two different scenes"
    success = False
    for _ in range(sim.horizon):
        clock[0] += 0.05
        publish()
        out = loop.tick(clock[0])
        assert out.hold_reason is None and out.action is not None
        assert np.all(out.action.base == 0) and out.action.policy_version == 0
        obs, _, success, _, _ = sim.step(out.command)
        if success:
            break
    assert success and not actor.mocap_missing


def test_mirror_refuses_a_state_of_the_wrong_size() -> None:
    actor = ScriptedActor("lift", "ee_delta", 20.0, ScriptedConfig())
    with pytest.raises(ValueError, match="qpos"):
        actor.set_sim_state(np.zeros(5))


def test_sim_state_codec_round_trip_with_and_without_mocap() -> None:
    from std_msgs.msg import Float64MultiArray, MultiArrayDimension

    from coirl_ros.nodes.interfaces import SimState, decode_sim_state, encode_sim_state

    state = SimState(1.25, np.arange(16.0), np.arange(15.0), np.ones((2, 3)), np.ones((2, 4)))
    back = decode_sim_state(encode_sim_state(state))
    assert back.time == 1.25 and np.array_equal(back.qpos, state.qpos) and back.mocap_quat.shape == (2, 4)
    plain = Float64MultiArray()
    plain.layout.dim = [MultiArrayDimension(label="qpos", size=2), MultiArrayDimension(label="qvel", size=1)]
    plain.data = [0.5, 1.0, 2.0, 3.0]
    old = decode_sim_state(plain)
    assert old.mocap_pos.shape == (0, 3) and np.array_equal(old.qvel, [3.0])
    plain.data = [0.5, 1.0]
    with pytest.raises(ValueError, match="values"):
        decode_sim_state(plain)
