"""Test-side ROS helpers: node processes on loopback DDS and an in-process probe node.

`NodeProcess` starts a coirl node as a child process (`python -m coirl_ros.nodes.<name>`) with the
test's isolated ROS environment and keeps its output for assertions and failure messages.
`RosProbe` is an rclpy node in the test process (its own context and domain id, spun on a thread)
that publishes test input, records what it hears and calls services.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile

ROOT = Path(__file__).resolve().parent.parent


class NodeProcess:
    """A node running as `python -m coirl_ros.nodes.<module>` with ROS parameters."""

    def __init__(
        self, module: str, env: dict[str, str], params: dict[str, Any] | None = None, name: str | None = None
    ) -> None:
        self.module = module
        args = [sys.executable, "-m", f"coirl_ros.nodes.{module}", "--ros-args"]
        if name is not None:
            args += ["-r", f"__node:={name}"]
        for key, value in (params or {}).items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            args += ["-p", f"{key}:={text}"]
        self._log = tempfile.NamedTemporaryFile(prefix=f"{module}-", suffix=".log", delete=False)  # noqa: SIM115
        self.proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT)
        self._final_output: str | None = None
        self._interrupted = False

    @property
    def output(self) -> str:
        if self._final_output is not None:
            return self._final_output
        return Path(self._log.name).read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_output(self, text: str, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output:
                return True
            time.sleep(0.05)
        return False

    def interrupt(self) -> None:
        """Ctrl-C, once (a second one would interrupt the node's own clean shutdown)."""
        self._interrupted = True
        self.proc.send_signal(signal.SIGINT)

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, as a crash."""
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGINT (Ctrl-C), then SIGKILL if it does not exit; returns the exit code."""
        if self.proc.poll() is None:
            if not self._interrupted:
                self.interrupt()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()
        return self.proc.returncode

    def __enter__(self) -> NodeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._final_output = self.output  # kept for assertions after the process is gone
        os.unlink(self._log.name)


def stop_all(nodes: list[NodeProcess]) -> None:
    """Ctrl-C every node at once, then wait for each (shutdowns overlap instead of adding up)."""
    for n in nodes:
        if n.alive():
            n.interrupt()
    for n in nodes:
        n.__exit__()


def answer(future: Any, name: str, timeout: float = 20.0) -> Any:
    """The response of a service call in flight (`client.call_async`); AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    while not future.done():
        if time.monotonic() > deadline:
            raise AssertionError(f"service {name} did not answer within {timeout} s")
        time.sleep(0.005)
    return future.result()


class RosProbe:
    """An rclpy node in the test process on the test's ROS domain."""

    def __init__(self, env: dict[str, str], name: str = "test_probe") -> None:
        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=int(env["ROS_DOMAIN_ID"]))
        self.node = Node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.messages: dict[str, list[Any]] = defaultdict(list)
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set():
            self.executor.spin_once(timeout_sec=0.02)

    def subscribe(
        self, msg_type: type, topic: str, qos: QoSProfile | int = 10, callback: Callable | None = None
    ) -> None:
        def on_msg(msg: Any) -> None:
            with self.lock:
                self.messages[topic].append(msg)
            if callback is not None:
                callback(msg)

        self.node.create_subscription(msg_type, topic, on_msg, qos)

    def got(self, topic: str) -> list[Any]:
        with self.lock:
            return list(self.messages[topic])

    def clear(self, topic: str) -> None:
        with self.lock:
            self.messages[topic].clear()

    def wait_for(
        self, topic: str, count: int = 1, timeout: float = 20.0, where: Callable[[Any], bool] | None = None
    ) -> list[Any]:
        """Messages on `topic` (filtered by `where`) once there are `count`; AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msgs = [m for m in self.got(topic) if where is None or where(m)]
            if len(msgs) >= count:
                return msgs
            time.sleep(0.01)
        raise AssertionError(f"{len(msgs)} of {count} messages on {topic} within {timeout} s")

    def call(self, srv_type: type, name: str, request: Any = None, timeout: float = 20.0) -> Any:
        client = self.node.create_client(srv_type, name)
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise AssertionError(f"service {name} not available within {timeout} s")
            future = client.call_async(request if request is not None else srv_type.Request())
            return answer(future, name, timeout)
        finally:
            self.node.destroy_client(client)

    def wait_subscribers(self, publisher: Any, count: int = 1, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while publisher.get_subscription_count() < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"no subscriber on {publisher.topic_name} within {timeout} s")
            time.sleep(0.01)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)

    def __enter__(self) -> RosProbe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def robot_config_file(tmp_path: Path, cameras: list[dict[str, Any]] | None = None, **changes: Any) -> Path:
    """config/robot.yaml with other `cameras` and top-level `changes`, written under tmp_path."""
    import yaml

    data = yaml.safe_load((ROOT / "config" / "robot.yaml").read_text())
    data["cameras"] = cameras or []
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    path = tmp_path / "robot.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def assert_paced(stamps: list[float], period: float, what: str) -> None:
    """Check what a timer-driven publisher controls about its timing, not what the machine does to it.

    ROS timers keep their phase: a tick can come late but never more often than the period on
    average, so the mean interval is at least the period (this catches a node on another rate). How
    late ticks come on a loaded machine is a benchmark's figure (bench/control_loop_bench.py):
    fresh-clone CI once saw half of a node's periods skipped for seconds (median interval 1.48
    periods), so the other bound asks only that the node keeps its period where the machine lets it.
    """
    intervals = np.diff(stamps)
    assert len(intervals) >= 4, f"{what}: too few messages ({len(stamps)}) to judge the rate"
    mean = np.mean(intervals)
    assert mean >= 0.9 * period, f"{what}: mean interval {mean:.3f} s, period {period} s"
    q25 = np.quantile(intervals, 0.25)
    assert q25 <= 1.5 * period, f"{what}: first quartile of the intervals {q25:.3f} s, period {period} s"
