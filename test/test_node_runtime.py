"""The nodes' executor and main loop: with every pool thread busy, a ready callback is queued once and
then run, never handed to the pool over and over (rclpy 7.1's MultiThreadedExecutor does that:
ros2/rclpy#1452); on Ctrl-C a node closes only after its running callbacks have finished."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import rclpy
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node

from coirl_ros.nodes.node_runtime import ThreadedExecutor

PROBE = Path(__file__).parent / "scripts" / "runtime_probe.py"


@pytest.fixture
def node(ros_env: dict[str, str]) -> Iterator[Node]:
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(ros_env["ROS_DOMAIN_ID"]))
    node = Node("executor_probe", context=context)
    yield node
    node.destroy_node()
    rclpy.try_shutdown(context=context)


@pytest.mark.ros
def test_a_callback_waiting_for_a_busy_pool_is_submitted_once_and_runs(node: Node) -> None:
    release = threading.Event()
    busy: list[str] = []

    def blocker(name: str):
        def hold_a_thread() -> None:
            if name not in busy:
                busy.append(name)
                release.wait(10)

        return hold_a_thread

    for name in ("a", "b"):  # both pool threads, held until released
        node.create_timer(0.01, blocker(name), callback_group=MutuallyExclusiveCallbackGroup())
    ticks: list[float] = []
    node.create_timer(
        0.01, lambda: ticks.append(time.monotonic()), callback_group=MutuallyExclusiveCallbackGroup()
    )
    executor = ThreadedExecutor(num_threads=2, context=node.context)
    executor.add_node(node)
    submitted: Counter = Counter()
    submit = executor._executor.submit

    def counting_submit(fn: object, *args: object, **kwargs: object) -> object:
        submitted[fn] += 1
        return submit(fn, *args, **kwargs)

    executor._executor.submit = counting_submit
    try:
        deadline = time.monotonic() + 0.6  # three of the spin's 0.2 s waits: rclpy 7.1 resubmits on each
        while time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.2)
        assert sorted(busy) == ["a", "b"] and not ticks  # the pool is full: the tick waits in its queue
        release.set()
        deadline = time.monotonic() + 10
        while len(ticks) < 5 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.2)
        assert len(ticks) >= 5  # the queued callback ran, and the timer goes on
        assert max(submitted.values()) == 1, f"a handler was submitted {max(submitted.values())} times"
    finally:
        release.set()
        executor.shutdown()


def _start_probe(ros_env: dict[str, str], *flags: str) -> subprocess.Popen:
    """test/scripts/runtime_probe.py in a process of its own (signals go to it alone)."""
    proc = subprocess.Popen(
        [sys.executable, str(PROBE), *flags],
        env=ros_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    return proc


@pytest.mark.ros
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_spinning_node_closes_after_its_running_callbacks(ros_env: dict[str, str], sig: int) -> None:
    proc = _start_probe(ros_env)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert first.strip() == "spinning", first
    time.sleep(1.0)  # callbacks running on both threads
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "Traceback" not in out, out
    assert "closed with 0 callbacks running" in out, out


@pytest.mark.ros
def test_ctrl_c_while_a_node_is_being_built_ends_the_process_at_once(ros_env: dict[str, str]) -> None:
    proc = _start_probe(ros_env, "--slow-build")
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert first.strip() == "building", first
    proc.send_signal(signal.SIGINT)
    # The build sleeps 60 s: rclpy's own handler would only have been heard after it.
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0 and "Traceback" not in out and "spinning" not in out, out


@pytest.mark.ros
@pytest.mark.parametrize(("second", "completes"), [(signal.SIGTERM, True), (signal.SIGINT, False)])
def test_a_second_ctrl_c_cuts_a_slow_close_short_and_sigterm_does_not(
    ros_env: dict[str, str], second: int, completes: bool
) -> None:
    proc = _start_probe(ros_env, "--slow-close")
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "spinning"
    proc.send_signal(signal.SIGINT)
    assert proc.stdout.readline().strip() == "closing"
    # ros2 launch sends SIGTERM 5 s after its SIGINT, whatever the node is doing: the close (a
    # checkpoint being saved) runs on. Only the user's second Ctrl-C cuts it short.
    proc.send_signal(second)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "Traceback" not in out, out
    assert ("closed with" in out) == completes, out
    assert ("interrupted during shutdown" in out) == (not completes), out
