"""Lockstep: the sim advances one control step per command, so a run is as fast as its slowest
node and does not depend on machine load (CI, `make demo`).

Commands for a step may come on two topics (arm, gripper); the gate waits for the arm command and,
when the caller says the gripper is commanded too, for the gripper command as well, so a step
never runs with half its command. A gate that waits longer than its timeout lets the step run
on the last command (a controller that died must not freeze the sim).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Literal


class LockstepGate:
    """Counts command arrivals; `wait` returns once a step's command is complete."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._cond = threading.Condition()
        self._arm = False
        self._gripper = False

    def arm_arrived(self) -> None:
        with self._cond:
            self._arm = True
            self._cond.notify_all()

    def gripper_arrived(self) -> None:
        with self._cond:
            self._gripper = True
            self._cond.notify_all()

    def clear(self) -> None:
        """Forget arrivals (a reset: commands for the old scene must not step the new one)."""
        with self._cond:
            self._arm = self._gripper = False

    def wake(self) -> None:
        """Make a waiting `wait` re-check `interrupted` (pause, shutdown)."""
        with self._cond:
            self._cond.notify_all()

    def wait(
        self, need_gripper: Callable[[], bool], interrupted: Callable[[], bool]
    ) -> Literal["command", "timeout", "interrupted"]:
        """Block until the command is complete ("command", arrivals consumed), the timeout passes
        ("timeout": step on the last command), or `interrupted()` turns true (arrivals kept)."""
        deadline = time.monotonic() + self.timeout_s
        with self._cond:
            while True:
                if interrupted():
                    return "interrupted"
                if self._arm and (self._gripper or not need_gripper()):
                    self._arm = self._gripper = False
                    return "command"
                left = deadline - time.monotonic()
                if left <= 0:
                    self._arm = self._gripper = False
                    return "timeout"
                # Bounded wait: need_gripper() depends on discovery, which notifies nobody.
                self._cond.wait(min(left, 0.05))
