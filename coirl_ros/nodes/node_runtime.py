"""What every coirl node's main() does, and stamp conversions.

`run_node` starts rclpy, builds the node, spins it and shuts down cleanly on Ctrl-C (SIGINT), on
SIGTERM and on errors, always calling the node's `close()` (threads joined, devices and stores
released) before rclpy goes. The signals are handled here, not by rclpy (`StopSignals`).
A configuration error ends the process with exit code 2 and the message, not a traceback.
Nodes with several callback threads spin a `ThreadedExecutor` (rclpy's MultiThreadedExecutor less a
busy loop, see there).
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType

import rclpy
from builtin_interfaces.msg import Time
from rclpy.executors import (
    ConditionReachedException,
    ExternalShutdownException,
    MultiThreadedExecutor,
    ShutdownException,
    SingleThreadedExecutor,
    TimeoutException,
    TimeoutObject,
)
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from coirl_ros.configs.loading import ConfigError

SHUTDOWN_WAIT_S = 5.0  # for callbacks still running when the spin ends (a hung one is left behind)


def stamp_seconds(stamp: Time) -> float:
    """builtin_interfaces/Time -> float seconds."""
    return stamp.sec + stamp.nanosec * 1e-9


def seconds_stamp(seconds: float) -> Time:
    """float seconds -> builtin_interfaces/Time (rounded to the nanosecond)."""
    ns = round(seconds * 1e9)
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


class ThreadedExecutor(MultiThreadedExecutor):
    """rclpy's MultiThreadedExecutor, except that a callback is handed to the thread pool once.

    rclpy 7.1 (Jazzy) keeps every handler it made in a list of tasks "in progress" and hands the
    pool, on every spin, each one that has not started yet: while the pool's threads are busy, the
    spinning thread resubmits the queued handlers again and again, and spins instead of waiting
    while it competes for the GIL with the callbacks it queued (ros2/rclpy#1452, fixed upstream by
    #1547); on a loaded two-core machine that is when a tick is already late. Our callbacks are
    plain functions that run to completion in one go, so a handler leaves that list when it is
    submitted and is never resubmitted. (An `async def` callback that awaits would never be resumed:
    none of the nodes has one.)
    """

    def _spin_once_impl(
        self,
        timeout_sec: float | TimeoutObject | None = None,
        wait_condition: Callable[[], bool] = lambda: False,
    ) -> None:
        try:
            handler, _entity, _node = self.wait_for_ready_callbacks(timeout_sec, None, wait_condition)
        except (ExternalShutdownException, ShutdownException, TimeoutException, ConditionReachedException):
            return
        with self._tasks_lock:
            self._tasks = [task for task in self._tasks if task[0] is not handler]
        self._executor.submit(handler)
        self._futures.append(handler)
        for future in self._futures[:]:
            if future.done():
                self._futures.remove(future)
                future.result()  # a callback's exception ends the spin, as in rclpy

    def shutdown(self, timeout_sec: float | None = None) -> bool:
        """Wait (up to `timeout_sec`) for running callbacks, then shut the thread pool down.

        rclpy 7.1 neither waits (its check of outstanding work sits behind `if not _is_shutdown`,
        just after setting it) nor stops the pool, whose threads would then finish queued callbacks
        while the node closes, or even while the interpreter exits. A callback still running after
        the timeout is left to finish on its own rather than hang the shutdown. Callbacks already
        queued still run (cancelled, their handler coroutines would never be awaited).
        """
        finished = self._work_tracker.wait(timeout_sec)
        self._executor.shutdown(wait=finished)  # before rclpy's: queued handlers still use its guard
        super().shutdown(0)
        return finished


class StopSignals:
    """SIGINT and SIGTERM for a node process, in place of rclpy's handlers.

    rclpy's handler shuts the context down and chains only to a Python handler that someone installed,
    so a Ctrl-C while a node was still being built (loading π0.5 takes minutes) went unheard until the
    build ended, and a second one could not cut a slow close() short. Here:
    - once the node is built, the first signal asks the spin loop to stop after its current wait: no
      callback is cut in half, no rclpy object is left half-made (the executor is built after the
      node), and the context stays up until close() has run (a recorder can still publish its last
      event);
    - while the node is being built, and for a second signal after it, KeyboardInterrupt at once;
    - while it closes, a second Ctrl-C (SIGINT) cuts the close short; SIGTERM does not. ros2 launch
      sends SIGTERM 5 s after its SIGINT whatever the node is doing, and a close that saves a
      checkpoint or finishes an episode may need longer; SIGKILL stays the supervisor's last resort.
    """

    def __init__(self) -> None:
        self.spinning = False
        self.closing = False
        self.requested = False
        self._previous: dict[int, object] = {}

    def install(self) -> bool:
        """Take over SIGINT and SIGTERM; False (rclpy keeps them) outside the main thread."""
        if threading.current_thread() is not threading.main_thread():
            return False
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return True

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.closing and signum == signal.SIGTERM:
            return
        if self.spinning and not self.requested:
            self.requested = True
            return
        raise KeyboardInterrupt


def run_node(factory: Callable[[], Node], args: Sequence[str] | None = None, threads: int = 1) -> int:
    """rclpy.init, build, spin until a stop signal, close; returns the process exit code.

    A node that has finished its work (episode_driver) sets `self.exit_code`; the loop then ends.
    """
    stops = StopSignals()
    own_signals = stops.install()
    node: Node | None = None
    executor: SingleThreadedExecutor | ThreadedExecutor | None = None
    code = 0
    try:
        rclpy.init(
            args=list(args) if args is not None else None,
            signal_handler_options=SignalHandlerOptions.NO if own_signals else None,
        )
        node = factory()
        stops.spinning = True
        executor = ThreadedExecutor(num_threads=threads) if threads > 1 else SingleThreadedExecutor()
        executor.add_node(node)
        while rclpy.ok() and not stops.requested:
            executor.spin_once(timeout_sec=0.2)
            exit_code = getattr(node, "exit_code", None)
            if exit_code is not None:
                code = int(exit_code)
                break
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except ConfigError as err:
        print(f"configuration error:\n{err}", file=sys.stderr)
        code = 2
    finally:
        stops.spinning, stops.closing = False, True
        try:
            if executor is not None:  # no callback runs from here on: close() has the node to itself
                try:
                    executor.shutdown(timeout_sec=SHUTDOWN_WAIT_S)
                except KeyboardInterrupt:  # a second Ctrl-C: stop waiting for callbacks, but close
                    print("interrupted while waiting for running callbacks", file=sys.stderr)
            if node is not None:
                close = getattr(node, "close", None)
                try:
                    if close is not None:
                        close()
                except KeyboardInterrupt:  # a second Ctrl-C: the user wants out now (stores stay consistent)
                    print("interrupted during shutdown", file=sys.stderr)
                node.destroy_node()
            try:
                rclpy.try_shutdown()
            except RuntimeError:  # rclpy's own signal handler shut the context down between two checks
                if rclpy.ok():
                    raise
        finally:
            stops.restore()
    return code
