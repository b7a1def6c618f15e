"""recorder_node: teleop demonstrations and policy rollouts -> the episode store.

Every /coirl/step record (one per control tick, from teleop_node or policy_node) becomes one frame:
the /coirl/state whose stamp equals the step's observation stamp, the newest frame of every camera
at or before it, the sim's environment state with that stamp (when the store has one), and the
executed / base / residual actions (see coirl_ros/recording/frame_assembler.py). Steps that cannot
be paired are skipped and counted, never recorded with the wrong observation.

Services: /recorder/start (Trigger), /recorder/stop (SetBool: data = success label; commits the
episode atomically), /recorder/discard (Trigger). Events on /coirl/episode (JSON): {"event":
"start"|"stop"|"discard", "index", "success", "stamp", ...}; policy and teleop nodes reset on
"start". A success sets the last frame's reward to 1 and done to true, as the learner expects.

The store (parameter `store`) is created on the first start, with the spec from the robot config
(state, cameras at their configured size; other sizes are resized), the policy's action space and
the environment state size: `env_state_dim` if set (0 on a robot), else an existing store's, else
the size of what arrived on /coirl/environment_state (sim_node latches it, so a paused sim still
tells), else 0 when nothing publishes there (concluded no sooner than `env_state_discovery_s` after
the recorder started). A publisher that has sent nothing within
ENV_STATE_WAIT_S makes the start fail (a store with the wrong spec would be worse), and so does a
camera that has sent no frame within `camera_wait_s` (its episode would lose steps). The recorder is
the store's single writer while it runs. /recorder/stop first waits (up to `step_wait_s`) for the
episode's last steps, so none is lost to a slow hop: steps sent before the stop (DDS source time)
that are still in flight, and the observations of those received.
Killed mid-episode, it loses that episode's unflushed frames only; stopped cleanly mid-episode, it
commits what it has, unlabelled.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import SetBool, Trigger

from coirl_ros.configs.loading import config_hash
from coirl_ros.configs.policy import PolicyConfig
from coirl_ros.configs.recorder import RecorderConfig
from coirl_ros.configs.robot import RobotConfig
from coirl_ros.configs.task import TaskConfig
from coirl_ros.data.episode_spec import EpisodeSpec, FrameError
from coirl_ros.data.episode_store import EpisodeStore, StoreError
from coirl_ros.ingestion.image_codec import image_to_rgb
from coirl_ros.nodes.interfaces import (
    ENV_STATE_QOS,
    ENV_STATE_TOPIC,
    EPISODE_TOPIC,
    LATCHED_QOS,
    RECORD_QOS,
    RECORDER_DISCARD_SERVICE,
    RECORDER_START_SERVICE,
    RECORDER_STOP_SERVICE,
    STATE_TOPIC,
    STEP_TOPIC,
    decode_environment_state,
    decode_step,
)
from coirl_ros.nodes.node_runtime import run_node, stamp_seconds
from coirl_ros.nodes.ros_params import declare_config_file, declare_overrides
from coirl_ros.recording.episode_recorder import EpisodeRecorder, recording_spec
from coirl_ros.recording.frame_assembler import FrameAssembler, Skip

# A sim publishes its object state latched: this long is for discovery and a busy machine, not for
# the sim to step (a paused sim's latched message arrives as soon as the recorder is matched).
ENV_STATE_WAIT_S = 10.0
# A stop settles once no step has arrived for this long since it began (or one sent after it has): see
# _settle. Every stop of a quiet stream costs this much.
STOP_QUIET_S = 0.25
DRAIN_PERIOD_S = 0.01


def _wait_while(condition: Callable[[], Any], timeout_s: float) -> None:
    """Poll `condition` every 20 ms until it is falsy or `timeout_s` (wall time) has passed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and condition():
        time.sleep(0.02)


