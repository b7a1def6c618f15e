"""teleop_node: demonstrations from a person (Joy device, keyboard) or, in sim, from the scripted expert.

Every source goes through the same control loop as the policy (coirl_ros/control/loop.py): the action
is an ee_delta action (or, for the scripted expert in a joint action space, a joint action), converted
to joint targets, limited, held on stale state, sent to ros2_control as robot.yaml `command:` says,
and published as a StepRecord on /coirl/step (base = residual = 0, policy version 0) for the recorder,
plus the normalised action on /coirl/teleop/action. It acts only while an episode is active (events
on /coirl/episode), unless `require_episode:=false`.

Sources (config/teleop.yaml `source`, or `-p teleop.source:=...`):
- joy: sensor_msgs/Joy on `joy.topic` (a gamepad through `joy`, a SpaceMouse through `spacenav`);
- keyboard: keys in the terminal the node runs in (KEY_HELP is printed at start);
- scripted: the task's WaypointExpert on a mirror of the sim, fed from /sim/state (sim only).
"""

from __future__ import annotations

import os
import select
import sys
import termios
import threading
import time
import tty
from collections.abc import Sequence
from typing import Any

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import JointState, Joy
from std_msgs.msg import Float64MultiArray, String
from trajectory_msgs.msg import JointTrajectory

from coirl_ros.configs import ConfigError
from coirl_ros.configs.teleop import TeleopConfig
from coirl_ros.constants import OBS_STATE
from coirl_ros.control.action_space import JointActionSpace, make_action_space
from coirl_ros.control.limits import CommandLimiter
from coirl_ros.control.loop import ControlLoop
from coirl_ros.control.scripted_teleop import SIM_STATE_KEY, ScriptedActor
from coirl_ros.control.teleop import KEY_HELP, DeviceActor, JoyMapper, KeyboardMapper
from coirl_ros.control.watchdog import ObservationWatchdog
from coirl_ros.nodes.control_messages import command_messages, parse_json, state_vector
from coirl_ros.nodes.interfaces import (
    COMMAND_QOS,
    EPISODE_TOPIC,
    RECORD_QOS,
    SENSOR_QOS,
    SIM_STATE_TOPIC,
    STATE_QOS,
    STATE_TOPIC,
    STEP_TOPIC,
    TELEOP_TOPIC,
    StepRecord,
    decode_sim_state,
    encode_step,
)
from coirl_ros.nodes.node_configs import load_robot_policy_task
from coirl_ros.nodes.node_runtime import run_node, stamp_seconds
from coirl_ros.nodes.ros_params import declare_config_file, declare_overrides


