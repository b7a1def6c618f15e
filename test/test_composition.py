"""Base chunks re-queried every k steps; residual and ensemble composition; bad outputs handled."""

from __future__ import annotations

import numpy as np
import pytest

from coirl_ros.policies.base_policy import BasePolicy
from coirl_ros.policies.composition import ChunkedBaseRunner, ComposedPolicy, compose_residual


class CountingBase:
    """A real BasePolicy: chunk rows encode (query number, row), so tests can see which row played."""

    def __init__(self, chunk_size: int = 5, action_dim: int = 3) -> None:
        self.chunk_size, self.action_dim, self.calls = chunk_size, action_dim, 0

    def predict_chunk(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        self.calls += 1
        rows = np.arange(self.chunk_size)[:, None] * 0.01 + self.calls * 0.1
        return np.repeat(rows, self.action_dim, axis=1)

    def reset(self) -> None:
        self.calls = 0


def test_counting_base_satisfies_the_protocol() -> None:
    assert isinstance(CountingBase(), BasePolicy)


def test_chunk_is_requeried_every_k_steps_and_played_in_order() -> None:
    runner = ChunkedBaseRunner(CountingBase(chunk_size=5), requery_every=3)
    played = [runner.base_action({})[0] for _ in range(7)]
    # Query 1 rows 0,1,2; query 2 rows 0,1,2; query 3 row 0.
    np.testing.assert_allclose(played, [0.10, 0.11, 0.12, 0.20, 0.21, 0.22, 0.30])
    assert runner.queries == 3
    runner.reset()
    assert runner.queries == 0 and runner.base_action({})[0] == pytest.approx(0.10)


def test_requery_interval_must_fit_the_chunk() -> None:
    with pytest.raises(ValueError, match=r"requery_every must be in \[1, 5\]"):
        ChunkedBaseRunner(CountingBase(chunk_size=5), requery_every=6)


def test_bad_base_chunks_are_refused() -> None:
    base = CountingBase()
    base.predict_chunk = lambda obs: np.full((5, 3), np.nan)  # type: ignore[method-assign]
    with pytest.raises(ValueError, match="NaN"):
        ChunkedBaseRunner(base, 5).base_action({})
    base.predict_chunk = lambda obs: np.zeros((4, 3))  # type: ignore[method-assign]
    with pytest.raises(ValueError, match=r"shape \(4, 3\), expected \(5, 3\)"):
        ChunkedBaseRunner(base, 5).base_action({})


def test_residual_is_bounded_by_its_scale_and_clipped_to_the_action_box() -> None:
    base = np.array([0.0, 0.95, -0.95])
    out = compose_residual(base, np.array([100.0, 100.0, -100.0]), scale=0.1)
    np.testing.assert_allclose(out, [0.1, 1.0, -1.0])
    np.testing.assert_allclose(compose_residual(base, np.zeros(3), 0.1), base)


def test_composed_policy_reports_base_and_residual_parts() -> None:
    policy = ComposedPolicy(
        ChunkedBaseRunner(CountingBase(), 5), lambda obs, a: np.full(3, 0.5), "residual", 0.2
    )
    action, base, residual = policy.act({})
    np.testing.assert_allclose(base, 0.1)
    np.testing.assert_allclose(residual, 0.2 * np.tanh(0.5))
    np.testing.assert_allclose(action, base + residual)
    ensemble = ComposedPolicy(
        ChunkedBaseRunner(CountingBase(), 5), lambda obs, a: np.full(3, 0.5), "ensemble"
    )
    np.testing.assert_allclose(ensemble.act({})[0], (0.1 + 0.5) / 2)


def test_base_only_and_a_diverged_residual_fall_back_to_the_base() -> None:
    alone = ComposedPolicy(ChunkedBaseRunner(CountingBase(), 5), None)
    action, base, residual = alone.act({})
    np.testing.assert_array_equal(action, base)
    np.testing.assert_array_equal(residual, 0.0)
    diverged = ComposedPolicy(ChunkedBaseRunner(CountingBase(), 5), lambda obs, a: np.full(3, np.nan))
    action, base, residual = diverged.act({})
    np.testing.assert_array_equal(action, base)
    assert not residual.any()
