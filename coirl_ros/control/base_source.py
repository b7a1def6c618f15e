"""Where the control loop's base actions come from: the frozen base policy, chunked, off the loop.

One seam, so the loop does not care how chunks are computed: `AsyncChunker`
(coirl_ros/policies/async_chunker.py: a worker thread, latency-compensated, never blocking) when it is
available, else the synchronous `ChunkedBaseRunner` (queries inline; fine for the millisecond-fast local
BC base, not for pi0.5). `action()` returning None means "no base action this tick": the loop holds.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from coirl_ros.configs import PolicyConfig, RobotConfig, TaskConfig
from coirl_ros.configs.policy import EE_DELTA_DIM
from coirl_ros.policies.base_policy import BasePolicy
from coirl_ros.policies.composition import ChunkedBaseRunner

log = logging.getLogger(__name__)


class BaseActionSource(Protocol):
    """Base actions, one per control tick."""

    def reset(self) -> None:
        """New episode (or resuming after a hold): drop the current chunk, re-query."""
        ...

    def action(self, observation: Mapping[str, np.ndarray]) -> np.ndarray | None:
        """This tick's base action, or None (no chunk available yet): hold."""
        ...

    def close(self) -> None: ...

    def diagnostics(self) -> dict[str, Any]: ...


class SyncChunkSource:
    """`ChunkedBaseRunner` behind the seam: inference inside the tick."""

    def __init__(self, base: BasePolicy, requery_every: int) -> None:
        self.runner = ChunkedBaseRunner(base, requery_every)

    def reset(self) -> None:
        self.runner.reset()

    def action(self, observation: Mapping[str, np.ndarray]) -> np.ndarray | None:
        return self.runner.base_action(dict(observation))

    def close(self) -> None:
        """Nothing runs in the background."""

    def diagnostics(self) -> dict[str, Any]:
        return {"mode": "sync", "queries": self.runner.queries}


class AsyncChunkSource:
    """`AsyncChunker` behind the seam (inference on its worker thread)."""

    def __init__(self, base: BasePolicy, requery_every: int, margin_steps: int) -> None:
        from coirl_ros.policies.async_chunker import AsyncChunker

        self.chunker = AsyncChunker(base, requery_every=requery_every, margin_steps=margin_steps).start()

    def reset(self) -> None:
        self.chunker.reset()

    def action(self, observation: Mapping[str, np.ndarray]) -> np.ndarray | None:
        return self.chunker.action(observation)

    def close(self) -> None:
        self.chunker.close()

    def diagnostics(self) -> dict[str, Any]:
        s = self.chunker.stats()
        return {
            "mode": "async",
            "requests": s.requests,
            "chunks": s.chunks,
            "warmup_ticks": s.warmup_ticks,
            "starved_ticks": s.starved_ticks,
            "skipped_actions": s.skipped_actions,
            "errors": s.errors,
            "last_error": s.last_error,
            "latency_p50_ms": _ms(s.latency_quantile(0.5)),
            "latency_p99_ms": _ms(s.latency_quantile(0.99)),
        }


def make_base_source(
    base: BasePolicy, requery_every: int, margin_steps: int = 1, asynchronous: bool = True
) -> BaseActionSource:
    """The asynchronous chunker when asked for and importable, else the synchronous runner."""
    if asynchronous:
        try:
            return AsyncChunkSource(base, requery_every, margin_steps)
        except ImportError as err:
            log.warning("asynchronous chunking unavailable (%s): base queried inside the control tick", err)
    return SyncChunkSource(base, requery_every)


def load_base_policy(policy: PolicyConfig, robot: RobotConfig, task: TaskConfig) -> BasePolicy:
    """The configured frozen base, checked against the robot's state and the action space."""
    action_dim = EE_DELTA_DIM if policy.action_space == "ee_delta" else robot.action_dim
    kind = policy.base.type
    if kind == "local_bc":
        from coirl_ros.policies.local_bc_base import LocalBCBase

        if not policy.base.checkpoint:
            raise ValueError("policy.yaml base.checkpoint: empty; a local_bc base needs its directory")
        base: BasePolicy = LocalBCBase.load(policy.base.checkpoint)
        if base.state_dim != robot.state_dim:  # type: ignore[attr-defined]
            raise ValueError(
                f"{policy.base.checkpoint}: base trained on state_dim {base.state_dim},"  # type: ignore[attr-defined]
                f" robot.yaml gives {robot.state_dim}"
            )
    elif kind == "pi05":
        from coirl_ros.policies.pi05_base import Pi05BasePolicy

        base = Pi05BasePolicy.from_config(policy, robot, task)
    else:
        raise ValueError(f"policy.yaml base.type: unknown {kind!r}")
    if base.action_dim != action_dim:
        raise ValueError(
            f"base {policy.base.checkpoint or kind}: action_dim {base.action_dim}, but the"
            f" {policy.action_space} action space has {action_dim}"
        )
    if base.chunk_size < policy.base.requery_every:
        raise ValueError(
            f"base chunk_size {base.chunk_size} < policy.yaml base.requery_every {policy.base.requery_every}"
        )
    return base


def _ms(seconds: float) -> float | None:
    """Milliseconds for a JSON report; None before anything was measured (JSON has no NaN)."""
    return round(seconds * 1e3, 3) if np.isfinite(seconds) else None
