"""policy_node: the fixed-rate control loop running the frozen base + the learner's residual on the robot.

A thin adapter over `coirl_ros.control` (see loop.py for the tick logic):

- in: /coirl/state (JointState, config order, from joint_node), /coirl/environment_state (sim: the
  local BC base and state residuals read it), the robot's camera topics (pi0.5, image residuals),
  /coirl/episode (acts only while an episode is active, unless `require_episode:=false`),
  /coirl/policy/weights (latched; validated off the loop, swapped in between two ticks). Each snapshot's
  module is built from the spec it carries, once this node has checked it can run it (composition and
  scale, action size, inputs it receives): the learner and its episode store may be on another machine;
- out: joint commands to ros2_control as robot.yaml `command:` says, a StepRecord on /coirl/step for
  every tick it commands, accept/reject JSON on /coirl/policy/weights_status, diagnostics JSON
  (tick latency, jitter, missed ticks, active version, hold reason) on /coirl/policy/diagnostics;
- /policy/hold (SetBool): hold position until released.

The tick runs on a timer of the node's clock, so `use_sim_time:=true` runs it on the sim's /clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray, String, UInt8MultiArray
from std_srvs.srv import SetBool
from trajectory_msgs.msg import JointTrajectory

from coirl_ros.configs import (
    ConfigError,
)
from coirl_ros.constants import ACTION_BASE, OBS_ENV_STATE, OBS_STATE, image_key
from coirl_ros.control.action_space import make_action_space
from coirl_ros.control.base_source import load_base_policy, make_base_source
from coirl_ros.control.limits import CommandLimiter
from coirl_ros.control.loop import ControlLoop
from coirl_ros.control.policy_actor import PolicyActor, default_base_inputs, prepare_acting
from coirl_ros.control.watchdog import ObservationWatchdog
from coirl_ros.control.weight_swap import ReceiverCapabilities, SwapReport, WeightSwapper
from coirl_ros.ingestion.image_codec import image_to_rgb, resize_rgb
from coirl_ros.nodes.control_messages import (
    command_messages,
    json_message,
    parse_json,
    state_vector,
    weights_payload,
)
from coirl_ros.nodes.interfaces import (
    COMMAND_QOS,
    ENV_STATE_TOPIC,
    EPISODE_TOPIC,
    LATCHED_QOS,
    POLICY_DIAGNOSTICS_TOPIC,
    POLICY_HOLD_SERVICE,
    RECORD_QOS,
    SENSOR_QOS,
    STATE_QOS,
    STATE_TOPIC,
    STEP_TOPIC,
    WEIGHTS_STATUS_TOPIC,
    WEIGHTS_TOPIC,
    StepRecord,
    decode_environment_state,
    encode_step,
)
from coirl_ros.nodes.node_configs import load_node_configs
from coirl_ros.nodes.node_runtime import run_node, stamp_seconds


class PolicyNode(Node):
    """The policy's control loop as a ROS node (module docstring)."""

    def __init__(self) -> None:
        super().__init__("policy_node")
        self.robot, self.policy, self.task, self.learner_cfg = load_node_configs(self)
        p = self._node_parameters()
        torch.set_num_threads(p["torch_threads"])
        self.period = 1.0 / self.robot.control_rate_hz
        self.state_names = [*self.robot.joint_names, self.robot.gripper.joint]

        try:
            base = load_base_policy(self.policy, self.robot, self.task)
        except (OSError, ValueError) as err:  # missing or malformed checkpoint: say so, no traceback
            raise ConfigError(f"policy.yaml base ({self.policy.base.type}): {err}") from err
        cfg = self.policy.base
        self.base_source = make_base_source(
            base, cfg.requery_every, cfg.latency_margin_steps, p["asynchronous_base"]
        )
        action_space = make_action_space(self.policy.action_space, self.robot)
        self.swapper = self._make_swapper(p["initial_weights"], base, action_space.dim)
        residual = self.policy.residual
        self.actor = PolicyActor(
            self.base_source,
            self._base_inputs(base),
            residual.composition if residual else "residual",
            residual.scale if residual else 0.1,
            self.swapper,
            explore=p["explore"],
            explore_temperature=p["explore_temperature"],
        )
        self.loop = ControlLoop(
            self.actor,
            action_space,
            CommandLimiter.from_robot_config(self.robot, self.period),
            ObservationWatchdog(self.robot.state_timeout_s, ()),
            self.period,
            require_episode=p["require_episode"],
            hold_when_idle=p["hold_when_idle"],
        )
        self._lock = threading.Lock()  # the loop's state: observations, episode events, the tick
        self.commands_sent = self.steps_published = 0
        self._last_hold: str | None = "start"

        cmd = self.robot.command
        msg_type = Float64MultiArray if cmd.interface == "forward_position" else JointTrajectory
        self.pub_arm = self.create_publisher(msg_type, cmd.topic, COMMAND_QOS)
        self.pub_gripper = self.create_publisher(msg_type, cmd.gripper_topic, COMMAND_QOS)
        self.pub_step = self.create_publisher(Float64MultiArray, STEP_TOPIC, RECORD_QOS)
        self.pub_status = self.create_publisher(String, WEIGHTS_STATUS_TOPIC, COMMAND_QOS)
        self.pub_diag = self.create_publisher(String, POLICY_DIAGNOSTICS_TOPIC, COMMAND_QOS)

        inputs = MutuallyExclusiveCallbackGroup()  # observations and events, one at a time
        self.create_subscription(JointState, STATE_TOPIC, self._on_state, STATE_QOS, callback_group=inputs)
        self.create_subscription(
            Float64MultiArray, ENV_STATE_TOPIC, self._on_env_state, STATE_QOS, callback_group=inputs
        )
        self.create_subscription(String, EPISODE_TOPIC, self._on_episode, COMMAND_QOS, callback_group=inputs)
        for camera in self._cameras_needed(base):
            self.create_subscription(
                Image, camera.image_topic, self._image_callback(camera.name, camera.height, camera.width),
                SENSOR_QOS, callback_group=inputs,
            )  # fmt: skip
        if self.swapper is not None:
            self.create_subscription(
                UInt8MultiArray, WEIGHTS_TOPIC, self._on_weights, LATCHED_QOS,
                callback_group=MutuallyExclusiveCallbackGroup(),
            )  # fmt: skip
        self.create_service(SetBool, POLICY_HOLD_SERVICE, self._on_hold, callback_group=inputs)
        # The tick has a group of its own: it never waits behind a subscription callback.
        self.create_timer(self.period, self._tick, callback_group=MutuallyExclusiveCallbackGroup())
        self.create_timer(p["diagnostics_period_s"], self._publish_diagnostics, callback_group=inputs)
        self.get_logger().info(
            f"policy: {self.policy.base.type} base ({self.base_source.diagnostics()['mode']} chunks),"
            f" residual {'off' if self.swapper is None else residual.composition}, {self.policy.action_space}"
            f" actions at {self.robot.control_rate_hz:g} Hz -> {cmd.interface} on {cmd.topic}"
            f" + {cmd.gripper_topic}; {'waits for episodes' if p['require_episode'] else 'always acting'}"
        )

    # ---- set-up --------------------------------------------------------------------------------
    def _node_parameters(self) -> dict[str, Any]:
        defaults: dict[str, Any] = {
            "require_episode": True,  # act only between the recorder's start and stop events
            "hold_when_idle": True,  # between episodes: re-send the measured joints (False: send nothing)
            "explore": True,  # sample the residual (rollouts for the learner); False: its mode (deployment)
            "explore_temperature": 1.0,  # exploring samples' spread, a fraction of the residual's std
            "asynchronous_base": True,  # base chunks on a worker thread (AsyncChunker)
            "diagnostics_period_s": 1.0,
            "torch_threads": 1,  # the residual is small: more threads only add contention on the robot PC
            "initial_weights": "",  # a snapshot file (write_snapshot) to act with before the learner has
        }
        out = {k: self.declare_parameter(k, v).value for k, v in defaults.items()}
        if out["torch_threads"] < 1 or out["diagnostics_period_s"] <= 0:
            raise ConfigError("policy_node: torch_threads must be >= 1 and diagnostics_period_s > 0")
        out["explore_temperature"] = float(out["explore_temperature"])
        if not 0.0 <= out["explore_temperature"] <= 1.0:
            raise ConfigError(
                f"policy_node: explore_temperature must be in [0, 1], got {out['explore_temperature']}"
            )
        return out

    def _make_swapper(self, initial_weights: str, base: Any, action_dim: int) -> WeightSwapper | None:
        residual = self.policy.residual
        if residual is None or self.learner_cfg.method == "base":
            return None
        # Built from what this node runs, not from the learner's store: the learner may run on another
        # machine. Each snapshot's module is built from the spec it carries (`load_acting_policy`).
        cameras = (image_key(c.name) for c in self._cameras_needed(base))
        inputs = {OBS_STATE, OBS_ENV_STATE, ACTION_BASE, *cameras}
        receiver = ReceiverCapabilities(residual.composition, residual.scale, action_dim, frozenset(inputs))
        if initial_weights and not Path(initial_weights).is_file():
            raise ConfigError(f"policy_node initial_weights: no snapshot file at {initial_weights}")
        swapper = WeightSwapper(receiver, self._on_swap_report, prepare_acting).start()
        if initial_weights:  # validated like any published snapshot; the learner's newer ones replace it
            swapper.submit(Path(initial_weights).read_bytes())
        return swapper

    def _base_inputs(self, base: Any) -> tuple[str, ...]:
        if self.policy.base.type == "pi05":
            return (OBS_STATE, *(image_key(c) for c in getattr(base, "cameras", {})))
        return default_base_inputs(int(getattr(base, "env_state_dim", 0)))

    def _cameras_needed(self, base: Any) -> list:
        if self.policy.base.type == "pi05" or self.learner_cfg.observation == "images":
            return list(self.robot.cameras)
        return []

    # ---- inputs --------------------------------------------------------------------------------
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _stamp(self, stamp: Any) -> float:
        """A message's capture stamp; unstamped messages count as received now."""
        seconds = stamp_seconds(stamp)
        return seconds if seconds > 0 else self._now()

    def _on_state(self, msg: JointState) -> None:
        try:
            q = state_vector(msg, self.state_names)
        except ValueError as err:
            self.get_logger().warn(f"ignored {STATE_TOPIC}: {err}", throttle_duration_sec=2.0)
            return
        with self._lock:
            if not self.loop.observe(OBS_STATE, q, self._stamp(msg.header.stamp)):
                self.get_logger().warn(f"{STATE_TOPIC} with NaN/inf ignored", throttle_duration_sec=2.0)

    def _on_env_state(self, msg: Float64MultiArray) -> None:
        try:
            stamp, values = decode_environment_state(msg)
        except ValueError as err:
            self.get_logger().warn(f"ignored {ENV_STATE_TOPIC}: {err}", throttle_duration_sec=2.0)
            return
        with self._lock:
            self.loop.observe(OBS_ENV_STATE, values, stamp if stamp else self._now())

    def _image_callback(self, name: str, height: int, width: int):
        key = image_key(name)

        def on_image(msg: Image) -> None:
            try:
                rgb = image_to_rgb(msg.height, msg.width, msg.encoding, msg.step, msg.data)
            except ValueError as err:
                self.get_logger().warn(f"camera {name}: {err}", throttle_duration_sec=2.0)
                return
            rgb = resize_rgb(rgb, height, width)
            with self._lock:
                self.loop.observe(key, rgb, self._stamp(msg.header.stamp))

        return on_image

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

    def _on_hold(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        with self._lock:
            self.loop.set_operator_hold(request.data)
        response.success = True
        response.message = "holding position until released" if request.data else "released"
        self.get_logger().warn(f"operator hold: {response.message}")
        return response

    def _on_weights(self, msg: UInt8MultiArray) -> None:
        self.swapper.submit(weights_payload(msg))  # validation happens on the swapper's thread

    def _on_swap_report(self, report: SwapReport) -> None:
        self.pub_status.publish(json_message(report.to_dict()))
        if report.accepted:
            self.get_logger().info(f"weights v{report.version} ({report.run_id}) validated")
        else:
            self.get_logger().warn(f"weights rejected: {report.reason}")

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
            self.commands_sent += 1
        if out.action is not None:
            a = out.action
            record = StepRecord(
                now, out.observation_stamp or now, a.policy_version, out.tick, a.executed, a.base, a.residual
            )
            self.pub_step.publish(encode_step(record))
            self.steps_published += 1
        if out.hold_reason != self._last_hold:
            self._last_hold = out.hold_reason
            state = "acting" if out.hold_reason is None else f"holding: {out.hold_reason}"
            self.get_logger().info(state)

    def diagnostics(self) -> dict[str, Any]:
        with self._lock:
            loop = self.loop
            report: dict[str, Any] = {
                "stamp": self._now(),
                "hold_reason": loop.hold_reason,
                "episode_active": loop.episode_active,
                "operator_hold": loop.operator_hold,
                "episode_tick": loop.episode_tick,
                "holds": dict(loop.holds),
                **loop.stats.summary(),
            }
        active = self.actor.active
        report |= {
            "active_version": self.actor.version,
            "active_run_id": active.run_id if active else None,
            "swaps": self.actor.swaps,
            "last_swap_latency_ms": self.actor.last_swap_latency_ms,
            "weights": {
                "accepted": self.swapper.accepted if self.swapper else 0,
                "rejected": self.swapper.rejected if self.swapper else 0,
            },
            "residual_fallbacks": self.actor.residual_fallbacks,
            "commands_sent": self.commands_sent,
            "steps_published": self.steps_published,
            "base": self.base_source.diagnostics(),
            "wall_time": time.time(),
        }
        return report

    def _publish_diagnostics(self) -> None:
        self.pub_diag.publish(json_message(self.diagnostics()))

    def close(self) -> None:
        if self.swapper is not None:
            self.swapper.close()
        self.base_source.close()


def main(args: Sequence[str] | None = None) -> None:
    raise SystemExit(run_node(PolicyNode, args, threads=4))


if __name__ == "__main__":
    main()
