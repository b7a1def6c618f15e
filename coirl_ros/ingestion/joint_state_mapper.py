"""Robot joint states -> the policy's state vector (7 arm joints + gripper), with sanity checks.

Drivers publish /joint_states with their own joint order, often extra joints (a second finger, a
mobile base) and sometimes the gripper in a message of its own. The mapper picks the configured
joints by name, in config order, and refuses anything it cannot vouch for: a state stamped in the
future (clocks disagree: one node on sim time, one not) or arriving before this node's sim clock
has started, unstamped, going backwards in time, NaN, or
missing a joint is reported, never passed on. A policy acting on such a state is worse than a policy
holding still.

A state that is merely *late* (older than the timeout when it is processed) is different: its values
and capture stamp are right, so it is passed on and flagged. Whoever acts on it judges freshness
against its own clock (policy_node's watchdog holds on an old state), and the recorder pairs steps
with states by stamp. Dropping it here would only punch holes in recorded episodes whenever
joint_node itself falls behind: a loaded machine, or a lockstep sim stepping ahead of it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

ProblemKind = Literal[
    "no_clock", "future", "unstamped", "backwards", "duplicate", "nan", "missing", "malformed"
]


@dataclass(frozen=True)
class JointSample:
    """One JointState message, ROS-free: stamp in seconds, parallel name/position/velocity lists."""

    stamp: float
    names: Sequence[str]
    positions: Sequence[float]
    velocities: Sequence[float] = ()


@dataclass(frozen=True)
class RobotState:
    """The policy's state: positions (and velocities, when every joint reported one) in config order."""

    stamp: float
    names: tuple[str, ...]
    positions: np.ndarray
    velocities: np.ndarray | None
    age_s: float = 0.0  # how old the state was when it was mapped (> the timeout: late, flagged)


@dataclass(frozen=True)
class StateProblem:
    """Why a message did not become a state."""

    kind: ProblemKind
    reason: str


@dataclass
class _Latest:
    stamp: float
    position: float
    velocity: float | None


