"""The frozen base policy's contract: a chunk of future actions per query (pi0.5 or a local BC base)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class BasePolicy(Protocol):
    """A frozen policy that predicts `chunk_size` actions at once, in normalised action space.

    Implementations: the local chunked BC base (CPU stand-in, learning core) and the pi0.5
    adapter. Observations are the dicts the environment / ingestion produce; actions are in
    [-1, 1]^action_dim (the learner's normalised space), one row per future control step.
    """

    chunk_size: int
    action_dim: int

    def predict_chunk(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        """Actions for the next `chunk_size` control steps, shape (chunk_size, action_dim)."""
        ...

    def reset(self) -> None:
        """Forget any per-episode state (e.g. observation history)."""
        ...