def _locked[F: Callable[..., Any]](method: F) -> F:
    """Run a callback under the node's lock (inputs and services run on different executor threads)."""

    @functools.wraps(method)
    def wrapper(self: RecorderNode, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


RECORDER_FIELDS = (
    "store",
    "source",
    "task",
    "flush_every",
    "buffer_s",
    "step_wait_s",
    "max_image_lag_s",
    "camera_wait_s",
    "env_state_dim",
    "env_state_discovery_s",
)
# Camera frames: best effort, to match every camera driver, but deep. A controller wants only the
# newest frame; the recorder wants every frame a step may be paired with. At SENSOR_QOS's depth 5 a
# recorder held up for a quarter of a second (opening an episode, a busy machine, a lockstep sim
# running ahead) lost the frames the next steps were computed from.
RECORD_IMAGE_QOS = QoSProfile(
    depth=30, reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST
)


class RecorderNode(Node):
    """See module docstring."""

    def __init__(self) -> None:
        super().__init__("recorder_node")
        robot = declare_config_file(self, "robot_config", "robot.yaml", RobotConfig)
        task_cfg = declare_config_file(self, "task_config", "task.yaml", TaskConfig)
        policy = declare_overrides(
            self, declare_config_file(self, "policy_config", "policy.yaml", PolicyConfig), ["action_space"]
        )
        cfg = declare_overrides(
            self,
            declare_config_file(self, "recorder_config", "recorder.yaml", RecorderConfig),
            RECORDER_FIELDS,
        )
        self.robot, self.cfg = robot, cfg
        self.task = cfg.task or task_cfg.name
        self.action_space = policy.action_space
        self.state_names = [*robot.joint_names, robot.gripper.joint]
        spec = recording_spec(robot, self.action_space)  # env_state_dim is settled at the first start
        self.assembler = FrameAssembler(
            spec,
            {c.name: c.fps for c in robot.cameras},
            buffer_s=cfg.buffer_s,
            step_wait_s=cfg.step_wait_s,
            max_image_lag_s=cfg.max_image_lag_s,
        )
        self.recorder: EpisodeRecorder | None = None
        self.env_state_dim: int | None = None
        self.latest_version: int | None = None
        # While a stop settles: the wall time (ns) it began; steps *sent* after it are not the episode's.
        self._stop_began_ns: int | None = None
        self._stream_passed_stop = False  # a step sent after the stop arrived: nothing older is in flight
        self._last_step_arrival = -math.inf  # monotonic
        # When the drain timer last ran, and until when messages sent while this process was held up
        # (a loaded machine, a debugger, SIGSTOP: the timer did not run) may still arrive. See _settle.
        self._drain_timer_ran = time.monotonic()
        self._held_up_until = -math.inf
        self._warned: set[str] = set()
        self._cameras_heard: set[str] = set()
        self._lock = threading.RLock()
        self._started = time.monotonic()

        # Latched: a controller that matches late (just started) still learns the episode began.
        self.pub_events = self.create_publisher(String, EPISODE_TOPIC, LATCHED_QOS)
        # Inputs in their own group: the start service may wait for the first environment state
        # (two executor threads; `_lock` serialises everything that touches the episode).
        inputs = MutuallyExclusiveCallbackGroup()
        self.create_subscription(JointState, STATE_TOPIC, self._on_state, RECORD_QOS, callback_group=inputs)
        self.create_subscription(
            Float64MultiArray, ENV_STATE_TOPIC, self._on_env_state, RECORD_QOS, callback_group=inputs
        )
        if cfg.env_state_dim is None and self._existing_spec() is None:
            # Matches transient-local publishers only (sim_node): their latest message arrives on
            # matching, even from a paused sim, so the first start knows the object state's size.
            # Ignored once that size is known (it gets every message the one above gets). Not
            # destroyed: destroying a subscription while the other executor thread builds its wait
            # set crashed the node (rclpy InvalidHandle, once in a `make demo` run).
            self.create_subscription(
                Float64MultiArray,
                ENV_STATE_TOPIC,
                self._on_latched_env_state,
                ENV_STATE_QOS,
                callback_group=inputs,
            )
        self.create_subscription(
            Float64MultiArray, STEP_TOPIC, self._on_step, RECORD_QOS, callback_group=inputs
        )
        for cam in robot.cameras:
            self.create_subscription(
                Image,
                cam.image_topic,
                lambda msg, name=cam.name: self._on_image(name, msg),
                RECORD_IMAGE_QOS,
                callback_group=inputs,
            )
        self.create_service(Trigger, RECORDER_START_SERVICE, self._on_start)
        self.create_service(SetBool, RECORDER_STOP_SERVICE, self._on_stop)
        self.create_service(Trigger, RECORDER_DISCARD_SERVICE, self._on_discard)
        self.create_timer(DRAIN_PERIOD_S, self._on_drain_timer)
        self.get_logger().info(
            f"recording {self.task} ({cfg.source}) into {cfg.store}: state {spec.state_dim},"
            f" {self.action_space} actions ({spec.action_dim}), cameras {spec.camera_names or 'none'}"
        )

    # ---- inputs ---------------------------------------------------------------------------------------
    def _warn_once(self, key: str, text: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.get_logger().warn(text)

    @_locked
    def _on_state(self, msg: JointState) -> None:
        if list(msg.name) != self.state_names:
            self._warn_once(
                "names", f"{STATE_TOPIC} joint names {list(msg.name)} != configured {self.state_names}"
            )
            return
        self.assembler.add_state(stamp_seconds(msg.header.stamp), np.asarray(msg.position))

    @_locked
    def _on_env_state(self, msg: Float64MultiArray) -> None:
        stamp, values = decode_environment_state(msg)
        if stamp is None:
            stamp = self.assembler.states.newest_stamp
            self._warn_once("env_stamp", f"unstamped {ENV_STATE_TOPIC}: paired with the newest state instead")
            if stamp is None:
                return
        self.env_state_dim = len(values)
        self.assembler.add_env_state(stamp, values)

    def _on_latched_env_state(self, msg: Float64MultiArray) -> None:
        with self._lock:
            if self.env_state_dim is not None or self.recorder is not None:
                return
            self._on_env_state(msg)

    @_locked
    def _on_image(self, camera: str, msg: Image) -> None:
        try:
            rgb = image_to_rgb(msg.height, msg.width, msg.encoding, msg.step, msg.data)
        except ValueError as err:
            self._warn_once(f"img_{camera}", f"camera {camera}: {err}")
            return
        self.assembler.add_image(camera, stamp_seconds(msg.header.stamp), rgb)
        if camera not in self._cameras_heard:
            # Said once: an operator knows the feed reaches the recorder; the sim graph starts its
            # episode_driver on this line (graph.RECORDER_CAMERA_LINE).
            self.get_logger().info(f"camera {camera}: first frame ({msg.width}x{msg.height})")
            self._cameras_heard.add(camera)
        if camera in self.assembler.resized_from:
            h, w = self.assembler.resized_from[camera]
            want = dict(self.assembler.spec.cameras)[camera]
            self._warn_once(
                f"resize_{camera}",
                f"camera {camera} publishes {w}x{h}; recorded resized to {want[1]}x{want[0]}",
            )

    @_locked
    def _on_step(self, msg: Float64MultiArray, info: dict[str, Any]) -> None:
        try:
            step = decode_step(msg)
        except ValueError as err:
            self._warn_once("step_layout", f"ignored {STEP_TOPIC} message: {err}")
            return
        if step.policy_version != self.latest_version:
            self.get_logger().info(f"{STEP_TOPIC}: policy version {step.policy_version}")
        self.latest_version = step.policy_version
        self._last_step_arrival = time.monotonic()
        if self.recorder is None or not self.recorder.recording:
            return
        if self._stop_began_ns is not None:
            # Which episode a step belongs to is decided by when it was sent, not when it got here: a
            # loaded machine delivers the last steps after the stop request (seen in CI). Without a send
            # time (an rmw that gives none) only the steps received before the stop count, as before.
            sent_ns = int(info.get("source_timestamp") or 0)
            if not 0 < sent_ns <= self._stop_began_ns:
                self._stream_passed_stop = self._stream_passed_stop or sent_ns > 0
                return
        self.assembler.submit(step, time.monotonic())

    def _on_drain_timer(self) -> None:
        now = time.monotonic()
        self._held_up_until = max(self._held_up_until, self._late_messages_until(now))
        self._drain_timer_ran = now
        self._drain()

    def _late_messages_until(self, now: float) -> float:
        """Until when messages sent while this process was held up may still arrive, if it has been
        held up until `now`: a hold-up's length past its end (the timer's period is no hold-up)."""
        return now + max(0.0, now - self._drain_timer_ran - DRAIN_PERIOD_S)

    @_locked
    def _drain(self, force: bool = False) -> None:
        if self.recorder is None or not self.recorder.recording:
            return
        for step, result in self.assembler.drain(time.monotonic(), force=force):
            if isinstance(result, Skip):
                self.recorder.skip(result.kind)
                self.get_logger().warn(
                    f"step {step.tick} skipped: {result.reason}", throttle_duration_sec=2.0
                )
                continue
            try:
                self.recorder.add(result, step.observation_stamp, step.policy_version)
            except FrameError as err:
                self.recorder.skip("invalid")
                self.get_logger().warn(
                    f"step {step.tick} refused by the store: {err}", throttle_duration_sec=2.0
                )
            except StoreError as err:
                self.get_logger().error(f"episode cannot be written: {err}", throttle_duration_sec=5.0)

    # ---- the store -------------------------------------------------------------------------------------
    def _existing_spec(self) -> EpisodeSpec | None:
        with contextlib.suppress(StoreError):  # no store yet
            return EpisodeStore.open(self.cfg.store).spec
        return None

    def _env_state_undecided(self) -> bool:
        """Whether a new store's environment state size depends on a message still to come (from a
        publisher the graph shows, or one it may not show yet: env_state_discovery_s)."""
        if self.cfg.env_state_dim is not None or self.env_state_dim is not None:
            return False
        discovering = time.monotonic() - self._started < self.cfg.env_state_discovery_s
        return discovering or bool(self.count_publishers(ENV_STATE_TOPIC))

    def _store_env_state_dim(self, existing: EpisodeSpec | None) -> int:
        """The environment state size the store is opened with (module docstring)."""
        if self.cfg.env_state_dim is not None:
            return self.cfg.env_state_dim
        if self.env_state_dim is not None:
            return self.env_state_dim
        if existing is not None:
            return existing.env_state_dim
        if self.count_publishers(ENV_STATE_TOPIC):
            raise StoreError(
                f"{ENV_STATE_TOPIC} has a publisher but nothing arrived within {ENV_STATE_WAIT_S:g} s, so"
                " the new store's environment state size is unknown: set the recorder's env_state_dim"
                " (0 = none) or check the sim"
            )
        self.get_logger().info(f"nobody publishes {ENV_STATE_TOPIC}: recording without environment state")
        return 0

    def _open_store(self) -> EpisodeRecorder:
        existing = self._existing_spec()
        env_dim = self._store_env_state_dim(existing)
        spec = recording_spec(self.robot, self.action_space, env_dim)
        if existing is not None and existing != spec:
            hint = " (env_state_dim)" if existing.env_state_dim != env_dim else ""
            raise StoreError(
                f"{self.cfg.store} was recorded with spec {existing.to_dict()}; this recorder produces"
                f" {spec.to_dict()}{hint}"
            )
        recorder = EpisodeRecorder(self.cfg.store, spec, config_hash(self.robot), self.cfg.flush_every)
        self.assembler.spec = spec
        if existing is None:
            self.get_logger().info(f"created {self.cfg.store}: environment state {env_dim} values per frame")
        for p in recorder.abandoned:
            self.get_logger().warn(
                f"{self.cfg.store}: partial episode {p.name} ({p.frames_flushed} frames) left by a writer"
                " that died; committed episodes are intact (`coirl episodes verify --remove-partial`)"
            )
        return recorder

    def _event(self, event: str, index: int | None, success: bool | None, **extra: Any) -> None:
        if not self.context.ok():
            return  # shutting down (the final commit in close): nobody left to tell
        payload = {
            "event": event,
            "index": index,
            "success": success,
            "stamp": self.get_clock().now().nanoseconds * 1e-9,
        }
        self.pub_events.publish(String(data=json.dumps(payload | extra)))

    # ---- services --------------------------------------------------------------------------------------
    def _on_start(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        try:
            return self._start_when_ready(response)
        finally:
            self._service_held_the_drain_timer()

    def _service_held_the_drain_timer(self) -> None:
        """The start's waits and the stop's settling run in the drain timer's callback group, so
        the timer did not run meanwhile; that is not a hold-up of the process (see _settle)."""
        self._drain_timer_ran = time.monotonic()

    def _start_when_ready(self, response: Trigger.Response) -> Trigger.Response:
        _wait_while(self._silent_cameras, self.cfg.camera_wait_s)
        if self.recorder is None and self._existing_spec() is None:
            # A sim may be running whose object state has not arrived yet: the new store's spec needs
            # it. After the cameras: in sim, their frames come from the same node. (Inputs run on the
            # other executor thread meanwhile.)
            _wait_while(self._env_state_undecided, ENV_STATE_WAIT_S)
        if silent := self._silent_cameras():
            topics = ", ".join(f"{c.name} ({c.image_topic})" for c in self.robot.cameras if c.name in silent)
            error = (
                f"no frame from camera {topics} within {self.cfg.camera_wait_s:g} s: is its camera_node"
                " running? (an episode begun now would lose its steps)"
            )
            self.get_logger().error(f"cannot start recording: {error}")
            response.success, response.message = False, error
            return response
        with self._lock:
            return self._start(response)

    def _silent_cameras(self) -> list[str]:
        """The cameras of the spec that have not delivered a frame to this recorder yet."""
        with self._lock:
            return [c.name for c in self.robot.cameras if c.name not in self._cameras_heard]

    def _start(self, response: Trigger.Response) -> Trigger.Response:
        try:
            if self.recorder is None:
                self.recorder = self._open_store()
            if self.recorder.recording:
                raise StoreError(
                    f"already recording episode {self.recorder.stats.index}; stop or discard it first"
                )
            index = self.recorder.start(self.task, self.cfg.source, self.latest_version)
        except (StoreError, OSError) as err:
            self.get_logger().error(f"cannot start recording: {err}")
            response.success, response.message = False, str(err)
            return response
        # Steps from before the start are not this episode's, even one computed from the newest state
        # the recorder knows: a state published just before the start may still be in flight.
        # Controllers begin an episode on the "start" event (teleop_node, policy_node).
        self.assembler.clear_pending()
        self._event("start", index, None, task=self.task, source=self.cfg.source)
        self.get_logger().info(f"recording episode {index} ({self.task}, {self.cfg.source})")
        response.success, response.message = True, json.dumps({"index": index})
        return response

    def _settle(self) -> None:
        """Up to `step_wait_s` for the episode's last steps: those sent before the stop but still in
        flight, and the observations of those received (the state comes over another hop than the
        step and may be a little behind it at the end). Steps still in flight are over once one sent
        after the stop arrives (the controller kept ticking; a topic delivers in order) or none has
        arrived for STOP_QUIET_S since the stop began (a paused sim's controller sends no more). Quiet
        counts from the stop, not from the last step before it: a recorder that has fallen behind
        may not have read any of the steps waiting in its queue yet (the stop's service thread can
        run first), and those are the ones at stake. A recorder that was itself held up (its drain
        timer did not run) for a time L just before the stop counts quiet from L after the hold-up
        ended: steps sent meanwhile may reach it only after DDS has redelivered them (measured: 0.3 s
        after a 1.5 s SIGSTOP, when the stop request and several timer ticks were already through)."""
        began = time.monotonic()
        quiet_from = max(began, self._held_up_until, self._late_messages_until(began))
        deadline = began + self.cfg.step_wait_s
        with self._lock:
            self._stop_began_ns = time.time_ns()  # the clock DDS stamps the sending side with
            self._stream_passed_stop = False
        while True:
            with self._lock:
                if self.recorder is None or not self.recorder.recording:
                    return
                self._drain()  # the drain timer shares this callback's group: it cannot run now
                quiet = time.monotonic() - max(self._last_step_arrival, quiet_from) >= STOP_QUIET_S
                in_flight = not (self._stream_passed_stop or quiet)
                if (not self.assembler.pending and not in_flight) or time.monotonic() >= deadline:
                    return
            time.sleep(0.01)

    def _on_stop(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        try:
            self._settle()
            with self._lock:
                return self._stop(request, response)
        finally:
            self._stop_began_ns = None
            self._service_held_the_drain_timer()

    def _stop(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        if self.recorder is None or not self.recorder.recording:
            response.success, response.message = False, "not recording"
            return response
        response.success, response.message = self._finish(bool(request.data))
        return response

    def _finish(self, success: bool | None) -> tuple[bool, str]:
        assert self.recorder is not None and self.recorder.stats is not None
        self._drain(force=True)
        index = self.recorder.stats.index
        try:
            meta, stats = self.recorder.stop(success)
        except StoreError as err:
            self.get_logger().error(f"episode {index} not saved: {err}")
            self._event("discard", index, None, reason=str(err))
            return False, str(err)
        info = {"index": meta.index, "frames": meta.num_frames, "success": success, "skipped": stats.skipped}
        versions = sorted(stats.policy_versions)
        self._event(
            "stop",
            meta.index,
            success,
            frames=meta.num_frames,
            skipped=stats.skipped,
            policy_versions=versions,
        )
        skipped = f", skipped {stats.skipped}" if stats.skipped else ""
        self.get_logger().info(
            f"saved episode {meta.index}: {meta.num_frames} frames, success={success}{skipped}"
        )
        return True, json.dumps(info)

    @_locked
    def _on_discard(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        if self.recorder is None or not self.recorder.recording:
            response.success, response.message = False, "not recording"
            return response
        stats = self.recorder.discard()
        self.assembler.clear_pending()
        index = stats.index if stats is not None else None
        self._event("discard", index, None)
        self.get_logger().info(f"discarded episode {index}")
        response.success, response.message = True, json.dumps({"index": index})
        return response

    @_locked
    def close(self) -> None:
        if self.recorder is None:
            return
        if self.recorder.recording:
            self.get_logger().warn("shutting down mid-episode: committing it unlabelled (success = null)")
            self._finish(None)
        self.recorder.close()


def main(args: Sequence[str] | None = None) -> None:
    raise SystemExit(run_node(RecorderNode, args, threads=2))


if __name__ == "__main__":
    main()
