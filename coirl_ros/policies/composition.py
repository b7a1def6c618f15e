"""Acting with a frozen chunked base plus a per-step residual (DESIGN.md 2.5).

The base is queried every `requery_every` control steps and its chunk is played out step by step;
the small policy acts at every step on top of the current base action:

- residual: a = clip(a_base + scale * tanh(u), -1, 1), u the residual network's raw output, which
  sees the observation and a_base (ResFiT/ResiP practice: scale 0.1-0.2 in normalised units);
- ensemble: a = (a_base + a_theta) / 2.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np

from coirl_ros.policies.base_policy import BasePolicy

Composition = Literal["residual", "ensemble"]


def compose_residual(base_action: np.ndarray, raw_residual: np.ndarray, scale: float) -> np.ndarray:
    """a = clip(a_base + scale * tanh(u), -1, 1): the residual can never move more than `scale`."""
    return np.clip(base_action + scale * np.tanh(raw_residual), -1.0, 1.0)


def compose_ensemble(base_action: np.ndarray, policy_action: np.ndarray) -> np.ndarray:
    """a = (a_base + a_theta) / 2."""
    return 0.5 * (base_action + policy_action)


class ChunkedBaseRunner:
    """Plays a base policy's chunks, re-querying every `requery_every` steps.

    Re-querying before the chunk runs out (requery_every < chunk_size) keeps the base reactive;
    the remaining actions of the old chunk are discarded (the new chunk starts at the current
    step). The step counter is per episode: call `reset()` at episode start.
    """

    def __init__(self, base: BasePolicy, requery_every: int) -> None:
        if not 1 <= requery_every <= base.chunk_size:
            raise ValueError(
                f"requery_every must be in [1, {base.chunk_size}] (the chunk size), got {requery_every}"
            )
        self.base = base
        self.requery_every = requery_every
        self.reset()

    def reset(self) -> None:
        self.base.reset()
        self._chunk: np.ndarray | None = None
        self._index = 0
        self.queries = 0

    def base_action(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        """The base action for this control step (queries the base when due)."""
        if self._chunk is None or self._index >= self.requery_every:
            chunk = np.asarray(self.base.predict_chunk(observation), dtype=np.float64)
            expected = (self.base.chunk_size, self.base.action_dim)
            if chunk.shape != expected:
                raise ValueError(f"base policy returned a chunk of shape {chunk.shape}, expected {expected}")
            if not np.all(np.isfinite(chunk)):
                raise ValueError("base policy returned NaN or inf actions")
            self._chunk, self._index = chunk, 0
            self.queries += 1
        action = self._chunk[self._index]
        self._index += 1
        return action


class ComposedPolicy:
    """Base chunks + a per-step small policy, composed as configured.

    `small_policy(observation, base_action) -> u` returns the residual's raw output (residual
    mode) or a full action in [-1, 1] (ensemble mode); `None` runs the base alone.
    """

    def __init__(
        self,
        runner: ChunkedBaseRunner,
        small_policy: Callable[[dict[str, np.ndarray], np.ndarray], np.ndarray] | None,
        composition: Composition = "residual",
        scale: float = 0.1,
    ) -> None:
        if composition not in ("residual", "ensemble"):
            raise ValueError(f"composition must be 'residual' or 'ensemble', got {composition!r}")
        if not 0.0 < scale <= 1.0:
            raise ValueError(f"residual scale must be in (0, 1], got {scale}")
        self.runner = runner
        self.small_policy = small_policy
        self.composition = composition
        self.scale = scale

    def reset(self) -> None:
        self.runner.reset()

    def act(self, observation: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(executed action, base action, residual contribution), all in normalised units.

        The three are what the recorder stores as action / action.base / action.residual.
        """
        base = self.runner.base_action(observation)
        if self.small_policy is None:
            return base, base, np.zeros_like(base)
        out = np.asarray(self.small_policy(observation, base), dtype=np.float64)
        if not np.all(np.isfinite(out)):
            # A diverged residual must not reach the robot: fall back to the base for this step.
            return base, base, np.zeros_like(base)
        if self.composition == "residual":
            action = compose_residual(base, out, self.scale)
        else:
            action = compose_ensemble(base, np.clip(out, -1.0, 1.0))
        return action, base, action - base


def base_actions_along(runner: ChunkedBaseRunner, observations: list[dict[str, np.ndarray]]) -> np.ndarray:
    """The base actions the runner would have proposed along a recorded episode, [T, action_dim].

    The learner needs a_base at demonstration states (the residual's input and target), but a
    teleoperated demo is recorded without the base running. Replaying the base over the recorded
    observations with the same re-query schedule reproduces what it would have proposed there.
    """
    runner.reset()
    return np.stack([runner.base_action(obs) for obs in observations]).astype(np.float32)
