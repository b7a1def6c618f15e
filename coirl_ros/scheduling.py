"""Keep this process at the scheduling policy it started with.

LeRobot encodes dataset videos with SVT-AV1 (through PyAV), and SVT-AV1, when it runs as root, moves
the calling thread to SCHED_FIFO priority 99 and leaves it there. Every process started afterwards
inherits that policy: a CI run that exported a video dataset and then launched the node graph had
Python nodes busy-waiting at real-time priority 99, which starved everything else on the two cores
(the graph, pytest, its timeouts) until the job was killed. Our nodes are ordinary Python, not
real-time code; they run at the default policy.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

REAL_TIME_POLICIES = frozenset({os.SCHED_FIFO, os.SCHED_RR})


def is_real_time(pid: int = 0) -> bool:
    """Whether `pid` (0: this thread) runs under a real-time policy (SCHED_FIFO or SCHED_RR)."""
    return os.sched_getscheduler(pid) in REAL_TIME_POLICIES


def current_scheduling() -> tuple[int, int]:
    """This thread's (policy, priority)."""
    return os.sched_getscheduler(0), os.sched_getparam(0).sched_priority


def set_scheduling(scheduling: tuple[int, int]) -> None:
    """Put this thread at (policy, priority), as `current_scheduling` returned them."""
    policy, priority = scheduling
    os.sched_setscheduler(0, policy, os.sched_param(priority))


def reset_to_default_policy() -> None:
    """This thread to SCHED_OTHER, nice unchanged (in a child before exec: the node's process)."""
    set_scheduling((os.SCHED_OTHER, 0))


@contextlib.contextmanager
def preserved_scheduling() -> Iterator[None]:
    """Restore the calling thread's policy and priority if the code inside changed them."""
    before = current_scheduling()
    try:
        yield
    finally:
        if current_scheduling() != before:
            set_scheduling(before)
