"""One control tick: latest observation in, a limited joint command (or a hold) out.

Shared by the policy node (actor = frozen base + residual) and the teleop node (actor = a device or the
scripted expert). Per tick, `ControlLoop.tick(now)`:

1. the actor adopts anything it prepared off the loop (new residual weights) -- between two ticks;
2. hold if the operator asked for it, if no episode is active (unless configured otherwise), or if
   the watchdog finds a required input missing, stale or non-finite;
3. otherwise the actor maps the observation to a normalised action (it may hold too, e.g. before
   the first base chunk arrives), the action space turns it into joint targets and the limiter
   bounds them by position and velocity. Any non-finite value on the way holds instead.

A hold re-sends the last valid measured joint positions: the arm stops where it is, never jumps. When
acting resumes, the action space is re-anchored on the measured pose (no commanded-pose wind-up) and
the velocity limit starts from the hold command.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from coirl_ros.constants import OBS_STATE
from coirl_ros.control.action_space import ActionMapper
from coirl_ros.control.diagnostics import TickStats
from coirl_ros.control.limits import CommandLimiter, all_finite
from coirl_ros.control.watchdog import ObservationWatchdog

log = logging.getLogger(__name__)

# Hold reasons that are not faults (reported, but not logged as warnings).
OPERATOR_HOLD = "operator_hold"
IDLE = "no_episode"


@dataclass(frozen=True)
class ActorOutput:
    """What the actor decided this tick, in the normalised action space."""

    executed: np.ndarray
    base: np.ndarray
    residual: np.ndarray
    policy_version: int = 0


class Actor(Protocol):
    """Maps observations to normalised actions (policy or teleop)."""

    def required_inputs(self) -> tuple[str, ...]:
        """Observation keys that must be fresh for `act` (OBS_STATE is always required)."""
        ...

    def before_tick(self) -> None:
        """Adopt whatever was prepared off the loop (called every tick, holding or not)."""
        ...

    def reset(self) -> None:
        """A new episode starts."""
        ...

    def resume(self) -> None:
        """Acting resumes after a hold within the episode."""
        ...

    def act(self, observation: dict[str, np.ndarray]) -> ActorOutput | str:
        """This tick's action, or a hold reason."""
        ...


@dataclass(frozen=True)
class TickOutput:
    """One tick's result: what to send (None: nothing) and, when the actor acted, the step record."""

    command: np.ndarray | None
    hold_reason: str | None
    tick: int  # ticks since the episode started (holds included, so gaps in the records show holds)
    observation_stamp: float | None
    action: ActorOutput | None = None


class CommandPipeline:
    """Normalised action -> joint targets -> position/velocity limits, remembering the last command."""

    def __init__(self, action_space: ActionMapper, limiter: CommandLimiter) -> None:
        self.action_space = action_space
        self.limiter = limiter
        self.previous: np.ndarray | None = None
        self._anchored = False

    def anchor(self, q_measured: np.ndarray) -> None:
        """Before acting after a hold or at episode start: commanded pose and last command := measured.

        Called before the actor decides, so an actor reading the commanded pose (the scripted expert)
        sees the anchored one."""
        if not self._anchored:
            self.action_space.reset(q_measured)
            self.previous = np.array(q_measured[: self.limiter.dim], dtype=float)
            self._anchored = True

    def command(self, action: np.ndarray, q_measured: np.ndarray) -> np.ndarray | None:
        """Limited joint targets for `action`, or None if anything on the way is not finite."""
        self.anchor(q_measured)
        targets = self.action_space.to_joint_targets(action, q_measured)
        if not all_finite(targets):
            return None
        command = self.limiter.limit(targets, self.previous)
        self.previous = command
        return command

    def hold(self, q_measured: np.ndarray) -> np.ndarray:
        """The measured joint positions as the command; acting re-anchors afterwards."""
        command = np.array(q_measured[: self.limiter.dim], dtype=float)
        self.previous = command
        self._anchored = False
        return command

    def reanchor(self) -> None:
        """Re-anchor on the next measurement before acting (episode start)."""
        self._anchored = False