class TeleopNode(Node):
    """A teleop source driving the robot through the control core (module docstring)."""

    def __init__(self) -> None:
        super().__init__("teleop_node")
        self.robot, self.policy, self.task = load_robot_policy_task(self)
        teleop = declare_config_file(self, "teleop_config", "teleop.yaml", TeleopConfig)
        teleop = declare_overrides(self, teleop, ["source"], "teleop.")
        joy_fields = ["topic", "deadzone", "close_button", "open_button"]
        joy = declare_overrides(self, teleop.joy, joy_fields, "teleop.joy.")
        scripted = declare_overrides(self, teleop.scripted, ["task", "noise", "seed"], "teleop.scripted.")
        self.teleop = teleop.model_copy(update={"joy": joy, "scripted": scripted})
        require_episode = bool(self.declare_parameter("require_episode", True).value)
        hold_when_idle = bool(self.declare_parameter("hold_when_idle", True).value)
        self.period = 1.0 / self.robot.control_rate_hz
        self.state_names = [*self.robot.joint_names, self.robot.gripper.joint]
        self._lock = threading.Lock()
        self._sim_states_received = 0  # /sim/state messages so far (ScriptedActor: arrival order)
        self._keyboard: _TerminalKeys | None = None
        inputs = MutuallyExclusiveCallbackGroup()

        source = self.teleop.source
        if source != "scripted" and self.policy.action_space != "ee_delta":
            raise ConfigError(
                f"teleop source {source!r} drives the TCP: it needs policy.yaml action_space ee_delta,"
                f" not {self.policy.action_space!r}"
            )
        if source == "scripted":
            task = self.teleop.scripted.task or self.task.name
            joint_space = JointActionSpace.from_robot_config(self.robot)
            actor: Any = ScriptedActor(
                task, self.policy.action_space, self.robot.control_rate_hz, self.teleop.scripted,
                joint_space=joint_space, sim_states_received=lambda: self._sim_states_received,
            )  # fmt: skip
            action_space = actor.action_space  # the mirror's: the expert reads the commanded pose from it
            self.create_subscription(
                Float64MultiArray, SIM_STATE_TOPIC, self._on_sim_state, COMMAND_QOS, callback_group=inputs
            )
            what = f"scripted expert of {task!r} on a mirror of {SIM_STATE_TOPIC}"
        else:
            if source == "joy":
                device: JoyMapper | KeyboardMapper = JoyMapper(self.teleop.joy)
                self.create_subscription(
                    Joy, self.teleop.joy.topic, self._on_joy, SENSOR_QOS, callback_group=inputs
                )
                what = f"Joy on {self.teleop.joy.topic}"
            else:
                device = KeyboardMapper(self.teleop.keyboard)
                self._keyboard = _TerminalKeys(device)
                what = f"keyboard ({KEY_HELP})"
            actor = DeviceActor(device)
            action_space = make_action_space(self.policy.action_space, self.robot)
        self.device = actor
        self.loop = ControlLoop(
            actor,
            action_space,
            CommandLimiter.from_robot_config(self.robot, self.period),
            ObservationWatchdog(self.robot.state_timeout_s, ()),
            self.period,
            require_episode=require_episode,
            hold_when_idle=hold_when_idle,
        )

        cmd = self.robot.command
        msg_type = Float64MultiArray if cmd.interface == "forward_position" else JointTrajectory
        self.pub_arm = self.create_publisher(msg_type, cmd.topic, COMMAND_QOS)
        self.pub_gripper = self.create_publisher(msg_type, cmd.gripper_topic, COMMAND_QOS)
        self.pub_step = self.create_publisher(Float64MultiArray, STEP_TOPIC, RECORD_QOS)
        self.pub_action = self.create_publisher(Float64MultiArray, TELEOP_TOPIC, COMMAND_QOS)
        self.create_subscription(JointState, STATE_TOPIC, self._on_state, STATE_QOS, callback_group=inputs)
        self.create_subscription(String, EPISODE_TOPIC, self._on_episode, COMMAND_QOS, callback_group=inputs)
        self.create_timer(self.period, self._tick, callback_group=MutuallyExclusiveCallbackGroup())
        self._last_hold: str | None = "start"
        if self._keyboard is not None:
            self._keyboard.start()
        self.get_logger().info(
            f"teleop: {what}, {self.policy.action_space} actions at {self.robot.control_rate_hz:g} Hz"
            f" -> {cmd.interface} on {cmd.topic} + {cmd.gripper_topic}"
        )

    # ---- inputs --------------------------------------------------------------------------------
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_state(self, msg: JointState) -> None:
        try:
            q = state_vector(msg, self.state_names)
        except ValueError as err:
            self.get_logger().warn(f"ignored {STATE_TOPIC}: {err}", throttle_duration_sec=2.0)
            return
        stamp = stamp_seconds(msg.header.stamp) or self._now()
        with self._lock:
            self.loop.observe(OBS_STATE, q, stamp)

    def _on_sim_state(self, msg: Float64MultiArray) -> None:
        try:
            s = decode_sim_state(msg)
        except ValueError as err:
            self.get_logger().warn(f"ignored {SIM_STATE_TOPIC}: {err}", throttle_duration_sec=2.0)
            return
        flat = [s.qpos, s.qvel, s.mocap_pos.ravel(), s.mocap_quat.ravel()]
        with self._lock:  # stamped on arrival: /sim/state carries sim time, which need not be ours
            self.loop.observe(SIM_STATE_KEY, np.concatenate(flat), self._now())
            self._sim_states_received += 1  # the scripted actor plans from one that came after the start

    def _on_joy(self, msg: Joy) -> None:
        with self._lock:
            self.device.device.update(msg.axes, msg.buttons, time.monotonic())

    def _on_episode(self, msg: String) -> None:
        try:
            event = parse_json(msg).get("event")
        except ValueError as err:
            self.get_logger().warn(f"ignored episode event: {err}")
            return
        with self._lock:
            if event == "start":
                self.loop.start_episode()
            elif event in ("stop", "discard"):
                self.loop.end_episode()

    # ---- the tick ------------------------------------------------------------------------------
    def _tick(self) -> None:
        now_msg = self.get_clock().now()
        now = now_msg.nanoseconds * 1e-9
        with self._lock:
            out = self.loop.tick(now)
        if out.command is not None:
            arm, gripper = command_messages(out.command, self.robot, now_msg.to_msg(), self.period)
            self.pub_arm.publish(arm)
            self.pub_gripper.publish(gripper)
        if out.action is not None:
            a = out.action
            self.pub_action.publish(Float64MultiArray(data=a.executed.tolist()))
            stamp = out.observation_stamp or now
            record = StepRecord(now, stamp, 0, out.tick, a.executed, a.base, a.residual)
            self.pub_step.publish(encode_step(record))
        if out.hold_reason != self._last_hold:
            self._last_hold = out.hold_reason
            self.get_logger().info("acting" if out.hold_reason is None else f"holding: {out.hold_reason}")

    def close(self) -> None:
        if self._keyboard is not None:
            self._keyboard.stop()


class _TerminalKeys:
    """Reads single key presses from the terminal (cbreak mode) on a thread; restores it on stop."""

    def __init__(self, device: KeyboardMapper) -> None:
        if not sys.stdin.isatty():
            raise ConfigError(
                "teleop source keyboard needs an interactive terminal on stdin; run the node in one"
                " (`ros2 run coirl_ros teleop_node --ros-args -p teleop.source:=keyboard`) or use joy"
            )
        self.device = device
        self.fd = sys.stdin.fileno()
        self._saved = termios.tcgetattr(self.fd)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="keyboard", daemon=True)

    def start(self) -> None:
        tty.setcbreak(self.fd)
        print(KEY_HELP, flush=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.fd], [], [], 0.05)
            if ready:
                key = os.read(self.fd, 1).decode(errors="ignore")
                if key:
                    self.device.press(key, time.monotonic())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)
        termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)


def main(args: Sequence[str] | None = None) -> None:
    raise SystemExit(run_node(TeleopNode, args, threads=3))


if __name__ == "__main__":
    main()