class JointStateMapper:
    """Maps joint-state samples onto [arm joints..., gripper joint] and checks them.

    A state is produced when a sample carries every arm joint; the gripper comes from the same
    sample or, when the gripper is published separately, from the latest gripper sample, which must
    then be no older than `timeout_s` relative to the arm's stamp. Samples are grouped into sources
    by the configured joints they carry (arm driver, gripper driver): within a source stamps must
    increase.
    """

    def __init__(self, arm_joints: Sequence[str], gripper_joint: str, timeout_s: float) -> None:
        if not arm_joints:
            raise ValueError("at least one arm joint is needed")
        self.arm_joints = tuple(arm_joints)
        self.gripper_joint = gripper_joint
        self.names = (*self.arm_joints, gripper_joint)
        self.timeout_s = float(timeout_s)
        self._wanted = set(self.names)
        self._latest: dict[str, _Latest] = {}
        self._source_stamps: dict[frozenset[str], float] = {}

    def update(self, sample: JointSample, now: float) -> RobotState | StateProblem | None:
        """Check one sample; returns the new state, the problem, or None (nothing to publish yet:
        a gripper-only sample, or a message about none of the configured joints)."""
        names, positions, velocities = list(sample.names), list(sample.positions), list(sample.velocities)
        if len(names) != len(positions):
            return StateProblem("malformed", f"{len(names)} joint names but {len(positions)} positions")
        if velocities and len(velocities) != len(names):
            return StateProblem("malformed", f"{len(names)} joint names but {len(velocities)} velocities")
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            return StateProblem("malformed", f"joint names repeated in one message: {dup}")
        index = {n: i for i, n in enumerate(names) if n in self._wanted}
        if not index:
            return None
        if sample.stamp <= 0.0:
            return StateProblem("unstamped", "header stamp is zero: staleness cannot be checked")
        bad = [n for n, i in index.items() if not math.isfinite(positions[i])]
        if bad:
            return StateProblem("nan", f"non-finite position for {sorted(bad)}")
        source = frozenset(index)
        last = self._source_stamps.get(source)
        if last is not None and sample.stamp < last:
            return StateProblem(
                "backwards",
                f"stamp {sample.stamp:.6f} is {last - sample.stamp:.6f} s older than the previous one",
            )
        if last is not None and sample.stamp == last:
            return StateProblem("duplicate", f"stamp {sample.stamp:.6f} repeated")
        if now <= 0.0:
            # ROS time is 0 on a node with use_sim_time until its first /clock: nothing can be judged
            # yet, and calling the state "in the future" would send the user after a clock mismatch.
            return StateProblem("no_clock", "this node's clock has not started (use_sim_time, no /clock yet)")
        age = now - sample.stamp
        if -age > self.timeout_s:
            return StateProblem(
                "future",
                f"state is stamped {-age:.3f} s in the future: do all nodes agree on use_sim_time?",
            )
        self._source_stamps[source] = sample.stamp
        for n, i in index.items():
            vel = velocities[i] if velocities and math.isfinite(velocities[i]) else None
            self._latest[n] = _Latest(sample.stamp, float(positions[i]), vel)

        missing_arm = [n for n in self.arm_joints if n not in index]
        if len(missing_arm) == len(self.arm_joints):
            return None  # a gripper-only sample: stored for the next arm sample
        if missing_arm:
            return StateProblem("missing", f"message lacks arm joints {missing_arm}")
        grip = self._latest.get(self.gripper_joint)
        if grip is None:
            return StateProblem("missing", f"no value for the gripper joint {self.gripper_joint!r} yet")
        if sample.stamp - grip.stamp > self.timeout_s:
            return StateProblem(
                "missing",
                f"gripper joint {self.gripper_joint!r} last reported {sample.stamp - grip.stamp:.3f} s"
                " before the arm (stale)",
            )
        entries = [self._latest[n] for n in self.names]
        vels = [e.velocity for e in entries]
        return RobotState(
            stamp=sample.stamp,
            names=self.names,
            positions=np.array([e.position for e in entries]),
            velocities=None if any(v is None for v in vels) else np.array(vels, dtype=float),
            age_s=age,
        )


@dataclass
class IngestionHealth:
    """Status of a sensor stream for diagnostics: ok / stale / inconsistent / no_data, with counts.

    Stale means no state for longer than the timeout, or the last one arrived late (passed on all
    the same, counted in `late`). `observe_*` return True when the status changed (worth reporting
    at once).
    """

    timeout_s: float
    status: str = "no_data"
    reason: str = "no joint states received yet"
    last_stamp: float | None = None
    last_ok_wall: float | None = None
    published: int = 0
    late: int = 0
    rejected: dict[str, int] = field(default_factory=dict)

    def observe_state(self, state: RobotState) -> bool:
        self.published += 1
        self.last_stamp = state.stamp
        self.last_ok_wall = time.monotonic()
        if state.age_s > self.timeout_s:
            self.late += 1
            return self._set(
                "stale",
                f"state arrived {state.age_s:.3f} s old (limit {self.timeout_s} s): passed on with its"
                " capture stamp",
            )
        return self._set("ok", "")

    def observe_problem(self, problem: StateProblem) -> bool:
        self.rejected[problem.kind] = self.rejected.get(problem.kind, 0) + 1
        return self._set("inconsistent", problem.reason)

    def check_timeout(self, now: float) -> bool:
        """Called periodically: no good state for longer than the timeout = stale."""
        if self.last_stamp is None:
            return False
        age = now - self.last_stamp
        if age > self.timeout_s and self.status == "ok":
            return self._set("stale", f"no valid joint state for {age:.3f} s (limit {self.timeout_s} s)")
        return False

    def _set(self, status: str, reason: str) -> bool:
        changed = status != self.status
        self.status, self.reason = status, reason
        return changed

    def report(self, now: float) -> dict[str, Any]:
        return {
            "status": self.status,
            "reason": self.reason,
            "age_s": None if self.last_stamp is None else round(now - self.last_stamp, 6),
            "published": self.published,
            "late": self.late,
            "rejected": dict(self.rejected),
            "stamp": now,
        }
