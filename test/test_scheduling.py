"""Nodes run at the default scheduling policy even when their launcher was left at a real-time one."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from coirl_ros.launcher import _prepare_child
from coirl_ros.scheduling import is_real_time, preserved_scheduling, reset_to_default_policy

PRINT_POLICY = [sys.executable, "-c", "import os; print(os.sched_getscheduler(0))"]


def test_a_library_call_that_switches_to_real_time_is_undone() -> None:
    try:
        with preserved_scheduling():
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))  # what SVT-AV1 does as root
            assert is_real_time()
    except PermissionError:
        pytest.skip("not permitted to use a real-time policy here (not root)")
    assert not is_real_time() and os.sched_getscheduler(0) == os.SCHED_OTHER


def test_launched_nodes_do_not_inherit_a_real_time_policy() -> None:
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except PermissionError:
        pytest.skip("not permitted to use a real-time policy here (not root)")
    try:
        inherited = subprocess.run(PRINT_POLICY, capture_output=True, text=True, check=True).stdout
        launched = subprocess.run(
            PRINT_POLICY, capture_output=True, text=True, check=True, preexec_fn=_prepare_child
        ).stdout
    finally:
        reset_to_default_policy()
    assert int(inherited) == os.SCHED_FIFO  # what a plain child gets
    assert int(launched) == os.SCHED_OTHER  # what the launcher's nodes get