class ControlLoop:
    """The tick logic (module docstring); the node supplies observations, the clock and the publishing."""

    def __init__(
        self,
        actor: Actor,
        action_space: ActionMapper,
        limiter: CommandLimiter,
        watchdog: ObservationWatchdog,
        period_s: float,
        require_episode: bool = True,
        hold_when_idle: bool = True,
    ) -> None:
        self.actor = actor
        self.pipeline = CommandPipeline(action_space, limiter)
        self.watchdog = watchdog
        self.require_episode = require_episode
        self.hold_when_idle = hold_when_idle
        self.stats = TickStats(period_s)
        self.episode_active = False
        self.operator_hold = False
        self.episode_tick = 0
        self.hold_reason: str | None = None
        self.holds: dict[str, int] = {}  # hold ticks per reason (reason prefix up to ':')
        # The loop (not the actor) held on the previous tick: the actor resumes (e.g. re-queries its
        # base). An actor's own hold (waiting for its first chunk) must not reset it, or it never ends.
        self._loop_held = True
        self._logged: set[str] = set()
        self._update_required()

    # ---- events --------------------------------------------------------------------------------
    def start_episode(self) -> None:
        self.episode_active = True
        self.episode_tick = 0
        self.actor.reset()
        self.pipeline.reanchor()

    def end_episode(self) -> None:
        self.episode_active = False

    def set_operator_hold(self, hold: bool) -> None:
        self.operator_hold = bool(hold)

    def observe(self, name: str, value: np.ndarray, stamp: float) -> bool:
        """Feed one input (False: rejected as non-finite; the previous value stays)."""
        return self.watchdog.update(name, value, stamp)

    def _update_required(self) -> None:
        required = (OBS_STATE, *[k for k in self.actor.required_inputs() if k != OBS_STATE])
        if required != self.watchdog.required:
            self.watchdog.set_required(required)

    # ---- the tick ------------------------------------------------------------------------------
    def tick(self, now: float) -> TickOutput:
        start = time.perf_counter()
        self.actor.before_tick()
        self._update_required()  # new weights may read further inputs
        tick = self.episode_tick
        if self.episode_active:
            self.episode_tick += 1
        reason = self._hold_reason(now)
        output: ActorOutput | None = None
        command = None
        q = self.watchdog.value(OBS_STATE)
        loop_hold = reason is not None
        if reason is None:
            if self._loop_held:
                self.actor.resume()
            self.pipeline.anchor(q)
            observation = {name: entry.value for name, entry in self.watchdog.latest.items()}
            try:
                result = self.actor.act(observation)
                if isinstance(result, str):
                    reason = result
                elif not all_finite(result.executed, result.base, result.residual):
                    reason = "non_finite_action"
                else:
                    command = self.pipeline.command(result.executed, q)
                    if command is None:
                        reason = "non_finite_command"
                    else:
                        output = result
            except Exception as err:  # a failing actor must not stop the loop: hold and say why
                reason = f"actor_error:{type(err).__name__}: {err}"
        if reason is not None:
            command = None
            if q is not None and (reason != IDLE or self.hold_when_idle):
                command = self.pipeline.hold(q)
            self._note_hold(reason)
        self._loop_held = loop_hold
        self.hold_reason = reason
        self.stats.record(now, time.perf_counter() - start)
        return TickOutput(command, reason, tick, self.watchdog.stamp(OBS_STATE), output)

    def _hold_reason(self, now: float) -> str | None:
        if self.operator_hold:
            return OPERATOR_HOLD
        if self.require_episode and not self.episode_active:
            return IDLE
        return self.watchdog.check(now)

    def _note_hold(self, reason: str) -> None:
        key = reason.split(":", 1)[0]
        self.holds[key] = self.holds.get(key, 0) + 1
        if reason not in (OPERATOR_HOLD, IDLE) and reason not in self._logged and len(self._logged) < 100:
            self._logged.add(reason)  # once per distinct reason: a persistent fault must not flood the log
            log.warning("holding position: %s", reason)
