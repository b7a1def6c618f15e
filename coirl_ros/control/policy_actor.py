"""The policy's actor for the control loop: frozen base chunks plus the learner's residual, every tick.

The base action comes from a `BaseActionSource` (chunks computed off the loop). The residual module is
whatever the `WeightSwapper` validated last, adopted in `before_tick` (between two ticks). It sees what
its `PolicySpec.obs_keys` name -- e.g. [state, object state, base action], or camera frames + state +
base action for an image policy -- and outputs u in [-1, 1]^d; the composition turns (base, u) into the
executed action exactly as the learner inverts it (policy_action_from_executed):
residual a = clip(a_base + scale * u), ensemble a = (a_base + u) / 2.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from coirl_ros.constants import ACTION_BASE, OBS_ENV_STATE, OBS_STATE, image_key
from coirl_ros.control.base_source import BaseActionSource
from coirl_ros.control.loop import ActorOutput
from coirl_ros.control.residual_inference import FastResidual
from coirl_ros.control.weight_swap import LoadedPolicy, WeightSwapper
from coirl_ros.ingestion.image_codec import resize_rgb
from coirl_ros.learning.acting_policy import image_sizes
from coirl_ros.learning.image_policy import ImageResidualPolicy
from coirl_ros.learning.residual_policy import ResidualPolicy
from coirl_ros.policies.composition import compose_ensemble, compose_residual

log = logging.getLogger(__name__)

# atanh's argument stays inside (-1, 1): compose_residual applies scale * tanh(raw).
_ATANH_LIMIT = 1.0 - 1e-6


class PolicyActor:
    """Base + residual (module docstring). `swapper=None` runs the base alone."""

    def __init__(
        self,
        base: BaseActionSource,
        base_inputs: tuple[str, ...],
        composition: str = "residual",
        scale: float = 0.1,
        swapper: WeightSwapper | None = None,
        explore: bool = False,
        explore_temperature: float = 1.0,
    ) -> None:
        if composition not in ("residual", "ensemble"):
            raise ValueError(f"composition must be 'residual' or 'ensemble', got {composition!r}")
        self.base = base
        self.base_inputs = tuple(base_inputs)
        self.composition, self.scale = composition, scale
        self.swapper = swapper
        self.explore = explore
        # Spread of an exploring sample as a fraction of the residual's own std (TanhNormal.sample): a
        # full-std sample is often too wild for a precise task (lift: 6% vs 60% deterministic; 0.3: 27%).
        if not 0.0 <= explore_temperature <= 1.0:
            raise ValueError(f"explore_temperature must be in [0, 1], got {explore_temperature}")
        self.explore_temperature = explore_temperature
        self.active: LoadedPolicy | None = None
        self.swaps = 0
        self.last_swap_latency_ms: float | None = None
        self.residual_fallbacks = 0  # ticks where the residual gave NaN and the base acted alone

    @property
    def version(self) -> int:
        return self.active.version if self.active is not None else 0

    def required_inputs(self) -> tuple[str, ...]:
        keys = list(self.base_inputs)
        if self.active is not None:
            keys += [k for k in self.active.spec.obs_keys if k != ACTION_BASE and k not in keys]
        return tuple(keys)

    def before_tick(self) -> None:
        if self.swapper is None:
            return
        new = self.swapper.take()
        if new is not None:
            self.active = new
            self.swaps += 1
            self.last_swap_latency_ms = round((time.monotonic() - new.received_mono) * 1e3, 3)
            log.info(
                "residual weights v%d (run %s, %d updates) active, %.1f ms after arrival",
                new.version, new.run_id, new.updates, self.last_swap_latency_ms,
            )  # fmt: skip

    def reset(self) -> None:
        self.base.reset()

    def resume(self) -> None:
        # The current chunk was planned before the hold: plan afresh from where the arm is now.
        self.base.reset()

    def act(self, observation: dict[str, np.ndarray]) -> ActorOutput | str:
        base = self.base.action(observation)
        if base is None:
            return "base_pending"
        base = np.asarray(base, dtype=np.float64)
        active = self.active
        if active is None:
            return ActorOutput(base, base, np.zeros_like(base), 0)
        u = self._residual(active, observation, base)
        if not np.all(np.isfinite(u)):
            # A diverged residual must not reach the robot: the base acts alone this tick.
            self.residual_fallbacks += 1
            return ActorOutput(base, base, np.zeros_like(base), active.version)
        if self.composition == "residual":
            raw = np.arctanh(np.clip(u, -_ATANH_LIMIT, _ATANH_LIMIT))
            executed = compose_residual(base, raw, self.scale)
        else:
            executed = compose_ensemble(base, np.clip(u, -1.0, 1.0))
        return ActorOutput(executed, base, executed - base, active.version)

    def _residual(
        self, active: LoadedPolicy, observation: dict[str, np.ndarray], base: np.ndarray
    ) -> np.ndarray:
        module = active.module
        deterministic = not self.explore
        if isinstance(module, ImageResidualPolicy):
            sizes = image_sizes(active.spec)
            raw = {
                k: resize_rgb(observation[k], *sizes[k]) if k in sizes else observation[k]
                for k in module.obs_keys
            }
            u = module.act(raw, base, deterministic=deterministic, temperature=self.explore_temperature)
            return np.asarray(u, dtype=np.float64)
        parts = [
            base if k == ACTION_BASE else np.asarray(observation[k], np.float32).reshape(-1)
            for k in active.spec.obs_keys
        ]
        x = np.concatenate(parts).astype(np.float32)
        expected = active.spec.obs_dim + active.spec.action_dim
        if x.shape != (expected,):
            raise ValueError(
                f"residual input {active.spec.obs_keys} has {x.size} values, the weights expect {expected}"
            )
        acting = active.acting if isinstance(active.acting, FastResidual) else module
        return np.asarray(acting.act(x, deterministic, self.explore_temperature), dtype=np.float64)


def prepare_acting(module: object) -> FastResidual | None:
    """`WeightSwapper(prepare=...)`: cached inference for a state residual, built off the loop."""
    return FastResidual(module) if isinstance(module, ResidualPolicy) else None


def default_base_inputs(env_state_dim: int, cameras: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Inputs a base reads: the state, the object state when it has one, camera frames when it uses them."""
    keys = [OBS_STATE]
    if env_state_dim:
        keys.append(OBS_ENV_STATE)
    keys += [image_key(c) for c in cameras]
    return tuple(keys)
