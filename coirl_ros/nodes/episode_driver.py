"""episode_driver: N episodes in sim, unattended: reset, record, run to success or max_steps, label.

Per episode:  /sim/pause(true) -> /sim/reset -> /recorder/start -> /sim/pause(false)
              -> count /coirl/step ticks, asking /sim/success after each
              -> solved or `max_steps` ticks: /sim/pause(true) -> the last ticks land
              -> /recorder/stop(success)
Pausing keeps the new scene still until the recorder runs, so the episode's first frame is the
fresh scene in any mode, and keeps the sim from running on between episodes. Whatever produces the
ticks (teleop_node's scripted expert, the policy node) is unchanged: it starts its episode on the
recorder's "start" event, as it would for a person, acting on the newest state it has (in lockstep
the sim shows no other until it gets a command).

Prints one progress line per episode (index, steps, success, running success rate) and a JSON
summary at the end, then exits (0, or 1 when an episode could not be run: no controller ticking,
a service missing). The sim is left paused.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from typing import Any

from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import SetBool, Trigger

from coirl_ros.configs.task import TaskConfig
from coirl_ros.nodes.interfaces import (
    RECORD_QOS,
    RECORDER_START_SERVICE,
    RECORDER_STOP_SERVICE,
    SIM_PAUSE_SERVICE,
    SIM_RESET_SERVICE,
    SIM_SUCCESS_SERVICE,
    STEP_TOPIC,
)
from coirl_ros.nodes.node_runtime import run_node
from coirl_ros.nodes.ros_params import declare_config_file
from coirl_ros.recording.progress import EpisodeTally

# After the pause: the controller's last steps are in flight until no tick has come for SETTLE_S
# (a controller on the sim's clock stops with it; one on wall time never does: SETTLE_MAX_S).
SETTLE_S = 0.3
SETTLE_MAX_S = 1.0


class DriverError(RuntimeError):
    """An episode could not be run (a service or the controller is missing)."""


class EpisodeDriver(Node):
    """See module docstring. The episodes run on a worker thread; callbacks on the executor."""

    def __init__(self) -> None:
        super().__init__("episode_driver")
        self.exit_code: int | None = None
        task_cfg = declare_config_file(self, "task_config", "task.yaml", TaskConfig)
        self.episodes = int(self.declare_parameter("episodes", 10).value)
        self.max_steps = int(self.declare_parameter("max_steps", task_cfg.max_episode_steps).value)
        self.step_timeout_s = float(self.declare_parameter("step_timeout_s", 10.0).value)
        self.service_timeout_s = float(self.declare_parameter("service_timeout_s", 30.0).value)
        if self.episodes <= 0 or self.max_steps <= 0:
            raise ValueError(f"episodes ({self.episodes}) and max_steps ({self.max_steps}) must be > 0")
        group = ReentrantCallbackGroup()
        self._ticks = 0
        self._tick_cond = threading.Condition()
        self.create_subscription(
            Float64MultiArray, STEP_TOPIC, self._on_step, RECORD_QOS, callback_group=group
        )
        self.clients_ = {
            name: self.create_client(srv, name, callback_group=group)
            for name, srv in (
                (SIM_PAUSE_SERVICE, SetBool),
                (SIM_RESET_SERVICE, Trigger),
                (SIM_SUCCESS_SERVICE, Trigger),
                (RECORDER_START_SERVICE, Trigger),
                (RECORDER_STOP_SERVICE, SetBool),
            )
        }
        self.tally = EpisodeTally(self.episodes)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="episode-driver", daemon=True)
        self._thread.start()

    def _on_step(self, msg: Float64MultiArray) -> None:
        with self._tick_cond:
            self._ticks += 1
            self._tick_cond.notify_all()

    # ---- service calls from the worker thread ----------------------------------------------------------
    def _client(self, name: str) -> Any:
        client = self.clients_[name]
        if not client.wait_for_service(timeout_sec=self.service_timeout_s):
            raise DriverError(
                f"service {name} not available after {self.service_timeout_s} s: is its node running?"
            )
        return client

    def _call(self, name: str, request: Any) -> Any:
        future = self._client(name).call_async(request)
        done = threading.Event()
        future.add_done_callback(lambda _f: done.set())
        if not done.wait(self.service_timeout_s):
            raise DriverError(f"service {name} did not answer within {self.service_timeout_s} s")
        return future.result()

    def _trigger(self, name: str) -> Trigger.Response:
        return self._call(name, Trigger.Request())

    def _set(self, name: str, value: bool) -> SetBool.Response:
        return self._call(name, SetBool.Request(data=value))

    # ---- episodes -----------------------------------------------------------------------------------
    def _run(self) -> None:
        code = 0
        try:
            # Every node is up before the first reset: a recorder still starting would miss the
            # fresh scene that the reset publishes (and a missing node fails here, named).
            for name in self.clients_:
                self._client(name)
            for _ in range(self.episodes):
                if self._stop.is_set():
                    break
                print(self._episode(), flush=True)
        except DriverError as err:
            self.get_logger().error(str(err))
            print(f"episode_driver: {err}", flush=True)
            code = 1
        except Exception as err:  # report, never hang the process
            self.get_logger().error(f"{type(err).__name__}: {err}")
            code = 1
        print(json.dumps({"summary": self.tally.summary()}), flush=True)
        self.exit_code = code

    def _episode(self) -> str:
        began = time.monotonic()
        self._set(SIM_PAUSE_SERVICE, True)
        reset = self._trigger(SIM_RESET_SERVICE)
        if not reset.success:
            raise DriverError(f"/sim/reset failed: {reset.message}")
        seed = json.loads(reset.message).get("seed")
        with self._tick_cond:
            start_ticks = self._ticks
        start = self._trigger(RECORDER_START_SERVICE)
        if not start.success:
            raise DriverError(f"/recorder/start failed: {start.message}")
        index = json.loads(start.message).get("index")
        self._set(SIM_PAUSE_SERVICE, False)
        steps, solved = 0, False
        try:
            while steps < self.max_steps and not self._stop.is_set():
                seen = start_ticks + steps
                with self._tick_cond:
                    if not self._tick_cond.wait_for(
                        lambda seen=seen: self._ticks > seen, self.step_timeout_s
                    ):
                        raise DriverError(
                            f"no {STEP_TOPIC} tick for {self.step_timeout_s} s in episode {index}:"
                            " is a controller (teleop_node, policy_node) running?"
                        )
                    steps = self._ticks - start_ticks
                if self._trigger(SIM_SUCCESS_SERVICE).success:
                    solved = True
                    break
        except DriverError:
            self._set(SIM_PAUSE_SERVICE, True)
            self._set(RECORDER_STOP_SERVICE, False)  # keep what was recorded, labelled a failure
            raise
        self._set(SIM_PAUSE_SERVICE, True)
        sent = self._settled_ticks() - start_ticks
        stop = self._set(RECORDER_STOP_SERVICE, solved)
        if not stop.success:
            raise DriverError(f"/recorder/stop failed for episode {index}: {stop.message}")
        frames = json.loads(stop.message).get("frames", steps)
        if frames < sent:
            self.get_logger().warn(
                f"episode {index}: the recorder saved {frames} of the {sent} steps the controller sent"
            )
        return self.tally.record(index, frames, solved, seed, time.monotonic() - began)

    def _settled_ticks(self) -> int:
        """The tick count once the paused sim's controller has stopped ticking (none for SETTLE_S, at
        most SETTLE_MAX_S): the sim runs on while the driver asks for success, and the steps of those
        last sim steps must reach the recorder before the stop, which drops what arrives after it."""
        deadline = time.monotonic() + SETTLE_MAX_S
        with self._tick_cond:
            while True:
                seen = self._ticks
                left = deadline - time.monotonic()
                if left <= 0 or not self._tick_cond.wait_for(
                    lambda seen=seen: self._ticks > seen, min(SETTLE_S, left)
                ):
                    return self._ticks

    def close(self) -> None:
        self._stop.set()
        with self._tick_cond:
            self._tick_cond.notify_all()
        self._thread.join(timeout=5.0)


def main(args: Sequence[str] | None = None) -> None:
    raise SystemExit(run_node(EpisodeDriver, args, threads=2))


if __name__ == "__main__":
    main()
