"""sim_node: the MuJoCo task behind the real robot's topics, so the node graph runs unchanged in sim.

Consumes the robot config's command topics (forward position controller: Float64MultiArray of the
arm targets on `command.topic` and the finger target on `command.gripper_topic`; with
`command.interface: joint_trajectory`, JointTrajectory on both, interpolated in time) and
publishes what the robot and its cameras would: /joint_states (arm joints + gripper joint, in the
robot config's names), raw renders of every `source: sim` camera on /sim/cameras/<c>/image_raw
(+ camera_info, sensor QoS), plus the sim's extras: /coirl/environment_state (privileged object
state, stamped like the joint states; latched, ENV_STATE_QOS), /sim/state (time, qpos, qvel, mocap
poses) and /clock.

Time: the sim owns a clock that starts at 1 s and never runs backwards, published on /clock. With
`use_sim_time:=true` (run every node that way) messages are stamped with it; without, they are
stamped with the wall clock when published, which only makes sense at real_time_factor 1.

Pacing: free-running at `real_time_factor` x real time (0 = as fast as possible), or `lockstep`:
each step waits for its command (see coirl_ros/sim/lockstep.py), which is what CI and `make demo`
use. Services: /sim/reset (Trigger: next seed; message = JSON with the seed), /sim/success (Trigger:
solved now), /sim/pause (SetBool). Commands persist between messages; none yet = hold home.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from coirl_ros.configs.loading import ConfigError
from coirl_ros.configs.robot import RobotConfig
from coirl_ros.configs.sim import SimConfig
from coirl_ros.configs.task import TaskConfig
from coirl_ros.nodes.interfaces import (
    CLOCK_TOPIC,
    COMMAND_QOS,
    ENV_STATE_QOS,
    ENV_STATE_TOPIC,
    SENSOR_QOS,
    SIM_PAUSE_SERVICE,
    SIM_RESET_SERVICE,
    SIM_STATE_TOPIC,
    SIM_SUCCESS_SERVICE,
    STATE_QOS,
    SimState,
    camera_info_topic,
    encode_environment_state,
    encode_sim_state,
    sim_camera_topic,
)
from coirl_ros.nodes.node_runtime import run_node, seconds_stamp, stamp_seconds
from coirl_ros.nodes.ros_params import declare_config_file, declare_overrides
from coirl_ros.sim.command_input import JointCommandInput
from coirl_ros.sim.lockstep import LockstepGate
from coirl_ros.sim.sim_robot import SimCamera, SimRobot

T = TypeVar("T")
SIM_FIELDS = (
    "task",
    "seed",
    "real_time_factor",
    "lockstep",
    "lockstep_timeout_s",
    "publish_environment_state",
)


class SimNode(Node):
    """See module docstring."""

    def __init__(self) -> None:
        super().__init__("sim_node")
        self.exit_code: int | None = None
        robot = declare_config_file(self, "robot_config", "robot_sim.yaml", RobotConfig)
        robot = declare_overrides(self, robot, ["control_rate_hz", "joint_states_topic"])
        task_cfg = declare_config_file(self, "task_config", "task.yaml", TaskConfig)
        cfg = declare_overrides(
            self, declare_config_file(self, "sim_config", "sim.yaml", SimConfig), SIM_FIELDS
        )
        if len(robot.joints) != 7:
            raise ConfigError(
                f"sim_node simulates a 7-joint Panda; the robot config has {len(robot.joints)} joints"
            )
        self.cfg, self.robot_cfg = cfg, robot
        self.use_sim_time = bool(self.get_parameter("use_sim_time").value)
        cams = [SimCamera(c.name, c.height, c.width, c.fps) for c in robot.cameras if c.source == "sim"]
        try:
            self.sim = SimRobot(cfg.task or task_cfg.name, robot.control_rate_hz, cams, cfg.seed)
        except ValueError as err:  # unknown task, camera or rate: a configuration problem
            raise ConfigError(f"sim_node: {err}") from None
        self.joint_names = [*robot.joint_names, robot.gripper.joint]
        self.commands = JointCommandInput(robot.joint_names, robot.gripper.joint, self.sim.home)
        self.gate = LockstepGate(cfg.lockstep_timeout_s)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._requests: queue.Queue[tuple[Callable[[], Any], threading.Event, dict[str, Any]]] = queue.Queue()
        self.paused = False
        self.lockstep_timeouts = 0
        self._gripper_commanded = (0.0, False)  # (checked at, answer): graph queries are not free

        self.pub_joints = self.create_publisher(JointState, robot.joint_states_topic, STATE_QOS)
        self.pub_clock = self.create_publisher(Clock, CLOCK_TOPIC, COMMAND_QOS)
        self.pub_env = self.create_publisher(Float64MultiArray, ENV_STATE_TOPIC, ENV_STATE_QOS)
        self.pub_sim_state = self.create_publisher(Float64MultiArray, SIM_STATE_TOPIC, COMMAND_QOS)
        self.pub_images = {
            c.name: self.create_publisher(Image, sim_camera_topic(c.name), SENSOR_QOS) for c in cams
        }
        self.pub_infos = {
            c.name: self.create_publisher(CameraInfo, camera_info_topic(sim_camera_topic(c.name)), SENSOR_QOS)
            for c in cams
        }
        command = robot.command
        if command.interface == "forward_position":
            self.create_subscription(Float64MultiArray, command.topic, self._on_arm, COMMAND_QOS)
            self.create_subscription(Float64MultiArray, command.gripper_topic, self._on_gripper, COMMAND_QOS)
        else:
            self.create_subscription(JointTrajectory, command.topic, self._on_trajectory, COMMAND_QOS)
            self.create_subscription(JointTrajectory, command.gripper_topic, self._on_trajectory, COMMAND_QOS)
        self.create_service(Trigger, SIM_RESET_SERVICE, self._on_reset)
        self.create_service(Trigger, SIM_SUCCESS_SERVICE, self._on_success)
        self.create_service(SetBool, SIM_PAUSE_SERVICE, self._on_pause)

        mode = "lockstep" if cfg.lockstep else f"real_time_factor {cfg.real_time_factor or 'unlimited'}"
        self.get_logger().info(
            f"sim: task {self.sim.task_name}, seed {cfg.seed}, {robot.control_rate_hz:g} Hz control, {mode},"
            f" cameras {[c.name for c in cams] or 'none'}, commands ({command.interface}) on {command.topic}"
            f" + {command.gripper_topic}, stamps in {'sim' if self.use_sim_time else 'wall'} time"
        )
        self._thread = threading.Thread(target=self._run, name="sim-loop", daemon=True)
        self._thread.start()

    # ---- the loop ------------------------------------------------------------------------------------
    # Everything that touches the sim runs on this one thread (MuJoCo's GL context is bound to the
    # thread that made it); services hand their work over with `_in_sim_thread`.
    def _run(self) -> None:
        try:
            self._publish_observation()  # a lockstep controller needs a first state to act on
            self._loop()
        except Exception as err:  # the node must not keep answering services with a dead sim
            if not self.context.ok():
                return  # rclpy shut down under the loop (Ctrl-C): publishing failed, nothing is wrong
            self.get_logger().fatal(f"sim loop failed: {type(err).__name__}: {err}")
            self.exit_code = 1
        finally:
            self._serve_requests()  # fail nobody who is waiting
            self.sim.close()

    def _loop(self) -> None:
        period = self.sim.dt / self.cfg.real_time_factor if self.cfg.real_time_factor > 0 else 0.0
        next_wall = time.monotonic()
        interrupted = lambda: self._stop.is_set() or self.paused or not self._requests.empty()  # noqa: E731
        while not self._stop.is_set() and self.context.ok():
            self._serve_requests()
            if self.paused:
                self._wake.wait(0.05)
                self._wake.clear()
                next_wall = time.monotonic()
                continue
            if self.cfg.lockstep:
                outcome = self.gate.wait(self._gripper_in_use, interrupted)
                if outcome == "interrupted":
                    continue
                if outcome == "timeout":
                    self.lockstep_timeouts += 1
                    self.get_logger().warn(
                        f"lockstep: no command within {self.cfg.lockstep_timeout_s} s;"
                        " stepping on the last one",
                        throttle_duration_sec=10.0,
                    )
            elif period > 0:
                next_wall += period
                delay = next_wall - time.monotonic()
                if delay > 0 and self._wake.wait(delay):
                    self._wake.clear()
                    next_wall -= period  # woken for a request or pause: this step is still due
                    continue
                if delay < -0.5:  # cannot keep up: run slower than asked rather than in bursts
                    self.get_logger().warn(
                        f"sim cannot keep real_time_factor {self.cfg.real_time_factor}",
                        throttle_duration_sec=10.0,
                    )
                    next_wall = time.monotonic()
            self.sim.step(self.commands.target(self.sim.time + self.sim.dt))
            self._publish_observation()

    def _in_sim_thread(self, fn: Callable[[], T], timeout_s: float = 30.0) -> T:
        """Run `fn` on the sim thread between two steps and return its result."""
        done = threading.Event()
        box: dict[str, Any] = {}
        self._requests.put((fn, done, box))
        self._wake.set()
        self.gate.wake()
        if not done.wait(timeout_s):
            raise TimeoutError(f"the sim thread did not answer within {timeout_s} s")
        if "error" in box:
            raise box["error"]
        return box["result"]

    def _serve_requests(self) -> None:
        while True:
            try:
                fn, done, box = self._requests.get_nowait()
            except queue.Empty:
                return
            try:
                box["result"] = fn() if self.exit_code is None else None
                if self.exit_code is not None:
                    box["error"] = RuntimeError("the sim loop has failed")
            except Exception as err:
                box["error"] = err
            done.set()

    def _gripper_in_use(self) -> bool:
        """Whether anyone publishes gripper commands (then a lockstep step waits for one too)."""
        checked, answer = self._gripper_commanded
        now = time.monotonic()
        if now - checked > 0.5:
            answer = self.count_publishers(self.robot_cfg.command.gripper_topic) > 0
            self._gripper_commanded = (now, answer)
        return answer

    # ---- publishing ---------------------------------------------------------------------------------
    def _stamp(self):
        return seconds_stamp(self.sim.time) if self.use_sim_time else self.get_clock().now().to_msg()

    def _publish_observation(self) -> None:
        """Everything the sim shows at its current time; joint states last, since they trigger the
        controllers and the other topics should already be there."""
        sim_now = seconds_stamp(self.sim.time)
        self.pub_clock.publish(Clock(clock=sim_now))
        stamp = self._stamp()
        for name in self.sim.cameras_due():
            self._publish_camera(name, stamp)
        if self.cfg.publish_environment_state:
            self.pub_env.publish(encode_environment_state(self.sim.object_state(), stamp.sec, stamp.nanosec))
        qpos, qvel, mocap_pos, mocap_quat = self.sim.mujoco_state()
        self.pub_sim_state.publish(
            encode_sim_state(SimState(self.sim.time, qpos, qvel, mocap_pos, mocap_quat))
        )
        msg = JointState()
        msg.header.stamp = stamp
        msg.name = self.joint_names
        msg.position = self.sim.joint_positions().tolist()
        msg.velocity = self.sim.joint_velocities().tolist()
        self.pub_joints.publish(msg)

    def _publish_camera(self, name: str, stamp) -> None:
        rgb = self.sim.render(name)
        h, w = rgb.shape[:2]
        img = Image()
        img.header.stamp = stamp
        img.header.frame_id = f"{name}_optical_frame"
        img.height, img.width, img.encoding, img.step = h, w, "rgb8", 3 * w
        img.data = rgb.tobytes()
        fx, fy, cx, cy = self.sim.intrinsics(name)
        info = CameraInfo()
        info.header = img.header
        info.height, info.width = h, w
        info.distortion_model = "plumb_bob"
        info.d = [0.0] * 5
        info.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
        info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        info.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
        self.pub_images[name].publish(img)
        self.pub_infos[name].publish(info)

    # ---- commands -----------------------------------------------------------------------------------
    def _on_arm(self, msg: Float64MultiArray) -> None:
        try:
            self.commands.set_arm(msg.data, self.sim.time)
        except ValueError as err:
            self.get_logger().warn(f"ignored arm command: {err}", throttle_duration_sec=2.0)
            return
        self.gate.arm_arrived()

    def _on_gripper(self, msg: Float64MultiArray) -> None:
        try:
            self.commands.set_gripper(msg.data, self.sim.time)
        except ValueError as err:
            self.get_logger().warn(f"ignored gripper command: {err}", throttle_duration_sec=2.0)
            return
        self.gate.gripper_arrived()

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        points: Sequence[tuple[float, Sequence[float]]] = [
            (stamp_seconds(p.time_from_start), p.positions) for p in msg.points
        ]
        try:
            has_gripper = self.commands.set_trajectory(msg.joint_names, points, self.sim.time)
        except ValueError as err:
            self.get_logger().warn(f"ignored joint trajectory: {err}", throttle_duration_sec=2.0)
            return
        if has_gripper:
            self.gate.gripper_arrived()
        if any(n in msg.joint_names for n in self.robot_cfg.joint_names):
            self.gate.arm_arrived()

    # ---- services -----------------------------------------------------------------------------------
    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        def reset() -> dict[str, Any]:
            seed = self.sim.reset()
            self.commands.reset()
            self.gate.clear()
            self._publish_observation()
            return {
                "seed": seed,
                "task": self.sim.task_name,
                "episode": self.sim.episode,
                "time": self.sim.time,
            }

        try:
            info = self._in_sim_thread(reset)
        except Exception as err:
            response.success, response.message = False, f"reset failed: {err}"
            return response
        self.get_logger().info(f"reset: episode {info['episode']}, seed {info['seed']}")
        response.success, response.message = True, json.dumps(info)
        return response

    def _on_success(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        try:
            info = self._in_sim_thread(
                lambda: {"success": self.sim.success(), "time": self.sim.time, "steps": self.sim.steps}
            )
        except Exception as err:
            response.success, response.message = False, json.dumps({"error": str(err)})
            return response
        response.success, response.message = bool(info["success"]), json.dumps(info)
        return response

    def _on_pause(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        # Through the sim thread: once this returns, no step is in flight any more.
        def pause() -> None:
            self.paused = bool(request.data)

        try:
            self._in_sim_thread(pause)
        except Exception as err:
            response.success, response.message = False, str(err)
            return response
        response.success, response.message = True, "paused" if self.paused else "running"
        return response

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self.gate.wake()
        self._thread.join(timeout=10.0)


def main(args: Sequence[str] | None = None) -> None:
    raise SystemExit(run_node(SimNode, args))


if __name__ == "__main__":
    main()
