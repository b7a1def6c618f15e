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


# A calibration error beyond 10 cm is a broken cell (the lift table's cube is 4 cm), not the
# miscalibration a residual is meant to absorb; every entry point checks against this one bound.
MAX_CALIBRATION_OFFSET_M = 0.1


def check_calibration_offset(offset_m: float) -> None:
    """Raise ValueError unless an offset (metres, per axis) is one `miscalibrated` accepts."""
    if not abs(offset_m) <= MAX_CALIBRATION_OFFSET_M:
        raise ValueError(
            f"base offset is in metres and must be within +-{MAX_CALIBRATION_OFFSET_M:g}, got {offset_m}"
        )
