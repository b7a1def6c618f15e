"""Operator takeovers in the sim (HG-DAgger): the expert's corrections from the policy's own states.

Demonstrations show the task from the reset along the expert's path, so they never show what to do
once the policy has gone somewhere else: there π_BC reverts to its prior and the base's mistakes go
uncorrected. An operator who watches the policy and takes over when it goes wrong records exactly
that missing data. Here the operator is the scripted expert with a `RESUME_PLAN` (it plans from any
state of the episode), and the moment to take over is a `TakeoverWatch`:

- the base's translation command sits at its bound for `saturated_steps` steps in a row. On
  mug_cleanup that never happens in a successful episode and marks almost half of the failures'
  steps (`bench/base_saturation.py`), so it is a cheap, early sign of a base driving off;
- or, optionally, the policy has not finished by step `deadline` (a stall: a gripper that keeps
  opening and closing never saturates anything).

Only the expert's part of the episode is kept, as a "takeover" episode (a demonstration source):
its frames hold the states, the expert's actions and the base's proposals at those states on the
chunk schedule the policy ran with, which is what π_BC needs for its residual targets. A takeover
the expert could not finish is not kept (a failed correction is no demonstration).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from coirl_ros.constants import (
    ACTION,
    ACTION_BASE,
    ACTION_RESIDUAL,
    DONE,
    OBS_ENV_STATE,
    OBS_STATE,
    REWARD,
    TIMESTAMP,
    image_key,
)
from coirl_ros.data import EpisodeStore
from coirl_ros.experiment import Actor, Policy
from coirl_ros.sim.expert import WaypointExpert
from coirl_ros.sim.tasks import resume_plan

TRANSLATION = slice(0, 3)  # ee_delta actions: x, y, z first


@dataclass(frozen=True)
class TakeoverTrigger:
    """When the simulated operator takes over from the policy."""

    saturated_steps: int = 2  # consecutive steps with the base's translation at its bound
    saturation: float = 0.98  # |a_base| at or above this in x, y or z counts as at the bound
    deadline: int | None = None  # take over from a policy not done by this step (None: never)

    def __post_init__(self) -> None:
        if self.saturated_steps < 1:
            raise ValueError(f"saturated_steps must be >= 1, got {self.saturated_steps}")
        if not 0.0 < self.saturation <= 1.0:
            raise ValueError(f"saturation must be in (0, 1], got {self.saturation}")
        if self.deadline is not None and self.deadline < 0:
            raise ValueError(f"deadline must be >= 0 or None, got {self.deadline}")


class TakeoverWatch:
    """Feeds on the base's proposals step by step; says why the operator takes over, once it should."""

    def __init__(self, trigger: TakeoverTrigger) -> None:
        self.trigger = trigger
        self.reset()

    def reset(self) -> None:
        self._saturated_run = 0

    def update(self, step: int, base_action: np.ndarray) -> str | None:
        """ "saturated" or "deadline" when the operator should take over at `step`; None otherwise."""
        at_bound = bool(np.any(np.abs(base_action[TRANSLATION]) >= self.trigger.saturation))
        self._saturated_run = self._saturated_run + 1 if at_bound else 0
        if self._saturated_run >= self.trigger.saturated_steps:
            return "saturated"
        if self.trigger.deadline is not None and step >= self.trigger.deadline:
            return "deadline"
        return None


@dataclass(frozen=True)
class TakeoverOutcome:
    """One episode under the watching operator."""

    seed: int
    policy_success: bool  # the policy finished on its own
    takeover_step: int | None  # the step the operator took over at (None: it never did)
    reason: str | None
    expert_success: bool  # the expert finished after taking over
    frames: int  # takeover frames kept in the store (0 unless the expert finished)
    env_steps: int  # steps the episode took, the policy's and the expert's


def run_with_takeover(
    actor: Actor,
    seed: int,
    policy: Policy | None,
    watch: TakeoverWatch,
    store: EpisodeStore | None,
    expert_noise: float = 0.0,
    extra_steps: int | None = None,
) -> TakeoverOutcome:
    """One episode: the policy (its mode) acts until `watch` fires, then the task's resume plan
    finishes it; a finished takeover is written to `store` as a "takeover" episode.

    The operator is not bound by the episode's horizon: a late takeover may run `extra_steps`
    (default: one horizon) past it, so that corrections of late failures are not cut short.
    """
    env = actor.env
    composed = actor.composed(policy, explore=False)
    composed.reset()
    watch.reset()
    obs, info = env.reset(seed=seed)
    limit = env.horizon + (env.horizon if extra_steps is None else extra_steps)
    expert: WaypointExpert | None = None
    takeover_step, reason = None, None
    frames: list[dict[str, np.ndarray | float | bool]] = []
    success, steps = bool(info["success"]), 0
    for t in range(limit):
        if expert is None and t >= env.horizon:
            break
        if expert is None:
            action, base_action, _ = composed.act(obs)
            reason = watch.update(t, base_action)
            if reason is not None:
                takeover_step = t
                expert = WaypointExpert(env, resume_plan(actor.config.task), expert_noise, seed=seed)
                expert.reset(seed)
        else:
            # The base keeps running on its schedule: its proposals are the residual's inputs.
            base_action = composed.runner.base_action(obs)
        if expert is not None:
            if expert.done:
                break
            action = expert.act(obs)
            frames.append({
                OBS_STATE: obs["state"], OBS_ENV_STATE: obs["object"],
                ACTION: action.astype(np.float32), ACTION_BASE: base_action.astype(np.float32),
                ACTION_RESIDUAL: (action - base_action).astype(np.float32),
                REWARD: 0.0, DONE: False, TIMESTAMP: t * env.dt,
                **{image_key(c): obs[c] for c in actor.cameras},
            })  # fmt: skip
        obs, reward, terminated, _, info = env.step(action)
        success, steps = bool(info["success"]), t + 1
        if expert is not None:
            frames[-1][REWARD], frames[-1][DONE] = reward, terminated
        if terminated:
            break
    kept = 0
    if expert is not None and success and store is not None:
        with store.writer() as writer:
            writer.begin_episode(actor.config.task, "takeover")
            for frame in frames:
                writer.add_frame(frame)
            writer.save_episode(success=True)
        kept = len(frames)
    return TakeoverOutcome(
        seed=seed,
        policy_success=success and expert is None,
        takeover_step=takeover_step,
        reason=reason,
        expert_success=success and expert is not None,
        frames=kept,
        env_steps=steps,
    )
