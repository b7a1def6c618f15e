"""The task registry. Each task lives in `coirl_ros/sim/tasks/<name>.py`, which defines:

- `TASK`: its `Task` subclass (scene, randomisation, object state, success check);
- `PLAN`: the scripted expert's waypoint generator (see `coirl_ros.sim.expert`);
- optionally `RESUME_PLAN`: a plan that starts from any state of an episode (an operator taking
  over from the policy mid-episode, see `coirl_ros.takeovers`).

Modules are imported on first use, so listing a task costs nothing.
"""

from __future__ import annotations

import importlib

from coirl_ros.sim.expert import Plan
from coirl_ros.sim.task import Task

TASK_NAMES: tuple[str, ...] = (
    "lift",
    "square",
    "nut_assembly",
    "coffee",
    "mug_cleanup",
    "hammer_cleanup",
    "threading",
)


def _module(name: str):
    if name not in TASK_NAMES:
        raise ValueError(f"unknown task {name!r}; available: {', '.join(TASK_NAMES)}")
    return importlib.import_module(f"coirl_ros.sim.tasks.{name}")


def make_task(name: str) -> Task:
    """A fresh instance of the named task."""
    return _module(name).TASK()


def expert_plan(name: str) -> Plan:
    """The named task's scripted-expert plan."""
    return _module(name).PLAN


def resume_plan(name: str) -> Plan:
    """The named task's plan from a mid-episode state; a clear error for tasks without one."""
    plan = getattr(_module(name), "RESUME_PLAN", None)
    if plan is None:
        raise ValueError(f"task {name!r} has no RESUME_PLAN: its expert can only start from the reset")
    return plan


def available_tasks() -> list[str]:
    """Tasks whose module exists in this checkout."""
    out = []
    for name in TASK_NAMES:
        try:
            _module(name)
            out.append(name)
        except ModuleNotFoundError:
            continue
    return out
